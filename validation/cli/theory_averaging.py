"""``gva theory averaging``: SGD with iterate averaging on a quadratic, exact moments next to Monte Carlo."""

from __future__ import annotations

import argparse

from ._common import add_output_arguments, add_quiet_argument, add_seed_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "averaging",
        help="SGD + EMAs on a quadratic: exact Gaussian moments vs Monte Carlo, stationary laws",
        description="SGD theta <- theta - eta (Hs (theta - mu) + sigma xi) with Hs = diag(h) and one EMA per "
        "--gamma (ema <- (1 - gamma) ema + gamma theta, ema_0 = theta_0). Prints mean and variance of theta_T "
        "and of each EMA: exact (moment recursion), Monte Carlo with SE and z = (MC - exact)/SE, and the "
        "stationary value (discrete Lyapunov equation).",
    )
    p.add_argument("--eta", type=float, default=0.1, help="step size (default 0.1)")
    p.add_argument("--gamma", type=float, nargs="+", default=[0.01], help="EMA weights, one EMA each (default 0.01)")
    p.add_argument("--h", type=float, nargs="+", default=[1.0], help="curvatures: Hs = diag(h), d = len(h) (default 1)")
    p.add_argument("--sigma", type=float, default=1.0, help="noise scale: Cov(xi) = sigma^2 I (default 1)")
    p.add_argument("--theta0", type=float, default=0.0, help="start, every coordinate (default 0)")
    p.add_argument("--mu", type=float, default=0.0, help="minimizer, every coordinate (default 0)")
    p.add_argument("--T", type=int, default=1000, help="steps (default 1000)")
    p.add_argument("--chains", type=int, default=10_000, help="Monte Carlo chains (default 10000)")
    p.add_argument("--noise", default="gaussian", choices=["gaussian", "rademacher", "student-t", "minibatch"],
                   help="noise law, always with covariance sigma^2 I (default gaussian)")
    p.add_argument("--df", type=float, default=5.0, help="student-t degrees of freedom, > 2 (default 5)")
    p.add_argument("--batch-size", type=int, default=1, help="minibatch noise: batch size (default 1)")
    p.add_argument("--n-data", type=int, default=64, help="minibatch noise: dataset size (default 64)")
    p.add_argument("--times", type=int, default=25,
                   help="geometrically spaced steps recorded for the plot (default 25)")
    add_seed_argument(p)
    add_output_arguments(p)
    add_quiet_argument(p)
    p.set_defaults(func=_averaging)


def _averaging(args: argparse.Namespace) -> int:
    from gvatheory.averaging import QuadraticSGD, compare

    from ._common import emit, save_figure

    model = QuadraticSGD(Hs=args.h, mu=args.mu, sigma=args.sigma, eta=args.eta, gammas=tuple(args.gamma),
                         theta0=args.theta0, noise=args.noise, df=args.df, batch_size=args.batch_size,
                         n_data=args.n_data)
    result = compare(model, args.T, args.chains, args.seed, n_times=args.times, quiet=args.quiet)
    extra = {"max |z| (exact vs MC, want <= 4)": result.max_abs_z(),
             "eta * max(h) (SGD stable < 2)": args.eta * max(args.h)}
    emit(result.rows(), as_json=args.json,
         title=f"SGD + averaging at T={args.T}: exact vs Monte Carlo ({args.chains} chains, {args.noise} noise)",
         extra=extra)
    if args.plot:
        save_figure(result.plot(), args.plot)
    return 0
