r"""Roughness of a surface sampled on an evenly spaced 2-D grid (the reward landscape, paper Figure 1 right).

Every measure is relative to the surface's own range, so a reward surface (returns in the
thousands) and a loss surface (a few hundredths) compare on one scale:

* **local quadratic roughness** :math:`L`: the RMS residual of a full quadratic fit
  :math:`c_0 + c_1 a + c_2 b + c_3 a^2 + c_4 ab + c_5 b^2` on every 3x3 patch of neighbouring grid
  points, averaged over the patches and divided by the surface's range. A smooth surface is locally
  its second-order Taylor expansion, so on a patch the residual comes only from mixed fourth-order
  terms (a ridge ``tanh(a)``, a Gaussian bump or ``sin(a/2)`` on the landscape's 7x7 grid: at most
  0.03); a surface that jumps between neighbours (plateaus and cliffs, noise) keeps its residual at
  every scale (white noise 0.11). This is the measure the landscape verdicts use
  (``validation.registry``, ``landscape/*``);
* **quadratic-fit roughness** :math:`Q`: the same fit over the whole grid. Any quadratic scores 0,
  but a smooth surface that is not a quadratic on the grid's scale scores as high as noise (a
  ``tanh`` ridge 0.16, white noise 0.18), so it is descriptive only;
* **total variation** along 1-D slices (rows and columns), :math:`\sum_i |z_{i+1}-z_i|` over the
  slice's range, averaged: 1 for a monotone slice, larger the more it turns back. A bowl whose
  minimum lies inside the grid scores 2 on every slice through it, so TV alone does not tell a
  smooth bowl from a rough surface;
* **jump fraction**: the fraction of neighbouring grid points whose values differ by more than 10%
  of the surface's range (on a 7-point grid a smooth bowl moves by more than that too);
* **fractal dimension** :math:`D = 2 - H` of the slices, where the Hurst exponent :math:`H` comes
  from the variogram :math:`\gamma(h) = \tfrac12\,\mathrm{mean}\,(z_{i+h}-z_i)^2 \propto h^{2H}`
  (pooled over rows and columns), as half the least-squares slope of :math:`\log\gamma` against
  :math:`\log h` over lags :math:`1..\text{max\_lag}` (2 by default, the variogram estimator with
  the least bias on short series: Gneiting, Sevcikova and Percival, Statistical Science 2012),
  clipped to :math:`[0, 1]`. A smooth (differentiable) slice has :math:`D = 1`, Brownian motion
  1.5, white noise 2.

The last three are descriptive; numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gvatheory._checks import check_int, check_range


@dataclass(frozen=True)
class Roughness:
    """Roughness of one surface, each measure relative to the surface's own range (see the module
    docstring). A constant surface counts as smooth: ``quadratic_fit = 0``, ``tv = 1``, no jumps,
    ``D = 1``."""

    local_quadratic: float  # mean RMS residual of quadratic fits on 3x3 patches / range (the verdicts')
    quadratic_fit: float  # RMS residual of a full 2-D quadratic fit / range (0 for any quadratic)
    tv: float  # mean over slices of total variation / slice range (>= 1; 1 = monotone)
    jump_fraction: float  # neighbouring pairs differing by more than `threshold` x range
    fractal_dimension: float  # D = 2 - H along slices, in [1, 2]
    hurst: float  # H, half the log-log variogram slope, clipped to [0, 1]
    range: float  # max - min of the surface


def _slices(z: np.ndarray) -> list[np.ndarray]:
    return [*z, *z.T]


def _surface(z: Any) -> np.ndarray:
    z = np.asarray(z, dtype=float)
    if z.ndim != 2 or min(z.shape) < 2:
        raise ValueError(f"surface has shape {z.shape}: expected a 2-D grid of at least 2 x 2 points")
    return z


def quadratic_fit(z: np.ndarray) -> float:
    """RMS residual of the least-squares fit of ``1, a, b, a^2, ab, b^2`` over the grid, divided by
    the surface's range (0 for a constant surface). The grid coordinates are taken evenly spaced,
    as the landscape's are; the residual does not depend on their scale or origin, since the fit's
    span is unchanged by an affine change of each axis."""
    z = _surface(z)
    if min(z.shape) < 3:
        raise ValueError(f"surface has shape {z.shape}: a quadratic fit needs at least 3 points per side")
    span = np.ptp(z)
    if span == 0:
        return 0.0
    a, b = np.meshgrid(np.linspace(-1, 1, z.shape[0]), np.linspace(-1, 1, z.shape[1]), indexing="ij")
    a, b = a.ravel(), b.ravel()
    design = np.stack([np.ones_like(a), a, b, a * a, a * b, b * b], axis=1)  # (n_points, 6)
    coef, *_ = np.linalg.lstsq(design, z.ravel() / span, rcond=None)
    residual = z.ravel() / span - design @ coef
    return float(np.sqrt(np.mean(residual**2)))


def _patch_residual_projector() -> np.ndarray:
    """(9, 9) projector onto the residual of a full quadratic fit on a 3x3 patch of unit spacing."""
    a, b = np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], indexing="ij")
    a, b = a.ravel(), b.ravel()
    x = np.stack([np.ones(9), a, b, a * a, a * b, b * b], axis=1)
    return np.eye(9) - x @ np.linalg.pinv(x)


_PATCH = _patch_residual_projector()


def local_quadratic(z: np.ndarray) -> float:
    """Mean over the 3x3 patches of neighbouring grid points of the RMS residual of a full quadratic
    fit on the patch, divided by the surface's range (0 for a constant surface)."""
    z = _surface(z)
    if min(z.shape) < 3:
        raise ValueError(f"surface has shape {z.shape}: a 3x3 patch needs at least 3 points per side")
    span = np.ptp(z)
    if span == 0:
        return 0.0
    patches = np.lib.stride_tricks.sliding_window_view(z / span, (3, 3)).reshape(-1, 9)  # (n_patches, 9)
    return float(np.sqrt(np.mean((patches @ _PATCH.T) ** 2, axis=1)).mean())


def total_variation(z: np.ndarray) -> float:
    """Mean over rows and columns of ``sum |diff| / (max - min)`` of the slice (slices of zero
    range are left out; 1 when all are)."""
    z = _surface(z)
    tvs = [np.abs(np.diff(s)).sum() / np.ptp(s) for s in _slices(z) if np.ptp(s) > 0]
    return float(np.mean(tvs)) if tvs else 1.0


def jump_fraction(z: np.ndarray, threshold: float = 0.1) -> float:
    """Fraction of neighbouring grid points (along rows and columns) whose values differ by more
    than ``threshold`` times the surface's range."""
    z = _surface(z)
    check_range("threshold", threshold, 0.0, 1.0)
    span = np.ptp(z)
    if span == 0:
        return 0.0
    diffs = np.concatenate([np.abs(np.diff(z, axis=1)).ravel(), np.abs(np.diff(z, axis=0)).ravel()])
    return float(np.mean(diffs > threshold * span))


def variogram(z: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """:math:`\\gamma(h) = \\tfrac12\\,\\mathrm{mean}(z_{i+h} - z_i)^2` over every row and column, per lag."""
    z = _surface(z)
    out = []
    for h in lags:
        d = np.concatenate([(z[:, h:] - z[:, :-h]).ravel(), (z[h:, :] - z[:-h, :]).ravel()])
        out.append(0.5 * np.mean(d**2))
    return np.array(out)


def fractal_dimension(z: np.ndarray, max_lag: int = 2) -> tuple[float, float]:
    """``(D, H)``: the fractal dimension ``D = 2 - H`` of the slices and the Hurst exponent ``H``,
    half the least-squares slope of ``log variogram`` against ``log lag`` over lags
    ``1..max_lag``, clipped to [0, 1]. A constant surface gives ``(1, 1)``."""
    z = _surface(z)
    check_int("max_lag", max_lag, 2)
    span = np.ptp(z)
    if span == 0:
        return 1.0, 1.0
    lags = np.arange(1, min(max_lag, min(z.shape) - 1) + 1)
    if len(lags) < 2:
        raise ValueError(f"surface has shape {z.shape}: at least 3 points per side are needed for two lags")
    gamma = np.maximum(variogram(z / span, lags), np.finfo(float).tiny)  # a zero lag is "as rough/smooth as can be"
    slope = np.polyfit(np.log(lags), np.log(gamma), 1)[0]
    hurst = float(np.clip(slope / 2, 0.0, 1.0))
    return 2.0 - hurst, hurst


def roughness(z: np.ndarray, *, threshold: float = 0.1, max_lag: int = 2) -> Roughness:
    """All measures of one surface; a surface with NaN or inf (a diverged loss) gets NaN throughout."""
    z = _surface(z)
    if not np.all(np.isfinite(z)):
        nan = float("nan")
        return Roughness(nan, nan, nan, nan, nan, nan, nan)
    d, h = fractal_dimension(z, max_lag)
    return Roughness(
        local_quadratic(z), quadratic_fit(z), total_variation(z), jump_fraction(z, threshold), d, h, float(np.ptp(z))
    )
