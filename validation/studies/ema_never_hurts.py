r"""Study: the EMA never hurts (paper Figures 2-3, R4).

Prediction: whatever the intervention, the EMA of the iterates does at least as well as the raw
iterate: its mean return over the zoom window is not below the raw one's by more than the
seed-to-seed spread. Decided by the pre-registered rule ``ema-never-hurts/no-loss``
(``validation.registry``), on every finished run of the sweep shared with ``algorithmic``
(``<report>/sweep``):

* per run, :math:`d = (\text{EMA} - \text{raw})` zoom-mean return / expert return;
* only runs *off the ceiling* count, those whose raw zoom-mean return is below :data:`CEILING`
  (98%) of the expert's: at the ceiling both weights tend to score the expert's return, and
  their difference says little about either;
* the margin :math:`m` is the sd over the base runs' seeds of raw zoom-mean return / expert: the
  size of a difference that training noise alone makes;
* the verdict is on the mean of :math:`d / m` over the runs off the ceiling, a paired t interval
  over runs (:func:`gvatheory.inference.paired_interval` of EMA / (expert m) against raw /
  (expert m)): *supports* if it lies in :math:`[-1, \infty)`, *contradicts* if it lies wholly
  below -1 (the EMA loses more than one margin on average), else *inconclusive*, which is also the
  outcome with fewer than 3 runs off the ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gvatheory.inference import Interval, paired_interval, smallest_effect
from validation.registry import rule
from validation.report import Section, Verdict, markdown_table

from .algorithmic import shared_sweep

CEILING = 0.98  # of the expert's return: runs with raw at or above it are at the ceiling
RULE = "ema-never-hurts/no-loss"


def paired(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per finished run with both zoom-mean returns and a positive expert return: raw
    and EMA relative to the expert (``raw``, ``ema``), and ``diff`` = ema - raw."""
    out = []
    for r in rows:
        raw, stab, expert = (r.get(k) for k in ("raw_zoom_mean_return", "stab_zoom_mean_return", "expert_return"))
        if r.get("status") != "finished" or not all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in (raw, stab, expert)
        ):
            continue
        if expert <= 0:  # no scale to measure a loss against
            continue
        out.append(
            dict(
                run=r["run"],
                interventions=r["interventions"],
                seed=r["seed"],
                stabilizer=r.get("stabilizer", ""),
                raw=float(raw) / float(expert),
                ema=float(stab) / float(expert),
                diff=(float(stab) - float(raw)) / float(expert),
            )
        )
    return out


def margin(pairs: Sequence[dict[str, Any]]) -> float:
    """sd (ddof 1) over the base runs of raw zoom-mean return / expert; NaN with fewer than 2."""
    base = [p["raw"] for p in pairs if p["interventions"] == "base"]
    return float(np.std(base, ddof=1)) if len(base) >= 2 else math.nan


def decide(pairs: Sequence[dict[str, Any]]) -> tuple[Verdict, dict[str, Any]]:
    """The verdict of ``ema-never-hurts/no-loss`` on ``pairs`` (see the module docstring), and its
    numbers: the margin ``m``, the runs ``off`` the ceiling, the ``interval`` of mean d / m, the
    run-to-run ``sd`` of d / m and the smallest effect it lets the budget decide (``power``, in
    margins)."""
    m = margin(pairs)
    off = [p for p in pairs if p["raw"] < CEILING]
    gate = ""
    if not (math.isfinite(m) and m > 0):
        gate = "no margin: the base needs 2 or more finished runs with different returns"
    elif len(off) < rule(RULE).min_n:
        gate = (
            f"only {len(off)} of {len(pairs)} runs are off the ceiling (raw below {CEILING:.0%} of the expert); "
            f"the rule needs {rule(RULE).min_n}"
        )
    if math.isfinite(m) and m > 0:
        interval = paired_interval([p["ema"] / m for p in off], [p["raw"] / m for p in off])
        z = np.array([p["diff"] / m for p in off])
    else:
        interval, z = Interval(math.nan, math.nan, math.nan, 0.95, len(off), "paired t"), np.array([])
    sd = float(np.std(z, ddof=1)) if len(z) >= 2 else math.nan
    worst = min(off, key=lambda p: p["diff"]) if off else None
    detail = (
        f"mean (EMA - raw) / (expert m) over {len(off)} of {len(pairs)} runs off the ceiling; m = {_f(m)} of the "
        "expert's return"
        + (f"; worst {worst['run']} {_f(worst['diff'] / m)} margins" if worst and math.isfinite(m) and m > 0 else "")
    )
    verdict = rule(RULE).decide(interval, detail, gate=gate)
    return verdict, dict(m=m, off=off, interval=interval, sd=sd, power=smallest_effect(sd, len(z)))


def _f(v: float) -> str:
    return f"{v:.3g}" if isinstance(v, float) and math.isfinite(v) else "n/a"


def plot(pairs: Sequence[dict[str, Any]], m: float):
    """Raw against EMA zoom-mean return / expert, one dot per run; the ceiling and one margin below
    the diagonal drawn."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    x = np.array([p["raw"] for p in pairs])
    y = np.array([p["ema"] for p in pairs])
    off = x < CEILING
    ax.scatter(x[off], y[off], color="tab:blue", label="off the ceiling (decides)")
    ax.scatter(x[~off], y[~off], color="0.6", label="at the ceiling (left out)")
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    pad = max(0.02, 0.05 * (hi - lo))
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    if math.isfinite(m):
        ax.plot([lo, hi], [lo - m, hi - m], "k:", lw=0.8, label=f"one margin below (m = {m:.3g})")
    ax.axvline(CEILING, color="tab:red", lw=0.8, ls="-.", label=f"ceiling ({CEILING:.0%} of expert)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("raw iterate: zoom-mean return / expert")
    ax.set_ylabel("EMA: zoom-mean return / expert")
    ax.set_title("one dot per run of the sweep")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Section:
    from validation.report import save_figure

    outdir = Path(outdir)
    sweep = shared_sweep(outdir, quick=quick, seed=seed, quiet=quiet)
    pairs = paired(sweep.rows)
    verdict, nums = decide(pairs)
    m = nums["m"]
    figures = [save_figure(plot(pairs, m), outdir / "ema_never_hurts.png")] if pairs else []
    scaled = math.isfinite(m) and m > 0
    rows = [
        dict(
            run=p["run"],
            stabilizer=p["stabilizer"],
            raw=p["raw"],
            ema=p["ema"],
            diff=p["diff"],
            margins=p["diff"] / m if scaled else math.nan,
            off_ceiling="yes" if p["raw"] < CEILING else "no",
        )
        for p in sorted(pairs, key=lambda p: p["diff"])
    ]
    body = (
        f"Every finished run of `{sweep.out}` ({len(pairs)} runs), paired: `raw` and `ema` are the mean return "
        "over the zoom window of the raw iterates and of the stabilized (EMA) weights, relative to the expert's "
        f"return; `diff` = ema - raw; `margins` = diff / m with the margin m = {_f(m)}, the sd over the base runs' "
        f"seeds of `raw`. Runs at the ceiling (raw at or above {CEILING:.0%} of the expert) are left out: there "
        f"both tend to score the expert's return. {len(nums['off'])} runs are off the ceiling. The verdict is on the mean of "
        "`margins` over them, paired t over runs (rule below).\n\n"
        f"**Power.** The run-to-run sd of `margins` over the runs off the ceiling is {_f(nums['sd'])}; with "
        f"{len(nums['off'])} runs the interval is decided (80% power) when the true mean lies {_f(nums['power'])} "
        "margins or more from the edge at -1 (supports for a mean above "
        f"{_f(-1 + nums['power'])}, contradicts for one below {_f(-1 - nums['power'])}).\n\n"
        "Runs, worst first:\n\n" + (markdown_table(rows) if rows else "(no finished run)")
    )
    return Section("ema-never-hurts", "The EMA never hurts (R4)", body, [verdict], figures)
