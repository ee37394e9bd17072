r"""The numbers of a diagnosis, computed from returns ``R[t, i]`` of checkpoint ``t`` from
initial condition ``i`` (pure numpy; no rollouts here).

* mean return per checkpoint :math:`\bar R_t = \frac1n \sum_i R_{t,i}`, with a bootstrap CI;
* oscillation index :math:`\frac{1}{T-1}\sum_t |\bar R_{t+1} - \bar R_t|` / scale and flip rate
  (the fraction of (IC, consecutive pair) whose return moves by more than ``threshold * scale``),
  from :mod:`gvaempirics.metrics`; the scale is the range :math:`\max R - \min R` of all returns
  unless given;
* initial conditions needed to rank neighbours: for each consecutive pair, the paired difference
  :math:`D_i = R_{t+1,i} - R_{t,i}` has mean :math:`\bar D` and sd :math:`s_D`; a paired test at
  95% resolves its sign once :math:`1.96\, s_D / \sqrt{n} < |\bar D|`, i.e. at
  :math:`n^\star = (1.96\, s_D / \bar D)^2`;
* the returns of uniform averages of the last ``k`` checkpoints' weights, beside the last one's.

Confidence intervals (:class:`gvatheory.inference.Interval`, the toolkit's one interval type) are
percentile bootstraps whose unit is the initial condition: a diagnosis is of one run's
checkpoints, whose weights are fixed, so the ICs are what is drawn at random and independent.
The intervals say how well these ICs pin down these checkpoints' returns; they carry no
seed-to-seed spread of training, so they say nothing about another run of the same recipe (for
that, diagnose several runs and take seeds as the unit, ``gvatheory.inference``). Each resample
draws the ICs with replacement once for every statistic (the mean of each checkpoint, the
oscillation index, the flip rate, the averaged checkpoints and their gains), so differences
between them stay paired; the scale stays fixed at its full-sample value. That shared draw
across statistics of a 2-d array is why this is a vectorized bootstrap of its own:
``gvatheory.inference.bootstrap_interval`` (``scipy.stats.bootstrap``) takes 1-d samples and one
statistic per call, so its statistics would not share a draw. Like any bootstrap it under-covers with few units (below about 10 ICs; see
``gvatheory.inference``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gvatheory._checks import check_int, check_positive, check_range
from gvatheory.inference import Interval

from ..metrics import flip_rate, oscillation_index

Z95 = 1.96
BOOTSTRAP_STREAM = 1000  # SeedSequence([seed, stream]); streams 0-3+ are reset seeds (bc.envs)
METHOD = "percentile bootstrap over ICs"


@dataclass(frozen=True)
class AveragedCheckpoint:
    """The uniform average of the last ``k`` checkpoints' weights, evaluated on the same ICs."""

    k: int
    returns: np.ndarray  # (n_ic,)
    mean: Interval
    gain: Interval  # mean return minus the last checkpoint's, paired over ICs


@dataclass(frozen=True, eq=False)
class Diagnosis:
    """Returns of every checkpoint from the same initial conditions, and what they say."""

    names: tuple[str, ...]  # checkpoint file names, in order
    steps: np.ndarray  # (n_ckpt,) the integers they are ordered by
    seeds: np.ndarray  # (n_ic,) reset seeds of the initial conditions
    returns: np.ndarray  # (n_ckpt, n_ic)
    mean: np.ndarray  # (n_ckpt,)
    mean_ci: np.ndarray  # (n_ckpt, 2)
    scale: float
    scale_source: str  # "range" or "given"
    flip_threshold: float
    oscillation: Interval
    flip_rate: Interval
    pair_mean: np.ndarray  # (n_ckpt - 1,) mean paired difference R_{t+1} - R_t
    pair_sd: np.ndarray  # (n_ckpt - 1,) its sd over ICs (ddof 1)
    ics_needed: np.ndarray  # (n_ckpt - 1,) (1.96 sd / |mean|)^2; inf for a zero difference
    averages: tuple[AveragedCheckpoint, ...]
    confidence: float
    n_boot: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_ic(self) -> int:
        return self.returns.shape[1]

    @property
    def ics_needed_median(self) -> float:
        return float(np.median(self.ics_needed))

    @property
    def resolvable_fraction(self) -> float:
        """Fraction of consecutive pairs whose order the ICs used resolve (``ics_needed <= n_ic``)."""
        return float(np.mean(self.ics_needed <= self.n_ic))

    @property
    def best(self) -> int:
        """Index of the checkpoint with the highest mean return."""
        return int(np.argmax(self.mean))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays as lists, non-finite numbers as strings ("inf")."""
        d = {
            "settings": self.settings,
            "checkpoints": list(self.names),
            "steps": self.steps,
            "seeds": self.seeds,
            "returns": self.returns,
            "mean": self.mean,
            "mean_ci": self.mean_ci,
            "scale": self.scale,
            "scale_source": self.scale_source,
            "flip_threshold": self.flip_threshold,
            "oscillation_index": self.oscillation.to_dict(),
            "flip_rate": self.flip_rate.to_dict(),
            "pairs": {"mean_diff": self.pair_mean, "sd_diff": self.pair_sd, "ics_needed": self.ics_needed},
            "ics_needed_median": self.ics_needed_median,
            "resolvable_fraction": self.resolvable_fraction,
            "averages": [
                {"k": a.k, "returns": a.returns, "mean": a.mean.to_dict(), "gain_vs_last": a.gain.to_dict()}
                for a in self.averages
            ],
            "confidence": self.confidence,
            "n_boot": self.n_boot,
        }
        return _jsonable(d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Diagnosis:
        """Rebuild a diagnosis from :meth:`to_dict` (e.g. to redraw its figure)."""
        arr = lambda x: np.asarray(x, dtype=float)
        conf, n_ic = float(d["confidence"]), int(np.size(d["seeds"]))

        def iv(x: Mapping[str, Any]) -> Interval:
            # "value": the name of the estimate in diagnosis.json files written before Interval was shared
            est = x["estimate"] if "estimate" in x else x["value"]
            return Interval(
                float(est),
                float(x["low"]),
                float(x["high"]),
                float(x.get("level", conf)),
                int(x.get("n", n_ic)),
                str(x.get("method", METHOD)),
            )

        pairs = d["pairs"]
        return cls(
            names=tuple(d["checkpoints"]),
            steps=np.asarray(d["steps"], dtype=np.int64),
            seeds=np.asarray(d["seeds"], dtype=np.int64),
            returns=arr(d["returns"]).reshape(len(d["checkpoints"]), -1),
            mean=arr(d["mean"]),
            mean_ci=arr(d["mean_ci"]).reshape(-1, 2),
            scale=float(d["scale"]),
            scale_source=d["scale_source"],
            flip_threshold=float(d["flip_threshold"]),
            oscillation=iv(d["oscillation_index"]),
            flip_rate=iv(d["flip_rate"]),
            pair_mean=arr(pairs["mean_diff"]),
            pair_sd=arr(pairs["sd_diff"]),
            ics_needed=arr(pairs["ics_needed"]),
            averages=tuple(
                AveragedCheckpoint(int(a["k"]), arr(a["returns"]), iv(a["mean"]), iv(a["gain_vs_last"]))
                for a in d["averages"]
            ),
            confidence=float(d["confidence"]),
            n_boot=int(d["n_boot"]),
            settings=dict(d.get("settings", {})),
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else str(float(value))
    return value


def ics_needed(returns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each consecutive pair of checkpoints: the paired difference's mean and sd (ddof 1)
    over initial conditions, and ``n* = (1.96 sd / |mean|)^2``, the number of initial conditions
    at which a paired test at 95% confidence resolves which of the two is better (``inf`` when
    the mean difference is 0)."""
    r = np.asarray(returns, dtype=float)
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 2:
        raise ValueError(f"returns must have shape (n_checkpoints >= 2, n_ic >= 2), got {r.shape}")
    diff = np.diff(r, axis=0)  # (n_ckpt - 1, n_ic)
    mean, sd = diff.mean(axis=1), diff.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.where(mean != 0, (Z95 * sd / np.abs(mean)) ** 2, np.inf)
    return mean, sd, n


def check_options(*, scale: float | None, flip_threshold: float, confidence: float, n_boot: int) -> None:
    """The analysis options: ``scale`` > 0 (or None), ``flip_threshold`` > 0, ``confidence`` in
    (0, 1), ``n_boot`` >= 1 integer."""
    if scale is not None:
        check_positive("scale", scale)
    check_positive("flip_threshold", flip_threshold)
    check_range("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)
    check_int("n_boot", n_boot, 1)


def bootstrap_counts(n_ic: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n_ic)`` counts of each IC in each bootstrap resample (seeded)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, BOOTSTRAP_STREAM]))
    idx = rng.integers(0, n_ic, size=(n_boot, n_ic))
    counts = np.zeros((n_boot, n_ic))
    np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)
    return counts


def analyze(
    returns,
    *,
    averaged: Mapping[int, np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    scale: float | None = None,
    flip_threshold: float = 0.1,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
) -> Diagnosis:
    """The :class:`Diagnosis` of returns ``(n_ckpt, n_ic)``; ``averaged`` maps ``k`` to the
    returns ``(n_ic,)`` of the average of the last ``k`` checkpoints' weights."""
    r = np.asarray(returns, dtype=float)
    pair_mean, pair_sd, needed = ics_needed(r)  # checks the shape
    n_ckpt, n_ic = r.shape
    if not np.isfinite(r).all():
        raise ValueError("returns hold non-finite values: the rollouts diverged")
    check_options(scale=scale, flip_threshold=flip_threshold, confidence=confidence, n_boot=n_boot)
    if scale is None:
        source, scale = "range", float(r.max() - r.min())
        scale = scale if scale > 0 else 1.0  # all returns equal: every index is 0 on any scale
    else:
        source, scale = "given", float(scale)
    averaged = {int(k): np.asarray(v, dtype=float).reshape(n_ic) for k, v in sorted((averaged or {}).items())}

    w = bootstrap_counts(n_ic, int(n_boot), seed) / n_ic  # (B, n_ic) resampling weights
    means_b = r @ w.T  # (n_ckpt, B)
    osc_b = np.abs(np.diff(means_b, axis=0)).mean(axis=0) / scale  # (B,)
    flips_per_ic = (np.abs(np.diff(r, axis=0)) > flip_threshold * scale).mean(axis=0)  # (n_ic,)
    q = [(1 - confidence) / 2, (1 + confidence) / 2]

    def interval(value: float, samples: np.ndarray) -> Interval:
        lo, hi = np.quantile(samples, q)
        return Interval(float(value), float(lo), float(hi), float(confidence), n_ic, METHOD)

    averages = tuple(
        AveragedCheckpoint(
            k=k,
            returns=a,
            mean=interval(a.mean(), a @ w.T),
            gain=interval((a - r[-1]).mean(), (a - r[-1]) @ w.T),
        )
        for k, a in averaged.items()
    )
    return Diagnosis(
        names=tuple(names) if names is not None else tuple(str(t) for t in range(n_ckpt)),
        steps=np.asarray(steps if steps is not None else np.arange(n_ckpt), dtype=np.int64),
        seeds=np.asarray(seeds if seeds is not None else np.arange(n_ic), dtype=np.int64),
        returns=r,
        mean=r.mean(axis=1),
        mean_ci=np.quantile(means_b, q, axis=1).T,
        scale=scale,
        scale_source=source,
        flip_threshold=float(flip_threshold),
        oscillation=interval(oscillation_index(r.mean(axis=1), scale), osc_b),
        flip_rate=interval(flip_rate(r, scale, flip_threshold), flips_per_ic @ w.T),
        pair_mean=pair_mean,
        pair_sd=pair_sd,
        ics_needed=needed,
        averages=averages,
        confidence=float(confidence),
        n_boot=int(n_boot),
        settings=dict(settings or {}),
    )
