r"""A sweep's tables: one row per run, and a summary per intervention with bootstrap intervals.

The row of a run comes from its run directory (:func:`gvaempirics.bc.results.load_result`): the
GVA indices of raw and stabilized weights (``raw_*``, ``stab_*``). The headline is the raw
*oscillation index* in the zoom windows (``raw_oscillation``: the mean absolute change of
:math:`J_H` between consecutive iterates, relative to the expert's return).

The summary of an intervention pools its runs over seeds (and envs: the index is relative to
each env's expert, so it is comparable across envs):

* the mean and the interquartile mean (IQM, ``scipy.stats.trim_mean(x, 0.25)``, as rliable
  computes it), each with a 95% percentile-bootstrap interval stratified by env: seeds are
  resampled with replacement within each env (``scipy.stats.bootstrap`` with one sample per
  env, resampled independently), which with one env is the plain bootstrap over seeds;
* :math:`P(X < Y)`, the probability that a run of the intervention has a lower oscillation
  index than a run of the base configuration, estimated over all pairs of seeds (the
  Mann-Whitney statistic :math:`U / (n m)`, ties counted one half), averaged over envs.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..rundir import atomic_write, atomic_write_bytes
from .spec import BASE_LABEL, SweepRun

# row column -> key of a run summary's per-weights entry (None: computed from the returns)
INDICES = {
    "oscillation": "zoom_reward_oscillation",
    "flip_rate": "zoom_flip_rate",
    "amplification": "zoom_amplification",
    "final_return": "final_return",
    "best_return": None,
    "zoom_mean_return": "zoom_mean_return",
    "final_val_loss": "final_val_loss",
}
FINISHED, FAILED, UNFINISHED = "finished", "failed", "unfinished"


def _cell(value: Any) -> Any:
    """A table cell: scalars as they are, anything else (a tuple field) as JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def run_row(run: SweepRun, path: Path, varying: Sequence[str], *, status: str, error: str = "") -> dict[str, Any]:
    """The results-table row of ``run`` (directory ``path``); indices are NaN until it finished."""
    row: dict[str, Any] = {
        "run": run.run_id,
        "env": run.env,
        "interventions": run.label,
        "seed": run.seed,
        "status": status,
        "error": error,
        **{f: _cell(getattr(run.config, f)) for f in varying},
        "stabilizer": run.config.stabilizer,
        "expert_return": math.nan,
        "steps_done": 0,
    }
    entries: dict[str, dict[str, Any]] = {}
    best: dict[str, float] = {}
    if status == FINISHED:
        from ..bc.results import load_result, summarize

        res = load_result(path)
        summary = summarize(res)
        row["expert_return"], row["steps_done"] = float(summary["expert_return"]), int(summary["steps_done"])
        for prefix, weights in (("raw", "raw"), ("stab", run.config.stabilizer)):
            entries[prefix] = summary.get(weights, {})
            if weights in res.returns and len(res.returns[weights]):
                best[prefix] = float(res.returns[weights].mean(axis=1).max())
    for prefix in ("raw", "stab"):
        for column, key in INDICES.items():
            value = best.get(prefix, math.nan) if key is None else entries.get(prefix, {}).get(key, math.nan)
            row[f"{prefix}_{column}"] = float(value)
    return row


def write_results(out: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """``results.csv`` and, where pyarrow is installed, ``results.parquet``, each written atomically."""
    written = [atomic_write_bytes(out / "results.csv", to_csv(rows))]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    table = pa.Table.from_pylist(rows)
    written.append(atomic_write(out / "results.parquet", lambda fh: pq.write_table(table, fh)))
    return written


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue().encode()


# ---------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Interval:
    """A point estimate with a (``low``, ``high``) confidence interval; NaN where undefined."""

    estimate: float
    low: float
    high: float


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle half (25% trimmed from each end, as rliable)."""
    from scipy.stats import trim_mean

    return trim_mean(x, 0.25, axis=axis)


def stratified_bootstrap(
    strata: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    *,
    confidence: float = 0.95,
    n_resamples: int = 5000,
    seed: int = 0,
) -> Interval:
    """``statistic`` of all values pooled, with a percentile-bootstrap interval that resamples
    each stratum (an env's seeds) on its own. Needs two or more values in every stratum; else
    the interval is NaN."""
    from scipy.stats import bootstrap

    strata = [np.asarray(s, dtype=float) for s in strata if len(s)]
    if not strata:
        return Interval(math.nan, math.nan, math.nan)
    estimate = float(statistic(np.concatenate(strata)))
    if min(len(s) for s in strata) < 2:
        return Interval(estimate, math.nan, math.nan)
    res = bootstrap(
        strata,
        lambda *samples, axis: statistic(np.concatenate(samples, axis=axis), axis=axis),
        vectorized=True,
        paired=False,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return Interval(estimate, float(res.confidence_interval.low), float(res.confidence_interval.high))


def prob_lower(x: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney estimate of :math:`P(X < Y)` over all pairs, ties counted one half."""
    x, y = np.asarray(x, dtype=float)[:, None], np.asarray(y, dtype=float)[None, :]
    if x.size == 0 or y.size == 0:
        return math.nan
    return float(np.mean(x < y) + 0.5 * np.mean(x == y))


@dataclass(frozen=True)
class InterventionStats:
    """The summary of one grid entry over its seeds (and envs)."""

    interventions: str
    runs: int
    finished: int
    mean: Interval  # of the raw oscillation index
    iqm: Interval
    stab_mean: float  # the stabilized weights' mean oscillation index
    p_lower: float  # P(intervention's index < base's); NaN for the base itself or without base runs

    def row(self) -> dict[str, Any]:
        return {
            "interventions": self.interventions,
            "runs": self.runs,
            "finished": self.finished,
            "osc_mean": self.mean.estimate,
            "osc_mean_lo": self.mean.low,
            "osc_mean_hi": self.mean.high,
            "osc_iqm": self.iqm.estimate,
            "osc_iqm_lo": self.iqm.low,
            "osc_iqm_hi": self.iqm.high,
            "stab_osc_mean": self.stab_mean,
            "p_lower_than_base": self.p_lower,
        }


@dataclass(frozen=True)
class SweepSummary:
    """One :class:`InterventionStats` per grid entry, in grid order."""

    stats: tuple[InterventionStats, ...]
    confidence: float

    def rows(self) -> list[dict[str, Any]]:
        return [s.row() for s in self.stats]


def summarize_sweep(
    rows: Sequence[dict[str, Any]], *, confidence: float = 0.95, n_resamples: int = 5000, seed: int = 0
) -> SweepSummary:
    """Summarize the results table per intervention (see the module docstring); finished runs only."""
    labels = list(dict.fromkeys(r["interventions"] for r in rows))
    envs = list(dict.fromkeys(r["env"] for r in rows))

    def scores(label: str, env: str, column: str = "raw_oscillation") -> np.ndarray:
        values = [r[column] for r in rows if r["interventions"] == label and r["env"] == env]
        return np.array([v for v in values if isinstance(v, float) and math.isfinite(v)])

    stats = []
    for label in labels:
        strata = [scores(label, env) for env in envs]
        stab = np.concatenate([scores(label, env, "stab_oscillation") for env in envs])
        p = [prob_lower(x, scores(BASE_LABEL, env)) for x, env in zip(strata, envs)]
        p = [v for v in p if math.isfinite(v)]
        kw = dict(confidence=confidence, n_resamples=n_resamples, seed=seed)
        stats.append(
            InterventionStats(
                interventions=label,
                runs=sum(r["interventions"] == label for r in rows),
                finished=int(sum(len(s) for s in strata)),
                mean=stratified_bootstrap(strata, np.mean, **kw),
                iqm=stratified_bootstrap(strata, iqm, **kw),
                stab_mean=float(stab.mean()) if len(stab) else math.nan,
                p_lower=float(np.mean(p)) if p and label != BASE_LABEL else math.nan,
            )
        )
    return SweepSummary(tuple(stats), confidence)
