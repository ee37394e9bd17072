r"""GVA metrics on evaluated iterates: how much long-horizon reward (or loss) moves between
neighbouring iterates.

Inputs are arrays over evaluated iterates ``t`` (and initial conditions). Each measure is taken
*relative to a scale that matters*, passed in explicitly:

* reward: the expert's return :math:`J^\star` (a swing of 0.2 means 20% of expert performance);
* loss: its decrease over training, :math:`\ell_{first} - \ell_{last}` (a swing of 0.2 means
  20% of all the progress training made).

Comparing a tiny loss's fluctuation with its own (vanishing) mean would exaggerate it, and
comparing the reward's with its own mean would understate it when the imitator is poor; the
scales above measure both against the progress that training is supposed to deliver. The
*amplification ratio* is the reward index divided by the loss index.

* oscillation index: :math:`\frac{1}{n-1}\sum_t |J_{t+1} - J_t|` / scale;
* spread: standard deviation within each zoom window of consecutive iterates / scale;
* flip rate: the fraction of (initial condition, consecutive pair) whose return changes by more
  than ``threshold * scale``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gvatheory._checks import check_positive


def _series(values, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size < 2:
        raise ValueError(f"{name} must be a 1-D series of at least 2 evaluated iterates, got shape {v.shape}")
    return v


def oscillation_index(values, scale: float) -> float:
    """Mean absolute change between consecutive evaluated iterates, divided by ``scale``."""
    check_positive("scale", scale)
    return float(np.mean(np.abs(np.diff(_series(values, "values")))) / scale)


def window_spread(values, scale: float) -> float:
    """Standard deviation (ddof=1) of a window of consecutive iterates, divided by ``scale``."""
    check_positive("scale", scale)
    return float(np.std(_series(values, "values"), ddof=1) / scale)


def flip_rate(returns, scale: float, threshold: float = 0.1) -> float:
    """Fraction of (initial condition, consecutive pair) with ``|R_{t+1} - R_t| > threshold * scale``.

    ``returns`` has shape ``(n_iterates, n_initial_conditions)``.
    """
    check_positive("scale", scale)
    check_positive("threshold", threshold)
    r = np.asarray(returns, dtype=float)
    if r.ndim != 2 or r.shape[0] < 2:
        raise ValueError(f"returns must have shape (n_iterates >= 2, n_initial_conditions), got {r.shape}")
    return float(np.mean(np.abs(np.diff(r, axis=0)) > threshold * scale))


def zoom_indices(steps, starts, length: int) -> list[np.ndarray]:
    """Index arrays into ``steps`` of each zoom window ``[start, start + length)`` with >= 2 iterates."""
    steps = np.asarray(steps)
    out = [np.flatnonzero((steps >= s) & (steps < s + length)) for s in starts]
    return [idx for idx in out if len(idx) >= 2]


def grid_indices(steps, every: int) -> np.ndarray:
    """Indices of the regular evaluation grid in ``steps``: multiples of ``every`` and the last step."""
    steps = np.asarray(steps)
    return np.flatnonzero((steps % every == 0) | (steps == steps.max()))


class EvaluatedRun:
    """What every result read from a run directory shares: its ``config`` (a dict) and the
    ``eval_steps`` at which raw and averaged weights were both evaluated."""

    config: dict
    eval_steps: np.ndarray

    @property
    def weights(self) -> tuple[str, str]:
        """The two weight sets of every evaluation: ``"raw"`` and the run's stabilizer."""
        return ("raw", self.config["stabilizer"])

    def zoom_windows(self) -> list[np.ndarray]:
        """Index arrays (into ``eval_steps``) of each zoom window's consecutive iterates."""
        return zoom_indices(self.eval_steps, self.config["zoom_windows"], self.config["zoom_length"])

    def grid(self) -> np.ndarray:
        """Indices of the regular evaluation grid (multiples of ``eval_every`` and the last step)."""
        return grid_indices(self.eval_steps, self.config["eval_every"])


@dataclass(frozen=True)
class GVAIndices:
    """Reward and loss fluctuation on their fair scales, and their ratio."""

    reward_oscillation: float
    loss_oscillation: float
    flip_rate: float

    @property
    def amplification(self) -> float:
        return self.reward_oscillation / self.loss_oscillation if self.loss_oscillation > 0 else float("inf")


def gva_indices(returns, losses, *, reward_scale: float, loss_scale: float, flip_threshold: float = 0.1) -> GVAIndices:
    """Indices for one sequence of consecutive evaluated iterates.

    ``returns`` has shape ``(n_iterates, n_ic)`` and ``losses`` ``(n_iterates,)``. ``reward_scale``
    is the expert's return; ``loss_scale`` the loss decrease over the whole run.
    """
    r = np.asarray(returns, dtype=float)
    return GVAIndices(
        reward_oscillation=oscillation_index(r.mean(axis=1), reward_scale),
        loss_oscillation=oscillation_index(losses, loss_scale),
        flip_rate=flip_rate(r, reward_scale, flip_threshold),
    )
