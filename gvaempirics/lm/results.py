"""What a language-model run directory says (:class:`LMResult`) and its summary (:func:`summarize`).

Reads run directories only; nothing here needs the training process to be alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import EvaluatedRun
from ..rundir import RunDir
from .generations import divergence
from .tokenizers import tokenizer_from_spec


@dataclass(frozen=True)
class LMResult(EvaluatedRun):
    """What a run directory's log says, as arrays over the ``eval_steps``.

    ``val[w]`` ``(n,)``, ``gen[w]`` ``(n, P, H)`` and, with a teacher, ``exact[w]`` ``(n, P)`` and
    ``task[w]`` ``(n,)``, for ``w`` in :attr:`weights` (``"raw"`` and the run's stabilizer);
    ``tokenizer`` decodes token ids; ``val_floor`` is the teacher's own validation loss (``None``
    without a transformer teacher).
    """

    config: dict[str, Any]
    eval_steps: np.ndarray
    val: dict[str, np.ndarray]
    gen: dict[str, np.ndarray]
    exact: dict[str, np.ndarray] | None
    task: dict[str, np.ndarray] | None
    train_steps: np.ndarray
    train_loss: np.ndarray
    tokenizer: Any
    prompts: np.ndarray
    val_floor: float | None = None

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids)


def load_result(path: Path | RunDir) -> LMResult:
    """Read an LM run directory (complete or not) into an :class:`LMResult`."""
    run = path if isinstance(path, RunDir) else RunDir(path)
    cfg = run.read_config()
    evals: dict[str, dict[int, dict]] = {"raw": {}, cfg["stabilizer"]: {}}
    train, meta = [], {}
    for rec in run.metrics():
        if rec["kind"] == "eval":
            evals[rec["weights"]][rec["step"]] = rec
        elif rec["kind"] == "train":
            train.append((rec["step"], rec["loss"]))
        elif rec["kind"] == "meta":
            meta = rec
    steps = np.array(sorted(set.intersection(*(set(e) for e in evals.values()))), dtype=int)
    has_teacher = bool(len(steps)) and "exact" in evals["raw"][int(steps[0])]
    pick = lambda key, dtype: {w: np.array([evals[w][s][key] for s in steps], dtype=dtype) for w in evals}  # noqa: E731
    tr = np.array(train, dtype=float).reshape(-1, 2)
    return LMResult(
        config=cfg,
        eval_steps=steps,
        val=pick("val", float),
        gen=pick("gen", int),
        exact=pick("exact", int) if has_teacher else None,
        task=pick("task", float) if has_teacher else None,
        train_steps=tr[:, 0].astype(int),
        train_loss=tr[:, 1],
        tokenizer=tokenizer_from_spec(meta["tokenizer"]) if meta else None,
        prompts=np.array(meta.get("prompts", []), dtype=int),
        val_floor=meta.get("val_floor"),
    )


def summarize(run: RunDir | LMResult) -> dict[str, Any]:
    """Per weights (raw, and the stabilizer's name): final validation loss; its mean absolute change between
    consecutive iterates in the zoom windows; generation divergence between consecutive iterates in
    the zoom windows and on the second half of the regular grid; with a teacher, the exact-match
    length (mean over prompts: final, over the grid's second half, over the zoom iterates) and
    the final task accuracy."""
    res = run if isinstance(run, LMResult) else load_result(run)
    out: dict[str, Any] = {
        "steps_done": int(res.eval_steps.max()) if len(res.eval_steps) else 0,
        "schedule": res.config["schedule"],
        "weights": list(res.weights),
    }
    if len(res.eval_steps) < 2:
        return out
    grid = res.grid()
    late = grid[len(grid) // 2 :]
    zooms = res.zoom_windows()
    if res.val_floor is not None:
        out["val_floor"] = res.val_floor
    for w in res.weights:
        entry: dict[str, Any] = {"final_val_loss": float(res.val[w][-1])}
        if zooms:
            entry["zoom_val_fluctuation"] = float(np.mean([np.abs(np.diff(res.val[w][z])).mean() for z in zooms]))
            ds = [divergence([res.gen[w][i] for i in z]) for z in zooms]
            entry["zoom_changed"] = float(np.mean([d.changed for d in ds]))
            entry["zoom_edit"] = float(np.mean([d.edit for d in ds]))
            first = np.concatenate([d.first for d in ds])
            entry["zoom_first_divergence_hist"] = np.bincount(first, minlength=res.config["H"] + 1).tolist()
        if len(late) >= 2:
            d = divergence([res.gen[w][i] for i in late])
            entry["grid_changed"] = d.changed
            entry["grid_edit"] = d.edit
        if res.exact is not None:
            entry["final_exact_match"] = float(res.exact[w][-1].mean())
            entry["late_exact_match"] = float(res.exact[w][late].mean())
            entry["final_task"] = float(res.task[w][-1])
            if zooms:  # one iterate's exact-match length is noisy: also its mean over the zoom iterates
                entry["zoom_exact_match"] = float(res.exact[w][np.concatenate(zooms)].mean())
        out[w] = entry
    return out
