r"""The cliff problem (paper Eq. 4.2) and the EMA's advantage on it (paper Prop. 4.1).

A parameter :math:`\theta \in \mathbb{R}^d` is imitated with the behavior-cloning loss
:math:`\ell_{bc}(\theta) = \tfrac12 \lVert\theta-\mu\rVert^2`, but it is judged by a reward with a
cliff of radius :math:`\varepsilon` and drop :math:`C \ge \varepsilon^2`:

.. math::

    J(\theta) = \begin{cases} -\lVert\theta-\mu\rVert^2 & \lVert\theta-\mu\rVert \le \varepsilon \\
                              -C & \text{otherwise,} \end{cases} \qquad J^\star = 0 .

SGD on :math:`\ell_{bc}` with step :math:`\eta` and gradient noise of scale :math:`\sigma`,
:math:`\theta_{t+1} = \theta_t - \eta(\theta_t - \mu + \sigma\xi_t)`, and its EMA
:math:`\bar\theta_t = (1-\gamma)\bar\theta_{t-1} + \gamma\theta_t` are Gaussian at every step
(moments from :mod:`gvatheory.averaging`). For an isotropic Gaussian
:math:`\theta \sim N(m, s^2 I_d)` the expected reward gap is exact:

.. math::

    \mathbb{E}[J^\star - J] = \mathbb{E}\big[\lVert x\rVert^2 1\{\lVert x\rVert\le\varepsilon\}\big]
                              + C\,\Pr(\lVert x\rVert > \varepsilon), \qquad x = \theta - \mu,

with Gaussian partial moments on :math:`[-\varepsilon, \varepsilon]` (erf) in 1-D and
noncentral chi-square identities in :math:`d` dimensions. Prop. 4.1 says the SGD iterate falls
off the cliff while the EMA stays on it; :func:`prop41_as_written` tests the statement as the paper
words it and :func:`prop41_precise` checks a version with explicit constants (see ``docs/cliff.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

from ._checks import check_finite, check_int, check_range
from .stats import Estimate, SeedLike, estimate, seed_sequence

#: Median of the chi-square law with one degree of freedom: :math:`\Pr(Z^2 \le m_1) = 1/2`.
MEDIAN_CHI2_1 = float(stats.chi2.median(1))


# ---------------------------------------------------------------- checks


def _check_cliff(eps: Any, C: Any) -> tuple[np.ndarray, np.ndarray]:
    """``eps > 0`` and ``C >= eps**2`` (elementwise, broadcast)."""
    eps = check_range("eps", eps, 0.0, math.inf, low_open=True)
    C = check_finite("C", C)
    eps_b, C_b = np.broadcast_arrays(eps, C)
    bad = C_b < eps_b**2
    if np.any(bad):
        i = np.flatnonzero(bad)[0]
        raise ValueError(f"C={C_b.flat[i]:g} is out of range: must be in [eps**2, inf) = [{eps_b.flat[i] ** 2:g}, inf) "
                         f"for eps={eps_b.flat[i]:g}")
    return eps, C


def _check_method(method: str, d: int) -> str:
    if method not in ("auto", "erf", "ncx2"):
        raise ValueError(f"method={method!r} is not valid: choose one of auto, erf, ncx2")
    if method == "erf" and d != 1:
        raise ValueError(f"method='erf' needs d=1, got d={d}: use 'ncx2' or 'auto'")
    return ("erf" if d == 1 else "ncx2") if method == "auto" else method


# ---------------------------------------------------------------- the problem


@dataclass(frozen=True)
class CliffExpectation:
    r"""Expectations of the cliff problem's quantities under one law of :math:`\theta`.

    Exact values are floats or arrays; Monte Carlo values are :class:`~gvatheory.stats.Estimate`.

    Attributes
    ----------
    reward : :math:`\mathbb{E}[J(\theta)]`.
    gap : :math:`\mathbb{E}[J^\star - J(\theta)] = -\mathbb{E}[J(\theta)]`.
    loss_bc : :math:`\mathbb{E}[\ell_{bc}(\theta)]`.
    p_off : :math:`\Pr(\lVert\theta-\mu\rVert > \varepsilon)`, the probability of being off the cliff.
    """

    reward: Any
    gap: Any
    loss_bc: Any
    p_off: Any


@dataclass(frozen=True)
class CliffProblem:
    r"""The cliff problem of paper Eq. 4.2: target ``mu``, cliff radius ``eps``, drop ``C``.

    Parameters
    ----------
    mu : float or sequence of float
        Target :math:`\mu`; a sequence makes a ``d``-dimensional problem (stored as a tuple).
    eps : float
        Cliff radius :math:`\varepsilon > 0`.
    C : float
        Reward off the cliff is :math:`-C`; :math:`C \ge \varepsilon^2` so that falling off is never
        better than standing on the edge.
    """

    mu: float | tuple[float, ...]
    eps: float
    C: float

    def __post_init__(self):
        mu = check_finite("mu", self.mu)
        if mu.ndim > 1 or mu.size == 0:
            raise ValueError(f"mu has shape {mu.shape}: must be a number or a non-empty 1-D sequence")
        _check_cliff(self.eps, self.C)
        for name in ("eps", "C"):
            if np.ndim(getattr(self, name)) != 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be a scalar")
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "mu", float(mu) if mu.ndim == 0 else tuple(float(v) for v in mu))

    @property
    def d(self) -> int:
        """Dimension of :math:`\\theta`."""
        return 1 if isinstance(self.mu, float) else len(self.mu)

    @property
    def mu_array(self) -> np.ndarray:
        """``mu`` as an array of shape ``(d,)``."""
        return np.atleast_1d(np.asarray(self.mu, dtype=float))

    def _offset2(self, theta: Any) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        if isinstance(self.mu, float):
            return (theta - self.mu) ** 2
        if theta.shape[-1:] != (self.d,):
            raise ValueError(f"theta has shape {theta.shape}: last axis must have length d={self.d}")
        return np.sum((theta - self.mu_array) ** 2, axis=-1)

    def reward(self, theta: Any) -> np.ndarray:
        r""":math:`J(\theta)` for points ``theta`` (shape ``(...,)`` in 1-D, ``(..., d)`` otherwise)."""
        r2 = self._offset2(theta)
        return np.where(r2 <= self.eps**2, -r2, -self.C)

    def loss_bc(self, theta: Any) -> np.ndarray:
        r""":math:`\ell_{bc}(\theta) = \lVert\theta-\mu\rVert^2 / 2`."""
        return 0.5 * self._offset2(theta)

    def expected(self, mean: Any, var: Any, *, method: str = "auto") -> CliffExpectation:
        r"""Exact expectations for :math:`\theta \sim N(\mathrm{mean}, \mathrm{var}\, I_d)`.

        ``mean`` has shape ``(..., d)`` (or ``(...)`` in 1-D) and ``var`` (the per-coordinate
        variance) broadcasts against the leading shape. See :func:`gaussian_expectation`.
        """
        return gaussian_expectation(self._offset2(mean), var, eps=self.eps, C=self.C, d=self.d, method=method)

    def monte_carlo(self, samples: Any) -> CliffExpectation:
        """Estimates of the same expectations from i.i.d. ``samples`` of theta (first axis = replicates)."""
        r2 = self._offset2(samples)
        reward = self.reward(samples)
        return CliffExpectation(reward=estimate(reward), gap=estimate(-reward), loss_bc=estimate(0.5 * r2),
                                p_off=estimate((r2 > self.eps**2).astype(float)))


# ---------------------------------------------------------------- exact Gaussian expectations


def _truncated_erf(a: np.ndarray, s: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""1-D: :math:`(\mathbb{E}[x^2 1\{|x|\le\varepsilon\}], \Pr(|x|>\varepsilon))` for :math:`x\sim N(a,s^2)`, ``s > 0``.

    With :math:`\alpha = (-\varepsilon-a)/s`, :math:`\beta = (\varepsilon-a)/s` and
    :math:`P = \Phi(\beta)-\Phi(\alpha)`, expanding :math:`x = a + s z`:

    .. math:: \mathbb{E}[x^2 1_{[-\varepsilon,\varepsilon]}] = (a^2+s^2)P
              + s\,[(a-\varepsilon)\varphi(\alpha) - (a+\varepsilon)\varphi(\beta)] .
    """
    alpha, beta = (-eps - a) / s, (eps - a) / s
    # Tails summed directly (not 1 - P) keep tiny off-cliff probabilities accurate.
    p_off = special.ndtr(alpha) + special.ndtr(-beta)
    p_in = special.ndtr(beta) - special.ndtr(alpha)
    phi_a, phi_b = np.exp(-0.5 * alpha**2) / math.sqrt(2 * math.pi), np.exp(-0.5 * beta**2) / math.sqrt(2 * math.pi)
    m2 = (a**2 + s**2) * p_in + s * ((a - eps) * phi_a - (a + eps) * phi_b)
    return np.maximum(m2, 0.0), p_off


def _truncated_ncx2(offset2: np.ndarray, s2: np.ndarray, eps: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    r"""d-D: the same pair for :math:`x \sim N(m, s^2 I_d)` with :math:`\lVert m\rVert^2` = ``offset2``, ``s2 > 0``.

    :math:`R = \lVert x\rVert^2/s^2` is noncentral :math:`\chi^2_d(\lambda)`, :math:`\lambda =
    \lVert m\rVert^2/s^2`, a Poisson(:math:`\lambda/2`) mixture of :math:`\chi^2_{d+2j}`. Since
    :math:`\mathbb{E}[\chi^2_k 1\{\chi^2_k\le r\}] = k F_{k+2}(r)` and :math:`j p_j = (\lambda/2)
    p_{j-1}`,

    .. math:: \mathbb{E}[R\,1\{R\le r\}] = d\,F_{d+2,\lambda}(r) + \lambda\,F_{d+4,\lambda}(r),
              \qquad r = \varepsilon^2/s^2 .
    """
    r, lam = eps**2 / s2, offset2 / s2
    cdf = stats.ncx2.cdf
    m2 = s2 * (d * cdf(r, d + 2, lam) + lam * cdf(r, d + 4, lam))
    return m2, stats.ncx2.sf(r, d, lam)


def gaussian_expectation(offset2: Any, var: Any, *, eps: Any, C: Any, d: int = 1,
                         method: str = "auto") -> CliffExpectation:
    r"""Exact cliff expectations for :math:`\theta \sim N(m, s^2 I_d)`, vectorized over grids.

    Only :math:`\lVert m-\mu\rVert^2` and :math:`s^2` matter (the cliff is a ball), so the law is
    given by those two numbers; every argument broadcasts.

    .. math::

        \mathbb{E}[J^\star - J] = \mathbb{E}[\lVert x\rVert^2 1\{\lVert x\rVert\le\varepsilon\}]
            + C \Pr(\lVert x\rVert > \varepsilon), \qquad
        \mathbb{E}[\ell_{bc}] = \tfrac12(\lVert m-\mu\rVert^2 + d s^2).

    Parameters
    ----------
    offset2 : array_like
        :math:`\lVert m - \mu\rVert^2 \ge 0`.
    var : array_like
        Per-coordinate variance :math:`s^2 \ge 0`; ``0`` gives the deterministic value.
    eps, C : array_like
        Cliff radius (> 0) and drop (>= eps**2).
    d : int
        Dimension.
    method : {"auto", "erf", "ncx2"}
        ``"erf"``: Gaussian partial moments (1-D only); ``"ncx2"``: noncentral chi-square (any d);
        ``"auto"`` picks erf in 1-D.

    Returns
    -------
    CliffExpectation
        Arrays of the broadcast shape (floats for scalar input).
    """
    d = check_int("d", d, minimum=1)
    method = _check_method(method, d)
    offset2 = check_range("offset2", offset2, 0.0)
    var = check_range("var", var, 0.0)
    eps, C = _check_cliff(eps, C)
    shape = np.broadcast_shapes(offset2.shape, var.shape, eps.shape, C.shape)
    offset2, var, eps, C = (np.broadcast_to(x, shape).ravel() for x in (offset2, var, eps, C))
    random = var > 0
    # Deterministic theta (var = 0) is handled apart: the formulas divide by s.
    m2 = np.where(offset2 <= eps**2, offset2, 0.0)
    p_off = np.where(offset2 <= eps**2, 0.0, 1.0)
    if np.any(random):
        o, v, e = offset2[random], var[random], eps[random]
        if method == "erf":
            m2[random], p_off[random] = _truncated_erf(np.sqrt(o), np.sqrt(v), e)
        else:
            m2[random], p_off[random] = _truncated_ncx2(o, v, e, d)
    gap = m2 + C * p_off
    loss = 0.5 * (offset2 + d * var)
    out = [x.reshape(shape) for x in (-gap, gap, loss, p_off)]
    if not shape:
        out = [float(x) for x in out]
    return CliffExpectation(*out)
