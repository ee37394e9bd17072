"""``gva theory cliff``: the cliff problem (paper Eq. 4.2), exact gaps of SGD and its EMA next to Monte Carlo."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from gvatheory.config import Config, option

from .theory import add_command

CHAIN_STEPS_PER_SECOND = 1e8  # the scalar SGD + EMA kernel on one core of the reference 2-core machine


@dataclass(frozen=True)
class CliffCommand(Config):
    """Cliff problem (Eq. 4.2): exact vs Monte Carlo loss and reward gap of SGD and its EMA."""

    mu: float = option(0.0, "target mu, every coordinate")
    d: int = option(1, "dimension", low=1)
    eps: float = option(0.1, "cliff radius", low=0.0, low_open=True)
    C: float = option(1.0, "cliff drop, C >= eps^2", low=0.0, low_open=True)
    eta: float = option(0.1, "SGD step size", low=0.0, high=2.0, low_open=True, high_open=True)
    gamma: float = option(1e-3, "EMA weight", low=0.0, high=1.0, low_open=True)
    sigma: float = option(1.0, "gradient-noise scale", low=0.0)
    theta0: float | None = option(None, "start, every coordinate (none: start at mu)")
    steps: int = option(2000, "SGD steps T", low=1)
    chains: int = option(20_000, "Monte Carlo chains", low=2)
    seed: int = option(0, "random seed", low=0)
    max_chain_steps: float = option(
        1e11,
        f"refuse more Monte Carlo work than this (chains x steps x d; ~{CHAIN_STEPS_PER_SECOND:.2g} per second per core)",
        low=1.0,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "cliff",
        CliffCommand,
        _cliff,
        description=(
            "SGD on loss_bc = |theta-mu|^2/2 with gradient noise sigma, step eta, and an EMA with weight gamma, judged "
            "by the cliff reward J = -|theta-mu|^2 within eps of mu and -C outside. Prints E[loss_bc] and E[J* - J] of "
            "theta_T and ema_T, exact (Gaussian formulas) next to Monte Carlo. --plot PATH draws the exact gaps "
            "against eta and gamma."
        ),
    )


def _cliff(cfg: CliffCommand, args: argparse.Namespace) -> int:
    from gvatheory._checks import check_memory
    from gvatheory.cliff import CliffProblem, agreement_z, sgd_monte_carlo
    from validation.report import save_figure

    from ._common import check_work, emit

    d, T = cfg.d, cfg.steps
    check_memory("d", d, 64)  # the problem's mu and start, one number per coordinate, as built below
    check_work(
        float(cfg.chains) * T * d,
        what=f"Monte Carlo of chains={cfg.chains} x steps={T} x d={d}",
        unit="chain-steps",
        limit=cfg.max_chain_steps,
        flag="--max-chain-steps",
        rate=CHAIN_STEPS_PER_SECOND,
        announce=10 * CHAIN_STEPS_PER_SECOND,
        quiet=args.quiet,
    )
    problem = CliffProblem(mu=cfg.mu if d == 1 else [cfg.mu] * d, eps=cfg.eps, C=cfg.C)
    theta0 = cfg.mu if cfg.theta0 is None else cfg.theta0
    theta0 = theta0 if d == 1 else [theta0] * d
    exact = problem.sgd(eta=cfg.eta, gamma=cfg.gamma, sigma=cfg.sigma, T=T, theta0=theta0)
    mc = sgd_monte_carlo(
        problem,
        eta=cfg.eta,
        gamma=cfg.gamma,
        sigma=cfg.sigma,
        T=T,
        chains=cfg.chains,
        seed=cfg.seed,
        theta0=theta0,
        progress=not args.quiet,
    )
    rows = []
    for iterate in ("theta", "ema"):
        ex_i, mc_i = getattr(exact, iterate), getattr(mc, iterate)
        z = agreement_z(mc_i, ex_i)
        for quantity in ("loss_bc", "gap", "p_off"):
            est = getattr(mc_i, quantity)
            rows.append(
                {
                    "iterate": f"{iterate}_T",
                    "quantity": {"gap": "E[J*-J]", "loss_bc": "E[loss_bc]", "p_off": "P(off cliff)"}[quantity],
                    "exact": getattr(ex_i, quantity),
                    "mc": est.mean,
                    "se": est.se,
                    "z": z[quantity],
                }
            )
    worst = max(abs(r["z"]) for r in rows)
    emit(
        rows,
        as_json=args.json,
        title=f"cliff problem: mu={cfg.mu:g}, d={d}, eps={cfg.eps:g}, C={cfg.C:g}, "
        f"eta={cfg.eta:g}, gamma={cfg.gamma:g}, sigma={cfg.sigma:g}, T={T}, {cfg.chains} chains, seed {cfg.seed}",
        extra={
            "max |z|": worst,
            "exact within 4 SE": worst <= 4.0,
            "note": "z of P(off cliff) uses the exact law's binomial SE sqrt(p(1-p)/n)",
        },
    )
    if args.plot:
        from gvatheory.plots import plot_gap_curves
        from gvatheory.prop41 import gap_curves

        save_figure(
            plot_gap_curves(
                gap_curves(eps=cfg.eps, C=cfg.C, sigma=cfg.sigma, eta0=cfg.eta, gamma0=cfg.gamma, T=T, d=d)
            ),
            args.plot,
        )
    return 0
