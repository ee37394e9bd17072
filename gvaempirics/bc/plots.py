"""Figure-1-style plots of a behavior-cloning run, drawn from a :class:`~gvaempirics.bc.train.BCResult`,
of a reward landscape, drawn from a :class:`~gvaempirics.bc.landscape.Landscape`, and of a post-hoc
EMA sweep, drawn from a :class:`~gvaempirics.bc.posthoc.PosthocSweep`.

Nothing here trains or rolls out: a figure can be regenerated from a saved run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .results import BCResult

if TYPE_CHECKING:
    from .flips import FlipCurve
    from .landscape import Landscape
    from .posthoc import PosthocSweep


def plot_figure1(res: BCResult, *, title: str | None = None):
    """Rollout reward per initial condition (dots), its mean (raw), the stabilized overlay, the
    BC loss, and a zoom panel of consecutive iterates. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    raw, avg = res.weights
    zooms = res.zoom_windows()
    ncols = 3 if zooms else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.0), constrained_layout=True)
    grid = res.grid()
    steps = res.eval_steps[grid]
    ax = axes[0]
    r = res.returns[raw][grid]
    ax.plot(
        np.repeat(steps, r.shape[1]),
        r.ravel(),
        ".",
        color="tab:blue",
        alpha=0.25,
        ms=3,
        label="raw, per initial condition",
    )
    ax.plot(steps, r.mean(1), "-", color="tab:blue", lw=1.2, label="raw, mean")
    ax.plot(steps, res.returns[avg][grid].mean(1), "-", color="tab:orange", lw=2, label=f"{avg}, mean")
    if np.isfinite(res.expert_return):
        ax.axhline(res.expert_return, color="k", ls=":", lw=1, label="expert")
    ax.set(xlabel="training step", ylabel=f"return J_H (H={res.config['H']})", title="rollout reward")
    ax.legend(fontsize=7, loc="lower right")

    ax = axes[1]
    ax.semilogy(res.train_steps, np.maximum(res.train_loss, 1e-12), color="0.7", lw=0.5, label="minibatch")
    ax.semilogy(res.loss_steps, res.losses["val"], "-", color="tab:blue", label="validation, raw")
    ax.semilogy(res.loss_steps, res.losses["val_avg"], "-", color="tab:orange", label=f"validation, {avg}")
    ax.set(xlabel="training step", ylabel="BC loss (MSE)", title="imitation loss")
    ax.legend(fontsize=7)

    if zooms:
        z = zooms[-1]
        ax = axes[2]
        zs = res.eval_steps[z]
        rz = res.returns[raw][z]
        ax.plot(np.repeat(zs, rz.shape[1]), rz.ravel(), ".", color="tab:blue", alpha=0.25, ms=3)
        ax.plot(zs, rz.mean(1), "-o", color="tab:blue", ms=2, lw=1, label="raw")
        ax.plot(zs, res.returns[avg][z].mean(1), "-o", color="tab:orange", ms=2, lw=1.5, label=avg)
        ax.set(xlabel="training step (every iterate)", ylabel="return J_H", title="zoom: consecutive iterates")
        twin = ax.twinx()
        li = np.searchsorted(res.loss_steps, zs)
        twin.plot(zs, res.losses["val"][li], "--", color="tab:green", lw=1, label="val loss, raw")
        twin.set_ylim(0, 1.2 * res.losses["val"][li].max())  # from zero: fluctuations in true proportion
        twin.set_ylabel("BC validation loss", color="tab:green")
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(title or f"{res.config['env']}: GVA in behavior cloning")
    return fig


def plot_landscape(res: Landscape, *, title: str | None = None):
    """Reward and validation-loss heatmaps over the grid (one row per weights: raw, stabilized) and
    1-D slices through the checkpoint. Rewards share one colour scale across the rows, so raw and
    stabilized returns compare in the same units; each loss surface has its own, since its range
    (what the roughness measures are relative to) can be orders of magnitude apart. Returns the
    matplotlib figure."""
    import matplotlib.pyplot as plt

    rewards = res.rewards
    fig, axes = plt.subplots(len(res.weights), 3, figsize=(15, 4.0 * len(res.weights)), constrained_layout=True)
    axes = np.atleast_2d(axes)
    box = (res.a[0], res.a[-1], res.b[0], res.b[-1])
    finite = [r[np.isfinite(r)] for r in rewards.values()]
    shared = (
        min((float(r.min()) for r in finite if r.size), default=None),
        max((float(r.max()) for r in finite if r.size), default=None),
    )
    unit = res.unit
    ci, cj = res.centre
    for row, w in zip(axes, res.weights):
        panels = (("reward", rewards[w], "viridis", shared), ("loss", res.losses[w], "magma", (None, None)))
        for ax, (kind, z, cmap, (lo, hi)) in zip(row[:2], panels):
            m = res.measures[w][kind]
            im = ax.imshow(z.T, origin="lower", extent=box, aspect="auto", cmap=cmap, vmin=lo, vmax=hi)
            ax.plot(0, 0, "w+", ms=10)
            fig.colorbar(im, ax=ax, label=f"return J_H (H={res.H})" if kind == "reward" else "validation BC loss")
            ax.set(
                xlabel=f"a ({unit} along g1)",
                ylabel=f"b ({unit} along g2)",
                title=f"{w}: {kind}  Q {m.quadratic_fit:.3f}, TV {m.tv:.2f}, D {m.fractal_dimension:.2f}",
            )
        ax = row[2]
        ax.plot(res.a, rewards[w][:, cj], "-o", ms=3, color="tab:blue", label="reward along a (b=0)")
        ax.plot(res.b, rewards[w][ci, :], "-s", ms=3, color="tab:cyan", label="reward along b (a=0)")
        if np.isfinite(res.expert_return):
            ax.axhline(res.expert_return, color="k", ls=":", lw=1, label="expert")
        ax.set(xlabel=f"{unit} from the checkpoint", ylabel="return J_H", title=f"{w}: slices through the checkpoint")
        twin = ax.twinx()
        twin.plot(res.a, res.losses[w][:, cj], "--", color="tab:red", lw=1, label="loss along a")
        twin.plot(res.b, res.losses[w][ci, :], ":", color="tab:red", lw=1, label="loss along b")
        top = float(np.max(res.losses[w]))
        if np.isfinite(top) and top > 0:
            twin.set_ylim(0, 1.2 * top)  # from zero: fluctuations in true proportion
        twin.set_ylabel("validation BC loss", color="tab:red")
        lines, more = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower left")
    fig.suptitle(title or f"reward landscape at step {res.step} of {res.run} (eta = {res.eta:.3g})")
    return fig


def plot_posthoc(res: PosthocSweep, *, title: str | None = None):
    """Post-hoc EMA against its relative width (log x): mean return over the zoom iterates with a
    band of one sd over the iterates, the raw iterate's as a reference line; below, the flip rate
    (and the raw iterate's). Tracked widths are marked, and open markers are widths whose profile
    the snapshots fit with more than 10% error. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    rows = res.rows()
    raw = next((r for r in rows if r["weights"] == "raw"), None)
    pts = sorted((r for r in rows if r["weights"] == "posthoc"), key=lambda r: r["sigma_rel"])
    sig = np.array([r["sigma_rel"] for r in pts])
    mean = np.array([r["mean_return"] for r in pts])
    fig, (ax, bx) = plt.subplots(
        2, 1, figsize=(6.5, 6.0), sharex=True, constrained_layout=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    ax.plot(sig, mean, "-", color="tab:orange")
    rough = np.array([r["fit_error"] > 0.1 for r in pts])  # the snapshots span the profile poorly there
    ax.plot(sig[~rough], mean[~rough], "o", color="tab:orange", label="post-hoc EMA, mean over iterates")
    if rough.any():
        ax.plot(sig[rough], mean[rough], "o", mfc="white", color="tab:orange", label="profile fit error > 10%")
    if "return_sd" in pts[0]:
        sd = np.array([r["return_sd"] for r in pts])
        ax.fill_between(sig, mean - sd, mean + sd, color="tab:orange", alpha=0.25, label="+- sd over iterates")
    if raw is not None:
        ax.axhline(raw["mean_return"], color="tab:blue", ls="--", label="raw iterate")
        if "return_sd" in raw:
            for y in (raw["mean_return"] - raw["return_sd"], raw["mean_return"] + raw["return_sd"]):
                ax.axhline(y, color="tab:blue", ls=":", lw=0.8)
    if np.isfinite(res.expert_return):
        ax.axhline(res.expert_return, color="k", ls=":", lw=1, label="expert")
    for s in res.tracked_sigma_rels:
        ax.axvline(s, color="0.6", lw=0.8, ls="-.")
    ax.set(
        ylabel=f"return J_H (H={res.H})",
        title=title or f"post-hoc EMA of {Path(res.run).name} ({res.iterates} iterates)",
    )
    ax.legend(fontsize=7)
    if "flip_rate" in pts[0]:
        bx.plot(sig, [r["flip_rate"] for r in pts], "s-", color="tab:orange", label="post-hoc EMA")
        if raw is not None and "flip_rate" in raw:
            bx.axhline(raw["flip_rate"], color="tab:blue", ls="--", label="raw iterate")
        bx.set_ylim(bottom=0)
        bx.legend(fontsize=7)
    bx.set(xscale="log", xlabel="relative EMA width sigma_rel (dash-dot: tracked)", ylabel="flip rate")
    return fig


def plot_flips(curve: FlipCurve, *, title: str | None = None):
    """Flip rate against distance (log-log), per kind of direction, with its fitted power law; below,
    mean |delta J| / expert return. A vertical line marks one optimizer step. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(2, 1, figsize=(6.5, 6.0), sharex=True, constrained_layout=True)
    r = curve.distances
    fine = np.geomspace(r.min(), r.max(), 200)
    for kind, color in zip(curve.returns, ("tab:red", "tab:gray")):
        k, n = curve.flips(kind)
        rate = k / n
        shown = rate > 0  # a rate of 0 has no place on a log axis: its upper 95% bound 3/n instead
        ax.plot(r[shown], rate[shown], "o", color=color, label=f"{kind} directions")
        ax.plot(r[~shown], 3.0 / n[~shown], "v", mfc="white", color=color)
        law = curve.fit(kind)
        if law.c > 0:
            ax.plot(fine, law(fine), "-", color=color, lw=1, label=f"min({law.c:.2g} r^{law.beta:.2f}, 1)")
        bx.plot(r, curve.mean_abs_change(kind), "o-", color=color, label=kind)
    for axis in (ax, bx):
        axis.axvline(1.0, color="k", lw=0.8, ls=":")
        axis.set_xscale("log")
        axis.set_yscale("log")
    ax.set(
        ylabel="flip rate (|dJ| > 0.1 J*)",
        title=title or f"{Path(curve.run).name}: flips around step {curve.step} (open: none, at 3/n)",
    )
    bx.set(xlabel="distance r (optimizer steps)", ylabel="mean |dJ| / J*")
    ax.legend(fontsize=7)
    bx.legend(fontsize=7)
    return fig
