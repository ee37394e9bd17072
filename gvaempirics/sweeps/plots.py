"""The sweep figures, drawn from a sweep's tables and run directories (nothing reruns):

* :func:`plot_summary`: the raw oscillation index per intervention with its interval over seeds;
* :func:`plot_rewards` (paper Figure 2): per grid entry, the raw rollout reward of every evaluated
  iterate (per initial condition and their mean) over the validation BC loss;
* :func:`plot_stabilized` (paper Figure 3): per grid entry, raw against stabilized (EMA) reward.

:func:`entry_runs` picks and reads the run drawn per entry (one seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bc.results import BCResult
from .results import SweepSummary
from .spec import BASE_LABEL


def plot_summary(summary: SweepSummary, *, title: str = ""):
    """Mean raw oscillation index (dot, with its interval) and IQM (open diamond) per grid entry,
    sorted with the calmest at the top; the base configuration is drawn in red with a dashed line at
    its mean. Entries without a finished run are left out. Returns the figure."""
    import matplotlib.pyplot as plt

    stats = sorted(
        (s for s in summary.stats if math.isfinite(s.mean.estimate)), key=lambda s: s.mean.estimate, reverse=True
    )
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.35 * max(1, len(stats))))
    for y, s in enumerate(stats):
        color = "tab:red" if s.interventions == BASE_LABEL else "tab:blue"
        err = None
        if math.isfinite(s.mean.low):
            err = [[s.mean.estimate - s.mean.low], [s.mean.high - s.mean.estimate]]
        ax.errorbar(s.mean.estimate, y, xerr=err, fmt="o", color=color, capsize=3)
        ax.plot(s.iqm.estimate, y, "D", mfc="none", color=color, ms=5)
        if s.interventions == BASE_LABEL:
            ax.axvline(s.mean.estimate, color=color, ls="--", lw=0.8)
    ax.set_yticks(range(len(stats)), [f"{s.interventions} (n={s.finished})" for s in stats])
    ax.set_xlabel(f"raw oscillation index of J_H in the zoom windows (mean, {summary.confidence:.0%} CI; diamond: IQM)")
    ax.set_title(title or "interventions, calmest at the top")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ Figures 2 and 3, per entry


@dataclass(frozen=True)
class EntryRun:
    """The run a per-entry figure draws for one grid entry (and env): its labels and its log
    (``None`` where the run directory holds no evaluation yet)."""

    interventions: str
    env: str
    seed: int
    run: str
    result: BCResult | None


def entry_runs(out: Path, rows: Sequence[dict[str, Any]], *, seed: int | None = None) -> list[EntryRun]:
    """One :class:`EntryRun` per (grid entry, env) of a sweep's results rows, in grid order: the run
    of ``seed`` (default: the first seed of the grid), read from ``out/runs/<run id>``.

    Raises ``ValueError`` if no row has ``seed``."""
    from ..bc.results import load_result

    seeds = list(dict.fromkeys(int(r["seed"]) for r in rows))
    if seed is None:
        seed = seeds[0] if seeds else 0
    elif seed not in seeds:
        raise ValueError(f"seed={seed} is not valid: this sweep's seeds are {', '.join(map(str, seeds))}")
    picked = []
    for r in rows:
        if int(r["seed"]) != seed:
            continue
        path = Path(out) / "runs" / r["run"]
        result = None
        if (path / "metrics.jsonl").is_file():
            result = load_result(path)
            if not len(result.eval_steps):
                result = None
        picked.append(EntryRun(r["interventions"], r["env"], seed, r["run"], result))
    return picked


def _panel_title(entry: EntryRun, several_envs: bool) -> str:
    return f"{entry.interventions}, {entry.env}" if several_envs else entry.interventions


def _layout(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return -(-max(n, 1) // ncols), ncols


def _share_reward_limits(axes_by_env: dict[str, list]) -> None:
    """One reward scale per env (envs have their own reward scales, so only an env's panels share)."""
    for axes in axes_by_env.values():
        lims = [ax.get_ylim() for ax in axes if ax.has_data()]
        if lims:
            low, high = min(lo for lo, _ in lims), max(hi for _, hi in lims)
            for ax in axes:
                ax.set_ylim(low, high)


def _no_data(ax, entry: EntryRun) -> None:
    ax.text(0.5, 0.5, f"no evaluation logged\n({entry.run})", ha="center", va="center", transform=ax.transAxes)
    ax.set_yticks([])


def plot_rewards(entries: Sequence[EntryRun], *, ncols: int = 3, title: str = ""):
    """Paper Figure 2 per grid entry: the raw rollout reward of every evaluated iterate, one light
    dot per initial condition and a line through their mean (the expert's return dotted), over a
    small panel of the validation BC loss (log scale). Every evaluated step is drawn, the zoom
    windows' consecutive iterates included. Panels share the step axis, and the reward axis
    within an env. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    several_envs = len({e.env for e in entries}) > 1
    nrows, ncols = _layout(len(entries), ncols)
    fig = plt.figure(figsize=(4.0 * ncols, 3.6 * nrows), constrained_layout=True)
    grid = fig.add_gridspec(nrows, ncols)
    first_reward = first_loss = None
    by_env: dict[str, list] = {}
    for i, entry in enumerate(entries):
        cell = grid[i // ncols, i % ncols].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.0)
        ax = fig.add_subplot(cell[0], sharex=first_reward)
        lax = fig.add_subplot(cell[1], sharex=ax, sharey=first_loss)
        first_reward = first_reward or ax
        ax.set_gid(f"reward:{entry.run}")
        lax.set_gid(f"loss:{entry.run}")
        ax.set_title(_panel_title(entry, several_envs), fontsize=10)
        ax.tick_params(labelbottom=False)
        lax.set_xlabel("step")
        if i % ncols == 0:
            ax.set_ylabel("J_H (raw)")
            lax.set_ylabel("val loss")
        res = entry.result
        if res is None:
            _no_data(ax, entry)
            continue
        by_env.setdefault(entry.env, []).append(ax)
        steps, r = res.eval_steps, res.returns["raw"]
        (dots,) = ax.plot(
            np.repeat(steps, r.shape[1]), r.ravel(), ".", color="tab:blue", alpha=0.25, ms=3, label="initial condition"
        )
        (mean,) = ax.plot(steps, r.mean(axis=1), "-", color="tab:blue", lw=1.0, label="mean")
        dots.set_gid("returns")
        mean.set_gid("mean_return")
        if np.isfinite(res.expert_return):
            ax.axhline(res.expert_return, color="0.4", ls=":", lw=0.8, label="expert")
        ax.grid(alpha=0.3)
        val = res.losses["val"]
        positive = val > 0  # a log axis cannot show a zero loss
        (loss,) = lax.plot(res.loss_steps[positive], val[positive], "-", color="tab:gray", lw=1.0)
        loss.set_gid("val_loss")
        lax.set_yscale("log")
        lax.yaxis.set_minor_formatter(NullFormatter())  # decade labels only: the panel is small
        lax.grid(alpha=0.3)
        first_loss = first_loss or lax
    _share_reward_limits(by_env)
    if first_reward is not None and first_reward.get_legend_handles_labels()[0]:
        first_reward.legend(fontsize=7, loc="lower right")
    seed = entries[0].seed if entries else ""
    fig.suptitle(title or f"raw rollout reward per grid entry (seed {seed})")
    return fig


def plot_stabilized(entries: Sequence[EntryRun], *, ncols: int = 3, title: str = ""):
    """Paper Figure 3 per grid entry: the mean rollout reward over initial conditions of the raw
    iterates and of the run's stabilized weights (the EMA by default), at every evaluated step,
    in one panel; panels share the step axis, and the reward axis within an env. Returns the
    figure."""
    import matplotlib.pyplot as plt

    several_envs = len({e.env for e in entries}) > 1
    nrows, ncols = _layout(len(entries), ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.0 * ncols, 2.9 * nrows), sharex=True, squeeze=False, constrained_layout=True
    )
    by_env: dict[str, list] = {}
    for i, ax in enumerate(axes.flat):
        if i >= len(entries):
            ax.set_visible(False)
            continue
        entry = entries[i]
        ax.set_gid(f"stabilized:{entry.run}")
        ax.set_title(_panel_title(entry, several_envs), fontsize=10)
        if i // ncols == nrows - 1 or i + ncols >= len(entries):
            ax.set_xlabel("step")
            ax.tick_params(labelbottom=True)
        if i % ncols == 0:
            ax.set_ylabel("J_H (mean over ICs)")
        res = entry.result
        if res is None:
            _no_data(ax, entry)
            continue
        by_env.setdefault(entry.env, []).append(ax)
        raw, stab = res.weights
        (a,) = ax.plot(res.eval_steps, res.returns[raw].mean(axis=1), "-", color="tab:blue", lw=1.0, label="raw")
        (b,) = ax.plot(res.eval_steps, res.returns[stab].mean(axis=1), "-", color="tab:orange", lw=1.4, label=stab)
        a.set_gid("raw")
        b.set_gid("stabilized")
        if np.isfinite(res.expert_return):
            ax.axhline(res.expert_return, color="0.4", ls=":", lw=0.8, label="expert")
        ax.grid(alpha=0.3)
        if sum(map(len, by_env.values())) == 1:  # the first panel with data carries the legend
            ax.legend(fontsize=7, loc="lower right")
    _share_reward_limits(by_env)
    seed = entries[0].seed if entries else ""
    fig.suptitle(title or f"raw against stabilized rollout reward per grid entry (seed {seed})")
    return fig
