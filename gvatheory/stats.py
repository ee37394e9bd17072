"""Monte Carlo estimates with standard errors, and seeding.

Every stochastic entry point takes ``seed`` (an int, a ``numpy.random.SeedSequence`` or a
``numpy.random.Generator``). Parallel chains get child seeds spawned from one ``SeedSequence``,
so results never depend on the number of threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

SeedLike = Union[int, np.random.SeedSequence, np.random.Generator, None]


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo mean with its standard error over ``n`` independent replicates."""

    mean: float | np.ndarray
    se: float | np.ndarray
    n: int

    def z(self, exact: float | np.ndarray) -> float | np.ndarray:
        """Standardized error ``(mean - exact) / se`` (0 where both agree exactly)."""
        diff = np.asarray(self.mean, dtype=float) - np.asarray(exact, dtype=float)
        se = np.asarray(self.se, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff == 0, 0.0, np.inf))
        return out if out.ndim else float(out)

    def agrees(self, exact: float | np.ndarray, n_se: float = 4.0) -> bool:
        """True when every component lies within ``n_se`` standard errors of ``exact``."""
        return bool(np.all(np.abs(self.z(exact)) <= n_se))

    def __str__(self) -> str:
        if np.ndim(self.mean) == 0:
            return f"{float(self.mean):.6g} ± {float(self.se):.2g} (n={self.n})"
        return f"Estimate(mean={self.mean}, se={self.se}, n={self.n})"


def estimate(samples: np.ndarray, axis: int = 0) -> Estimate:
    """Mean and standard error of i.i.d. replicates along ``axis``.

    Overflowed replicates (``inf``) give an infinite mean with an infinite SE, never NaN.
    """
    x = np.asarray(samples, dtype=float)
    n = x.shape[axis]
    if n < 2:
        raise ValueError(f"samples has {n} replicates along axis {axis}; at least 2 are needed for a standard error")
    with np.errstate(over="ignore", invalid="ignore"):
        mean = x.mean(axis=axis)
        se = x.std(axis=axis, ddof=1) / np.sqrt(n)
    se = np.where(np.isinf(mean), np.inf, se)
    if np.ndim(mean) == 0:
        return Estimate(float(mean), float(se), n)
    return Estimate(mean, se, n)


def seed_sequence(seed: SeedLike) -> np.random.SeedSequence:
    """Turn any accepted seed into a ``SeedSequence``."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(seed.integers(0, 2**63 - 1))
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed={seed!r} must be a non-negative integer, a SeedSequence or a Generator")
    return np.random.SeedSequence(seed)


def chain_keys(seed: SeedLike, n: int) -> np.ndarray:
    """One 64-bit key per chain, spawned from ``seed``: shape ``(n,)``, dtype uint64.

    Chain ``i`` gets the same key whatever ``n`` is, so adding chains never changes old ones.
    """
    root = seed_sequence(seed)
    # generate_state on the root gives a stream whose first n words do not depend on n.
    return root.generate_state(n, dtype=np.uint64)


def variance_estimate(samples: np.ndarray, axis: int = 0) -> Estimate:
    r"""Sample variance along ``axis`` with its standard error.

    The estimate is the mean of :math:`(x_i - \bar x)^2 n/(n-1)` and its SE the standard error of
    that mean; the error from estimating :math:`\bar x` is :math:`O(1/n)`, below the SE.
    """
    x = np.asarray(samples, dtype=float)
    n = x.shape[axis]
    with np.errstate(over="ignore", invalid="ignore"):  # far-flung chains: an infinite variance, reported as such
        dev2 = (x - x.mean(axis=axis, keepdims=True)) ** 2 * (n / max(n - 1, 1))
    return estimate(np.where(np.isnan(dev2), np.inf, dev2), axis=axis)
