"""``gva theory cliff`` and ``gva theory prop41``: the cliff problem (paper Eq. 4.2, Prop. 4.1)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_output_arguments, add_quiet_argument, add_seed_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cliff",
        help="cliff problem (Eq. 4.2): exact vs Monte Carlo loss and reward gap of SGD and its EMA",
        description="SGD on loss_bc = |theta-mu|^2/2 with gradient noise sigma, step eta, and an EMA with "
        "weight gamma, judged by the cliff reward J = -|theta-mu|^2 within eps of mu and -C outside. Prints "
        "E[loss_bc] and E[J* - J] of theta_T and ema_T, exact (Gaussian formulas) next to Monte Carlo.",
    )
    p.add_argument("--mu", type=float, default=0.0, help="target mu (every coordinate) (default 0)")
    p.add_argument("--d", type=int, default=1, help="dimension (default 1)")
    p.add_argument("--eps", type=float, default=0.1, help="cliff radius eps > 0 (default 0.1)")
    p.add_argument("--C", type=float, default=1.0, help="cliff drop C >= eps^2 (default 1)")
    p.add_argument("--eta", type=float, default=0.1, help="SGD step size in (0, 2) (default 0.1)")
    p.add_argument("--gamma", type=float, default=1e-3, help="EMA weight in (0, 1] (default 1e-3)")
    p.add_argument("--sigma", type=float, default=1.0, help="gradient-noise scale >= 0 (default 1)")
    p.add_argument("--theta0", type=float, default=None, help="start (every coordinate) (default mu)")
    p.add_argument("--T", type=int, default=2000, help="steps T >= 1 (default 2000)")
    p.add_argument("--chains", type=int, default=20000, help="Monte Carlo chains >= 2 (default 20000)")
    add_seed_argument(p)
    add_output_arguments(p)
    add_quiet_argument(p)
    p.set_defaults(func=_cliff)

    q = subparsers.add_parser(
        "prop41",
        help="Prop. 4.1: test the text on a wide grid, then verify a precise version exactly",
        description="Tests the informal Prop. 4.1 as written (E loss_bc(theta) = Theta(eta), E loss_bc(ema) = "
        "Theta(gamma); eta > c1 eps and gamma log(C/gamma) <= c2 eps => gap(theta) >= C/2 and gap(ema) = "
        "O(gamma)) over a grid of eta, gamma, eps, C, sigma, reports the constants found and the "
        "counterexamples, and checks the precise version (docs/cliff.md) at every grid point from exact "
        "Gaussian gaps. --plot PATH writes PATH (gaps vs eta and gamma with both thresholds), "
        "PATH-stem_text and PATH-stem_precise.",
    )
    q.add_argument("--quick", action="store_true", help="a coarser grid")
    q.add_argument("--eps", type=float, default=0.1, help="cliff radius of the plotted curves (default 0.1)")
    q.add_argument("--C", type=float, default=1.0, help="cliff drop of the plotted curves (default 1)")
    q.add_argument("--sigma", type=float, default=1.0, help="noise scale of the plotted curves (default 1)")
    q.add_argument("--eta", type=float, default=0.1, help="eta of the gap-vs-gamma curve (default 0.1)")
    q.add_argument("--gamma", type=float, default=1e-3, help="gamma of the gap-vs-eta curve (default 1e-3)")
    q.add_argument("--c1", type=float, default=1.0, help="text constant c1 drawn on the figure (default 1)")
    q.add_argument("--c2", type=float, default=1.0, help="text constant c2 drawn on the figure (default 1)")
    add_output_arguments(q)
    q.set_defaults(func=_prop41)


def _cliff(args: argparse.Namespace) -> int:
    from gvatheory._checks import check_int
    from gvatheory.cliff import CliffProblem, agreement_z, gap_curves, sgd_monte_carlo

    from ._common import emit, save_figure

    T = check_int("T", args.T, minimum=1)
    check_int("chains", args.chains, minimum=2)
    d = check_int("d", args.d, minimum=1)
    problem = CliffProblem(mu=args.mu if d == 1 else [args.mu] * d, eps=args.eps, C=args.C)
    theta0 = args.mu if args.theta0 is None else args.theta0
    theta0 = theta0 if d == 1 else [theta0] * d
    exact = problem.sgd(eta=args.eta, gamma=args.gamma, sigma=args.sigma, T=T, theta0=theta0)
    mc = sgd_monte_carlo(problem, eta=args.eta, gamma=args.gamma, sigma=args.sigma, T=T, n_chains=args.chains,
                         seed=args.seed, theta0=theta0, progress=not args.quiet)
    rows = []
    for iterate in ("theta", "ema"):
        ex_i, mc_i = getattr(exact, iterate), getattr(mc, iterate)
        z = agreement_z(mc_i, ex_i)
        for quantity in ("loss_bc", "gap", "p_off"):
            est = getattr(mc_i, quantity)
            rows.append({"iterate": f"{iterate}_T", "quantity": {"gap": "E[J*-J]", "loss_bc": "E[loss_bc]",
                                                                 "p_off": "P(off cliff)"}[quantity],
                         "exact": getattr(ex_i, quantity), "mc": est.mean, "se": est.se, "z": z[quantity]})
    worst = max(abs(r["z"]) for r in rows)
    emit(rows, as_json=args.json, title=f"cliff problem: mu={args.mu:g}, d={d}, eps={args.eps:g}, C={args.C:g}, "
         f"eta={args.eta:g}, gamma={args.gamma:g}, sigma={args.sigma:g}, T={T}, {args.chains} chains, seed {args.seed}",
         extra={"max |z|": worst, "exact within 4 SE": worst <= 4.0,
                "note": "z of P(off cliff) uses the exact law's binomial SE sqrt(p(1-p)/n)"})
    if args.plot:
        save_figure(gap_curves(eps=args.eps, C=args.C, sigma=args.sigma, eta0=args.eta, gamma0=args.gamma, T=T,
                               d=d).plot(), args.plot)
    return 0


def _prop41(args: argparse.Namespace) -> int:
    import math

    from gvatheory.cliff import (C1_FINITE, C1_STATIONARY, default_grid, gap_curves, prop41_as_written,
                                 prop41_precise)

    from ._common import emit, save_figure

    grid = default_grid(quick=args.quick)
    text = prop41_as_written(grid)
    precise = prop41_precise(grid)
    found, holds = text.findings, precise.holds
    rows = []
    for s, lt, le, c1 in zip(text.sigma, text.loss_theta_ratio, text.loss_ema_ratio, text.c1_needed):
        rows.append({"sigma": s, "E loss(theta)/eta min": lt[0], "max": lt[1], "E loss(ema)/gamma min": le[0],
                     "max ": le[1], "c1 needed": c1})
    lf, tf, fam, p = text.loss_family, text.theta_family, text.ema_ratio, precise
    T_list = ["inf" if t is None else t for t in grid.T]
    extra = {
        "grid points (as written, d=1, stationary)": int(grid.points()["eta"].size),
        "text: E loss(theta) = Theta(eta) with absolute constants": found["loss_theta"],
        "text: E loss(ema) = Theta(gamma)": found["loss_ema"],
        "counterexample (loss of ema)": f"gamma=0.1, sigma=1, eta {lf['eta'][0]:g} -> {lf['eta'][-1]:g}: "
                                        f"E loss(ema)/gamma {lf['ratio'][0]:.3g} -> {lf['ratio'][-1]:.3g}",
        "text: gap(theta) >= C/2 for an absolute c1": found["sgd_gap"],
        "counterexample (gap of theta)": f"for every c1 in [{tf['c1'].min():g}, {tf['c1'].max():g}]: eta=0.5 > c1 eps "
                                         f"with eps=0.25/c1, sigma=eps/2 gives gap/C <= {tf['gap_over_C'].max():.3g}",
        "text: gap(ema) = O(gamma) for some c2": found["ema_gap"],
        "counterexample (gap of ema)": f"C=1, sigma=1, eta=0.5, gamma at the text's boundary: gap(ema)/gamma "
                                       f"grows from {fam[:, 0].min():.3g} (eps={text.ema_eps[0]:g}) to "
                                       f"{fam[:, -1].min():.3g} (eps={text.ema_eps[-1]:g}) for every c2 in "
                                       f"{list(text.c2_values)}",
        f"precise grid points (d in {list(grid.d)}, T in {T_list})": p.n_points,
        "precise: loss(theta)/(d sigma^2 eta) in [1/4, 1/2]":
            f"{holds['loss_theta']} (range {p.loss_theta[0]:.4g}..{p.loss_theta[1]:.4g})",
        "precise: loss(ema)/(d sigma^2 min(eta,gamma)) in [1/8, 1/2]":
            f"{holds['loss_ema']} (range {p.loss_ema[0]:.4g}..{p.loss_ema[1]:.4g})",
        f"precise: sigma^2 eta >= {C1_STATIONARY:.3f} eps^2 (T=inf) or >= {C1_FINITE:.3f} eps^2 with eta T >= 1/2 "
        "=> gap(theta) >= C/2":
            f"{holds['sgd_gap']} (min gap/C {p.sgd_gap:.4g} on {p.sgd_active} points; "
            f"grid's last failure at sigma^2 eta/eps^2 = {p.c1_empirical:.3g})",
        "precise: sigma^2 gamma (2d + 3 log+(C/(sigma^2 gamma))) <= eps^2 => gap(ema) <= (d+1) sigma^2 gamma":
            f"{holds['ema_gap']} (max ratio {p.ema_gap:.4g} on {p.ema_active} points)",
        "precise version holds on the grid": all(holds.values()),
    }
    emit(rows, as_json=args.json, title="Prop. 4.1 as written (per sigma; c1 needed = smallest c1 with "
         "eta > c1 eps => gap(theta) >= C/2 on the grid)", extra=extra)
    if args.plot:
        path = Path(args.plot)
        save_figure(gap_curves(eps=args.eps, C=args.C, sigma=args.sigma, eta0=args.eta, gamma0=args.gamma,
                               c1=args.c1, c2=args.c2).plot(), path)
        save_figure(text.plot(), path.with_name(f"{path.stem}_text{path.suffix}"))
        save_figure(precise.plot(), path.with_name(f"{path.stem}_precise{path.suffix}"))
    return 0 if all(holds.values()) and not math.isnan(precise.sgd_gap) else 1
