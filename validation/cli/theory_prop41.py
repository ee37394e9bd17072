"""``gva theory prop41``: paper Prop. 4.1 on the cliff problem, as written and in a precise version."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from gvatheory.config import Config, option

from .theory import add_command


@dataclass(frozen=True)
class Prop41Command(Config):
    """Prop. 4.1: test the text on a wide grid, then verify a precise version exactly."""

    quick: bool = option(False, "a coarser grid")
    eps: float = option(0.1, "cliff radius of the plotted curves", low=0.0, low_open=True)
    C: float = option(1.0, "cliff drop of the plotted curves, C >= eps^2", low=0.0, low_open=True)
    sigma: float = option(1.0, "noise scale of the plotted curves", low=0.0)
    eta: float = option(0.1, "eta of the gap-vs-gamma curve", low=0.0, high=2.0, low_open=True, high_open=True)
    gamma: float = option(1e-3, "gamma of the gap-vs-eta curve", low=0.0, high=1.0, low_open=True)
    c1: float = option(1.0, "text constant c1 drawn on the figure", low=0.0, low_open=True)
    c2: float = option(1.0, "text constant c2 drawn on the figure", low=0.0, low_open=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "prop41",
        Prop41Command,
        _prop41,
        description=(
            "Tests the informal Prop. 4.1 as written (E loss_bc(theta) = Theta(eta), E loss_bc(ema) = Theta(gamma); "
            "eta > c1 eps and gamma log(C/gamma) <= c2 eps => gap(theta) >= C/2 and gap(ema) = O(gamma)) over a grid of "
            "eta, gamma, eps, C, sigma, reports the constants found and the counterexamples, and checks the precise "
            "version (docs/cliff.md) at every grid point from exact Gaussian gaps. --plot PATH writes PATH (gaps vs eta "
            "and gamma with both thresholds), PATH-stem_text and PATH-stem_precise."
        ),
    )


def _prop41(cfg: Prop41Command, args: argparse.Namespace) -> int:
    import math

    from gvatheory.prop41 import C1_FINITE, C1_STATIONARY, default_grid, gap_curves, prop41_as_written, prop41_precise
    from validation.report import save_figure

    from ._common import emit

    # The figure's curves are computed (and their settings checked) whether or not --plot is given.
    curves = gap_curves(eps=cfg.eps, C=cfg.C, sigma=cfg.sigma, eta0=cfg.eta, gamma0=cfg.gamma, c1=cfg.c1, c2=cfg.c2)
    grid = default_grid(quick=cfg.quick)
    text = prop41_as_written(grid)
    precise = prop41_precise(grid)
    found, holds = text.findings, precise.holds
    rows = []
    for s, lt, le, c1 in zip(text.sigma, text.loss_theta_ratio, text.loss_ema_ratio, text.c1_needed):
        rows.append(
            {
                "sigma": s,
                "E loss(theta)/eta min": lt[0],
                "max": lt[1],
                "E loss(ema)/gamma min": le[0],
                "max ": le[1],
                "c1 needed": c1,
            }
        )
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
        "precise: loss(theta)/(d sigma^2 eta) in [1/4, 1/2]": f"{holds['loss_theta']} (range {p.loss_theta[0]:.4g}..{p.loss_theta[1]:.4g})",
        "precise: loss(ema)/(d sigma^2 min(eta,gamma)) in [1/8, 1/2]": f"{holds['loss_ema']} (range {p.loss_ema[0]:.4g}..{p.loss_ema[1]:.4g})",
        f"precise: sigma^2 eta >= {C1_STATIONARY:.3f} eps^2 (T=inf) or >= {C1_FINITE:.3f} eps^2 with eta T >= 1/2 "
        "=> gap(theta) >= C/2": f"{holds['sgd_gap']} (min gap/C {p.sgd_gap:.4g} on {p.sgd_active} points; "
        f"grid's last failure at sigma^2 eta/eps^2 = {p.c1_empirical:.3g})",
        "precise: sigma^2 gamma (2d + 3 log+(C/(sigma^2 gamma))) <= eps^2 => gap(ema) <= (d+1) sigma^2 gamma": f"{holds['ema_gap']} (max ratio {p.ema_gap:.4g} on {p.ema_active} points)",
        "precise version holds on the grid": all(holds.values()),
    }
    emit(
        rows,
        as_json=args.json,
        title="Prop. 4.1 as written (per sigma; c1 needed = smallest c1 with "
        "eta > c1 eps => gap(theta) >= C/2 on the grid)",
        extra=extra,
    )
    if args.plot:
        path = Path(args.plot)
        from gvatheory.plots import plot_gap_curves, plot_prop41_as_written, plot_prop41_precise

        save_figure(plot_gap_curves(curves), path)
        save_figure(plot_prop41_as_written(text), path.with_name(f"{path.stem}_text{path.suffix}"))
        save_figure(plot_prop41_precise(precise), path.with_name(f"{path.stem}_precise{path.suffix}"))
    return 0 if all(holds.values()) and not math.isnan(precise.sgd_gap) else 1
