"""What a behavior-cloning run directory says: returns per evaluated iterate and initial
condition, losses, and the GVA indices of raw and stabilized weights (:func:`summarize`).

Reads run directories only; nothing here needs the training process to be alive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import EvaluatedRun
from ..rundir import RunDir


@dataclass(frozen=True)
class BCResult(EvaluatedRun):
    """Everything a run directory's log says about a BC run, as arrays.

    ``returns[w]`` ``(n_eval, n_ic)`` and ``lengths[w]`` for ``w`` in ``("raw", stabilizer)``,
    at ``eval_steps``; ``losses[key]`` at ``loss_steps`` (keys ``train``, ``val``, ``train_avg``,
    ``val_avg``); ``train_steps`` / ``train_loss`` are the minibatch losses.
    """

    config: dict[str, Any]
    eval_steps: np.ndarray
    returns: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    loss_steps: np.ndarray
    losses: dict[str, np.ndarray]
    train_steps: np.ndarray
    train_loss: np.ndarray
    expert_return: float


def load_result(path: Path | RunDir, *, expert_return: float | None = None) -> BCResult:
    """Read a BC run directory (complete or not) into a :class:`BCResult`."""
    run = path if isinstance(path, RunDir) else RunDir(path)
    cfg = run.read_config()
    evals: dict[str, dict[int, dict]] = {}
    losses, train = [], []
    meta = {}
    for rec in run.metrics():
        kind = rec["kind"]
        if kind == "eval":
            evals.setdefault(rec["weights"], {})[rec["step"]] = rec
        elif kind == "loss":
            losses.append(rec)
        elif kind == "train":
            train.append((rec["step"], rec["loss"]))
        elif kind == "meta":
            meta.update(rec)
    raw = evals.get("raw", {})
    steps = np.array(sorted(s for s in raw if all(s in evals[w] for w in evals)), dtype=int)
    returns = {w: np.array([evals[w][s]["returns"] for s in steps]) for w in evals}
    lengths = {w: np.array([evals[w][s]["lengths"] for s in steps]) for w in evals}
    if expert_return is None:
        expert_return = float(meta.get("expert_return", np.nan))
    tr = np.array(train, dtype=float).reshape(-1, 2)
    return BCResult(
        config=cfg,
        eval_steps=steps,
        returns=returns,
        lengths=lengths,
        loss_steps=np.array([r["step"] for r in losses], dtype=int),
        losses={k: np.array([r[k] for r in losses]) for k in ("train", "val", "train_avg", "val_avg")},
        train_steps=tr[:, 0].astype(int),
        train_loss=tr[:, 1],
        expert_return=expert_return,
    )


def zoom_reward_indices(returns: np.ndarray, zooms: list[np.ndarray], scale: float) -> dict[str, float]:
    """Reward indices of consecutive iterates, each averaged over the zoom windows ``zooms`` (index
    arrays into the rows of ``returns``, shape ``(n_iterates, n_ic)``): the mean return, and the
    oscillation index, spread and flip rate relative to ``scale`` (the expert's return)."""
    from ..metrics import flip_rate, oscillation_index, window_spread

    return {
        "zoom_mean_return": float(np.mean([returns[z].mean() for z in zooms])),
        "zoom_reward_oscillation": float(np.mean([oscillation_index(returns[z].mean(1), scale) for z in zooms])),
        "zoom_reward_spread": float(np.mean([window_spread(returns[z].mean(1), scale) for z in zooms])),
        "zoom_flip_rate": float(np.mean([flip_rate(returns[z], scale) for z in zooms])),
    }


def summarize(run: RunDir | BCResult) -> dict[str, Any]:
    """GVA indices of raw and stabilized weights (see :mod:`gvaempirics.metrics` for the scales).

    On the regular grid over the second half of training, and in every zoom window (consecutive
    iterates): reward oscillation relative to the expert's return, loss oscillation relative to
    the validation loss's decrease over the run, their ratio, and the per-initial-condition flip
    rate (changes of more than 10% of the expert's return).
    """
    from ..metrics import flip_rate, oscillation_index

    res = run if isinstance(run, BCResult) else load_result(run)
    out: dict[str, Any] = {
        "steps_done": int(res.eval_steps.max()) if len(res.eval_steps) else 0,
        "expert_return": res.expert_return,
    }
    scale = res.expert_return
    if not (len(res.eval_steps) >= 2 and math.isfinite(scale) and scale > 0):
        return out
    grid = res.grid()
    late = grid[len(grid) // 2 :]
    at_evals = np.searchsorted(res.loss_steps, res.eval_steps)  # loss records of the evaluated iterates
    decrease = float(res.losses["val"][0] - res.losses["val"].min())  # the loss scale: its decrease over the run
    for w, key in zip(res.weights, ("val", "val_avg")):
        val = res.losses[key][at_evals]
        r = res.returns[w]
        entry = {
            "final_return": float(r[-1].mean()),
            "final_return_sd": float(r[-1].std()),
            "final_falls": int((res.lengths[w][-1] < res.config["H"]).sum()),
            "final_val_loss": float(val[-1]),
        }
        if len(late) >= 2 and decrease > 0:
            entry["grid_reward_oscillation"] = oscillation_index(r[late].mean(1), scale)
            entry["grid_loss_oscillation"] = oscillation_index(val[late], decrease)
            entry["grid_flip_rate"] = flip_rate(r[late], scale)
        zooms = res.zoom_windows()
        if zooms and decrease > 0:
            entry.update(zoom_reward_indices(r, zooms, scale))
            entry["zoom_loss_oscillation"] = float(np.mean([oscillation_index(val[z], decrease) for z in zooms]))
            entry["zoom_amplification"] = entry["zoom_reward_oscillation"] / max(entry["zoom_loss_oscillation"], 1e-300)
        out[w] = entry
    return out
