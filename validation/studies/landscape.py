"""Study: the reward landscape is rough where the loss landscape is smooth (paper Figure 1 right, R1).

Prediction: around a checkpoint, on a grid of a few optimizer steps along two minibatch-gradient
directions, the rollout reward turns back and forth (a rough surface) while the BC loss is a
smooth bowl. Decided by the pre-registered rules ``landscape/raw-reward-rougher`` and
``landscape/ema-reward-rougher`` (``validation.registry``): per run, the local quadratic roughness
of the reward surface minus that of the loss surface
(:func:`gvaempirics.bc.roughness.local_quadratic`: the RMS residual of full quadratic fits on the
3x3 patches of neighbouring grid points, over the surface's range; at most 0.03 for smooth ridges,
bumps and waves, 0.11 for white noise), at the raw weights and at the EMA weights; the verdict is a paired t
interval over runs (:func:`gvatheory.inference.paired_interval` of reward against loss), which
supports if it lies in ``[0.05, inf)``. Total variation, jump fraction and fractal dimension are
shown as descriptive columns, with the quadratic fit over the whole grid (amended 2026-12-03: that
was the first registered measure, and smooth surfaces that are not quadratics on the grid's scale
pass it; see the registry).

The grid is +-5 of each run's own optimizer steps (``step_unit="auto"`` of
:func:`gvaempirics.bc.landscape.compute_landscape`: Adam-preconditioned for Adam and AdamW runs).
Measured at the last checkpoint of the base runs of the sweep shared with ``algorithmic``
(``<report>/sweep``), one per training seed: other interventions of a seed share its
initialisation, demonstrations and initial conditions, so they are not independent units. A run whose learning
rate has decayed to zero (a decay schedule at its last step) gives no scale for the grid and is
skipped. Landscapes are saved under this study's folder and reused when present.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gvatheory.inference import paired_interval, smallest_effect
from validation.registry import rule
from validation.report import Section, Verdict, markdown_table

from .algorithmic import finished_rows, shared_sweep

STEP_UNIT = "auto"  # each run's own optimizer step, as the rules say
EXTENT = 5.0  # +- 5 optimizer steps
DESCRIPTIVE = ("quadratic_fit", "tv", "jump_fraction", "fractal_dimension")
RULES = (("raw", "landscape/raw-reward-rougher"), ("stab", "landscape/ema-reward-rougher"))


def grid_size(quick: bool) -> tuple[int, int]:
    """(points per axis, most runs) of the quick and the full budget."""
    return (7, 4) if quick else (11, 12)


def roughness_row(run_id: str, measures: dict[str, dict[str, Any]], weights: Sequence[str]) -> dict[str, Any]:
    """One table row from a landscape's ``measures`` (``measures[w]["reward" | "loss"]``, each a
    :class:`gvaempirics.bc.roughness.Roughness`) for ``weights = (raw, stabilizer)``: the
    local quadratic roughness of each surface (``<raw|stab>_reward_lq``, ``_loss_lq``), their
    difference (``_diff``), and the descriptive measures."""
    row: dict[str, Any] = {"run": run_id}
    for w, name in zip(weights, ("raw", "stab")):
        reward, loss = measures[w]["reward"], measures[w]["loss"]
        row[f"{name}_reward_lq"] = float(reward.local_quadratic)
        row[f"{name}_loss_lq"] = float(loss.local_quadratic)
        row[f"{name}_diff"] = row[f"{name}_reward_lq"] - row[f"{name}_loss_lq"]
        for k in DESCRIPTIVE:
            row[f"{name}_reward_{k}"] = float(getattr(reward, k))
            row[f"{name}_loss_{k}"] = float(getattr(loss, k))
    row["reward_range"] = float(measures[weights[0]]["reward"].range)
    return row


def decide(rough: Sequence[dict[str, Any]]) -> list[tuple[Verdict, dict[str, float]]]:
    """The verdicts of the two rules on the roughness rows of the runs, each with its numbers: the
    run-to-run ``sd`` of the difference, the number of runs ``n`` and the smallest distance from the
    region's edge that the budget decides (``power``). Runs whose surfaces are not finite (a
    diverged loss) are left out."""
    out = []
    for name, key in RULES:
        pairs = [
            (r[f"{name}_reward_lq"], r[f"{name}_loss_lq"])
            for r in rough
            if math.isfinite(r[f"{name}_reward_lq"]) and math.isfinite(r[f"{name}_loss_lq"])
        ]
        reward = [p[0] for p in pairs]
        loss = [p[1] for p in pairs]
        interval = paired_interval(reward, loss)
        diff = np.subtract(reward, loss)
        sd = float(np.std(diff, ddof=1)) if len(diff) >= 2 else math.nan
        detail = (
            f"mean reward roughness {_f(float(np.mean(reward)) if reward else math.nan)}, "
            f"loss roughness {_f(float(np.mean(loss)) if loss else math.nan)} over {len(pairs)} runs"
        )
        out.append(
            (rule(key).decide(interval, detail), dict(sd=sd, n=len(pairs), power=smallest_effect(sd, len(pairs))))
        )
    return out


def compute(
    rows, sweep_dir: Path, outdir: Path, *, quick: bool, seed: int, quiet: bool
) -> tuple[list[dict], list[str], list]:
    """Landscapes of up to ``grid_size(quick)[1]`` runs; returns (roughness rows, skipped, landscapes)."""
    from gvaempirics.bc.config import BCConfig
    from gvaempirics.bc.landscape import (
        compute_landscape,
        landscape_paths,
        load_landscape,
        preconditioned_unit,
        save_landscape,
    )
    from gvaempirics.rundir import RunDir
    from gvatheory.config import build_config

    points, most = grid_size(quick)
    rows = finished_rows(rows)
    rows = [r for r in rows if r["interventions"] == "base"]  # one run per independent training seed
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
            cfg = build_config(BCConfig, RunDir(run_dir).read_config())
            unit = preconditioned_unit(STEP_UNIT, cfg.optimizer)
            if land.a.size != points or land.a[-1] != EXTENT or land.preconditioned != unit or land.seed != seed:
                land = None
        if land is None:
            try:
                land = compute_landscape(
                    run_dir, -1, extent=EXTENT, points=points, seed=seed, step_unit=STEP_UNIT, quiet=quiet
                )
            except ValueError as err:  # a decayed learning rate: no scale for the grid
                skipped.append(f"{r['run']}: {str(err).splitlines()[0]}")
                continue
            save_landscape(land, folder)
        out.append(
            {
                "interventions": r["interventions"],
                "unit": land.unit,
                **roughness_row(r["run"], land.measures, land.weights),
            }
        )
        lands.append(land)
    return out, skipped, lands


def _f(v: float) -> str:
    return f"{v:.3g}" if isinstance(v, float) and math.isfinite(v) else "n/a"


def plot(rough: list[dict]):
    """Loss against reward local quadratic roughness, one dot per run and weights, with the rules'
    edge (reward = loss + 0.05)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for name, color in (("raw", "tab:red"), ("stab", "tab:blue")):
        x = [r[f"{name}_loss_lq"] for r in rough]
        y = [r[f"{name}_reward_lq"] for r in rough]
        ax.scatter(x, y, color=color, label="raw iterate" if name == "raw" else "EMA")
    hi = max([0.1] + [max(r["raw_reward_lq"], r["stab_reward_lq"], r["raw_loss_lq"], r["stab_loss_lq"]) for r in rough])
    hi *= 1.1
    ax.plot([0, hi], [0, hi], "k--", lw=0.8, label="equal roughness")
    ax.plot([0, hi], [0.05, hi + 0.05], "k:", lw=0.8, label="rule's edge: reward = loss + 0.05")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi + 0.05)
    ax.set_xlabel("loss roughness (RMS residual of local quadratic fits / range)")
    ax.set_ylabel("reward roughness (same measure)")
    ax.set_title("landscapes at the last checkpoint, one dot per run")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Section:
    from validation.report import save_figure

    outdir = Path(outdir)
    sweep = shared_sweep(outdir, quick=quick, seed=seed, quiet=quiet)
    rough, skipped, lands = compute(sweep.rows, sweep.out, outdir, quick=quick, seed=seed, quiet=quiet)
    decided = decide(rough)
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
    cols = ["run", "raw_reward_lq", "raw_loss_lq", "raw_diff", "stab_reward_lq", "stab_loss_lq", "stab_diff"]
    cols += ["raw_reward_tv", "raw_loss_tv", "raw_reward_fractal_dimension", "raw_loss_fractal_dimension"]
    cols += ["raw_reward_jump_fraction", "raw_loss_jump_fraction", "reward_range"]
    table = markdown_table([{c: r[c] for c in cols} for r in rough]) if rough else "(no landscape computed)"
    units = sorted({r["unit"] for r in rough})
    power = "; ".join(
        f"{'raw' if name == 'raw' else 'EMA'}: sd {_f(p['sd'])} over {p['n']} runs, so a mean difference "
        f"{_f(p['power'])} or more beyond the edge 0.05 is decided (supports above {_f(0.05 + p['power'])})"
        for (name, _), (_, p) in zip(RULES, decided)
    )
    body = (
        f"At the last checkpoint of each run ({len(rough)} runs of `{sweep.out}`), a {points}x{points} grid of "
        f"+-{EXTENT:g} optimizer steps along two minibatch gradients "
        "(`gvaempirics.bc.landscape.compute_landscape`), the run's initial conditions and horizon. "
        f"**Grid unit: the run's own optimizer step** (`step_unit={STEP_UNIT!r}`): "
        f"{', '.join(units) or 'none'} here (Adam steps are eta g / (sqrt(v_hat) + eps) with the checkpoint's "
        "second moments). One base run per training seed (other interventions share a seed's data and "
        "initialisation). Roughness of each surface relative to its own range: `lq` = mean over the 3x3 patches "
        "of neighbouring grid points of the RMS residual of a full quadratic fit (1, a, b, a^2, ab, b^2) on the "
        "patch / the surface's range (a smooth surface is locally quadratic: at most 0.03 for smooth ridges, "
        "bumps and waves on this grid, 0.11 for white noise); `diff` = reward lq - loss lq per run, the rules' "
        "measure (paired t over runs; rule below). "
        "Descriptive only: the quadratic fit over the whole grid (0 for any quadratic, but a smooth tanh ridge "
        "scores 0.16), TV = total variation / range along rows and columns (1 for a monotone slice, up to 2 "
        "for a bowl), fractal dimension (1 smooth, 2 white noise), jump fraction (neighbours differing by > 10% "
        "of the range; a smooth bowl on a 7-point grid has many).\n\n"
        f"**Power** (80%, from the run-to-run sd of `diff`): {power}.\n\n"
        + table
        + ("\n\nSkipped: " + "; ".join(skipped) if skipped else "")
    )
    return Section(
        "landscape",
        "The reward landscape is rough, the loss landscape smooth (R1)",
        body,
        [v for v, _ in decided],
        figures,
    )
