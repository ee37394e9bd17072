r"""Flip rate against distance in weight space: how far apart two imitators must be for a rollout's
outcome to differ (the averaging study's hypothesis 3).

At a checkpoint :math:`\theta` of a behavior-cloning run, with :math:`s` the length of the
optimizer step that produced it (:func:`gvaempirics.bc.run.last_step`: the run's own step unit),
unit directions :math:`u` of two kinds,

* ``"noise"``: minibatch-noise directions, the run's optimizer step of one minibatch gradient
  minus that of the full training-set gradient, :math:`P(g_B - g)` (:math:`P` Adam's
  preconditioner :math:`1/(\sqrt{\hat v} + \epsilon)` for Adam runs, the identity for SGD);
* ``"random"``: isotropic Gaussian directions over all parameters,

and distances :math:`r` (default :math:`10^{-4}` to :math:`10` steps, half-decades), every point
:math:`\theta + r s u` is rolled out from the run's initial conditions and horizon. Its flip rate

.. math::

    f(r) = \Pr_{u, \text{IC}}\big[\,|J_H(\theta + r s u) - J_H(\theta)| > 0.1\,J^\star\,\big]

uses the threshold of the run's flip rate between consecutive iterates
(:func:`gvaempirics.metrics.flip_rate`, :math:`J^\star` the expert's return). Its power law
:math:`f(r) \approx \min(c\,r^\beta, 1)` is fitted by binomial maximum likelihood over every
(distance, count) (:meth:`FlipCurve.fit`), zeros included, and predicts the flip rate of weights
that move :math:`m` steps per step: :math:`\min(c\,m^\beta, 1)`.

All points, the centre included, go to the batched evaluator in one call per ``memory_budget``
(:func:`compute_flip_curve`); ``batched=False`` rolls them out one weight at a time, the
reference that the tests and ``benchmarks/bench_flips.py`` compare it against.

``gva bc flips RUN`` computes, saves (``flips_step_N.json`` in the run directory) and plots it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gvatheory._checks import check_int, check_positive

from ..rundir import RunDir, atomic_write_json, finite_json

KINDS = ("noise", "random")
DEFAULT_DISTANCES: tuple[float, ...] = tuple(float(10.0**e) for e in np.arange(-4.0, 1.01, 0.5))
THRESHOLD = 0.1  # x expert return, as gvaempirics.metrics.flip_rate


@dataclass(frozen=True)
class PowerLaw:
    """``f(r) = min(c r^beta, 1)``."""

    c: float
    beta: float

    def __call__(self, r) -> np.ndarray:
        r = np.asarray(r, dtype=float)
        if self.c == 0:  # no flip was seen: the law predicts none (its exponent is undefined)
            return np.zeros_like(r)
        return np.minimum(self.c * r**self.beta, 1.0)


def fit_power_law(distances, flips, trials) -> PowerLaw:
    """Binomial maximum-likelihood fit of ``min(c r^beta, 1)`` to ``flips[j]`` of ``trials[j]`` at
    ``distances[j]`` (every distance, zeros included). With no flip at all the law is ``c = 0``."""
    from scipy.optimize import minimize

    r = np.asarray(distances, dtype=float)
    k = np.asarray(flips, dtype=float)
    n = np.asarray(trials, dtype=float)
    if r.shape != k.shape or r.shape != n.shape or r.ndim != 1 or len(r) < 2:
        raise ValueError("distances, flips and trials must be 1-D of one length >= 2")
    if np.any(r <= 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError("distances must be positive and 0 <= flips <= trials")
    if k.sum() == 0:
        return PowerLaw(0.0, float("nan"))
    lr = np.log(r)

    def nll(x: np.ndarray) -> float:
        p = np.clip(np.exp(x[0] + x[1] * lr), 1e-12, 1 - 1e-12)
        return -float(np.sum(k * np.log(p) + (n - k) * np.log1p(-p)))

    pos = k > 0  # start from the log-log line through the nonzero rates
    if pos.sum() >= 2:
        beta0, logc0 = np.polyfit(lr[pos], np.log(k[pos] / n[pos]), 1)
    else:
        beta0, logc0 = 1.0, float(np.log(k[pos][0] / n[pos][0]) - lr[pos][0])
    best = None
    for start in ([logc0, beta0], [logc0, 0.5], [logc0, 2.0]):
        res = minimize(nll, np.array(start, dtype=float), method="Nelder-Mead", options=dict(xatol=1e-8, fatol=1e-10))
        if best is None or res.fun < best.fun:
            best = res
    return PowerLaw(float(np.exp(best.x[0])), float(best.x[1]))


@dataclass(frozen=True)
class FlipCurve:
    """Rollouts around one checkpoint: ``returns[kind]`` ``(directions, distances, ics)``,
    ``centre`` ``(ics,)`` the checkpoint's own returns; ``step_length`` the unit ``s``."""

    run: str
    step: int
    distances: np.ndarray
    returns: dict[str, np.ndarray]
    centre: np.ndarray
    step_length: float
    expert_return: float
    H: int
    seed: int
    batched: bool = True
    seconds: float = float("nan")

    def flips(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """``(flip counts, trials)`` per distance: pairs (direction, IC) whose return moved by more
        than ``THRESHOLD`` x the expert's return."""
        if not (math.isfinite(self.expert_return) and self.expert_return > 0):
            raise ValueError(f"the run {self.run} has no positive expert return to scale flips by")
        moved = np.abs(self.returns[kind] - self.centre[None, None, :]) > THRESHOLD * self.expert_return
        d, _, i = moved.shape
        return moved.sum(axis=(0, 2)), np.full(len(self.distances), d * i)

    def rate(self, kind: str) -> np.ndarray:
        k, n = self.flips(kind)
        return k / n

    def mean_abs_change(self, kind: str) -> np.ndarray:
        """Mean ``|J(theta + r s u) - J(theta)|`` / expert return per distance."""
        return np.abs(self.returns[kind] - self.centre[None, None, :]).mean(axis=(0, 2)) / self.expert_return

    def fit(self, kind: str = "noise") -> PowerLaw:
        return fit_power_law(self.distances, *self.flips(kind))

    def summary(self) -> dict[str, Any]:
        out = {
            "run": self.run,
            "step": self.step,
            "distances": [float(r) for r in self.distances],
            "step_length": self.step_length,
            "expert_return": self.expert_return,
            "H": self.H,
            "seed": self.seed,
            "batched": self.batched,
            "seconds": self.seconds,
            "centre": self.centre.tolist(),
            "returns": {k: v.tolist() for k, v in self.returns.items()},
        }
        if math.isfinite(self.expert_return) and self.expert_return > 0:
            out["curves"] = {
                k: {
                    "flip_rate": self.rate(k).tolist(),
                    "mean_abs_change": self.mean_abs_change(k).tolist(),
                    "fit": vars(self.fit(k)),
                }
                for k in self.returns
            }
        return finite_json(out)


def flips_path(run: Path, step: int) -> Path:
    return Path(run) / f"flips_step_{step}.json"


def save_flip_curve(curve: FlipCurve, directory: Path) -> Path:
    return atomic_write_json(flips_path(directory, curve.step), curve.summary())


def load_flip_curve(path: Path) -> FlipCurve:
    """Read a curve written by :func:`save_flip_curve`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"flip curve file {path} does not exist (gva bc flips RUN writes it)")
    try:
        d = json.loads(path.read_text())
        return FlipCurve(
            run=d["run"],
            step=int(d["step"]),
            distances=np.array(d["distances"], dtype=float),
            returns={k: np.array(v, dtype=float) for k, v in d["returns"].items()},
            centre=np.array(d["centre"], dtype=float),
            step_length=float(d["step_length"]),
            expert_return=float(d["expert_return"]),
            H=int(d["H"]),
            seed=int(d["seed"]),
            batched=bool(d.get("batched", True)),
            seconds=float(d["seconds"]),
        )
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a flip curve file ({str(err).splitlines()[0]})") from None


def zoom_checkpoint(cfg, run: RunDir) -> int:
    """The newest checkpoint at or before the first zoom window's start (where the curve is taken).
    A run without its checkpoints (moved to another machine with its small files only) answers
    from the curve saved there before (:func:`save_flip_curve`)."""
    start = min(cfg.zoom_windows) if cfg.zoom_windows else cfg.steps
    steps = [c.step for c in run.checkpoints() if c.step <= start]
    if not run.checkpoints():
        steps = [int(p.stem.rsplit("_", 1)[1]) for p in run.path.glob("flips_step_*.json")]
        steps = [s for s in steps if s <= start]
    if not steps:
        raise ValueError(f"run={run.path} has no checkpoint at or before step {start} (the first zoom window)")
    return max(steps)


def _flat(d: dict[str, Tensor]) -> Tensor:
    return torch.cat([v.reshape(-1) for v in d.values()])


def _unflat(x: Tensor, like: dict[str, Tensor]) -> dict[str, Tensor]:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = x[i : i + v.numel()].reshape(v.shape)
        i += v.numel()
    return out


def directions(opened, kind: str, n: int, seed: int) -> Tensor:
    """``(n, n_params)`` unit directions of ``kind`` (:data:`KINDS`) at the run's raw weights."""
    from .landscape import preconditioned_unit
    from .run import adam_preconditioner, minibatch_gradient

    cfg, model, data = opened.cfg, opened.model, opened.data
    theta = opened.raw_parameters()
    gen = torch.Generator().manual_seed(seed)
    if kind == "random":
        u = torch.randn((n, sum(v.numel() for v in theta.values())), generator=gen, dtype=torch.float64)
    elif kind == "noise":
        full = minibatch_gradient(model, theta, data.train_x, data.train_y, seed)
        scale = adam_preconditioner(cfg, model, opened.state) if preconditioned_unit("auto", cfg.optimizer) else None
        rows = []
        for j in range(n):
            idx = torch.randint(len(data.train_x), (cfg.batch_size * cfg.grad_accum,), generator=gen)
            x = data.train_x[idx]
            if cfg.obs_noise > 0:
                x = x + cfg.obs_noise * torch.randn(x.shape, generator=gen)
            g = minibatch_gradient(model, theta, x, data.train_y[idx], seed + 1 + j)
            rows.append(_flat({k: (g[k] - full[k]) * (scale[k] if scale else 1.0) for k in g}).double())
        u = torch.stack(rows)
    else:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(KINDS)}")
    return (u / u.norm(dim=1, keepdim=True)).float()


def compute_flip_curve(
    run: Path | RunDir,
    step: int | None = None,
    *,
    distances=DEFAULT_DISTANCES,
    n_directions: int = 8,
    seed: int = 0,
    batched: bool = True,
    threads: int = 0,
    memory_budget: int = 2**30,
    quiet: bool = True,
) -> FlipCurve:
    """The flip-distance curve at checkpoint ``step`` of a BC run (``None``: :func:`zoom_checkpoint`).

    ``n_directions`` of each kind (:data:`KINDS`), from ``seed``; ``distances`` in optimizer
    steps (positive); ``batched=False`` rolls out one weight at a time (the reference path).
    """
    from tqdm.auto import tqdm

    from .envs import initial_conditions
    from .results import load_result
    from .run import last_step, open_run
    from .train import imitator_rollout

    start = time.perf_counter()
    rd = run if isinstance(run, RunDir) else RunDir(Path(run))
    dist = np.asarray(distances, dtype=float)
    if dist.ndim != 1 or len(dist) < 2 or not np.all(np.isfinite(dist)) or np.any(dist <= 0):
        raise ValueError(f"distances={list(dist)} is out of range: give at least 2 positive finite distances")
    n_directions = check_int("n_directions", n_directions, 1, 10_000)
    check_int("seed", seed, 0)
    check_int("memory_budget", memory_budget, 1)
    if step is None:
        from gvatheory.config import build_config

        from .config import BCConfig

        step = zoom_checkpoint(build_config(BCConfig, rd.read_config(), source=str(rd.config_path)), rd)
    opened = open_run(rd, step, threads=threads)
    cfg, model = opened.cfg, opened.model
    s = float(_flat(last_step(opened)).norm())
    check_positive("the step length of the checkpoint", s)
    theta = _flat(opened.raw_parameters())
    like = opened.raw_parameters()
    dirs = {k: directions(opened, k, n_directions, seed) for k in KINDS}
    points = [theta] + [theta + float(r) * s * u for k in KINDS for u in dirs[k] for r in dist]

    ics = initial_conditions(cfg.env, cfg.ics, cfg.ic_seed)
    rollout = imitator_rollout(cfg, ics)
    chunk = max(1, memory_budget // (2 * 4 * theta.numel())) if batched else 1
    returns = []
    with tqdm(total=len(points), desc=f"flips {rd.path.name}", unit="point", disable=quiet) as bar:
        for i in range(0, len(points), chunk):
            plist = [_unflat(p, like) for p in points[i : i + chunk]]
            r, _ = rollout(model, plist)
            returns.append(r)
            bar.update(len(plist))
    R = np.concatenate(returns).reshape(len(points), cfg.ics)
    per_kind = R[1:].reshape(len(KINDS), n_directions, len(dist), cfg.ics)
    expert_return = load_result(rd).expert_return
    return FlipCurve(
        run=str(rd.path),
        step=opened.step,
        distances=dist,
        returns={k: per_kind[j] for j, k in enumerate(KINDS)},
        centre=R[0],
        step_length=s,
        expert_return=float(expert_return),
        H=cfg.H,
        seed=seed,
        batched=batched,
        seconds=time.perf_counter() - start,
    )
