"""Study: GVA is algorithmic (paper Figures 2-3, results R2 and R3).

Prediction: the reward oscillation of the raw iterates is not cured by the usual remedies of deep
learning (fresh data, more data, wider nets, regularizers): it *stays high*; it is an effect of
the optimization's noise, so it *falls* with learning-rate decay, larger batches, and averaging of
the iterates (the EMA, read off the same runs as the stabilized column).

Each row is decided by its pre-registered rule (``validation.registry``, ``algorithmic/<name>``):
the ratio of geometric means of the raw zoom oscillation index, intervention over base, with a
Welch t interval on the log index over training seeds (two independent groups,
:func:`gvatheory.inference.group_interval`); *stays* rows need it in ``[0.5, inf)``, *falls* rows
in ``(0, 0.8]``. The averaging row pairs each base run's EMA index with its own raw index
(``algorithmic/averaging``, :func:`gvatheory.inference.paired_interval` on the log ratio).

Measured on one sweep (:mod:`gvaempirics.sweeps`) shared with the ``landscape`` and
``ema-never-hurts`` studies: it runs once into ``<report>/sweep`` and is reused (resumed, never
redone) by the others.

The quick sweep's configuration (:data:`QUICK_BASE`) was changed once, on 2026-12-03, before any
verdict of the registry's rules was seen: from rollouts and demonstrations of H = 300 to the
paper-like H = 1000 of the ``quick`` preset. The reason: at H = 300, 20 of the 21 runs had a raw
zoom-mean return at or above 98% of the expert's (the results page of commit 9c59389), a ceiling
where the EMA cannot be seen to hurt (``ema-never-hurts/no-loss`` measures only runs below 98% of
the expert, and needs 3 of them). The quick sweep takes 14.3 CPU-minutes at H = 1000 (under 15
minutes on 2 idle cores; 28 minutes wall with two other training jobs on the same cores). No
setting was tried for its outcome.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gvatheory.inference import Interval, group_interval, mean_interval, paired_interval, smallest_effect
from validation.registry import rule
from validation.report import Section, Verdict, markdown_table

# The quick budget: the `quick` preset (4x256 MLP, Adam 3e-4, batch 64, 25 demonstrations of
# H = 1000, power EMA), shortened to 1500 steps with one zoom window of 12 iterates at step 1200 and
# 5 initial conditions, one thread per run so that the two cores run two runs at once.
QUICK_BASE: dict[str, Any] = dict(
    threads=1,
    n_demos=25,
    val_demos=5,
    demo_horizon=1000,
    H=1000,
    steps=1500,
    eval_every=500,
    checkpoint_every=500,
    zoom_windows=(1200,),
    zoom_length=12,
    ics=5,
)
# The paper's categories; each name's rule (and so its expectation) is `algorithmic/<name>`.
QUICK_GRID: tuple[str, ...] = ("fresh-data", "demos-100", "width-512", "wd-1e-4", "lr-cosine", "batch-256")
FULL_GRID: tuple[str, ...] = (
    "fresh-data",
    "demos-100",
    "demos-250",
    "width-512",
    "width-1024",
    "depth-6",
    "wd-1e-4",
    "dropout-0.1",
    "layer-norm",
    "lr-cosine",
    "lr-step",
    "batch-256",
    "batch-1024",
)
AVERAGING = "averaging"  # the row of the base runs' EMA, rule algorithmic/averaging
N_RESAMPLES = 5000  # of the sweep summary's IQM bootstrap (gvaempirics.sweeps.results)


def sweep_grid(quick: bool) -> tuple[str, ...]:
    return QUICK_GRID if quick else FULL_GRID


def sweep_spec(quick: bool, seed: int):
    """The one sweep of the three studies: base + the grid's interventions, three seeds (quick) or
    five (full), training seeds ``seed + 1, ...``."""
    from gvaempirics.sweeps import SweepSpec

    n = 3 if quick else 5
    entries = ((),) + tuple((name,) for name in sweep_grid(quick))
    base = dict(QUICK_BASE) if quick else {"threads": 1}
    return SweepSpec(preset="quick", base=base, interventions=entries, seeds=tuple(seed + 1 + i for i in range(n)))


def shared_sweep(outdir: Path, *, quick: bool, seed: int, quiet: bool):
    """Run (or reuse) the studies' sweep in ``outdir.parent / "sweep"``; return its ``SweepOutcome``.

    ``run_sweep`` skips finished runs, so the second and third study read what the first one ran."""
    from gvaempirics.sweeps import run_sweep

    return run_sweep(sweep_spec(quick, seed), Path(outdir).parent / "sweep", quiet=quiet, n_resamples=N_RESAMPLES)


def finished_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status") == "finished" and _finite(r.get("raw_oscillation"))]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _nan_interval(n: int, method: str) -> Interval:
    return Interval(math.nan, math.nan, math.nan, 0.95, n, method)


def expectation(name: str) -> str:
    """``stays`` or ``falls``: what rule ``algorithmic/<name>`` expects of the raw index."""
    return "stays" if math.isinf(rule(f"algorithmic/{name}").region.high) else "falls"


# ------------------------------------------------------------------------------ decisions


def analyse(rows: Sequence[dict[str, Any]], grid: Sequence[str]) -> list[dict[str, Any]]:
    """One table row per intervention of ``grid`` plus the averaging row, each with its geometric
    mean index over seeds, its ratio interval and its registry verdict (``row["verdict"]``)."""
    rows = finished_rows(rows)
    base = [r["raw_oscillation"] for r in rows if r["interventions"] == "base"]
    table = [dict(intervention="base", rule="-", n=len(base), osc=_gmean(base))]
    for name in grid:
        x = [r["raw_oscillation"] for r in rows if r["interventions"] == name]
        gate = _log_gate(x + base)
        ratio = _nan_interval(min(len(x), len(base)), "Welch t, log ratio")
        if not gate:
            ratio = group_interval(x, base, scale="ratio")
        detail = f"geometric mean index {_f(_gmean(x).estimate)} (n={len(x)}) over the base's {_f(_gmean(base).estimate)} (n={len(base)})"
        key = f"algorithmic/{name}"
        table.append(
            dict(
                intervention=name,
                rule=key,
                n=len(x),
                osc=_gmean(x),
                ratio=ratio,
                verdict=rule(key).decide(ratio, detail, gate=gate),
            )
        )
    runs = [r for r in rows if r["interventions"] == "base" and _finite(r.get("stab_oscillation"))]
    stab, raw = [r["stab_oscillation"] for r in runs], [r["raw_oscillation"] for r in runs]
    gate = _log_gate(stab + raw)
    ratio = _nan_interval(len(runs), "paired t, log ratio") if gate else paired_interval(stab, raw, scale="ratio")
    detail = f"EMA geometric mean index {_f(_gmean(stab).estimate)} against raw {_f(_gmean(raw).estimate)}, paired over {len(runs)} base runs"
    key = "algorithmic/averaging"
    table.append(
        dict(
            intervention=AVERAGING,
            rule=key,
            n=len(runs),
            osc=_gmean(stab),
            ratio=ratio,
            verdict=rule(key).decide(ratio, detail, gate=gate),
        )
    )
    return table


def _gmean(x: Sequence[float]) -> Interval:
    """Geometric mean over seeds with its t interval (NaN without a positive value)."""
    if not x or min(x) <= 0:
        return _nan_interval(len(x), "t, geometric")
    return mean_interval(x, log=True)


def _log_gate(x: Sequence[float]) -> str:
    """Why a log-scale interval cannot be formed (an index of 0 has no log), or ''."""
    zero = sum(v <= 0 for v in x)
    return f"{zero} run(s) with an oscillation index of 0, which has no log" if zero else ""


def power(rows: Sequence[dict[str, Any]], grid: Sequence[str]) -> dict[str, float]:
    """The smallest effects the budget decides (80% power, 95% intervals), as factors on the ratio.

    ``group``: for an intervention of ``n`` seeds against a base of ``n`` seeds, from the pooled
    within-group sd ``s`` of the log raw index over every grid entry: the Welch standard error is
    about ``s sqrt(2/n)``, so ``exp(smallest_effect(sqrt(2) s, n))`` (with ``n - 1`` degrees of
    freedom where Welch has up to ``2n - 2``: on the safe side). ``paired``: from the sd of the
    log (EMA / raw) ratio over the base runs, ``exp(smallest_effect(sd, n))``."""
    rows = [r for r in finished_rows(rows) if r["raw_oscillation"] > 0]
    groups = [[math.log(r["raw_oscillation"]) for r in rows if r["interventions"] == g] for g in ("base", *grid)]
    groups = [g for g in groups if len(g) >= 2]
    dof = sum(len(g) - 1 for g in groups)
    s = math.sqrt(sum(np.var(g, ddof=1) * (len(g) - 1) for g in groups) / dof) if dof else math.nan
    n = min((len(g) for g in groups), default=0)
    base = [
        r
        for r in rows
        if r["interventions"] == "base" and _finite(r.get("stab_oscillation")) and r["stab_oscillation"] > 0
    ]
    logs = [math.log(r["stab_oscillation"] / r["raw_oscillation"]) for r in base]
    sd_pair = float(np.std(logs, ddof=1)) if len(logs) >= 2 else math.nan
    return dict(
        sd_log=s,
        n=n,
        group=math.exp(smallest_effect(math.sqrt(2) * s, n)),
        sd_log_pair=sd_pair,
        n_pair=len(logs),
        paired=math.exp(smallest_effect(sd_pair, len(logs))),
    )


def verdicts_of(table: Sequence[dict[str, Any]]) -> list[Verdict]:
    return [row["verdict"] for row in table if "verdict" in row]


# ------------------------------------------------------------------------------ the page


def _f(v: float) -> str:
    return f"{v:.3g}" if _finite(v) else "n/a"


def plot(table: Sequence[dict[str, Any]]):
    """The ratio to the base (log scale) with its 95% interval per row, against the rules' edges."""
    import matplotlib.pyplot as plt

    rows = [r for r in table if "ratio" in r]
    fig, ax = plt.subplots(figsize=(6.4, 1.4 + 0.38 * max(1, len(rows))))
    colors = {"supports": "tab:green", "contradicts": "tab:red", "inconclusive": "tab:gray"}
    for y, r in enumerate(rows):
        iv = r["ratio"]
        if not _finite(iv.estimate):
            continue
        err = [[iv.estimate - iv.low], [iv.high - iv.estimate]] if iv.finite else None
        ax.errorbar(iv.estimate, y, xerr=err, fmt="o", capsize=3, color=colors[r["verdict"].outcome])
    ax.axvline(0.5, color="k", ls=":", lw=0.8, label="stays: >= 0.5")
    ax.axvline(0.8, color="k", ls="--", lw=0.8, label="falls: <= 0.8")
    ax.axvline(1.0, color="0.6", lw=0.6)
    ax.set_xscale("log")
    ax.set_yticks(
        range(len(rows)),
        [
            f"{r['intervention']} ({'falls' if r['intervention'] == AVERAGING else expectation(r['intervention'])})"
            for r in rows
        ],
    )
    ax.set_xlabel("raw zoom oscillation index / base's (geometric means; averaging: EMA / raw), 95% interval")
    ax.set_title("green supports, red contradicts, grey inconclusive")
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def body_text(
    table: Sequence[dict[str, Any]], spec, sweep_dir: Path, n_rows: int, n_finished: int, pw: dict[str, float]
) -> str:
    def iv(i: Interval | None) -> str:
        return f"{_f(i.estimate)} [{_f(i.low)}, {_f(i.high)}]" if i is not None else ""

    md = markdown_table(
        [
            dict(
                intervention=r["intervention"],
                rule=f"`{r['rule']}`" if r["rule"] != "-" else "-",
                n=str(r["n"]),
                osc=iv(r["osc"]),
                ratio=iv(r.get("ratio")),
                outcome=r["verdict"].outcome if "verdict" in r else "",
            )
            for r in table
        ]
    )
    return (
        f"One sweep (`{spec.preset}` preset, base overrides `{dict(spec.base)}`; seeds {list(spec.seeds)}; "
        f"{n_finished}/{n_rows} runs finished) in `{sweep_dir}`; its results table is `results.csv` there. "
        "`osc` is the geometric mean over seeds of the raw oscillation index of J_H in the zoom window (relative "
        "to the expert's return), with its t interval on the log scale; the averaging row is the base runs' EMA "
        "column. `ratio` is the intervention's geometric mean over the base's, with a Welch t interval on the log "
        "index (two independent groups of seeds); for averaging, the geometric mean of EMA / raw over the base "
        "runs, paired t on the log ratio. Each row is decided by its registered rule (printed beside the verdict "
        "below): *stays* rows support if the whole interval lies in [0.5, inf), *falls* rows and averaging if it "
        "lies in (0, 0.8], contradict if it lies wholly outside, else inconclusive.\n\n"
        f"**Power.** The pooled seed-to-seed sd of the log raw index is {_f(pw['sd_log'])} (every entry with 2 or "
        f"more seeds); with {pw['n']} seeds a side, a ratio interval is decided (80% power) when the true ratio "
        f"lies a factor {_f(pw['group'])} or more beyond a rule's edge (a *falls* row supports for a true ratio "
        f"below {_f(0.8 / pw['group'])}, a *stays* row for one above {_f(0.5 * pw['group'])}). The paired "
        f"averaging row (sd of the log EMA / raw ratio {_f(pw['sd_log_pair'])} over {pw['n_pair']} base runs) "
        f"decides a factor {_f(pw['paired'])} beyond its edge (supports for a true ratio below "
        f"{_f(0.8 / pw['paired'])}).\n\n" + md
    )


def run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Section:
    from validation.report import save_figure

    outcome = shared_sweep(outdir, quick=quick, seed=seed, quiet=quiet)
    spec = sweep_spec(quick, seed)
    grid = sweep_grid(quick)
    table = analyse(outcome.rows, grid)
    fig = save_figure(plot(table), Path(outdir) / "algorithmic.png")
    body = body_text(
        table, spec, outcome.out, len(outcome.rows), len(finished_rows(outcome.rows)), power(outcome.rows, grid)
    )
    return Section(
        "algorithmic", "GVA is algorithmic: interventions over seeds (R2, R3)", body, verdicts_of(table), [fig]
    )
