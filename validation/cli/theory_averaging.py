"""``gva theory averaging``: SGD with iterate averaging on a quadratic, exact moments next to Monte Carlo."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from gvatheory.config import Config, option

from .theory import add_command

CHAIN_STEPS_PER_SECOND = 2.5e7  # the vector SGD + EMA kernels on one core of the reference 2-core machine

#: The noise laws of :class:`gvatheory.averaging.QuadraticSGD` (``NOISE_KINDS`` there; kept here
#: so that ``--help`` does not import numba; a test checks that the two agree).
NOISE_KINDS = ("gaussian", "rademacher", "student-t", "minibatch")


@dataclass(frozen=True)
class AveragingCommand(Config):
    """SGD + EMAs on a quadratic: exact Gaussian moments vs Monte Carlo, stationary laws."""

    eta: float = option(0.1, "step size; SGD is stable for eta * max(h) < 2", low=0.0, low_open=True)
    gamma: tuple[float, ...] = option((0.01,), "EMA weights, one EMA each", low=0.0, high=1.0, low_open=True)
    h: tuple[float, ...] = option((1.0,), "curvatures: Hs = diag(h), d = len(h)", low=0.0, low_open=True)
    sigma: float = option(1.0, "noise scale: Cov(xi) = sigma^2 I", low=0.0)
    theta0: float = option(0.0, "start, every coordinate")
    mu: float = option(0.0, "minimizer, every coordinate")
    steps: int = option(1000, "SGD steps T", low=1)
    chains: int = option(10_000, "Monte Carlo chains", low=2)
    noise: str = option("gaussian", "noise law, always with covariance sigma^2 I", choices=NOISE_KINDS)
    df: float = option(5.0, "student-t degrees of freedom", low=2.0, low_open=True)
    batch_size: int = option(1, "minibatch noise: batch size", low=1)
    n_data: int = option(64, "minibatch noise: dataset size (> d)", low=2)
    n_times: int = option(25, "geometrically spaced steps recorded for the plot", low=2)
    seed: int = option(0, "random seed", low=0)
    max_chain_steps: float = option(
        1e11,
        f"refuse more Monte Carlo work than this (chains x steps x d x EMAs; ~{CHAIN_STEPS_PER_SECOND:.2g} per second per core)",
        low=1.0,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "averaging",
        AveragingCommand,
        _averaging,
        description=(
            "SGD theta <- theta - eta (Hs (theta - mu) + sigma xi) with Hs = diag(h) and one EMA per --gamma value "
            "(ema <- (1 - gamma) ema + gamma theta, ema_0 = theta_0). Prints mean and variance of theta_T and of each "
            "EMA: exact (moment recursion), Monte Carlo with SE and z = (MC - exact)/SE, and the stationary value "
            "(discrete Lyapunov equation)."
        ),
    )


def _averaging(cfg: AveragingCommand, args: argparse.Namespace) -> int:
    from gvatheory.averaging import QuadraticSGD, compare
    from validation.report import save_figure

    from ._common import check_work, emit

    check_work(
        float(cfg.chains) * cfg.steps * len(cfg.h) * len(cfg.gamma),
        what=f"Monte Carlo of chains={cfg.chains} x steps={cfg.steps} x d={len(cfg.h)} x {len(cfg.gamma)} EMA(s)",
        unit="chain-steps",
        limit=cfg.max_chain_steps,
        flag="--max-chain-steps",
        rate=CHAIN_STEPS_PER_SECOND,
        announce=10 * CHAIN_STEPS_PER_SECOND,
        quiet=args.quiet,
    )
    model = QuadraticSGD(
        Hs=cfg.h,
        mu=cfg.mu,
        sigma=cfg.sigma,
        eta=cfg.eta,
        gammas=cfg.gamma,
        theta0=cfg.theta0,
        noise=cfg.noise,
        df=cfg.df,
        batch_size=cfg.batch_size,
        n_data=cfg.n_data,
    )
    result = compare(model, cfg.steps, cfg.chains, cfg.seed, n_times=cfg.n_times, quiet=args.quiet)
    extra = {
        "max |z| (exact vs MC, want <= 4)": result.max_abs_z(),
        "eta * max(h) (SGD stable < 2)": cfg.eta * max(cfg.h),
    }
    emit(
        result.rows(),
        as_json=args.json,
        title=f"SGD + averaging at T={cfg.steps}: exact vs Monte Carlo ({cfg.chains} chains, {cfg.noise} noise)",
        extra=extra,
    )
    if args.plot:
        from gvatheory.plots import plot_averaging

        save_figure(plot_averaging(result), args.plot)
    return 0
