"""Study: the reward landscape is rough where the loss landscape is smooth (paper Figure 1 right, R1).

Prediction: around a checkpoint, on a grid of a few optimizer steps along two minibatch-gradient
directions, the rollout reward turns back and forth (a rough surface) while the BC loss is a
smooth bowl. Each surface's roughness is measured relative to its own range
(:func:`gvaempirics.bc.landscape.roughness`), so the two share a scale; the claim is that the
ratio of reward roughness to loss roughness (total variation along slices) exceeds 1.

Measured at the last checkpoint of runs of the sweep shared with ``algorithmic``
(``<report>/sweep``): the base runs first, then the others in grid order. A run whose learning
rate has decayed to zero (a decay schedule at its last step) gives no scale for the grid and is
skipped. Landscapes are saved under this study's folder and reused when present.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from validation.report import Section, Verdict, markdown_table

from .algorithmic import finished_rows, shared_sweep

PRECONDITIONED = True  # the runs use Adam: grid steps are Adam steps, eta g / (sqrt(v) + eps)
EXTENT = 5.0  # +- 5 optimizer steps
MEASURES = ("tv", "jump_fraction", "fractal_dimension")


def grid_size(quick: bool) -> tuple[int, int]:
    """(points per axis, most runs) of the quick and the full budget."""
    return (7, 4) if quick else (11, 12)


def _roughness_row(run_id: str, land) -> dict[str, Any]:
    row: dict[str, Any] = {"run": run_id}
    for w, name in ((land.weights[0], "raw"), (land.weights[1], "stab")):
        m = land.measures[w]
        for k in MEASURES:
            row[f"{name}_reward_{k}"] = float(getattr(m["reward"], k))
            row[f"{name}_loss_{k}"] = float(getattr(m["loss"], k))
        row[f"{name}_tv_ratio"] = row[f"{name}_reward_tv"] / max(row[f"{name}_loss_tv"], 1e-12)
    row["reward_range"] = float(land.measures[land.weights[0]]["reward"].range)
    row["expert_return"] = float(land.expert_return)
    return row


def ratio_verdict(ratios: Sequence[float]) -> tuple[str, tuple[float, float, float]]:
    """Mean of the per-run ratios (reward TV / loss TV) with a 95% percentile-bootstrap interval
    over runs: *supports* if the interval lies above 1, *contradicts* if it lies at or below 1,
    *inconclusive* otherwise or with fewer than 2 runs."""
    from gvaempirics.sweeps.results import stratified_bootstrap

    x = np.asarray([r for r in ratios if math.isfinite(r)], dtype=float)
    if len(x) == 0:
        return "inconclusive", (math.nan, math.nan, math.nan)
    ci = stratified_bootstrap([x], np.mean)
    nums = (ci.estimate, ci.low, ci.high)
    if len(x) < 2 or not math.isfinite(ci.low):
        return "inconclusive", nums
    if ci.low > 1:
        return "supports", nums
    return ("contradicts" if ci.high <= 1 else "inconclusive"), nums


def compute(
    rows, sweep_dir: Path, outdir: Path, *, quick: bool, seed: int, quiet: bool
) -> tuple[list[dict], list[str], list]:
    """Landscapes of up to ``grid_size(quick)[1]`` runs; returns (roughness rows, skipped, landscapes)."""
    from gvaempirics.bc.landscape import compute_landscape, landscape_paths, load_landscape, save_landscape

    points, most = grid_size(quick)
    rows = finished_rows(rows)
    rows = sorted(rows, key=lambda r: (r["interventions"] != "base",))  # stable: base first, then grid order
    out, skipped, lands = [], [], []
    for r in rows:
        if len(out) >= most:
            break
        run_dir = Path(sweep_dir) / "runs" / r["run"]
        folder = Path(outdir) / "landscapes" / r["run"]
        land = None
        js, _ = landscape_paths(folder, int(r["steps_done"]))
        if js.is_file():
            land = load_landscape(js)
            if land.a.size != points or land.preconditioned != PRECONDITIONED or land.seed != seed:
                land = None
        if land is None:
            try:
                land = compute_landscape(
                    run_dir, -1, extent=EXTENT, points=points, seed=seed, preconditioned=PRECONDITIONED, quiet=quiet
                )
            except ValueError as err:  # a decayed learning rate: no scale for the grid
                skipped.append(f"{r['run']}: {str(err).splitlines()[0]}")
                continue
            save_landscape(land, folder)
        out.append({"interventions": r["interventions"], **_roughness_row(r["run"], land)})
        lands.append(land)
    return out, skipped, lands


def _f(v: float) -> str:
    return f"{v:.3g}" if isinstance(v, float) and math.isfinite(v) else "n/a"


def plot(rough: list[dict]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for name, color in (("raw", "tab:red"), ("stab", "tab:blue")):
        x = [r[f"{name}_loss_tv"] for r in rough]
        y = [r[f"{name}_reward_tv"] for r in rough]
        ax.scatter(x, y, color=color, label="raw iterate" if name == "raw" else "EMA")
    hi = max([2.0] + [max(r["raw_reward_tv"], r["raw_loss_tv"], r["stab_reward_tv"], r["stab_loss_tv"]) for r in rough])
    ax.plot([1, hi], [1, hi], "k--", lw=0.8, label="equal roughness")
    ax.set_xlabel("loss roughness (total variation / range along slices)")
    ax.set_ylabel("reward roughness (same measure)")
    ax.set_title("landscapes at the last checkpoint, one dot per run")
    ax.legend()
    fig.tight_layout()
    return fig


def run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Section:
    from validation.report import save_figure

    outdir = Path(outdir)
    sweep = shared_sweep(outdir, quick=quick, seed=seed, quiet=quiet)
    rough, skipped, lands = compute(sweep.rows, sweep.out, outdir, quick=quick, seed=seed, quiet=quiet)
    outcome, (m, lo, hi) = ratio_verdict([r["raw_tv_ratio"] for r in rough])
    s_outcome, (sm, slo, shi) = ratio_verdict([r["stab_tv_ratio"] for r in rough])
    verdicts = [
        Verdict.of(
            "around the raw iterate the reward surface is rougher than the loss surface, each relative to its "
            "range: mean over runs of (reward TV / loss TV) > 1, its 95% CI above 1",
            outcome,
            f"ratio {_f(m)} [{_f(lo)}, {_f(hi)}] over {len(rough)} runs",
        )
    ]
    figures = []
    if rough:
        from gvaempirics.bc.plots import plot_landscape

        figures.append(save_figure(plot(rough), outdir / "landscape.png"))
        first = lands[0]
        figures.append(
            save_figure(
                plot_landscape(first, title=f"{rough[0]['run']}, step {first.step}"),
                outdir / "landscape_surfaces.png",
            )
        )
    points, _ = grid_size(quick)
    cols = ["run", "raw_reward_tv", "raw_loss_tv", "raw_tv_ratio", "raw_reward_jump_fraction", "raw_loss_jump_fraction"]
    cols += ["raw_reward_fractal_dimension", "raw_loss_fractal_dimension", "stab_tv_ratio", "reward_range"]
    table = markdown_table([{c: r[c] for c in cols} for r in rough]) if rough else "(no landscape computed)"
    body = (
        f"At the last checkpoint of each run ({len(rough)} runs of `{sweep.out}`), a {points}x{points} grid of "
        f"+-{EXTENT:g} {'Adam-preconditioned ' if PRECONDITIONED else ''}steps along two minibatch gradients "
        "(`gvaempirics.bc.landscape.compute_landscape`), the run's initial conditions and horizon. Roughness of "
        "each surface relative to its own range: TV = total variation / range along rows and columns (1 for "
        "a monotone slice), jump fraction (neighbours differing by > 10% of the range), fractal dimension "
        "(1 smooth, 2 white noise). Verdict on the raw iterate's TV ratio, mean over runs with a 95% "
        f"percentile-bootstrap interval over runs (supports if above 1, contradicts if at or below 1). "
        f"The EMA's ratio, for comparison: {_f(sm)} [{_f(slo)}, {_f(shi)}] ({s_outcome} of the same claim).\n\n"
        + table
        + ("\n\nSkipped: " + "; ".join(skipped) if skipped else "")
    )
    return Section(
        "landscape", "The reward landscape is rough, the loss landscape smooth (R1)", body, verdicts, figures
    )
