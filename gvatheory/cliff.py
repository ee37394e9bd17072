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
from tqdm.auto import tqdm

from ._checks import check_finite, check_int, check_range
from .averaging import scalar_moments, scalar_stationary, simulate_scalar
from .stats import SeedLike, estimate, seed_sequence

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

    def sgd(self, *, eta: Any, gamma: Any, sigma: Any, T: int | None = None, theta0: Any = None) -> CliffSGD:
        """Exact expectations of SGD's :math:`\\theta_T` and its EMA started at ``theta0`` (default ``mu``).

        :func:`sgd_expectation` with this problem's ``eps``, ``C``, ``d`` and
        ``offset0 = |theta0 - mu|``; ``eta``, ``gamma``, ``sigma`` broadcast.
        """
        offset0 = 0.0 if theta0 is None else float(np.sqrt(self._offset2(check_finite("theta0", theta0))))
        return sgd_expectation(eta=eta, gamma=gamma, sigma=sigma, eps=self.eps, C=self.C, T=T, offset0=offset0,
                               d=self.d)

    def monte_carlo(self, samples: Any) -> CliffExpectation:
        """Estimates of the same expectations from i.i.d. ``samples`` of theta (first axis = replicates)."""
        r2 = self._offset2(samples)
        reward = self.reward(samples)
        return CliffExpectation(reward=estimate(reward), gap=estimate(-reward), loss_bc=estimate(0.5 * r2),
                                p_off=estimate((r2 > self.eps**2).astype(float)))


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
    sigma = check_range("sigma", sigma, 0.0)
    if T is not None:
        T = check_int("T", T, minimum=0)
    return eta, gamma, sigma, T


def sgd_expectation(*, eta: Any, gamma: Any, sigma: Any, eps: Any, C: Any, T: int | None = None,
                    offset0: Any = 0.0, d: int = 1) -> CliffSGD:
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


def sgd_monte_carlo(problem: CliffProblem, *, eta: float, gamma: float, sigma: float, T: int,
                    n_chains: int, seed: SeedLike, theta0: Any = None, progress: bool = False) -> CliffSGD:
    r"""Monte Carlo twin of :func:`sgd_expectation`: simulate ``n_chains`` chains to step ``T``.

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
    n_chains = check_int("n_chains", n_chains, minimum=2)
    mu = problem.mu_array
    theta0 = mu if theta0 is None else np.atleast_1d(check_finite("theta0", theta0))
    if theta0.shape != mu.shape:
        raise ValueError(f"theta0 has shape {theta0.shape}, expected {mu.shape}")
    children = seed_sequence(seed).spawn(problem.d)
    runs = [simulate_scalar(n_chains, T, float(eta), float(gamma), float(sigma), float(theta0[i]), float(mu[i]),
                            children[i])
            for i in tqdm(range(problem.d), desc="cliff chains", unit="coord", disable=not progress)]
    theta_T = np.stack([r[0] for r in runs], axis=-1)  # (n_chains, d)
    ema_T = np.stack([r[1] for r in runs], axis=-1)
    if isinstance(problem.mu, float):
        theta_T, ema_T = theta_T[:, 0], ema_T[:, 0]
    return CliffSGD(theta=problem.monte_carlo(theta_T), ema=problem.monte_carlo(ema_T))


# ---------------------------------------------------------------- Prop. 4.1: as written and precise

#: Precise Prop. 4.1, SGD part: :math:`\sigma^2\eta \ge c_1\varepsilon^2` puts the stationary iterate off
#: the cliff with probability >= 1/2. :math:`c_1 = 2/m_1` since the stationary variance is
#: :math:`\sigma^2\eta/(2-\eta) \ge \sigma^2\eta/2` and :math:`\Pr(\chi^2_d(\lambda) \le r) \le 1/2` once
#: :math:`r \le m_1` (the chi-square law grows stochastically with d and lambda).
C1_STATIONARY = 2.0 / MEDIAN_CHI2_1
#: The same at a finite step T with :math:`\eta T \ge 1/2`, where the variance has reached at least
#: :math:`1 - e^{-1}` of its stationary value: :math:`c_1 = 2 / ((1-e^{-1}) m_1)`.
C1_FINITE = 2.0 / ((1.0 - math.exp(-1.0)) * MEDIAN_CHI2_1)


def log_plus(x: Any) -> np.ndarray:
    """:math:`\\log_+ x = \\max(\\log x, 0)`."""
    return np.log(np.maximum(np.asarray(x, dtype=float), 1.0))


def precise_sgd_margin(*, eta: Any, sigma: Any, eps: Any, T: int | None = None) -> np.ndarray:
    r"""Margin of the precise Prop. 4.1, SGD part: where it is >= 1, :math:`\mathbb{E}[J^\star - J(\theta_T)] \ge C/2`.

    .. math:: \frac{\sigma^2\eta}{c_1\varepsilon^2}, \qquad c_1 = \text{C1\_STATIONARY} \ (T=\infty),
              \quad c_1 = \text{C1\_FINITE} \ (\eta T \ge 1/2),

    NaN when ``T`` is finite and :math:`\eta T < 1/2` (no promise yet). Holds in any dimension
    and from any start :math:`\theta_0`. Why: the gap is at least :math:`C\Pr(\text{off})`, and
    :math:`\Pr(\lVert x\rVert \le \varepsilon) = \Pr(\chi^2_d(\lambda) \le \varepsilon^2/s_T^2) \le 1/2` once
    :math:`s_T^2 \ge \varepsilon^2/m_1`; the variance :math:`s_T^2 = \sigma^2\eta(1-(1-\eta)^{2T})/(2-\eta)`
    is at least :math:`\sigma^2\eta/2` at stationarity and :math:`(1-e^{-1})\sigma^2\eta/2` once
    :math:`\eta T \ge 1/2`.
    """
    eta, sigma, eps = (np.asarray(x, dtype=float) for x in (eta, sigma, eps))
    if T is None:
        return sigma**2 * eta / (C1_STATIONARY * eps**2)
    return np.where(eta * T >= 0.5, sigma**2 * eta / (C1_FINITE * eps**2), np.nan)


def precise_ema_margin(*, gamma: Any, sigma: Any, eps: Any, C: Any, d: int = 1) -> np.ndarray:
    r"""Margin of the precise Prop. 4.1, EMA part.

    Where it is <= 1, :math:`\mathbb{E}[J^\star - J(\bar\theta_T)] \le (d+1)\sigma^2\gamma`:

    .. math:: \frac{\sigma^2\gamma\,\big(2d + 3\log_+\frac{C}{\sigma^2\gamma}\big)}{\varepsilon^2},

    for every T when :math:`\theta_0 = \mu` and :math:`\eta, \gamma \in (0, 1]`. Why: the EMA's
    per-coordinate variance :math:`v_T` increases with T (the covariance of a linear recursion
    started at a point only accumulates) to :math:`v_\infty \le \sigma^2\min(\eta,\gamma)`; the
    Laurent-Massart bound :math:`\Pr(\chi^2_d \ge d + 2\sqrt{dt} + 2t) \le e^{-t}` with
    :math:`t = \log_+(C/\sigma^2\gamma)` and :math:`d + 2\sqrt{dt} + 2t \le 2d + 3t` gives
    :math:`C\Pr(\text{off}) \le \sigma^2\gamma`, and the on-cliff part is at most
    :math:`d v_T \le d\sigma^2\gamma`.
    """
    gamma, sigma, eps, C = (np.asarray(x, dtype=float) for x in (gamma, sigma, eps, C))
    s2g = sigma**2 * gamma
    return s2g * (2 * d + 3 * log_plus(C / s2g)) / eps**2


@dataclass(frozen=True)
class Prop41Grid:
    """Parameter grid of the Prop. 4.1 checks (every combination with ``C >= eps**2`` is used).

    ``T`` lists the steps checked (``None`` = stationary); the start is :math:`\\theta_0 = \\mu`.
    """

    eta: tuple[float, ...]
    gamma: tuple[float, ...]
    eps: tuple[float, ...]
    C: tuple[float, ...]
    sigma: tuple[float, ...]
    d: tuple[int, ...] = (1,)
    T: tuple[int | None, ...] = (None,)

    def __post_init__(self):
        for name in ("eta", "gamma", "eps", "C", "sigma", "d", "T"):
            if len(getattr(self, name)) == 0:
                raise ValueError(f"{name} is empty: the grid needs at least one value per axis")
        check_range("eta", self.eta, 0.0, 1.0, low_open=True)
        check_range("gamma", self.gamma, 0.0, 1.0, low_open=True)
        check_range("eps", self.eps, 0.0, math.inf, low_open=True)
        check_range("C", self.C, 0.0, math.inf, low_open=True)
        check_range("sigma", self.sigma, 0.0, math.inf, low_open=True)
        for d in self.d:
            check_int("d", d, minimum=1)
        for T in self.T:
            if T is not None:
                check_int("T", T, minimum=0)

    def points(self) -> dict[str, np.ndarray]:
        """Flat arrays ``eta, gamma, eps, C, sigma`` over the valid combinations (``C >= eps**2``)."""
        mesh = np.meshgrid(self.eta, self.gamma, self.eps, self.C, self.sigma, indexing="ij")
        flat = {k: m.ravel() for k, m in zip(("eta", "gamma", "eps", "C", "sigma"), mesh)}
        keep = flat["C"] >= flat["eps"] ** 2
        return {k: v[keep] for k, v in flat.items()}

    @property
    def size(self) -> int:
        return int(self.points()["eta"].size) * len(self.d) * len(self.T)


def default_grid(quick: bool = False) -> Prop41Grid:
    """The grid used by ``gva theory prop41`` and the cliff study (wide: 3-5 decades per axis)."""
    n = 7 if quick else 13
    return Prop41Grid(eta=tuple(np.logspace(-3, 0, n)), gamma=tuple(np.logspace(-4, 0, n + 2)),
                      eps=tuple(np.logspace(-2, 1, n)), C=(1e-2, 1.0, 1e2), sigma=(0.1, 1.0, 10.0),
                      d=(1, 3) if quick else (1, 2, 5), T=(None, 10, 1000) if quick else (None, 1, 10, 100, 1000))


@dataclass(frozen=True)
class Prop41Precise:
    r"""Result of checking the precise Prop. 4.1 on a grid (all numbers computed from exact gaps).

    Ratios are normalized so that the claimed bounds read ``lo <= ratio <= hi``:

    * ``loss_theta``: :math:`\mathbb{E}\ell_{bc}(\theta_\infty) / (d\sigma^2\eta)`, claimed in [1/4, 1/2];
    * ``loss_ema``: :math:`\mathbb{E}\ell_{bc}(\bar\theta_\infty) / (d\sigma^2\min(\eta,\gamma))`,
      claimed in [1/8, 1/2];
    * ``sgd_gap``: :math:`\min \mathbb{E}[J^\star-J(\theta_T)]/C` where :func:`precise_sgd_margin` >= 1,
      claimed >= 1/2;
    * ``ema_gap``: :math:`\max \mathbb{E}[J^\star-J(\bar\theta_T)]/((d+1)\sigma^2\gamma)` where
      :func:`precise_ema_margin` <= 1, claimed <= 1.

    ``sgd_active`` / ``ema_active`` count the grid points where the conditions hold (the checks are
    not vacuous). Per checked point (all d and T concatenated): ``sgd_x`` is the SGD margin,
    ``sgd_y`` the gap over C, ``sgd_stationary`` marks T = inf; ``ema_x`` is the EMA margin and
    ``ema_y`` the gap over :math:`(d+1)\sigma^2\gamma`. The claims read ``x >= 1 => y >= 1/2`` and
    ``x <= 1 => y <= 1``.
    """

    grid: Prop41Grid
    n_points: int
    loss_theta: tuple[float, float]
    loss_ema: tuple[float, float]
    sgd_gap: float
    sgd_active: int
    ema_gap: float
    ema_active: int
    sgd_x: np.ndarray
    sgd_y: np.ndarray
    sgd_stationary: np.ndarray
    ema_x: np.ndarray
    ema_y: np.ndarray

    @property
    def c1_empirical(self) -> float:
        r"""Largest :math:`\sigma^2\eta/\varepsilon^2` on the grid at which a stationary iterate had gap < C/2.

        Compare with :data:`C1_STATIONARY`: the difference is the slack of the precise constant,
        resolved only up to the grid's spacing.
        """
        below = self.sgd_stationary & (self.sgd_y < 0.5)
        return float(np.max(self.sgd_x[below]) * C1_STATIONARY) if np.any(below) else 0.0

    @property
    def holds(self) -> dict[str, bool]:
        tol = 1e-9  # the loss bounds are attained with equality at eta = gamma = 1
        return {
            "loss_theta": 0.25 - tol <= self.loss_theta[0] and self.loss_theta[1] <= 0.5 + tol,
            "loss_ema": 1 / 8 - tol <= self.loss_ema[0] and self.loss_ema[1] <= 0.5 + tol,
            "sgd_gap": self.sgd_active > 0 and self.sgd_gap >= 0.5,
            "ema_gap": self.ema_active > 0 and self.ema_gap <= 1.0,
        }

    def plot(self, max_points: int = 20000, seed: int = 0):
        """Scatter of the normalized gaps against the normalized conditions, with the claimed regions."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        rng = np.random.default_rng(seed)
        panels = [(self.sgd_x, self.sgd_y, 1.0, 0.5, "SGD iterate", r"$\sigma^2\eta\,/\,(c_1\varepsilon^2)$",
                   r"$E[J^\star-J(\theta_T)]\,/\,C$"),
                  (self.ema_x, self.ema_y, 1.0, 1.0, "EMA iterate",
                   r"$\sigma^2\gamma\,(2d+3\log_+\frac{C}{\sigma^2\gamma})\,/\,\varepsilon^2$",
                   r"$E[J^\star-J(\bar\theta_T)]\,/\,((d+1)\sigma^2\gamma)$")]
        for ax, (x, y, xc, yc, title, xl, yl) in zip(axes, panels):
            ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
            idx = np.flatnonzero(ok)
            if idx.size > max_points:
                idx = rng.choice(idx, max_points, replace=False)
            ax.scatter(x[idx], y[idx], s=3, alpha=0.3, color="C0", rasterized=True)
            ax.axvline(xc, color="k", lw=1)
            ax.axhline(yc, color="C3", lw=1)
            ax.set(xscale="log", yscale="log", xlabel=xl, ylabel=yl, title=title)
        axes[0].axvspan(1.0, axes[0].get_xlim()[1], color="C2", alpha=0.08, label="claim: gap >= C/2")
        axes[1].axvspan(axes[1].get_xlim()[0], 1.0, color="C2", alpha=0.08, label="claim: gap <= (d+1) sigma^2 gamma")
        for ax in axes:
            ax.legend(loc="best", fontsize=8)
        fig.suptitle(f"Precise Prop. 4.1 on {self.n_points} exact grid points")
        fig.tight_layout()
        return fig


def prop41_precise(grid: Prop41Grid) -> Prop41Precise:
    """Check the precise Prop. 4.1 (see :class:`Prop41Precise`) at every grid point, exactly."""
    p = grid.points()
    s2 = p["sigma"] ** 2
    lt, le, cols = [np.inf, -np.inf], [np.inf, -np.inf], {k: [] for k in ("sx", "sy", "st", "ex", "ey")}
    for d in grid.d:
        for T in grid.T:
            res = sgd_expectation(eta=p["eta"], gamma=p["gamma"], sigma=p["sigma"], eps=p["eps"], C=p["C"], T=T, d=d)
            if T is None:
                r = res.theta.loss_bc / (d * s2 * p["eta"])
                lt = [min(lt[0], r.min()), max(lt[1], r.max())]
                r = res.ema.loss_bc / (d * s2 * np.minimum(p["eta"], p["gamma"]))
                le = [min(le[0], r.min()), max(le[1], r.max())]
            cols["sx"].append(precise_sgd_margin(eta=p["eta"], sigma=p["sigma"], eps=p["eps"], T=T))
            cols["sy"].append(res.theta.gap / p["C"])
            cols["st"].append(np.full(p["eta"].size, T is None))
            cols["ex"].append(precise_ema_margin(gamma=p["gamma"], sigma=p["sigma"], eps=p["eps"], C=p["C"], d=d))
            cols["ey"].append(res.ema.gap / ((d + 1) * s2 * p["gamma"]))
    sx, sy, st, ex, ey = (np.concatenate(cols[k]) for k in ("sx", "sy", "st", "ex", "ey"))
    on_s, on_e = sx >= 1.0, ex <= 1.0
    return Prop41Precise(grid=grid, n_points=int(sx.size), loss_theta=(float(lt[0]), float(lt[1])),
                         loss_ema=(float(le[0]), float(le[1])),
                         sgd_gap=float(np.min(sy[on_s])) if np.any(on_s) else float("nan"), sgd_active=int(on_s.sum()),
                         ema_gap=float(np.max(ey[on_e])) if np.any(on_e) else float("nan"), ema_active=int(on_e.sum()),
                         sgd_x=sx, sgd_y=sy, sgd_stationary=st, ema_x=ex, ema_y=ey)


def gamma_at_text_boundary(y: Any, C: Any) -> np.ndarray:
    r"""The small root :math:`\gamma < C/e` of :math:`\gamma\log(C/\gamma) = y`.

    This is the text's EMA condition of Prop. 4.1 with equality.

    With :math:`u = \gamma/C`, :math:`u\log(1/u) = y/C` gives :math:`u = \exp W_{-1}(-y/C)`; NaN
    where :math:`y/C > 1/e` (then every :math:`\gamma \le 1` qualifies).
    """
    y, C = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(C, dtype=float))
    z = -y / C
    ok = z >= -math.exp(-1.0)
    w = special.lambertw(np.where(ok, z, -0.1), k=-1).real
    return np.where(ok, C * np.exp(w), np.nan)


@dataclass(frozen=True)
class Prop41AsWritten:
    r"""The informal Prop. 4.1 tested as worded (1-D, stationary laws, :math:`\theta_0 = \mu`).

    The text: :math:`\mathbb{E}\ell_{bc}(\theta_T) = \Theta(\eta)`, :math:`\mathbb{E}\ell_{bc}(\bar\theta_T) =
    \Theta(\gamma)`, and when :math:`\eta > c_1\varepsilon` and :math:`\gamma\log(C/\gamma) \le c_2\varepsilon`,
    :math:`\mathbb{E}[J^\star-J(\theta_T)] \ge C/2` while :math:`\mathbb{E}[J^\star-J(\bar\theta_T)] = O(\gamma)`.

    Attributes
    ----------
    sigma : the noise scales of the grid.
    loss_theta_ratio, loss_ema_ratio : per sigma, (min, max) over the grid of
        :math:`\mathbb{E}\ell_{bc}(\theta)/\eta` and :math:`\mathbb{E}\ell_{bc}(\bar\theta)/\gamma`.
    c1_values, c1_needed : candidate constants and, per sigma, the smallest candidate for which
        :math:`\eta > c_1\varepsilon \Rightarrow \mathbb{E}[J^\star-J(\theta)] \ge C/2` on the whole grid (inf if none).
    loss_family : ``eta``, ``ratio``: :math:`\mathbb{E}\ell_{bc}(\bar\theta)/\gamma` at :math:`\gamma = 0.1`,
        :math:`\sigma = 1` as :math:`\eta \to 0` (a bounded-below ratio is what :math:`\Theta(\gamma)` needs).
    theta_family : ``c1, eps, sigma, gap_over_C``: for each :math:`c_1`, a point with
        :math:`\eta = 1/2 > c_1\varepsilon` and :math:`\sigma = \varepsilon/2`.
    c2_values, ema_eps, ema_gamma, ema_ratio : for each :math:`c_2` (rows) and :math:`\varepsilon` (columns),
        the largest :math:`\gamma` allowed by the text (:func:`gamma_at_text_boundary`, C = 1) and
        :math:`\mathbb{E}[J^\star-J(\bar\theta)]/\gamma` there (:math:`\eta = 1/2`, :math:`\sigma = 1`).
    """

    sigma: tuple[float, ...]
    loss_theta_ratio: tuple[tuple[float, float], ...]
    loss_ema_ratio: tuple[tuple[float, float], ...]
    c1_values: tuple[float, ...]
    c1_needed: tuple[float, ...]
    loss_family: dict[str, np.ndarray]
    theta_family: dict[str, np.ndarray]
    c2_values: tuple[float, ...]
    ema_eps: np.ndarray
    ema_gamma: np.ndarray
    ema_ratio: np.ndarray

    @property
    def findings(self) -> dict[str, bool]:
        r"""Which parts of the text hold with absolute constants (True) or have a counterexample (False).

        * ``loss_theta``: the ratio stays within one factor-2 band per sigma, but the band moves
          with :math:`\sigma^2`; True only if all sigma share one band (absolute constants).
        * ``loss_ema``: the family ratio must stay bounded below; it falls with :math:`\eta`.
        * ``sgd_gap``: an absolute :math:`c_1` needs every ``theta_family`` point to keep gap >= C/2.
        * ``ema_gap``: an absolute K needs ``ema_ratio`` bounded; it grows as eps shrinks, for every c2.
        """
        lo = min(r[0] for r in self.loss_theta_ratio)
        hi = max(r[1] for r in self.loss_theta_ratio)
        fam = self.loss_family["ratio"]
        ratio = self.ema_ratio
        growth = np.nanmax(ratio, axis=1) / np.nanmin(ratio, axis=1)
        return {
            "loss_theta": hi / lo <= 2.0 + 1e-9,
            "loss_ema": bool(fam[-1] >= 0.5 * fam[0]),
            "sgd_gap": bool(np.all(self.theta_family["gap_over_C"] >= 0.5)),
            "ema_gap": bool(np.all(growth < 1e3)),
        }

    def plot(self):
        """Left: the K an O(gamma) bound would need along the text's EMA boundary; right: c1 needed vs sigma."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for c2, ratio in zip(self.c2_values, self.ema_ratio):
            axes[0].loglog(self.ema_eps, ratio, "o-", ms=3, label=f"$c_2$={c2:g}")
        axes[0].set(xlabel=r"cliff radius $\varepsilon$",
                    ylabel=r"$E[J^\star-J(\bar\theta)]\,/\,\gamma$ at $\gamma\log(C/\gamma)=c_2\varepsilon$",
                    title="text's EMA claim: no constant K works")
        axes[0].invert_xaxis()
        axes[0].legend(fontsize=8)
        finite = np.isfinite(self.c1_needed)
        s = np.asarray(self.sigma)
        axes[1].loglog(s[finite], np.asarray(self.c1_needed)[finite], "o-", label="smallest $c_1$ on the grid")
        # eta > eps / (sigma sqrt(m_1)) implies sigma^2 eta / (2 - eta) >= eps^2 / m_1 for eta <= 1.
        axes[1].loglog(s, 1.0 / (s * math.sqrt(MEDIAN_CHI2_1)), "k--", lw=1,
                       label=r"sufficient: $c_1 = 1/(\sigma\sqrt{m_1})$")
        axes[1].set(xlabel=r"noise scale $\sigma$",
                    ylabel=r"$c_1$ needed for $\eta>c_1\varepsilon \Rightarrow$ gap $\geq C/2$",
                    title="text's SGD claim: $c_1$ scales like $1/\\sigma$")
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        return fig


def prop41_as_written(grid: Prop41Grid, *, c1_values: Any = None, c2_values: Any = (1e-2, 1.0, 1e2)) -> Prop41AsWritten:
    """Test the text of Prop. 4.1 on ``grid`` (d = 1, stationary laws) and on the counterexample families."""
    c1_values = tuple(float(c) for c in (np.logspace(-2, 4, 25) if c1_values is None else c1_values))
    check_range("c1_values", c1_values, 0.0, math.inf, low_open=True)
    c2_values = tuple(float(c) for c in c2_values)
    check_range("c2_values", c2_values, 0.0, math.inf, low_open=True)
    p = grid.points()
    res = sgd_expectation(eta=p["eta"], gamma=p["gamma"], sigma=p["sigma"], eps=p["eps"], C=p["C"])
    lt, le, needed = [], [], []
    for s in grid.sigma:
        at = p["sigma"] == s
        r = res.theta.loss_bc[at] / p["eta"][at]
        lt.append((float(r.min()), float(r.max())))
        r = res.ema.loss_bc[at] / p["gamma"][at]
        le.append((float(r.min()), float(r.max())))
        bad = at & (res.theta.gap < p["C"] / 2)
        # eta > c1 eps covers a bad point iff c1 < eta/eps there, so c1 must reach the largest such ratio.
        worst = float(np.max(p["eta"][bad] / p["eps"][bad])) if np.any(bad) else 0.0
        needed.append(next((c for c in c1_values if c >= worst), math.inf))
    eta_f = np.logspace(-1, -7, 13)
    ema_f = sgd_expectation(eta=eta_f, gamma=0.1, sigma=1.0, eps=1.0, C=1.0)
    c1 = np.asarray(c1_values)
    eps_t = 0.25 / c1
    C_t = np.maximum(1.0, eps_t**2)
    theta_t = sgd_expectation(eta=0.5, gamma=0.1, sigma=eps_t / 2, eps=eps_t, C=C_t).theta
    eps_e = np.logspace(-3, -10, 15)
    gam = gamma_at_text_boundary(np.asarray(c2_values)[:, None] * eps_e[None, :], 1.0)
    gam = np.minimum(gam, 1.0)
    ema_e = sgd_expectation(eta=0.5, gamma=gam, sigma=1.0, eps=eps_e[None, :], C=1.0).ema
    return Prop41AsWritten(
        sigma=tuple(grid.sigma), loss_theta_ratio=tuple(lt), loss_ema_ratio=tuple(le), c1_values=c1_values,
        c1_needed=tuple(needed), loss_family={"eta": eta_f, "ratio": ema_f.ema.loss_bc / 0.1},
        theta_family={"c1": c1, "eps": eps_t, "sigma": eps_t / 2, "gap_over_C": theta_t.gap / C_t},
        c2_values=c2_values, ema_eps=eps_e, ema_gamma=gam, ema_ratio=ema_e.gap / gam)


# ---------------------------------------------------------------- gap curves for figures


@dataclass(frozen=True)
class GapCurves:
    """Exact gaps of the SGD iterate and the EMA as functions of ``eta`` (at ``gamma0``) and ``gamma`` (at ``eta0``)."""

    eps: float
    C: float
    sigma: float
    d: int
    T: int | None
    eta0: float
    gamma0: float
    c1: float
    c2: float
    eta: np.ndarray
    theta_vs_eta: np.ndarray
    ema_vs_eta: np.ndarray
    gamma: np.ndarray
    theta_vs_gamma: np.ndarray
    ema_vs_gamma: np.ndarray

    def plot(self):
        """Two panels with the text's thresholds (dotted) and the precise ones (shaded regions)."""
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        a.loglog(self.eta, self.theta_vs_eta, label=r"SGD $\theta_T$")
        a.loglog(self.eta, self.ema_vs_eta, label=rf"EMA $\bar\theta_T$ ($\gamma$={self.gamma0:g})")
        a.axhline(self.C / 2, color="gray", lw=0.8, ls="--", label="C/2")
        a.axvline(self.c1 * self.eps, color="k", ls=":", label=rf"text: $\eta=c_1\varepsilon$ ($c_1$={self.c1:g})")
        on = precise_sgd_margin(eta=self.eta, sigma=self.sigma, eps=self.eps, T=self.T) >= 1
        if np.any(on):
            a.axvspan(self.eta[on].min(), self.eta.max(), color="C0", alpha=0.1, label="precise: gap >= C/2 promised")
        a.set(xlabel=r"step size $\eta$", ylabel=r"$E[J^\star - J]$", title="gap vs step size")
        a.legend(fontsize=7)
        b.loglog(self.gamma, self.theta_vs_gamma, label=rf"SGD $\theta_T$ ($\eta$={self.eta0:g})")
        b.loglog(self.gamma, self.ema_vs_gamma, label=r"EMA $\bar\theta_T$")
        b.loglog(self.gamma, (self.d + 1) * self.sigma**2 * self.gamma, color="C1", ls="--", lw=0.8,
                 label=r"$(d+1)\sigma^2\gamma$")
        g_text = gamma_at_text_boundary(self.c2 * self.eps, self.C)
        if np.isfinite(g_text):
            b.axvline(float(g_text), color="k", ls=":",
                      label=rf"text: $\gamma\log(C/\gamma)=c_2\varepsilon$ ($c_2$={self.c2:g})")
        on = precise_ema_margin(gamma=self.gamma, sigma=self.sigma, eps=self.eps, C=self.C, d=self.d) <= 1
        if np.any(on):
            b.axvspan(self.gamma.min(), self.gamma[on].max(), color="C1", alpha=0.1,
                      label=r"precise: gap <= $(d+1)\sigma^2\gamma$ promised")
        b.set(xlabel=r"EMA weight $\gamma$", ylabel=r"$E[J^\star - J]$", title="gap vs EMA weight")
        b.legend(fontsize=7)
        when = "stationary" if self.T is None else f"T={self.T}"
        fig.suptitle(rf"cliff: $\varepsilon$={self.eps:g}, C={self.C:g}, $\sigma$={self.sigma:g}, d={self.d}, {when}")
        fig.tight_layout()
        return fig


def gap_curves(*, eps: float, C: float, sigma: float, eta0: float, gamma0: float, T: int | None = None, d: int = 1,
               c1: float = 1.0, c2: float = 1.0, n: int = 200) -> GapCurves:
    """Exact gaps on ``eta`` in [1e-4, 1] (at ``gamma0``) and ``gamma`` in [1e-5, 1] (at ``eta0``)."""
    n = check_int("n", n, minimum=2)
    eta = np.logspace(-4, 0, n)
    gamma = np.logspace(-5, 0, n)
    by_eta = sgd_expectation(eta=eta, gamma=gamma0, sigma=sigma, eps=eps, C=C, T=T, d=d)
    by_gamma = sgd_expectation(eta=eta0, gamma=gamma, sigma=sigma, eps=eps, C=C, T=T, d=d)
    return GapCurves(eps=float(eps), C=float(C), sigma=float(sigma), d=d, T=T, eta0=float(eta0), gamma0=float(gamma0),
                     c1=float(c1), c2=float(c2), eta=eta, theta_vs_eta=by_eta.theta.gap, ema_vs_eta=by_eta.ema.gap,
                     gamma=gamma, theta_vs_gamma=by_gamma.theta.gap, ema_vs_gamma=by_gamma.ema.gap)
