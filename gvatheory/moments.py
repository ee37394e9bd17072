r"""Exact moments of linear-Gaussian recursions: the one engine behind every toy system's laws.

A state :math:`x_t \in \mathbb{R}^n` that follows

.. math::

    x_{t+1} = A_t x_t + c_t + w_t, \qquad \mathbb{E}\,w_t = 0, \quad \operatorname{Cov} w_t = S_t,

with :math:`w_t` independent of :math:`x_t`, has mean and covariance

.. math::

    m_{t+1} = A_t m_t + c_t, \qquad P_{t+1} = A_t P_t A_t^\top + S_t,

exactly, whatever the law of :math:`w_t` (:func:`propagate`, :func:`moment_sequence`); they are
the law itself when :math:`x_0` and the :math:`w_t` are Gaussian. For constant :math:`A, S` with
spectral radius of :math:`A` below 1 the stationary covariance solves the discrete Lyapunov
equation :math:`P = A P A^\top + S` (:func:`stationary_cov`).

SGD with EMAs on a quadratic with Hessian :math:`H` is such a recursion. With
:math:`z_t = (\theta_t, \bar\theta^{(1)}_t, \dots, \bar\theta^{(m)}_t) - \mu` and gradient noise
:math:`\xi_t` of covariance :math:`\Sigma`,

.. math::

    z_{t+1} = M_t z_t + B_t \xi_t, \quad
    M_t = \begin{pmatrix} F_t & 0 \\ \gamma^{(k)}_{t+1} F_t & (1-\gamma^{(k)}_{t+1}) I \end{pmatrix},
    \quad B_t = -\eta_t \begin{pmatrix} I \\ \gamma^{(k)}_{t+1} I \end{pmatrix},
    \quad F_t = I - \eta_t H,

so :math:`A_t = M_t`, :math:`c_t = 0`, :math:`S_t = B_t \Sigma B_t^\top`
(:func:`sgd_ema_matrices`, :func:`sgd_ema_path`, :func:`sgd_ema_stationary`); with heavy-ball
momentum (and Adam with frozen second moments) the state gains the momentum buffer
(:func:`heavy_ball_ema_matrices`). It serves
:mod:`gvatheory.averaging` (iterates :math:`\theta` on a quadratic) and :mod:`gvatheory.linear_gva`
(:math:`\mathrm{vec}\,K` of a linear policy under behavior cloning); :mod:`gvatheory.prop31` runs its
noise-free closed loops through :func:`moment_sequence`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_discrete_lyapunov

from ._checks import check_int


def propagate(
    mean: np.ndarray, cov: np.ndarray, A: np.ndarray, S: np.ndarray, c: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One step of the moment recursion: ``(A m + c, A P A^T + S)``."""
    mean = A @ mean if c is None else A @ mean + c
    return mean, A @ cov @ A.T + S


def moment_sequence(
    A: np.ndarray, mean0: np.ndarray, cov0: np.ndarray, n: int, S: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Means (n, d) and covariances (n, d, d) of :math:`x_0, \\dots, x_{n-1}` for a constant ``A``
    (and noise covariance ``S``; ``None`` for a noise-free recursion). Overflow gives non-finite
    entries without a warning."""
    d = len(mean0)
    mean = np.empty((n, d))
    cov = np.empty((n, d, d))
    mean[0], cov[0] = mean0, cov0
    with np.errstate(over="ignore", invalid="ignore"):
        for h in range(1, n):
            mean[h] = A @ mean[h - 1]
            cov[h] = A @ cov[h - 1] @ A.T if S is None else A @ cov[h - 1] @ A.T + S
    return mean, cov


def stationary_cov(A: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Stationary covariance: the solution of :math:`P = A P A^\\top + S` (spectral radius of ``A`` < 1)."""
    return solve_discrete_lyapunov(A, S)


def sgd_ema_matrices(H: np.ndarray, eta: float, gammas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``M`` ((1+m) d, (1+m) d) and ``B`` ((1+m) d, d) of one SGD + EMA step with step size ``eta``
    and EMA weights ``gammas`` (m,) on a quadratic with Hessian ``H`` (d, d)."""
    d, m = H.shape[0], len(gammas)
    eye = np.eye(d)
    F = eye - eta * H
    M = np.zeros(((1 + m) * d, (1 + m) * d))
    B = np.zeros(((1 + m) * d, d))
    M[:d, :d] = F
    B[:d] = -eta * eye
    for k in range(m):
        rows = slice((1 + k) * d, (2 + k) * d)
        M[rows, :d] = gammas[k] * F
        M[rows, rows] = (1.0 - gammas[k]) * eye
        B[rows] = -gammas[k] * eta * eye
    return M, B


def sgd_ema_path(
    H: np.ndarray, noise_cov: np.ndarray, etas: np.ndarray, gammas: np.ndarray, z0: np.ndarray, times: Iterable[int]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    r"""Mean and covariance of :math:`z_t` at every step ``t`` in ``times``, in one pass.

    Parameters
    ----------
    H : (d, d) array
        Hessian of the quadratic.
    noise_cov : (d, d) array
        :math:`\Sigma`, covariance of the gradient noise.
    etas : (T,) array
        :math:`\eta_t`, the step that makes :math:`z_{t+1}` from :math:`z_t`.
    gammas : (m, T) array
        Column ``t`` holds the EMA weights :math:`\gamma^{(k)}_{t+1}` of that step.
    z0 : ((1+m) d,) array
        Deterministic start (covariance 0).
    times : steps in ``[0, T]``.

    Returns
    -------
    dict
        ``{t: (mean, cov)}`` with fresh arrays. Overflow gives non-finite entries (no warning);
        callers flag it.
    """
    wanted = {int(t) for t in times}
    T = len(etas)
    mean, cov = np.asarray(z0, dtype=float), np.zeros((len(z0), len(z0)))
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    params = None
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(T + 1):
            if t in wanted:
                out[t] = (mean.copy(), cov.copy())
            if t == T:
                break
            if params is None or etas[t] != params[0] or np.any(gammas[:, t] != params[1]):
                params = (etas[t], gammas[:, t])  # rebuild only when a schedule moves
                M, B = sgd_ema_matrices(H, *params)
                S = B @ noise_cov @ B.T
            mean, cov = propagate(mean, cov, M, S)
    return out


def heavy_ball_ema_matrices(
    H: np.ndarray, eta: float, beta: float, c: float, gammas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""``M`` ((2+m) d, (2+m) d) and ``B`` ((2+m) d, d) of one heavy-ball step with EMAs, on the
    state :math:`x = (z, n, e^{(1)}, \dots, e^{(m)})`:

    .. math::

        n' = \beta n + c\,(H z + \xi), \quad z' = z - \eta n', \quad
        e^{(k)\prime} = (1-\gamma^{(k)}) e^{(k)} + \gamma^{(k)} z',

    so :math:`x' = M x + B \xi`. SGD with torch's momentum is ``c = 1``; Adam with its second
    moments frozen is ``beta = beta1``, ``c = 1 - beta1`` on the preconditioned Hessian. With
    ``beta = 0, c = 1`` the ``(z, e)`` blocks are those of :func:`sgd_ema_matrices` (``n`` is then
    a by-product that nothing reads)."""
    d, m = H.shape[0], len(gammas)
    eye = np.eye(d)
    F = eye - eta * c * H
    M = np.zeros(((2 + m) * d, (2 + m) * d))
    B = np.zeros(((2 + m) * d, d))
    z, n = slice(0, d), slice(d, 2 * d)
    M[z, z], M[z, n], B[z] = F, -eta * beta * eye, -eta * c * eye
    M[n, z], M[n, n], B[n] = c * H, beta * eye, c * eye
    for k in range(m):
        e = slice((2 + k) * d, (3 + k) * d)
        g = gammas[k]
        M[e, z], M[e, n], M[e, e] = g * F, -g * eta * beta * eye, (1.0 - g) * eye
        B[e] = -g * eta * c * eye
    return M, B


def sgd_ema_stationary(H: np.ndarray, noise_cov: np.ndarray, eta: float, gammas: np.ndarray) -> np.ndarray:
    """Stationary covariance of :math:`z` for constant ``eta`` and ``gammas``.

    Needs a stable SGD, ``eta * lambda_max(H) < 2`` (the callers check it)."""
    M, B = sgd_ema_matrices(H, eta, gammas)
    return stationary_cov(M, B @ noise_cov @ B.T)


@dataclass(frozen=True)
class JointGaussian:
    r"""Gaussian law (exact first and second moments) of :math:`(\theta_t, \bar\theta^{(1)}_t, \dots)`.

    Attributes
    ----------
    mean : ndarray, shape (1+m, d)
        Row 0 is :math:`\mathbb{E}\theta_t`, row ``k`` the mean of the ``k``-th average.
    cov : ndarray, shape ((1+m) d, (1+m) d)
        Covariance of the stacked vector ``(theta, avg_1, ..., avg_m)``.
    t : int or None
        Step (``None`` for the stationary law).
    divergent : bool
        The step size makes SGD unstable (:math:`\eta_t \lambda_{max}(H_s) \ge 2` for some step);
        the numbers are then reported as they overflow (``inf``), never as NaN.
    """

    mean: np.ndarray
    cov: np.ndarray
    t: int | None = None
    divergent: bool = False

    def marginal(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``(d,)`` and covariance ``(d, d)`` of component ``k`` (0 = iterate, k = k-th average)."""
        n, d = self.mean.shape
        k = check_int("k", k, 0, n - 1)
        return self.mean[k], self.cov[k * d : (k + 1) * d, k * d : (k + 1) * d]

    @property
    def var(self) -> np.ndarray:
        """Coordinate variances, shape ``(1+m, d)``."""
        return np.diag(self.cov).reshape(self.mean.shape)
