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
noncentral chi-square identities in :math:`d` dimensions; :func:`sgd_monte_carlo` is the Monte
Carlo twin. Prop. 4.1 says the SGD iterate falls off the cliff while the EMA stays on it; its
checks live in :mod:`gvatheory.prop41` (see ``docs/cliff.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats
from tqdm.auto import tqdm

from ._averaging_scalar import scalar_moments, scalar_stationary, simulate_scalar
from ._checks import check_finite, check_int, check_memory, check_range, check_scale
from .stats import SeedLike, estimate, seed_sequence

__all__ = [
    "CliffProblem",
    "CliffExpectation",
    "CliffSGD",
    "agreement_z",
    "gaussian_expectation",
    "sgd_expectation",
    "sgd_monte_carlo",
]


# ---------------------------------------------------------------- checks


def _check_cliff(eps: Any, C: Any) -> tuple[np.ndarray, np.ndarray]:
    """``eps > 0`` and ``C >= eps**2`` (elementwise, broadcast)."""
    eps = check_range("eps", eps, 0.0, math.inf, low_open=True)
    C = check_finite("C", C)
    eps_b, C_b = np.broadcast_arrays(eps, C)
    with np.errstate(over="ignore"):  # eps**2 = inf: no finite C is allowed
        eps2 = eps_b**2
    bad = C_b < eps2
    if np.any(bad):
        i = np.flatnonzero(bad)[0]
        raise ValueError(
            f"C={C_b.flat[i]:g} is out of range: must be in [eps**2, inf) = [{eps2.flat[i]:g}, inf) "
            f"for eps={eps_b.flat[i]:g}"
        )
    return eps, C


def _check_moment(name: str, value: Any) -> np.ndarray:
    """A squared distance or a variance: in ``[0, inf]``; ``inf`` is an overflowed moment, NaN is refused."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a real number or array of real numbers") from None
    if np.any(np.isnan(arr)) or np.any(arr < 0):
        raise ValueError(f"{name}={value!r} is out of range: must be in [0, inf]")
    return arr


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
        if not isinstance(self.mu, float) and theta.shape[-1:] != (self.d,):
            raise ValueError(f"theta has shape {theta.shape}: last axis must have length d={self.d}")
        with np.errstate(over="ignore"):  # a far point's squared distance overflows to inf
            if isinstance(self.mu, float):
                return (theta - self.mu) ** 2
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

    def sgd(self, *, eta: Any, gamma: Any, sigma: Any, T: int | None = None, theta0: Any = None) -> CliffSGD:
        """Exact expectations of SGD's :math:`\\theta_T` and its EMA started at ``theta0`` (default ``mu``).

        :func:`sgd_expectation` with this problem's ``eps``, ``C``, ``d`` and
        ``offset0 = |theta0 - mu|``; ``eta``, ``gamma``, ``sigma`` broadcast.
        """
        offset0 = 0.0 if theta0 is None else float(np.sqrt(self._offset2(check_finite("theta0", theta0))))
        if not math.isfinite(offset0):
            raise ValueError(f"theta0={theta0!r} is out of range: its distance to mu={self.mu!r} overflows float64")
        return sgd_expectation(
            eta=eta, gamma=gamma, sigma=sigma, eps=self.eps, C=self.C, T=T, offset0=offset0, d=self.d
        )

    def monte_carlo(self, samples: Any) -> CliffExpectation:
        """Estimates of the same expectations from i.i.d. ``samples`` of theta (first axis = replicates)."""
        r2 = self._offset2(samples)
        reward = self.reward(samples)
        return CliffExpectation(
            reward=estimate(reward),
            gap=estimate(-reward),
            loss_bc=estimate(0.5 * r2),
            p_off=estimate((r2 > self.eps**2).astype(float)),
        )


def agreement_z(mc: CliffExpectation, exact: CliffExpectation) -> dict[str, float]:
    r"""z-scores ``(MC - exact) / SE`` of a Monte Carlo :class:`CliffExpectation` against the exact one.

    ``loss_bc`` and ``gap`` use the replicates' standard error. ``p_off`` is a proportion, so its z
    uses the exact law's :math:`\sqrt{p(1-p)/n}` (the score test), which stays meaningful when no
    chain, or every chain, fell off the cliff. A ``gap`` whose replicates are all equal (every chain
    off the cliff, so the sample SE is 0) is judged by that same proportion test.
    """
    p, est = float(exact.p_off), mc.p_off
    se_p = math.sqrt(p * (1 - p) / est.n)
    diff = float(est.mean) - p
    z_p = diff / se_p if se_p > 0 else (0.0 if diff == 0 else math.inf)
    out = {"loss_bc": float(mc.loss_bc.z(exact.loss_bc)), "p_off": z_p}
    out["gap"] = z_p if float(mc.gap.se) == 0.0 and exact.gap != mc.gap.mean else float(mc.gap.z(exact.gap))
    return out


# ---------------------------------------------------------------- exact Gaussian expectations


def _truncated_erf(a: np.ndarray, s: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""1-D: :math:`(\mathbb{E}[x^2 1\{|x|\le\varepsilon\}], \Pr(|x|>\varepsilon))` for :math:`x\sim N(a,s^2)`.

    Needs ``s > 0``.

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


def gaussian_expectation(
    offset2: Any, var: Any, *, eps: Any, C: Any, d: int = 1, method: str = "auto"
) -> CliffExpectation:
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
        Per-coordinate variance :math:`s^2 \ge 0`; ``0`` gives the deterministic value, and ``inf``
        (an overflowed moment, also allowed for ``offset2``) gives ``p_off = 1`` and an infinite loss.
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
    offset2, var = _check_moment("offset2", offset2), _check_moment("var", var)
    eps, C = _check_cliff(eps, C)
    shape = np.broadcast_shapes(offset2.shape, var.shape, eps.shape, C.shape)
    offset2, var, eps, C = (np.broadcast_to(x, shape).ravel() for x in (offset2, var, eps, C))
    # Deterministic theta (var = 0) is handled apart: the formulas divide by s. An overflowed law
    # (inf) has left every ball: off the cliff with probability 1.
    overflow = np.isinf(offset2) | np.isinf(var)
    random = (var > 0) & ~overflow
    m2 = np.where(offset2 <= eps**2, offset2, 0.0)
    p_off = np.where(offset2 <= eps**2, 0.0, 1.0)
    m2[overflow], p_off[overflow] = 0.0, 1.0
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


# ---------------------------------------------------------------- SGD and its EMA on the cliff problem


@dataclass(frozen=True)
class CliffSGD:
    """Cliff expectations of the SGD iterate ``theta`` and of its EMA ``ema`` at one step ``T``."""

    theta: CliffExpectation
    ema: CliffExpectation


def _check_sgd(eta: Any, gamma: Any, sigma: Any, T: int | None):
    # The Hessian of loss_bc is the identity, so SGD is stable exactly for 0 < eta < 2.
    eta = check_range("eta", eta, 0.0, 2.0, low_open=True, high_open=True)
    gamma = check_range("gamma", gamma, 0.0, 1.0, low_open=True)
    sigma = check_scale("sigma", sigma)
    if T is not None:
        T = check_int("T", T, minimum=0)
    return eta, gamma, sigma, T


def sgd_expectation(
    *, eta: Any, gamma: Any, sigma: Any, eps: Any, C: Any, T: int | None = None, offset0: Any = 0.0, d: int = 1
) -> CliffSGD:
    r"""Exact cliff expectations of the SGD iterate :math:`\theta_T` and its EMA :math:`\bar\theta_T`.

    SGD on :math:`\ell_{bc}` in :math:`d` dimensions,
    :math:`\theta_{t+1} = \theta_t - \eta(\theta_t - \mu + \sigma\xi_t)`, :math:`\xi_t \sim N(0, I_d)`,
    with :math:`\bar\theta_t = (1-\gamma)\bar\theta_{t-1} + \gamma\theta_t`,
    :math:`\bar\theta_0 = \theta_0`. The Hessian is the identity, so the coordinates are
    independent copies of the scalar recursion of :func:`gvatheory.averaging.scalar_moments`, the
    laws stay isotropic, and both means move along :math:`\theta_0 - \mu`; the scalar recursion
    started at ``offset0`` :math:`= \lVert\theta_0-\mu\rVert` with target 0 gives the distance of
    the means to :math:`\mu` and the per-coordinate variances, which :func:`gaussian_expectation`
    turns into expected rewards. Every argument but ``T`` and ``d`` broadcasts.

    Parameters
    ----------
    eta : array_like
        Step size, in (0, 2).
    gamma : array_like
        EMA weight on the newest iterate, in (0, 1].
    sigma : array_like
        Gradient-noise scale per coordinate, >= 0.
    eps, C : array_like
        Cliff radius and drop.
    T : int or None
        Step; ``None`` means the stationary law (:math:`T \to \infty`).
    offset0 : array_like
        :math:`\lVert\theta_0 - \mu\rVert` (ignored when ``T`` is None).
    d : int
        Dimension.
    """
    eta, gamma, sigma, T = _check_sgd(eta, gamma, sigma, T)
    offset0 = check_range("offset0", offset0, 0.0)
    if T is None:
        m = scalar_stationary(1.0, sigma, eta, gamma)
        zero = np.zeros(np.shape(m.var_theta))
        mean_theta, mean_ema = zero, zero
    else:
        m = scalar_moments(1.0, sigma, eta, gamma, T, theta0=offset0, mu=0.0)
        mean_theta, mean_ema = m.mean_theta, m.mean_ema
    theta = gaussian_expectation(np.asarray(mean_theta) ** 2, m.var_theta, eps=eps, C=C, d=d)
    ema = gaussian_expectation(np.asarray(mean_ema) ** 2, m.var_ema, eps=eps, C=C, d=d)
    return CliffSGD(theta=theta, ema=ema)


def sgd_monte_carlo(
    problem: CliffProblem,
    *,
    eta: float,
    gamma: float,
    sigma: float,
    T: int,
    chains: int,
    seed: SeedLike,
    theta0: Any = None,
    progress: bool = False,
) -> CliffSGD:
    r"""Monte Carlo twin of :func:`sgd_expectation`: simulate ``chains`` chains to step ``T``.

    Each coordinate runs :func:`gvatheory.averaging.simulate_scalar` with its own child seed of
    ``seed``; the rewards of the simulated :math:`\theta_T` and :math:`\bar\theta_T` are averaged
    into :class:`~gvatheory.stats.Estimate` objects. ``theta0`` defaults to ``mu``; ``progress``
    shows a bar over the coordinates.
    """
    for name, value in (("eta", eta), ("gamma", gamma), ("sigma", sigma)):
        if np.ndim(value) != 0:
            raise ValueError(f"{name}={value!r} must be a scalar for Monte Carlo")
    eta, gamma, sigma, T = _check_sgd(eta, gamma, sigma, T)
    if T is None:
        raise ValueError("T=None (stationary) has no Monte Carlo twin: give a finite T >= 0")
    chains = check_int("chains", chains, minimum=2)
    # per chain and coordinate: the scalar run (keys, both iterates and their checked copies) and
    # the stacked samples; per chain: the rewards and losses of both iterates
    check_memory("d", problem.d, 96 * 2, fixed=64 * 2)
    check_memory("chains", chains, 96 * problem.d + 64)
    mu = problem.mu_array
    theta0 = mu if theta0 is None else np.atleast_1d(check_finite("theta0", theta0))
    if theta0.shape != mu.shape:
        raise ValueError(f"theta0 has shape {theta0.shape}, expected {mu.shape}")
    children = seed_sequence(seed).spawn(problem.d)
    runs = [
        simulate_scalar(chains, T, float(eta), float(gamma), float(sigma), float(theta0[i]), float(mu[i]), children[i])
        for i in tqdm(range(problem.d), desc="cliff chains", unit="coord", disable=not progress)
    ]
    theta_T = np.stack([r[0] for r in runs], axis=-1)  # (chains, d)
    ema_T = np.stack([r[1] for r in runs], axis=-1)
    if isinstance(problem.mu, float):
        theta_T, ema_T = theta_T[:, 0], ema_T[:, 0]
    return CliffSGD(theta=problem.monte_carlo(theta_T), ema=problem.monte_carlo(ema_T))
