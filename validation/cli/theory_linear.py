"""``gva theory prop31`` and ``gva theory linear-gva``: linear closed loops (paper Prop. 3.1, Sec. 3)."""

from __future__ import annotations

import argparse

from ._common import add_output_arguments, add_quiet_argument, add_seed_argument


def _data_count(text: str):
    """``--N``: a number of fixed demonstrations, or ``fresh`` for new ones at every step."""
    if text == "fresh":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"N={text!r} must be a positive integer or 'fresh'") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prop31",
        help="Prop. 3.1: small imitation loss, reward gap exponential in H*delta (exact)",
        description="Worst-case reward gap J_H(pi*) - J_H(pi* + Delta) over linear perturbations with "
        "||Delta||_op <= delta, for the scalar system x' = a x + b u with expert u = k x and reward "
        "exp(-x^2/(2 s^2)), all exact; fits log gap = c + kappa*H*delta + lambda*log(delta) on the "
        "pre-saturation points.",
    )
    p.add_argument("--H", type=int, nargs="+", default=[25, 50, 100, 200, 400, 800], help="horizons")
    p.add_argument("--delta", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.04], help="perturbation sizes")
    p.add_argument("--x0", type=float, default=0.01, help="initial state (mean) (default 0.01)")
    p.add_argument("--x0-sd", type=float, default=0.0, help="sd of a Gaussian initial state (default 0: deterministic)")
    p.add_argument("--s", type=float, default=1.0, help="reward scale s (default 1)")
    p.add_argument("--a", type=float, default=1.0, help="plant a (default 1)")
    p.add_argument("--b", type=float, default=1.0, help="input gain b (default 1)")
    p.add_argument("--k", type=float, default=0.0, help="expert gain k (default 0: closed loop a + b k = 1)")
    add_output_arguments(p)
    p.set_defaults(func=_prop31)

    q = subparsers.add_parser(
        "linear-gva",
        help="GVA in a linear system: SGD + EMA on BC of a linear expert, exact J_H, Lyapunov predictions",
        description="Behavior cloning of a double-integrator expert (closed-loop poles at rho) by minibatch "
        "SGD with an EMA. Prints the sd across SGD seeds of the exact quadratic cost J_H of the final "
        "iterate, raw vs EMA, next to the delta-method prediction from the Lyapunov covariance, and the "
        "sd/mean of the BC loss.",
    )
    q.add_argument("--rho", type=float, default=0.995, help="closed-loop spectral radius of the expert (<= 1)")
    q.add_argument("--dt", type=float, default=0.1, help="time step of the double integrator")
    q.add_argument("--N", type=_data_count, default=50, help="fixed demonstrations, or 'fresh' (default 50)")
    q.add_argument("--traj-len", type=int, default=100, help="demonstration length T")
    q.add_argument("--label-noise", type=float, default=0.1, help="sd of the noise on recorded actions")
    q.add_argument("--misspec", type=float, default=0.0, help="amplitude of the expert's alternating gain")
    q.add_argument("--eta", type=float, default=0.01, help="SGD step size")
    q.add_argument("--batch", type=int, default=8, help="minibatch size")
    q.add_argument("--gamma", type=float, default=0.01, help="EMA weight on the newest iterate")
    q.add_argument("--steps", type=int, default=4000, help="SGD steps")
    q.add_argument("--seeds", type=int, default=200, help="SGD seeds (Monte Carlo chains)")
    q.add_argument("--H", type=int, nargs="+", default=[50, 100, 200, 400, 800], help="horizons")
    q.add_argument("--record-every", type=int, default=1,
                   help="evaluate J_H and loss_bc exactly every this many steps (default 1: every iterate)")
    q.add_argument("--data-seed", type=int, default=0, help="seed of the fixed demonstrations")
    add_seed_argument(q)
    add_output_arguments(q)
    add_quiet_argument(q)
    q.set_defaults(func=_linear_gva)


def _prop31(args: argparse.Namespace) -> int:
    from gvatheory.linear import prop31_system, prop31_table

    from ._common import emit, save_figure

    system = prop31_system(x0=args.x0, s=args.s, a=args.a, b=args.b, k=args.k, x0_sd=args.x0_sd)
    import numpy as np

    table = prop31_table(system, args.H, args.delta)
    extra = {"worst case": "exact (scalar system)" if table.exact else "optimized lower bound"}
    fit = None
    try:
        fit = table.fit()
    except ValueError as err:  # a grid without pre-saturation points still gets its table
        extra["fit"] = f"not done: {err}"
    else:
        extra.update({"fitted kappa": fit.kappa, "kappa se": fit.kappa_se, "fitted lambda (log delta)": fit.lam,
                      "fit R^2": fit.r2, "points in fit": int(fit.used.sum())})
        if abs(args.a + args.b * args.k) == 1.0:
            d = table.delta[fit.used.any(axis=0)]
            extra["small-state kappa 2 log(1+|b| delta)/delta"] = float(np.mean(2 * np.log1p(abs(args.b) * d) / d))
    if abs(args.a + args.b * args.k) == 1.0 and args.x0 != 0:
        extra["exponential regime ends near H*delta"] = float(np.log(args.s / abs(args.x0)))
    emit(table.rows(), as_json=args.json, title="Prop. 3.1: worst-case reward gap over ||Delta||_op <= delta",
         extra=extra)
    if args.plot:
        save_figure(table.plot(fit=fit), args.plot)
    return 0


def _linear_gva(args: argparse.Namespace) -> int:
    import numpy as np

    from gvatheory.gva import LinearBC, double_integrator, gva_experiment

    from ._common import emit, save_figure

    A, B, K = double_integrator(args.rho, args.dt)
    problem = LinearBC(A, B, K, label_noise=args.label_noise, misspec=args.misspec, traj_len=args.traj_len,
                       N=args.N, data_seed=args.data_seed)
    exp = gva_experiment(problem, eta=args.eta, gamma=args.gamma, batch=args.batch, steps=args.steps,
                         seeds=args.seeds, H=args.H, seed=args.seed, record_every=args.record_every,
                         quiet=args.quiet)
    finite = lambda v: np.where(np.isfinite(v), v, np.inf)  # noqa: E731 (diverged chains: inf, not NaN)
    dev = exp.run.K[:, -1].reshape(args.seeds, -1) - exp.moments.mean_raw.reshape(-1)
    dev_ema = exp.run.ema[:, -1].reshape(args.seeds, -1) - exp.moments.mean_ema.reshape(-1)
    extra = {"eta * largest Hessian eigenvalue (SGD stable < 2)": args.eta * np.linalg.eigvalsh(problem.hessian()).max(),
             "loss_bc sd/mean raw": exp.loss_cv("raw"), "loss_bc sd/mean ema": exp.loss_cv("ema"),
             "Var K (MC) raw": finite(np.var(dev, axis=0)), "Var K (Lyapunov) raw": np.diag(exp.moments.cov_raw),
             "Var K (MC) ema": finite(np.var(dev_ema, axis=0)), "Var K (Lyapunov) ema": np.diag(exp.moments.cov_ema),
             "diverged chains": int(exp.run.diverged.sum())}
    emit(exp.rows(), as_json=args.json, title="GVA in a linear closed loop: sd of J_H across SGD seeds, raw vs EMA",
         extra=extra)
    if args.plot:
        save_figure(exp.plot(), args.plot)
    return 0
