"""The local model on ``gva bc train`` run directories: load a checkpoint, fit, continue, roll out.

:func:`load_checkpoint` rebuilds a run's model and optimizer at a checkpoint with the learning
rate of that step; :func:`fit_bc` and :func:`continue_bc` apply :func:`fit_local_model` and
:func:`continue_training` to its training pairs; :func:`rollout_vectors` evaluates parameter
vectors (e.g. :meth:`LocalModel.parameters_of` of sampled coordinates) with the batched evaluator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gvatheory._checks import check_int

from ...rundir import RunDir, load_checked
from .autodiff import _shapes, unflatten
from .continuation import Continuation, continue_training
from .model import LocalModel, fit_local_model

# ---------------------------------------------------------------------------- behavior-cloning runs


@dataclass
class LoadedCheckpoint:
    """A checkpoint of a ``gva bc train`` run, ready to fit and continue: ``model`` and
    ``optimizer`` in the checkpoint's state with the learning rate of step ``step`` (held constant
    from here), ``data`` the training pairs in use, ``expert_return`` from the run's log."""

    run: Path
    step: int
    cfg: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: Any
    eta: float
    expert_return: float

    @property
    def batch_size(self) -> int:
        """Pairs per optimizer step (``batch_size * grad_accum``: accumulated minibatches average)."""
        return self.cfg.batch_size * self.cfg.grad_accum

    def run_gamma(self) -> float:
        """The weight ``gamma_t`` of the run's EMA at this step (``ema`` or ``constant-ema``, burn-in
        included); the local model's EMA is a plain EMA, so other stabilizers need an explicit gamma."""
        from ...stabilizers import weight_schedule

        cfg = self.cfg
        if cfg.stabilizer not in ("ema", "constant-ema"):
            raise ValueError(
                f"gamma=None needs a run averaged by an EMA (stabilizer ema or constant-ema), but {self.run} "
                f"uses stabilizer={cfg.stabilizer!r}: give gamma, the EMA weight in (0, 1]"
            )
        return float(weight_schedule(cfg)(self.step))


def load_checkpoint(run: Path | RunDir, step: int = -1, *, threads: int = 0) -> LoadedCheckpoint:
    """Load checkpoint ``step`` (``-1``: the newest) of a BC run directory. Settings outside the
    local model (gradient clipping, input noise, dropout, weight decay) raise ``ValueError``."""
    from ...training import make_optimizer
    from ..run import open_run

    opened = open_run(run, step, threads=threads)
    run, cfg, step, data, model, state = opened.run, opened.cfg, opened.step, opened.data, opened.model, opened.state
    for name, bad in (
        ("grad_clip", cfg.grad_clip > 0),
        ("obs_noise", cfg.obs_noise > 0),
        ("dropout", cfg.dropout > 0),
        ("weight_decay", cfg.weight_decay > 0),
    ):
        if bad:
            raise ValueError(f"{name}={getattr(cfg, name)} is out of range for the local model: it needs {name}=0")
    source = f"{run.checkpoint_dir}/step_{step:09d}.pt"
    model.train()
    optimizer = make_optimizer(cfg, model)
    load_checked(optimizer, state.get("optimizer"), source=source, what="the optimizer")
    eta = float(cfg.lr_schedule()(step))
    if eta <= 0:
        raise ValueError(f"step={step}: the learning rate there is {eta}; the local model needs a positive one")
    for g in optimizer.param_groups:
        g["lr"] = eta
    meta = next(run.metrics("meta"), {})
    return LoadedCheckpoint(
        run.path, step, cfg, model, optimizer, data, eta, float(meta.get("expert_return", float("nan")))
    )


def fit_bc(
    ck: LoadedCheckpoint, *, k: int, gamma: float | None = None, noise_samples: int = 0, seed: int = 0
) -> LocalModel:
    """:func:`fit_local_model` on a loaded BC checkpoint (training pairs, the run's batch size,
    ``gamma`` by default the run's EMA weight at that step)."""
    gamma = ck.run_gamma() if gamma is None else gamma
    d = ck.data
    return fit_local_model(
        ck.model,
        ck.optimizer,
        d.train_x,
        d.train_y,
        batch_size=ck.batch_size,
        k=k,
        gamma=gamma,
        noise_samples=noise_samples,
        seed=seed,
    )


def continue_bc(
    ck: LoadedCheckpoint,
    local: LocalModel,
    *,
    steps: int,
    chains: int = 1,
    seed: int = 0,
    keep: Sequence[int] = (),
    quiet: bool = True,
) -> Continuation:
    """:func:`continue_training` on a loaded BC checkpoint's training pairs."""
    return continue_training(
        ck.model,
        ck.optimizer,
        ck.data.train_x,
        ck.data.train_y,
        local,
        steps=steps,
        chains=chains,
        seed=seed,
        keep=keep,
        quiet=quiet,
    )


def rollout_vectors(
    ck: LoadedCheckpoint, vectors: np.ndarray, ics, horizons: Sequence[int], *, chunk: int = 256
) -> dict[int, np.ndarray]:
    """Rollout returns of the policies with flat parameter vectors ``vectors`` (P, d) from ``ics``,
    truncated at each horizon: ``{H: (P, n_ic)}``. One batched evaluator call (up to ``chunk``
    policies) for the longest horizon; shorter ones are partial sums of its per-step rewards."""
    from ..envs import action_bounds
    from ..evaluator import rollout, stacked_policy
    from ..train import AugmentedPolicy

    cfg = ck.cfg
    horizons = sorted({check_int("horizon", int(h), 1) for h in horizons})
    shapes = _shapes(ck.model)
    low, high = action_bounds(cfg.env)
    vectors = np.asarray(vectors, dtype=np.float32)
    out: dict[int, list[np.ndarray]] = {h: [] for h in horizons}
    was = ck.model.training
    ck.model.eval()
    try:
        for i in range(0, len(vectors), chunk):
            plist = [unflatten(torch.from_numpy(v.copy()), shapes) for v in vectors[i : i + chunk]]
            policy = AugmentedPolicy(stacked_policy(ck.model, plist), cfg.history, low, high)
            res = rollout(cfg.env, ics, horizons[-1], policy, len(plist), record=True, threads=cfg.threads)
            cum = np.cumsum(res.rewards, axis=-1)  # (P, I, H)
            for h in horizons:
                out[h].append(cum[..., h - 1])
    finally:
        ck.model.train(was)
    return {h: np.concatenate(v) for h, v in out.items()}
