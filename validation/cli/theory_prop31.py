"""``gva theory prop31``: paper Prop. 3.1 in linear closed loops, exactly."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from gvatheory.config import Config, option

from .theory import add_command

# each worst case optimizes over D with restarts, every evaluation a pass over the horizon:
# measured on one core of the reference 2-core machine
HORIZON_STEPS_PER_SECOND = 2e4


@dataclass(frozen=True)
class Prop31Command(Config):
    """Prop. 3.1: small imitation loss, reward gap exponential in H*delta (exact)."""

    H: tuple[int, ...] = option((25, 50, 100, 200, 400, 800), "horizons", low=1)
    delta: tuple[float, ...] = option((0.005, 0.01, 0.02, 0.04), "perturbation sizes", low=0.0, low_open=True)
    x0: float = option(0.01, "initial state (mean)")
    x0_sd: float = option(0.0, "sd of a Gaussian initial state (0: deterministic)", low=0.0)
    s: float = option(1.0, "reward scale s", low=0.0, low_open=True)
    a: float = option(1.0, "plant a")
    b: float = option(1.0, "input gain b")
    k: float = option(0.0, "expert gain k (default 0: closed loop a + b k = 1)")
    max_steps: float = option(
        1e7,
        f"refuse more work than this (sum of H x number of delta; ~{HORIZON_STEPS_PER_SECOND:.2g} per second per core)",
        low=1.0,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "prop31",
        Prop31Command,
        _prop31,
        description=(
            "Worst-case reward gap J_H(pi*) - J_H(pi* + Delta) over linear perturbations with ||Delta||_op <= delta, "
            "for the scalar system x' = a x + b u with expert u = k x and reward exp(-x^2/(2 s^2)), all exact; fits "
            "log gap = c + kappa*H*delta + lambda*log(delta) on the pre-saturation points."
        ),
    )


def _prop31(cfg: Prop31Command, args: argparse.Namespace) -> int:
    import numpy as np

    from gvatheory.prop31 import prop31_system, prop31_table
    from validation.report import save_figure

    from ._common import check_work, emit

    check_work(
        float(sum(cfg.H)) * len(cfg.delta),
        what=f"worst cases over sum(H)={sum(cfg.H)} x {len(cfg.delta)} delta(s)",
        unit="horizon-steps",
        limit=cfg.max_steps,
        flag="--max-steps",
        rate=HORIZON_STEPS_PER_SECOND,
        announce=10 * HORIZON_STEPS_PER_SECOND,
        quiet=args.quiet,
    )
    system = prop31_system(x0=cfg.x0, s=cfg.s, a=cfg.a, b=cfg.b, k=cfg.k, x0_sd=cfg.x0_sd)
    table = prop31_table(system, cfg.H, cfg.delta)
    extra = {"worst case": "exact (scalar system)" if table.exact else "optimized lower bound"}
    fit = None
    try:
        fit = table.fit()
    except ValueError as err:  # a grid without pre-saturation points still gets its table
        extra["fit"] = f"not done: {err}"
    else:
        extra.update(
            {
                "fitted kappa": fit.kappa,
                "kappa se": fit.kappa_se,
                "fitted lambda (log delta)": fit.lam,
                "fit R^2": fit.r2,
                "points in fit": int(fit.used.sum()),
            }
        )
        if abs(cfg.a + cfg.b * cfg.k) == 1.0:
            d = table.delta[fit.used.any(axis=0)]
            extra["small-state kappa 2 log(1+|b| delta)/delta"] = float(np.mean(2 * np.log1p(abs(cfg.b) * d) / d))
    if abs(cfg.a + cfg.b * cfg.k) == 1.0 and cfg.x0 != 0:
        extra["exponential regime ends near H*delta"] = float(np.log(cfg.s / abs(cfg.x0)))
    if table.overflow.any():
        extra["overflow (reported as inf)"] = f"{int(table.overflow.sum())} of {table.overflow.size} grid points"
    emit(
        table.rows(),
        as_json=args.json,
        title="Prop. 3.1: worst-case reward gap over ||Delta||_op <= delta",
        extra=extra,
    )
    if args.plot:
        from gvatheory.plots import plot_prop31

        save_figure(plot_prop31(table, fit=fit), args.plot)
    return 0
