"""Study: the EMA never hurts (paper Figures 2-3, R4).

Prediction: whatever the intervention, the EMA of the iterates does at least as well as the raw
iterate: its mean return over the zoom window is not below the raw one's. Measured over every
finished run of the sweep shared with ``algorithmic`` (``<report>/sweep``), paired by run: the
difference ``(EMA - raw) / expert return`` of the zoom-mean returns. An *exception* is a run where
the EMA is worse by more than the tolerance, :data:`TOLERANCE` of the expert's return (the size of
a return difference the zoom window's few initial conditions cannot resolve from noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from validation.report import Section, Verdict, markdown_table

from .algorithmic import shared_sweep

TOLERANCE = 0.02  # of the expert's return


def paired(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per finished run with both zoom-mean returns: raw, EMA, and their difference
    relative to the expert's return."""
    out = []
    for r in rows:
        raw, stab, expert = (r.get(k) for k in ("raw_zoom_mean_return", "stab_zoom_mean_return", "expert_return"))
        if r.get("status") != "finished" or not all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in (raw, stab, expert)
        ):
            continue
        out.append(
            dict(
                run=r["run"],
                interventions=r["interventions"],
                seed=r["seed"],
                stabilizer=r.get("stabilizer", ""),
                raw=float(raw),
                ema=float(stab),
                expert=float(expert),
                diff=(float(stab) - float(raw)) / max(abs(float(expert)), 1e-12),
            )
        )
    return out


def verdict(pairs: Sequence[dict[str, Any]], tolerance: float = TOLERANCE) -> tuple[str, list[dict], Any]:
    """(outcome, exceptions, mean difference with its 95% bootstrap interval over runs).

    *supports* if no run has ``diff < -tolerance``; *contradicts* if some run does; *inconclusive*
    without any paired run."""
    from gvaempirics.sweeps.results import stratified_bootstrap

    if not pairs:
        return "inconclusive", [], None
    exceptions = [p for p in pairs if p["diff"] < -tolerance]
    ci = stratified_bootstrap([np.array([p["diff"] for p in pairs])], np.mean)
    return ("contradicts" if exceptions else "supports"), exceptions, ci


def _f(v: float) -> str:
    return f"{v:.3g}" if isinstance(v, float) and math.isfinite(v) else "n/a"


def plot(pairs: Sequence[dict[str, Any]], tolerance: float):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    x = np.array([p["raw"] / p["expert"] for p in pairs])
    y = np.array([p["ema"] / p["expert"] for p in pairs])
    bad = np.array([p["diff"] < -tolerance for p in pairs])
    ax.scatter(x[~bad], y[~bad], color="tab:blue", label="EMA >= raw - tolerance")
    if bad.any():
        ax.scatter(x[bad], y[bad], color="tab:red", label="exception")
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    pad = max(0.02, 0.05 * (hi - lo))
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.plot([lo, hi], [lo - tolerance, hi - tolerance], "k:", lw=0.8, label=f"tolerance {tolerance:g}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("raw iterate: zoom-mean return / expert")
    ax.set_ylabel("EMA: zoom-mean return / expert")
    ax.set_title("one dot per run of the sweep")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Section:
    from validation.report import save_figure

    outdir = Path(outdir)
    sweep = shared_sweep(outdir, quick=quick, seed=seed, quiet=quiet)
    pairs = paired(sweep.rows)
    outcome, exceptions, ci = verdict(pairs)
    mean = f"mean (EMA - raw) / expert {_f(ci.estimate)} [{_f(ci.low)}, {_f(ci.high)}]" if ci else "no paired run"
    worst = min(pairs, key=lambda p: p["diff"]) if pairs else None
    detail = (
        f"{len(exceptions)} exception(s) of {len(pairs)} runs; {mean}"
        + (f"; worst {worst['run']} {_f(worst['diff'])}" if worst else "")
        + (": " + ", ".join(f"{p['run']} ({_f(p['diff'])})" for p in exceptions) if exceptions else "")
    )
    verdicts = [
        Verdict.of(
            f"in every run the EMA's zoom-mean return >= the raw iterate's - {TOLERANCE:g} x the expert's return",
            outcome,
            detail,
        )
    ]
    figures = [save_figure(plot(pairs, TOLERANCE), outdir / "ema_never_hurts.png")] if pairs else []
    rows = [
        dict(run=p["run"], stabilizer=p["stabilizer"], raw=p["raw"], ema=p["ema"], expert=p["expert"], diff=p["diff"])
        for p in sorted(pairs, key=lambda p: p["diff"])
    ]
    body = (
        f"Every finished run of `{sweep.out}` ({len(pairs)} runs), paired: the mean return over the zoom window "
        "of the raw iterates and of the stabilized (EMA) weights, and `diff` = (EMA - raw) / expert return. "
        f"An exception is a run with diff < -{TOLERANCE:g} (the EMA worse by more than {TOLERANCE:.0%} of the "
        "expert's return); any exception contradicts the claim. The mean diff's interval is a 95% "
        "percentile bootstrap over runs. Runs, worst first"
        + (" (exceptions: " + ", ".join(f"`{p['run']}`" for p in exceptions) + ")" if exceptions else "")
        + ":\n\n"
        + (markdown_table(rows) if rows else "(no finished run)")
    )
    return Section("ema-never-hurts", "The EMA never hurts (R4)", body, verdicts, figures)
