"""The figure of a :class:`~gvaempirics.diagnose.result.Diagnosis` (compute modules never import
matplotlib): per-IC returns as a heatmap, mean return with its CI per checkpoint (and the
averaged checkpoints), and the initial conditions needed to rank each neighbouring pair."""

from __future__ import annotations

import numpy as np

from .result import Diagnosis


def plot_diagnosis(d: Diagnosis):
    """A three-panel matplotlib figure of ``d``; save it with ``validation.report.save_figure``."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_map, ax_mean, ax_n) = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1.1, 1, 1]})
    n_ckpt, n_ic = d.returns.shape
    x = np.arange(n_ckpt)
    ticks = x if n_ckpt <= 12 else np.linspace(0, n_ckpt - 1, 12).round().astype(int)

    im = ax_map.imshow(d.returns, aspect="auto", interpolation="nearest", cmap="viridis", origin="lower")
    fig.colorbar(im, ax=ax_map, label="return")
    ax_map.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_map.set_xlabel("initial condition")
    ax_map.set_ylabel("checkpoint (step)")
    ax_map.set_yticks(ticks, [str(s) for s in d.steps[ticks]])
    ax_map.set_title("return per checkpoint and initial condition")

    lo, hi = d.mean_ci[:, 0], d.mean_ci[:, 1]
    ax_mean.fill_between(x, lo, hi, alpha=0.25, color="C0", label=f"{d.confidence:.0%} bootstrap CI")
    ax_mean.plot(x, d.mean, "o-", color="C0", ms=3, label="mean over ICs")
    for j, a in enumerate(d.averages):
        xa = n_ckpt - 1 + 0.25 * (j + 1)
        ax_mean.errorbar(
            xa,
            a.mean.estimate,
            yerr=[[a.mean.estimate - a.mean.low], [a.mean.high - a.mean.estimate]],
            fmt="s",
            color=f"C{j + 1}",
            capsize=3,
            label=f"average of last {a.k}",
        )
    ax_mean.set_xticks(ticks, [str(s) for s in d.steps[ticks]], rotation=45)
    ax_mean.set_xlabel("checkpoint (step)")
    ax_mean.set_ylabel("return")
    ax_mean.set_title(f"oscillation index {d.oscillation}, flip rate {d.flip_rate}", fontsize=9)
    ax_mean.legend(fontsize=7)

    finite = np.isfinite(d.ics_needed)
    shown = np.where(finite, np.maximum(d.ics_needed, 1e-3), np.nan)
    xp = x[:-1] + 0.5
    ax_n.semilogy(xp[finite], shown[finite], "o", color="C3", ms=4, label="ICs needed (paired, 95%)")
    if (~finite).any():
        top = np.nanmax(shown) * 2 if finite.any() else 10.0 * n_ic
        ax_n.semilogy(
            xp[~finite], np.full((~finite).sum(), top), "^", color="C3", mfc="none", label="tie (no difference)"
        )
    ax_n.axhline(n_ic, color="k", lw=1, ls="--", label=f"ICs used ({n_ic})")
    ax_n.set_xticks(ticks, [str(s) for s in d.steps[ticks]], rotation=45)
    ax_n.set_xlabel("between checkpoints (step)")
    ax_n.set_ylabel("initial conditions")
    ax_n.set_title(f"median {d.ics_needed_median:.3g}; resolvable {d.resolvable_fraction:.0%}", fontsize=9)
    ax_n.legend(fontsize=7)
    fig.tight_layout()
    return fig
