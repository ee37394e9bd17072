r"""The measurement: continued training from a checkpoint, compared with the local model.

:func:`continue_training` runs independent chains of the optimizer from the checkpoint at a
constant learning rate and records the coordinates :math:`z = \Pi^\top(\theta - \theta_c)` of
the raw iterates and of a constant-:math:`\gamma` EMA started at the checkpoint.
:func:`variance_ratios` divides each chain's measured variance by the predicted one, per group
of directions; the chains are the independent units, and the interval is Student t over chains
on the log ratios (:func:`gvatheory.inference.mean_interval`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from gvatheory._checks import check_int, check_range
from gvatheory.inference import Interval, mean_interval

from .autodiff import flat_parameters
from .model import LocalModel

# ---------------------------------------------------------------------------- the measurement


@dataclass(frozen=True)
class Continuation:
    """Iterates of continued training, projected on a local model's coordinates.

    ``z`` and ``z_ema`` are ``(chains, steps + 1, k)`` (index 0: the checkpoint); the EMA of
    weight ``gamma`` starts at the checkpoint. ``kept_raw`` / ``kept_ema`` are the full parameter
    vectors ``(chains, len(kept_steps), d)`` (float32) at ``kept_steps``.
    """

    z: np.ndarray
    z_ema: np.ndarray
    gamma: float
    kept_steps: np.ndarray
    kept_raw: np.ndarray
    kept_ema: np.ndarray
    seconds: float


def continue_training(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    local: LocalModel,
    *,
    steps: int,
    chains: int = 1,
    seed: int = 0,
    keep: Sequence[int] = (),
    quiet: bool = True,
) -> Continuation:
    """Continue training ``model`` with ``optimizer`` (its current learning rate, held constant)
    on minibatches of ``local.batch_size`` pairs of ``(x, y)`` drawn with replacement, for
    ``steps`` steps in each of ``chains`` independent chains (minibatch seeds spawned from
    ``seed``), all from the current state; record the coordinates of the raw iterates and of an
    EMA of weight ``local.gamma``, and the full vectors at the steps ``keep``. The model and
    optimizer are left as they were."""
    from tqdm.auto import tqdm

    steps = check_int("steps", steps, 1)
    chains = check_int("chains", chains, 1)
    keep = sorted({check_int("keep", int(t), 0, steps) for t in keep})
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    theta_c = flat_parameters(model).double()
    Pi = torch.as_tensor(local.coords, dtype=torch.float64)
    k, d = local.k, theta_c.numel()
    Z = np.empty((chains, steps + 1, k))
    E = np.empty((chains, steps + 1, k))
    kept_raw = np.empty((chains, len(keep), d), np.float32)
    kept_ema = np.empty((chains, len(keep), d), np.float32)
    start = time.perf_counter()
    seeds = np.random.SeedSequence(seed).spawn(chains)
    bar = tqdm(total=chains * steps, desc="continuation", unit="step", disable=quiet)
    try:
        for r in range(chains):
            model.load_state_dict(model_state)
            optimizer.load_state_dict(opt_state)
            gen = torch.Generator().manual_seed(int(seeds[r].generate_state(1)[0]))
            ema = theta_c.clone()
            for t in range(steps + 1):
                theta = flat_parameters(model).double()
                if t > 0:
                    ema.mul_(1.0 - local.gamma).add_(theta, alpha=local.gamma)
                Z[r, t] = ((theta - theta_c) @ Pi).numpy()
                E[r, t] = ((ema - theta_c) @ Pi).numpy()
                if t in keep:
                    j = keep.index(t)
                    kept_raw[r, j], kept_ema[r, j] = theta.numpy(), ema.numpy()
                if t == steps:
                    break
                idx = torch.randint(len(x), (local.batch_size,), generator=gen)
                optimizer.zero_grad(set_to_none=True)
                loss = ((model(x[idx]) - y[idx]) ** 2).mean()
                loss.backward()
                if not math.isfinite(float(loss.detach())):
                    raise ValueError(f"the loss became {float(loss.detach())} at continuation step {t} of chain {r}")
                optimizer.step()
                bar.update(1)
    finally:
        bar.close()
        model.load_state_dict(model_state)
        optimizer.load_state_dict(opt_state)
    return Continuation(
        Z, E, local.gamma, np.array(keep, dtype=np.int64), kept_raw, kept_ema, time.perf_counter() - start
    )


@dataclass(frozen=True)
class RatioCI:
    """Measured / predicted variance of one group of directions: one ratio per chain, and their
    geometric mean with its t interval over chains (``interval``)."""

    group: tuple[int, int]  # directions [first, last), 0-based
    predicted: float  # sum of the group's predicted variances
    per_chain: np.ndarray  # (chains,) each chain's measured variance (summed over the group) / predicted
    interval: Interval  # mean_interval(per_chain, log=True)

    @property
    def ratio(self) -> float:
        return self.interval.estimate

    @property
    def low(self) -> float:
        return self.interval.low

    @property
    def high(self) -> float:
        return self.interval.high

    @property
    def measured(self) -> float:
        """The geometric mean over chains of the measured variance."""
        return self.ratio * self.predicted


def variance_ratios(
    z: np.ndarray,
    predicted_var: np.ndarray,
    groups: Sequence[tuple[int, int]],
    *,
    burn_in: int,
    level: float = 0.95,
) -> list[RatioCI]:
    """Measured over predicted variance per group of coordinates, one ratio per chain.

    ``z`` (chains, T, k) are iterates' coordinates in independent chains. After ``burn_in`` steps,
    a chain's measured variance is its mean square deviation from the mean of all chains: the
    chains share the stationary mean, and a chain's own mean would absorb its slow fluctuations
    (for an EMA of weight gamma about ``2 / (gamma T)`` of its variance). The interval is Student t
    over chains on the log ratios (:func:`gvatheory.inference.mean_interval` with ``log=True``)."""
    z = np.asarray(z, dtype=float)
    if z.ndim != 3:
        raise ValueError(f"z must have shape (chains, T, k), got {z.shape}")
    burn_in = check_int("burn_in", burn_in, 0, z.shape[1] - 2)
    pred = check_range("predicted_var", predicted_var, 0.0, math.inf, low_open=True, high_open=True)
    if pred.shape != (z.shape[-1],):
        raise ValueError(f"predicted_var must have shape ({z.shape[-1]},), one per coordinate of z, got {pred.shape}")
    tail = z[:, burn_in:]
    per_chain = ((tail - tail.mean(axis=(0, 1))) ** 2).mean(axis=1)  # (chains, k)
    out = []
    for lo_i, hi_i in groups:
        if not 0 <= lo_i < hi_i <= z.shape[-1]:
            raise ValueError(f"group ({lo_i}, {hi_i}) is out of range: need 0 <= first < last <= {z.shape[-1]}")
        p = float(pred[lo_i:hi_i].sum())
        ratios = per_chain[:, lo_i:hi_i].sum(axis=1) / p
        if not (ratios > 0).all():
            raise ValueError(f"a chain has zero variance in directions [{lo_i}, {hi_i}): its iterates did not move")
        out.append(RatioCI((lo_i, hi_i), p, ratios, mean_interval(ratios, level=level, log=True)))
    return out
