"""The sweep figure: the raw oscillation index per intervention with its bootstrap interval."""

from __future__ import annotations

import math

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
