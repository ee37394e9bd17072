"""Figure-4-style plots of a language-model run (paper Section 4.2), drawn from :class:`LMResult`.

* :func:`plot_losses` -- validation loss of raw and EMA weights over training, a zoom panel at
  every iterate, and the path in (model loss, EMA loss) space;
* :func:`bifurcations` / :func:`plot_bifurcations` -- generations of neighbouring iterates that
  part ways, as rows and as a table figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .generations import first_divergence
from .results import LMResult

# legend names of the stabilizers (gvaempirics.config.STABILIZERS)
_LABELS = {
    "ema": "EMA",
    "constant-ema": "constant EMA",
    "polyak": "Polyak",
    "bema": "BEMA",
    "posthoc": "power-function EMA",
}


def plot_losses(res: LMResult, *, decayed: LMResult | None = None, title: str = ""):
    """Three panels: (a) validation loss, raw vs averaged weights (and the decayed-LR run's raw
    weights); (b) the last zoom window at every iterate; (c) the path in (model loss, averaged
    loss) space from a tenth of training on (grid and zoom-window iterates)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    avg = res.weights[1]
    name = _LABELS.get(avg, avg)
    grid = res.grid()
    ax[0].plot(res.eval_steps[grid], res.val["raw"][grid], label="raw iterate", color="C0")
    ax[0].plot(res.eval_steps[grid], res.val[avg][grid], label=name, color="C1")
    if res.val_floor is not None:
        ax[0].axhline(res.val_floor, color="k", ls=":", lw=0.8, label="teacher's own loss")
    if decayed is not None:
        g = decayed.grid()
        ax[0].plot(
            decayed.eval_steps[g],
            decayed.val["raw"][g],
            label=f"raw, {decayed.config['schedule']} LR",
            color="C2",
            ls="--",
        )
    ax[0].set(xlabel="step", ylabel="validation loss", title="(a) validation loss")
    ax[0].legend()
    zooms = res.zoom_windows()
    if zooms:
        z = zooms[-1]
        ax[1].plot(res.eval_steps[z], res.val["raw"][z], "o-", ms=3, label="raw iterate", color="C0")
        ax[1].plot(res.eval_steps[z], res.val[avg][z], "o-", ms=3, label=name, color="C1")
        if res.exact is not None:
            twin = ax[1].twinx()
            twin.plot(res.eval_steps[z], res.exact["raw"][z].mean(1), "s:", ms=3, color="C0", alpha=0.6)
            twin.plot(res.eval_steps[z], res.exact[avg][z].mean(1), "s:", ms=3, color="C1", alpha=0.6)
            twin.set_ylabel("exact-match length vs teacher (dotted)")
        ax[1].xaxis.set_major_locator(MaxNLocator(integer=True))
        ax[1].set(xlabel="step", ylabel="validation loss", title="(b) zoom: every iterate")
        ax[1].legend(loc="center left")
    # after the first tenth of training, so the initial drop does not hide the late path
    path = np.union1d(grid[res.eval_steps[grid] >= res.eval_steps.max() / 10], np.concatenate(zooms) if zooms else [])
    path = path.astype(int)
    ax[2].plot(res.val["raw"][path], res.val[avg][path], "-", color="0.6", lw=0.8)
    sc = ax[2].scatter(res.val["raw"][path], res.val[avg][path], c=res.eval_steps[path], s=10, cmap="viridis")
    lo = min(res.val["raw"][path].min(), res.val[avg][path].min())
    hi = max(res.val["raw"][path].max(), res.val[avg][path].max())
    ax[2].plot([lo, hi], [lo, hi], "k:", lw=0.8, label=f"{name} loss = model loss")
    ax[2].legend(loc="upper left")
    ax[2].set(xlabel="model (raw) loss", ylabel=f"{name} loss", title=f"(c) path in (model loss, {name} loss)")
    fig.colorbar(sc, ax=ax[2], label="step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class Bifurcation:
    """Greedy continuations of one prompt at neighbouring iterates ``step_a < step_b``."""

    weights: str
    step_a: int
    step_b: int
    prompt: str
    continuation_a: str
    continuation_b: str
    first_divergence: int


def bifurcations(res: LMResult, *, weights: str = "raw", n: int = 6) -> list[Bifurcation]:
    """Up to ``n`` prompts whose continuation changes between consecutive zoom-window iterates,
    earliest divergence first (one row per prompt)."""
    rows, seen = [], set()
    for z in res.zoom_windows():
        for i, j in zip(z[:-1], z[1:]):
            a, b = res.gen[weights][i], res.gen[weights][j]
            for p, d in enumerate(first_divergence(a, b)):
                if d < a.shape[1] and p not in seen:
                    seen.add(p)
                    rows.append(
                        Bifurcation(
                            weights,
                            int(res.eval_steps[i]),
                            int(res.eval_steps[j]),
                            res.decode(res.prompts[p]),
                            res.decode(a[p]),
                            res.decode(b[p]),
                            int(d),
                        )
                    )
    return sorted(rows, key=lambda r: r.first_divergence)[:n]


def _show(text: str, width: int | None = None, *, tail: bool = False) -> str:
    """One table cell: newlines drawn as a symbol, cut to ``width`` characters (its end if ``tail``)."""
    text = text.replace("\n", "\u23ce")
    if width is None or len(text) <= width:
        return text
    return "\u2026" + text[-(width - 1) :] if tail else text[: width - 1] + "\u2026"


def plot_bifurcations(rows: list[Bifurcation], *, title: str = "Neighbouring iterates, same prompt"):
    """A table figure: prompt, the two continuations (diverging part after ``|``), steps."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 0.5 + 0.45 * max(1, len(rows))))
    ax.axis("off")
    if not rows:
        ax.text(0.5, 0.5, "no continuation changed between neighbouring iterates", ha="center", va="center")
        return fig
    cells = []
    for r in rows:
        d = r.first_divergence
        cells.append(
            [
                f"{r.step_a}\u2192{r.step_b}",
                _show(r.prompt, 32, tail=True),
                _show(r.continuation_a[:d] + "|" + r.continuation_a[d:], 56),
                _show(r.continuation_b[:d] + "|" + r.continuation_b[d:], 56),
                str(d),
            ]
        )
    table = ax.table(
        cellText=cells,
        colLabels=["steps", "prompt", "continuation at step a", "at step b", "first div."],
        loc="center",
        cellLoc="left",
        colWidths=[0.07, 0.2, 0.32, 0.32, 0.07],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for cell in table.get_celld().values():
        cell.get_text().set_fontfamily("monospace")
    ax.set_title(title)
    fig.tight_layout()
    return fig
