"""``gva theory linear-gva``: gradient variance amplification in a linear closed loop (paper Sec. 3)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from gvatheory.config import Config, option

from .theory import add_command


@dataclass(frozen=True)
class LinearGVACommand(Config):
    """GVA in a linear system: SGD + EMA on BC of a linear expert, exact J_H, Lyapunov predictions."""

    rho: float = option(0.995, "closed-loop spectral radius of the expert", low=0.0, high=1.0)
    dt: float = option(0.1, "time step of the double integrator", low=0.0, low_open=True)
    N: int = option(50, "fixed demonstrations (ignored with --fresh)", low=1)
    fresh: bool = option(False, "draw fresh demonstrations at every SGD step instead of N fixed ones")
    traj_len: int = option(100, "demonstration length T", low=1)
    label_noise: float = option(0.1, "sd of the noise on recorded actions", low=0.0)
    misspec: float = option(0.0, "amplitude of the expert's alternating gain", low=0.0)
    eta: float = option(0.01, "SGD step size; SGD is stable for eta * lambda_max(H_bc) < 2", low=0.0, low_open=True)
    batch_size: int = option(8, "minibatch size", low=1)
    gamma: float = option(0.01, "EMA weight on the newest iterate", low=0.0, high=1.0, low_open=True)
    steps: int = option(4000, "SGD steps", low=1)
    chains: int = option(200, "SGD chains (independent seeds)", low=2)
    H: tuple[int, ...] = option((50, 100, 200, 400, 800), "horizons", low=1)
    record_every: int = option(1, "evaluate J_H and loss_bc exactly every this many steps", low=1)
    data_seed: int = option(0, "seed of the fixed demonstrations", low=0)
    seed: int = option(0, "random seed", low=0)


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "linear-gva",
        LinearGVACommand,
        _linear_gva,
        description=(
            "Behavior cloning of a double-integrator expert (closed-loop poles at rho) by minibatch SGD with an EMA. "
            "Prints the sd across SGD chains of the exact quadratic cost J_H of the final iterate, raw vs EMA, next to "
            "the delta-method prediction from the Lyapunov covariance, and the sd/mean of the BC loss."
        ),
    )


def _linear_gva(cfg: LinearGVACommand, args: argparse.Namespace) -> int:
    import numpy as np

    from gvatheory.linear_gva import LinearBC, double_integrator, gva_experiment
    from validation.report import save_figure

    from ._common import emit

    A, B, K = double_integrator(cfg.rho, cfg.dt)
    problem = LinearBC(
        A,
        B,
        K,
        label_noise=cfg.label_noise,
        misspec=cfg.misspec,
        traj_len=cfg.traj_len,
        N=None if cfg.fresh else cfg.N,
        data_seed=cfg.data_seed,
    )
    exp = gva_experiment(
        problem,
        eta=cfg.eta,
        gamma=cfg.gamma,
        batch_size=cfg.batch_size,
        steps=cfg.steps,
        chains=cfg.chains,
        H=cfg.H,
        seed=cfg.seed,
        record_every=cfg.record_every,
        quiet=args.quiet,
    )
    finite = lambda v: np.where(np.isfinite(v), v, np.inf)  # noqa: E731 (diverged chains: inf, not NaN)
    dev = exp.run.K[:, -1].reshape(cfg.chains, -1) - exp.moments.mean_raw.reshape(-1)
    dev_ema = exp.run.ema[:, -1].reshape(cfg.chains, -1) - exp.moments.mean_ema.reshape(-1)
    extra = {
        "eta * largest Hessian eigenvalue (SGD stable < 2)": cfg.eta * np.linalg.eigvalsh(problem.hessian()).max(),
        "loss_bc sd/mean raw": exp.loss_cv("raw"),
        "loss_bc sd/mean ema": exp.loss_cv("ema"),
        "Var K (MC) raw": finite(np.var(dev, axis=0)),
        "Var K (Lyapunov) raw": np.diag(exp.moments.cov_raw),
        "Var K (MC) ema": finite(np.var(dev_ema, axis=0)),
        "Var K (Lyapunov) ema": np.diag(exp.moments.cov_ema),
        "diverged chains": int(exp.run.diverged.sum()),
    }
    emit(
        exp.rows(),
        as_json=args.json,
        title="GVA in a linear closed loop: sd of J_H across SGD seeds, raw vs EMA",
        extra=extra,
    )
    if args.plot:
        from gvatheory.plots import plot_linear_gva

        save_figure(plot_linear_gva(exp), args.plot)
    return 0
