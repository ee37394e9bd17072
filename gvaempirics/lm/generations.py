r"""Butterfly-effect metrics for greedy generations (paper Section 4.2, Figure 4).

Greedy decoding is a deterministic closed loop: the model reads its own tokens. Two
neighbouring iterates :math:`\theta_t, \theta_{t+1}` with nearly equal loss can still emit
different continuations :math:`y^{(t)}, y^{(t+1)} \in V^H` of the same prompt once one argmax
flips, after which the continuations are conditioned on different histories. For a fixed set
of prompts we measure

* the first-divergence position :math:`d = \min\{h : y_h^{(t)} \ne y_h^{(t+1)}\}` (``H`` if
  none), and its distribution;
* the fraction of prompts whose continuation changes (:math:`d < H`);
* the normalized edit distance :math:`\mathrm{lev}(y^{(t)}, y^{(t+1)}) / H`;

and, against a teacher's greedy continuation :math:`y^\star`, the exact-match length
:math:`\min\{h : y_h \ne y^\star_h\}` (the analogue of the time to leave the expert's tube).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def first_divergence(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the first position where ``a`` and ``b`` (shape ``(P, H)``) differ; ``H`` if none."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must have the same (P, H) shape, got {a.shape} and {b.shape}")
    diff = a != b
    return np.where(diff.any(1), diff.argmax(1), a.shape[1])


def edit_distance(a, b) -> int:
    """Levenshtein distance (insertions, deletions, substitutions of cost 1) of two sequences."""
    a, b = list(a), list(b)
    row = np.arange(len(b) + 1)
    for i, x in enumerate(a, 1):
        prev, row = row, np.empty_like(row)
        row[0] = i
        for j, y in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (x != y))
    return int(row[-1])


@dataclass(frozen=True)
class Divergence:
    """Rollout divergence between consecutive generations ``(P, H)``, pooled over pairs.

    ``first`` holds every pair's first-divergence positions (``n_pairs * P`` values in
    ``0..H``); ``changed`` is the fraction of prompts whose continuation changed; ``edit`` the
    mean normalized edit distance.
    """

    H: int
    n_pairs: int
    first: np.ndarray
    changed: float
    edit: float

    def histogram(self) -> np.ndarray:
        """Counts of first-divergence positions ``0..H`` (index ``H``: unchanged)."""
        return np.bincount(self.first, minlength=self.H + 1)

    def as_dict(self) -> dict[str, float]:
        changed_first = self.first[self.first < self.H]
        return {
            "pairs": self.n_pairs,
            "changed": self.changed,
            "edit": self.edit,
            "first_divergence_mean_changed": float(changed_first.mean()) if len(changed_first) else float("nan"),
        }


def divergence(generations: list[np.ndarray]) -> Divergence:
    """:class:`Divergence` of each generation set against the next in ``generations``."""
    if len(generations) < 2:
        raise ValueError(f"generations has {len(generations)} sets; need at least 2 to compare neighbours")
    H = int(np.asarray(generations[0]).shape[1])
    firsts, edits = [], []
    for a, b in zip(generations[:-1], generations[1:]):
        firsts.append(first_divergence(a, b))
        edits += [edit_distance(x, y) / H for x, y in zip(a, b)]
    first = np.concatenate(firsts)
    return Divergence(
        H=H, n_pairs=len(generations) - 1, first=first, changed=float(np.mean(first < H)), edit=float(np.mean(edits))
    )
