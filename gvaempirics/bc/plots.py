"""Figure-1-style plots of a behavior-cloning run, drawn from a :class:`~gvaempirics.bc.train.BCResult`.

Nothing here trains or rolls out: a figure can be regenerated from a saved run directory.
"""

from __future__ import annotations

import numpy as np

from .results import BCResult


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
