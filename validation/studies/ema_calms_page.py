"""The averaging study's page (:mod:`validation.studies.ema_calms`): its figures, flip rate
against distance per environment and measured against predicted flip rate (``runs`` are
:func:`~validation.studies.ema_calms.measure_run` results), and the lines that describe its
tables: runs finished, the experts' held-out returns, what a demonstration filter dropped."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def plot_curves(runs: Sequence[dict[str, Any]], envs: Sequence[str]):
    """Flip rate against distance per environment: each run's noise curve, the pooled noise and
    random curves, and where the averages' per-step movements fall."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(envs), figsize=(4 * len(envs), 3.6), sharey=True, constrained_layout=True)
    for ax, env in zip(np.atleast_1d(axes), envs):
        mine = [r for r in runs if r["env"] == env]
        for r in mine:
            ax.plot(r["curve"].distances, r["curve"].rate("noise"), "-", color="tab:red", lw=0.6, alpha=0.5)
        if mine:
            d = mine[0]["curve"].distances
            for kind, style in (("noise", "o-"), ("random", "s--")):
                k = sum(r["curve"].flips(kind)[0] for r in mine)
                n = sum(r["curve"].flips(kind)[1] for r in mine)
                ax.plot(d, k / n, style, color="tab:red" if kind == "noise" else "0.4", label=f"{kind}, pooled")
            for m in np.mean([r["movement"] for r in mine], axis=0):
                ax.axvline(m, color="tab:orange", lw=0.6, ls=":")
        ax.axvline(1.0, color="k", lw=0.8, ls=":")
        ax.set(xscale="log", title=env, xlabel="distance r (optimizer steps)")
        ax.set_yscale("symlog", linthresh=1e-2)
    np.atleast_1d(axes)[0].set_ylabel("flip rate (|dJ| > 0.1 J*)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    return fig


def plot_law(runs: Sequence[dict[str, Any]], envs: Sequence[str]):
    """Measured against predicted flip rate, one dot per (run, width), crosses for the raw iterate."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.6), constrained_layout=True)
    floor = 1e-3
    for env, color in zip(envs, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        mine = [r for r in runs if r["env"] == env]
        if not mine:
            continue
        x = [max(float(np.mean(r["law"](m))), floor) for r in mine for m in r["moves"]]
        y = [max(f / r["pairs"], floor) for r in mine for f in r["flips"]]
        ax.scatter(x, y, s=12, color=color, label=env)
        ax.scatter(
            [max(float(r["law"](1.0)), floor) for r in mine],
            [max(r["raw_flips"] / r["pairs"], floor) for r in mine],
            marker="x",
            color=color,
        )
    t = np.geomspace(floor, 1, 10)
    ax.plot(t, t, "k--", lw=0.8)
    ax.fill_between(t, t / 2, t * 2, color="0.85", label="within a factor 2")
    ax.set(xscale="log", yscale="log", xlabel="predicted flip rate, min(c m^beta, 1)", ylabel="measured flip rate")
    ax.set_title(f"averages (dots) and raw (crosses); below {floor:g} drawn at {floor:g}", fontsize=8)
    ax.legend(fontsize=7)
    return fig


def describe_table(name: str, sweep, runs: Sequence[dict[str, Any]], what: str) -> str:
    """One line of the page per table: what it is, and how many of its runs finished."""
    missing = len(sweep.rows) - len(runs)
    note = f" ({missing} of {len(sweep.rows)} runs did not finish: see `failures.jsonl`)" if missing else ""
    return f"- Table `{name}`: {len(runs)} runs of `{sweep.out}`, {what}{note}."


def heldout(name: str) -> str:
    """A shipped Walker2d expert on its sidecar's held-out initial conditions (written by `gva expert export`)."""
    from gvaempirics.bc.experts import expert_file

    held = json.loads(expert_file("Walker2d-v5", name).with_suffix(".json").read_text()).get("heldout")
    if not held:
        return "not measured (its sidecar has no `heldout` block)"
    return (
        f"{held['return_mean']:.0f} ± {held['return_sd']:.0f} with {held['falls']} falls of {held['n_ics']} "
        f"(seed {held['ic_seed']})"
    )


def dropped(sweep_dir: Path) -> str:
    """What the demonstration filter of a sweep dropped, from its demonstration caches."""
    from gvaempirics.bc.data import Demonstrations

    caches = sorted((sweep_dir / "demos").glob("*.npz"))
    if not caches:
        return "no demonstrations collected"
    parts = []
    for path in caches:
        tr = Demonstrations.load(path).train
        falls = tr.lengths < tr.actions.shape[1]
        parts.append(
            f"{path.name.split('__')[0]}: it drops {int(falls.sum())} of {len(falls)} trajectories, "
            f"{tr.lengths[falls].sum() / tr.lengths.sum():.1%} of the training pairs"
        )
    return "; ".join(parts)
