r"""Post-hoc EMA of a finished language-model run: choose the averaging length after training.

A run trained with ``stabilizer="posthoc"`` tracks power-function EMAs with the relative widths
``posthoc_sigma_rels`` and stores snapshots of them every ``posthoc_every`` updates (and at the
end) in its checkpoints. Any other relative width at any snapshot time is then a least-squares
combination of the snapshots (Karras et al. 2024; :func:`gvaempirics.stabilizers.synthesize`),
so a sweep over the averaging length costs evaluations, not training runs.

Iterate counts: the stabilizer absorbs :math:`\theta_0` before the first step, so a snapshot
with ``count`` iterates holds the average up to step ``count - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gvatheory._checks import check_range

from ..rundir import RunDir
from ..stabilizers import PostHocEMA, swapped
from .train import EvalSet, evaluate, load_state, make_corpus


def _scores(out: dict[str, Any]) -> dict[str, float]:
    row = {"val": out["val"]}
    if "exact" in out:
        row["exact_match"] = float(np.mean(out["exact"]))
        row["task"] = out["task"]
    return row


def posthoc_sweep(
    path: Path | RunDir, sigma_rels: Sequence[float], *, all_snapshots: bool = False
) -> list[dict[str, Any]]:
    """Evaluate the synthesized EMA of each ``sigma_rel`` at the latest snapshot (or at every
    snapshot time with ``all_snapshots``): validation loss and, with a teacher, mean exact-match
    length and task accuracy, and ``fit_error``, the relative L2 residual of the synthesis
    (:class:`gvaempirics.stabilizers.Synthesis`). The first row is the raw iterate of the latest
    checkpoint."""
    if not sigma_rels:
        raise ValueError("sigma_rels=[] is out of range: give at least one relative width")
    for s in sigma_rels:
        check_range("sigma_rel", s, 0.0, 12**-0.5, low_open=True)
    cfg, model, stabilizer, _ = load_state(path)
    if not isinstance(stabilizer, PostHocEMA):
        raise ValueError(
            f"run {path} was trained with stabilizer={cfg.stabilizer!r}; post-hoc synthesis needs a run "
            f"trained with --stabilizer posthoc"
        )
    eval_set = EvalSet.build(make_corpus(cfg, quiet=True), cfg)
    counts = sorted({s.count for s in stabilizer.snapshots})
    if not all_snapshots:
        counts = counts[-1:]
    rows = [
        {
            "weights": "raw",
            "sigma_rel": None,
            "step": int(stabilizer.count) - 1,
            **_scores(evaluate(model, eval_set, cfg.H)),
            "fit_error": None,
        }
    ]
    for count in counts:
        for s in sigma_rels:
            # a sweep reports every width with the residual of its fit rather than refusing some
            syn = stabilizer.synthesize(float(s), count=count, max_residual=None)
            with swapped(model, syn.params):
                rows.append(
                    {
                        "weights": "posthoc",
                        "sigma_rel": float(s),
                        "step": count - 1,
                        **_scores(evaluate(model, eval_set, cfg.H)),
                        "fit_error": syn.residual,
                    }
                )
    return rows


def plot_posthoc(rows: list[dict[str, Any]], *, title: str = ""):
    """Validation loss (and mean exact-match length, with a teacher) of the synthesized EMAs at
    the latest snapshot against their relative width; the raw iterate as a reference line."""
    import matplotlib.pyplot as plt

    raw = rows[0]
    last = max(r["step"] for r in rows[1:])
    pts = sorted((r for r in rows[1:] if r["step"] == last), key=lambda r: r["sigma_rel"])
    sig = [r["sigma_rel"] for r in pts]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(sig, [r["val"] for r in pts], "o-", color="C1", label="post-hoc EMA")
    ax.axhline(raw["val"], color="C0", ls="--", label="raw iterate")
    ax.set(
        xscale="log",
        xlabel="relative EMA width sigma_rel",
        ylabel="validation loss",
        title=title or f"post-hoc EMA at step {last}",
    )
    if "exact_match" in raw:
        twin = ax.twinx()
        twin.plot(sig, [r["exact_match"] for r in pts], "s:", color="C1", alpha=0.6)
        twin.axhline(raw["exact_match"], color="C0", ls=":", alpha=0.6)
        twin.set_ylabel("mean exact-match length vs teacher (dotted)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig
