r"""1-D SGD with one constant-gamma EMA: closed forms and fast paths over parameter grids.

The scalar case of :mod:`gvatheory.averaging` (re-exported there), used by the cliff problem
(:mod:`gvatheory.cliff`) and derived symbolically in :mod:`gvatheory.symbolic`. Curvature
:math:`h`, noise scale :math:`\sigma`, constant :math:`\eta` and :math:`\gamma`:

.. math::

    \theta_{t+1} = \theta_t - \eta\big(h(\theta_t - \mu) + \sigma\xi_t\big), \qquad
    \bar\theta_t = (1-\gamma)\bar\theta_{t-1} + \gamma\theta_t, \quad \bar\theta_0 = \theta_0 .

With :math:`a = 1 - \eta h` and :math:`b = 1 - \gamma` the stationary law has

.. math::

    \operatorname{Var}\theta = \frac{\eta\sigma^2}{h(2 - \eta h)}, \quad
    \operatorname{Cov}(\theta, \bar\theta) = \frac{\gamma\operatorname{Var}\theta}{1 - ab}, \quad
    \operatorname{Var}\bar\theta = \frac{\gamma(1 + ab)}{(2-\gamma)(1 - ab)}\operatorname{Var}\theta

(:func:`scalar_stationary`); :func:`scalar_moments` gives the exact moments at any step ``T`` on
a whole grid at once, and :func:`simulate_scalar` is their Monte Carlo twin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _rng
from ._averaging_kernels import scalar_kernel
from ._checks import check_finite, check_int, check_memory, check_range, nan_to_inf
from .stats import SeedLike, chain_keys


@dataclass(frozen=True)
class ScalarMoments:
    r"""Moments of the scalar iterate and its EMA; every field broadcasts over the parameter grid."""

    mean_theta: np.ndarray
    mean_ema: np.ndarray
    var_theta: np.ndarray
    var_ema: np.ndarray
    cov: np.ndarray


def _stationary_formulas(h, sigma, eta, gamma):
    r"""Stationary ``(Var theta, Cov(theta, ema), Var ema)`` in closed form; plain arithmetic, so
    numpy arrays and sympy symbols both work (see :mod:`gvatheory.symbolic`)."""
    a = 1 - eta * h
    b = 1 - gamma
    var_theta = eta * sigma**2 / (h * (2 - eta * h))
    cov = gamma * var_theta / (1 - a * b)
    var_ema = gamma * (1 + a * b) * var_theta / ((2 - gamma) * (1 - a * b))
    return var_theta, cov, var_ema


def _check_scalar(h, sigma, eta, gamma):
    h = check_range("h", h, 0.0, math.inf, low_open=True)
    sigma = check_range("sigma", sigma, 0.0)
    eta = check_range("eta", eta, 0.0, math.inf, low_open=True)
    gamma = check_range("gamma", gamma, 0.0, 1.0, low_open=True)
    return h, sigma, eta, gamma


def scalar_stationary(h: Any, sigma: Any, eta: Any, gamma: Any) -> ScalarMoments:
    r"""Stationary moments of 1-D SGD (curvature ``h``, noise scale ``sigma``) and one constant-gamma EMA.

    Closed forms of the module docstring, broadcast over all arguments. Means are 0 (relative to
    :math:`\mu`). Divergent points (:math:`\eta h \ge 2`) get ``inf`` variances.
    """
    h, sigma, eta, gamma = np.broadcast_arrays(*_check_scalar(h, sigma, eta, gamma))
    stable = eta * h < 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        var_theta, cov, var_ema = _stationary_formulas(h, sigma, eta, gamma)
    inf = np.inf
    out = [np.where(stable, v, inf) for v in (var_theta, cov, var_ema)]
    zero = np.zeros(h.shape)
    if h.ndim == 0:
        out, zero = [float(v) for v in out], 0.0
    return ScalarMoments(mean_theta=zero, mean_ema=zero, var_theta=out[0], var_ema=out[2], cov=out[1])


def _scalar_step_matrix(h, sigma, eta, gamma) -> np.ndarray:
    r"""One step of the 1-D moment recursion on ``(m_x, m_e, V_x, C, V_e, 1)``; shape ``(..., 6, 6)``.

    With :math:`a = 1-\eta h`, :math:`b = 1-\gamma`, :math:`q = \eta^2\sigma^2`:
    :math:`m_x' = a m_x`, :math:`m_e' = \gamma a m_x + b m_e`, :math:`V_x' = a^2 V_x + q`,
    :math:`C' = \gamma a^2 V_x + ab C + \gamma q`,
    :math:`V_e' = \gamma^2 a^2 V_x + 2ab\gamma C + b^2 V_e + \gamma^2 q`.
    """
    a, b, g = 1.0 - eta * h, 1.0 - gamma, gamma
    q = (eta * sigma) ** 2
    M = np.zeros(np.shape(a) + (6, 6))
    M[..., 0, 0] = a
    M[..., 1, 0], M[..., 1, 1] = g * a, b
    M[..., 2, 2], M[..., 2, 5] = a * a, q
    M[..., 3, 2], M[..., 3, 3], M[..., 3, 5] = g * a * a, a * b, g * q
    M[..., 4, 2], M[..., 4, 3], M[..., 4, 4], M[..., 4, 5] = g * g * a * a, 2 * a * b * g, b * b, g * g * q
    M[..., 5, 5] = 1.0
    return M


def scalar_moments(h: Any, sigma: Any, eta: Any, gamma: Any, T: Any, theta0: Any = 0.0, mu: Any = 0.0) -> ScalarMoments:
    r"""Exact moments at step ``T`` of 1-D SGD and one constant-gamma EMA, vectorized over a grid.

    Model: :math:`\theta_{t+1} = \theta_t - \eta(h(\theta_t-\mu) + \sigma\xi_t)`,
    :math:`\bar\theta_t = (1-\gamma)\bar\theta_{t-1} + \gamma\theta_t`, :math:`\bar\theta_0=\theta_0`.
    All arguments broadcast (``T`` may be an integer array). The step matrix of
    :func:`_scalar_step_matrix` (a 2x2 block for the means, a 4x4 block for the variances, both
    lower triangular) is raised to the power ``T`` by repeated squaring on the whole grid at
    once: :math:`O(\log T)` elementwise array operations, no loop over points. Unstable
    points (:math:`\eta h \ge 2`) are computed as they are, overflowing to ``inf`` (never NaN).
    """
    h, sigma, eta, gamma = _check_scalar(h, sigma, eta, gamma)
    theta0, mu = check_finite("theta0", theta0), check_finite("mu", mu)
    T_arr = np.asarray(T)
    if T_arr.dtype.kind not in "iu" or np.any(T_arr < 0):
        raise ValueError(f"T={T!r} is out of range: must be an integer (array) >= 0")
    h, sigma, eta, gamma, theta0, mu, T_arr = np.broadcast_arrays(h, sigma, eta, gamma, theta0, mu, T_arr)
    step = np.moveaxis(_scalar_step_matrix(h, sigma, eta, gamma), (-2, -1), (0, 1))  # (6, 6, ...)
    x0 = theta0 - mu
    zero, one = np.zeros(x0.shape), np.ones(x0.shape)
    # The step matrix is block diagonal: the means (m_x, m_e), and (1, V_x, C, V_e); in this
    # order both blocks are lower triangular.
    mean_idx, var_idx = [0, 1], [5, 2, 3, 4]
    with np.errstate(over="ignore", invalid="ignore"):
        m_x, m_e = _lower_power_apply(step[np.ix_(mean_idx, mean_idx)], np.stack([x0, x0]), T_arr)
        _, v_x, c, v_e = _lower_power_apply(step[np.ix_(var_idx, var_idx)], np.stack([one, zero, zero, zero]), T_arr)
    state = np.stack([m_x, m_e, v_x, c, v_e], axis=-1)
    state = np.where(np.isnan(state), np.inf, state)
    out = {
        "mean_theta": state[..., 0] + mu,
        "mean_ema": state[..., 1] + mu,
        "var_theta": state[..., 2],
        "cov": state[..., 3],
        "var_ema": state[..., 4],
    }
    if state.ndim == 1:
        out = {key: float(v) for key, v in out.items()}
    return ScalarMoments(**out)


def _lower_power_apply(L: np.ndarray, v: np.ndarray, k: np.ndarray) -> list[np.ndarray]:
    """``L**k @ v`` for a lower-triangular ``L`` given entrywise, ``L (n, n, ...)``, ``v (n, ...)``.

    Repeated squaring on whole grids at once: every entry is an array over the grid, so each
    matrix product is a few dozen elementwise array operations (no per-point matrices).
    """
    n = L.shape[0]
    L = [[L[i, j] for j in range(i + 1)] for i in range(n)]
    v = [v[i] for i in range(n)]
    k = k.astype(np.int64).copy()
    # Powers of one matrix commute, so L^k v = prod_{bits j of k} L^(2^j) v in any order.
    while np.any(k > 0):
        odd = (k & 1).astype(bool)
        if odd.any():
            v = [np.where(odd, sum(L[i][j] * v[j] for j in range(i + 1)), v[i]) for i in range(n)]
        k >>= 1
        if np.any(k > 0):
            L = [[sum(L[i][m] * L[m][j] for m in range(j, i + 1)) for j in range(i + 1)] for i in range(n)]
    return v


def simulate_scalar(
    chains: int,
    T: int,
    eta: float,
    gamma: float,
    sigma: float,
    theta0: float,
    mu: float,
    seed: SeedLike,
    *,
    h: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Monte Carlo of 1-D SGD with Gaussian noise and one constant-gamma EMA: ``(theta_T, ema_T)``.

    The fast kernel for the cliff problem (:math:`h = 1`, :math:`\ell_{bc} = |\theta-\mu|^2/2`):
    :math:`\theta_{t+1} = \theta_t - \eta(h(\theta_t - \mu) + \sigma\xi_t)`,
    :math:`\bar\theta_t = (1-\gamma)\bar\theta_{t-1} + \gamma\theta_t`, :math:`\bar\theta_0 = \theta_0`.
    Same law as :meth:`gvatheory.averaging.QuadraticSGD.simulate` with ``d = 1``, and the same
    per-chain streams, so the two agree sample for sample. Returns two arrays of shape ``(chains,)``; ``T = 0`` returns
    ``theta0``. Unstable step sizes are simulated as given (chains may overflow to ``inf``).
    """
    chains = check_int("chains", chains, 1)
    check_memory("chains", chains, 48)  # keys, both outputs and their overflow-checked copies
    T = check_int("T", T, 0)
    h, sigma, eta, gamma = (float(v) for v in _check_scalar(h, sigma, eta, gamma))
    theta0, mu = float(check_finite("theta0", theta0)), float(check_finite("mu", mu))
    out_theta, out_ema = np.empty(chains), np.empty(chains)
    with np.errstate(over="ignore", invalid="ignore"):
        scalar_kernel(
            chain_keys(seed, chains), T, eta, gamma, sigma, theta0, mu, h, _rng.ZIG_X, _rng.ZIG_F, out_theta, out_ema
        )
    return nan_to_inf(out_theta), nan_to_inf(out_ema)
