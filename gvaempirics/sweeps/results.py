r"""A sweep's tables: one row per run, and a summary per intervention with intervals over seeds.

The row of a run comes from its run directory (:func:`gvaempirics.bc.results.load_result`): the
GVA indices of raw and stabilized weights (``raw_*``, ``stab_*``). The headline is the raw
*oscillation index* in the zoom windows (``raw_oscillation``: the mean absolute change of
:math:`J_H` between consecutive iterates, relative to the expert's return).

The summary of an intervention pools its runs over seeds and envs (the index is relative to each
env's expert, so it is comparable across envs); its intervals come from
:mod:`gvatheory.inference`, over the unit that is independent, the training seed:

* the mean with its Student t interval over seeds (:func:`~gvatheory.inference.seed_interval`:
  each seed's mean over its envs, then t over seeds; with every seed run in every env the
  env-to-env differences are common to all seed means and drop out of the spread, as a
  stratified design would have it; with one env it is the t interval over its seeds);
* the interquartile mean (IQM, ``scipy.stats.trim_mean(x, 0.25)``, as rliable computes it), with
  a BCa bootstrap interval stratified by env (:func:`~gvatheory.inference.bootstrap_interval`,
  one sample per env) from :data:`~gvatheory.inference.BOOTSTRAP_MIN_UNITS` runs on; below that no
  bootstrap covers its level, and the bounds are NaN;
* :math:`P(X < Y)`, the probability that a run of the intervention has a lower oscillation
  index than a run of the base configuration, estimated over all pairs of seeds (the
  Mann-Whitney statistic :math:`U / (n m)`, ties counted one half), averaged over envs: a
  description, without an interval.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gvatheory.inference import BOOTSTRAP_MIN_UNITS, Interval, bootstrap_interval, seed_interval

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


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle half (25% trimmed from each end, as rliable)."""
    from scipy.stats import trim_mean

    return trim_mean(x, 0.25, axis=axis)


def _pooled_iqm(*strata: np.ndarray, axis: int = -1) -> np.ndarray:
    return iqm(np.concatenate(strata, axis=axis), axis=axis)


def iqm_interval(
    strata: Sequence[np.ndarray], *, level: float = 0.95, n_resamples: int = 5000, seed: int = 0
) -> Interval:
    """The IQM of all values pooled, with a BCa bootstrap interval that resamples each stratum (an
    env's seeds) on its own, from :data:`~gvatheory.inference.BOOTSTRAP_MIN_UNITS` values on; with
    fewer the bounds are NaN (no bootstrap covers there)."""
    strata = [np.asarray(x, dtype=float) for x in strata if len(x)]
    n = sum(len(x) for x in strata)
    if n < BOOTSTRAP_MIN_UNITS:
        est = float(iqm(np.concatenate(strata))) if n else math.nan
        return Interval(est, math.nan, math.nan, level, n, f"none below {BOOTSTRAP_MIN_UNITS} runs")
    return bootstrap_interval(strata, _pooled_iqm, level=level, n_resamples=n_resamples, seed=seed)


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
    mean: Interval  # of the raw oscillation index, t over seeds
    iqm: Interval  # BCa bootstrap from 10 runs on, else NaN bounds
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
    """Summarize the results table per intervention (see the module docstring); finished runs only
    (a finite ``raw_oscillation``)."""
    labels = list(dict.fromkeys(r["interventions"] for r in rows))
    envs = list(dict.fromkeys(r["env"] for r in rows))

    def finite(v: Any) -> bool:
        return isinstance(v, float) and math.isfinite(v)

    def done(label: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["interventions"] == label and finite(r["raw_oscillation"])]

    def scores(label: str, env: str, column: str = "raw_oscillation") -> np.ndarray:
        return np.array([r[column] for r in done(label) if r["env"] == env and finite(r[column])])

    stats = []
    for label in labels:
        by_seed: dict[Any, list[float]] = {}
        for r in done(label):
            by_seed.setdefault(r["seed"], []).append(r["raw_oscillation"])
        strata = [scores(label, env) for env in envs]
        stab = np.concatenate([scores(label, env, "stab_oscillation") for env in envs])
        p = [prob_lower(x, scores(BASE_LABEL, env)) for x, env in zip(strata, envs)]
        p = [v for v in p if math.isfinite(v)]
        stats.append(
            InterventionStats(
                interventions=label,
                runs=sum(r["interventions"] == label for r in rows),
                finished=int(sum(len(s) for s in strata)),
                mean=seed_interval(list(by_seed.values()), level=confidence),
                iqm=iqm_interval(strata, level=confidence, n_resamples=n_resamples, seed=seed),
                stab_mean=float(stab.mean()) if len(stab) else math.nan,
                p_lower=float(np.mean(p)) if p and label != BASE_LABEL else math.nan,
            )
        )
    return SweepSummary(tuple(stats), confidence)
