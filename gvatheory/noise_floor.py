r"""The noise floor: stationary excess loss of constant-step SGD and of its EMAs on a quadratic.

Paper Sec. 4.3, the first half of Prop. 4.1: at a constant step size :math:`\eta` the iterate
:math:`\theta_t` fluctuates around the minimizer :math:`\mu` of
:math:`L(\theta) = \tfrac12(\theta-\mu)^\top H(\theta-\mu)` and pays an excess loss
:math:`\mathbb{E}L(\theta) - L(\mu) = \tfrac12\operatorname{tr}(H P_{\theta\theta})`; an EMA with weight
:math:`\gamma` pays less. Two views of the same moment engine (:mod:`gvatheory.moments`):

* :func:`noise_floor` -- plain SGD on a full Hessian and noise covariance, from the stationary
  covariance :math:`P` of the joint state (a discrete Lyapunov equation);
* :func:`spectrum_noise_floor` -- a *spectrum* of curvatures :math:`\lambda_i` with the gradient
  noise variance :math:`s_i` of each eigen-direction, optionally with heavy-ball momentum (Adam
  with frozen second moments, on the preconditioned Hessian). In the eigenbasis the recursion is
  one small linear system per mode, and the diagonal of :math:`P` depends only on the diagonal
  of the noise covariance (the Lyapunov equation couples modes :math:`i, j` only through
  :math:`\Sigma_{ij}`, and :math:`\tfrac12\operatorname{tr}(\Lambda P)` reads only :math:`P_{ii}`), so

  .. math::

      \text{excess} = \sum_i \tfrac12 \lambda_i \operatorname{Var}(z_i), \qquad
      \operatorname{Var}(z_i) \approx \frac{\eta s_i}{2\lambda_i}\ (\text{raw}), \quad
      \operatorname{Var}(\bar z_i) \approx \frac{\gamma}{\gamma + \eta\lambda_i}\operatorname{Var}(z_i)\ (\text{EMA}).

  Each mode's raw excess :math:`\approx \eta s_i / 4` does not depend on :math:`\lambda_i`, but its
  EMA/raw ratio does: modes with :math:`\eta\lambda_i \ll \gamma` are not averaged at all, so a
  spread of curvatures makes the EMA's excess fall more slowly than :math:`\gamma` (log-log slope
  below 1). Multiplying every :math:`s_i` by one constant multiplies every excess by it: slopes
  and EMA/raw ratios depend on the curvatures and on the *relative* noise of the modes only.

Measured against a reference. An experiment that has no access to :math:`\mu` measures losses
against the uniform average :math:`\bar\theta_W` of ``window`` consecutive stationary iterates,
whose own excess is

.. math::

    \operatorname{Var}\bar z_W = W^{-2}\Big(W P_{zz} + 2\sum_{j=1}^{W-1}(W-j)\,[A^j P]_{zz}\Big),

with :math:`A` the mode's transition matrix (for plain SGD :math:`A = 1-\eta\lambda`); it removes
the modes slower than the window (:math:`\eta\lambda W \lesssim 1`) from the measured excess, so
the curvature enters the raw slope in :math:`\eta` too (:meth:`NoiseFloor.over_reference`,
:meth:`SpectrumFloor.over_reference`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._checks import check_finite, check_int, check_range
from .averaging import QuadraticSGD
from .moments import heavy_ball_ema_matrices, stationary_cov

__all__ = ["NoiseFloor", "noise_floor", "SpectrumFloor", "spectrum_noise_floor", "window_sum"]


def window_sum(A: Any, W: int) -> np.ndarray:
    r""":math:`S(A) = \sum_{j=1}^{W-1} (W-j) A^j` in closed form,
    :math:`A\,\big(W(I-A) - (I-A^W)\big)(I-A)^{-2}`, for a scalar (array of scalars, elementwise)
    or a square matrix ``A`` without eigenvalue 1 (``A`` and :math:`(I-A)^{-1}` commute)."""
    W = check_int("W", W, 1)
    a = np.asarray(A, dtype=float)
    if a.ndim == 2 and a.shape[0] == a.shape[1] and a.shape[0] > 1:
        eye = np.eye(a.shape[0])
        inv = np.linalg.inv(eye - a)
        return a @ (W * (eye - a) - (eye - np.linalg.matrix_power(a, W))) @ inv @ inv
    return a * (W * (1.0 - a) - (1.0 - a**W)) / (1.0 - a) ** 2


# ---------------------------------------------------------------- a full Hessian, plain SGD


@dataclass(frozen=True)
class NoiseFloor:
    r"""Stationary excess losses of SGD and its EMAs on a quadratic (:func:`noise_floor`).

    Attributes
    ----------
    eta : float
        Step size.
    gammas : ndarray (m,)
        EMA weights.
    raw : float
        :math:`\mathbb{E}\,L(\theta) - L(\mu) = \tfrac12\operatorname{tr}(H_s P_{\theta\theta})`.
    ema : ndarray (m,)
        The same for each EMA.
    msd : float
        :math:`\mathbb{E}\|\theta_{t+1}-\theta_t\|^2 = \eta^2(\operatorname{tr}(H_s P H_s) + \operatorname{tr}\Sigma)`.
    var : float
        :math:`\operatorname{tr} P_{\theta\theta}`.
    window_mean : float
        Excess loss of the uniform average of ``window`` consecutive stationary iterates
        (``nan`` when no window was given).
    window : int
        That window's length (0: none).
    """

    eta: float
    gammas: np.ndarray
    raw: float
    ema: np.ndarray
    msd: float
    var: float
    window_mean: float = float("nan")
    window: int = 0

    @property
    def ratio(self) -> np.ndarray:
        """EMA excess over raw excess, shape ``(m,)``."""
        return self.ema / self.raw

    def over_reference(self) -> tuple[float, np.ndarray]:
        """Raw and EMA excesses measured against the window mean (what an experiment that uses the
        window mean as its reference sees): ``(raw - window_mean, ema - window_mean)``."""
        if not self.window:
            raise ValueError("window=0: this NoiseFloor has no window mean; pass window= to noise_floor")
        return self.raw - self.window_mean, self.ema - self.window_mean


def noise_floor(
    Hs: Any, eta: float, gammas: Sequence[float], *, sigma: float = 1.0, Sigma: Any = None, window: int = 0
) -> NoiseFloor:
    r"""Stationary excess loss of SGD's iterate and of constant-:math:`\gamma` EMAs on the quadratic
    :math:`L(\theta) = \tfrac12(\theta-\mu)^\top H_s(\theta-\mu)`, from the stationary covariance
    :math:`P` of the moment engine (:func:`gvatheory.moments.sgd_ema_stationary`): the excess of
    block :math:`k` is :math:`\tfrac12\operatorname{tr}(H_s P_{kk})`.

    For small steps the raw excess is :math:`\approx \eta\operatorname{tr}\Sigma/4` (slope 1 in
    :math:`\eta`), and in one dimension the EMA/raw ratio is

    .. math::

        \frac{\gamma(1 + ab)}{(2-\gamma)(1 - ab)}, \quad a = 1-\eta h,\ b = 1-\gamma,
        \qquad \approx \frac{\gamma}{\gamma + \eta h},

    slope 1 in :math:`\gamma` for :math:`\gamma \ll \eta h`. Two identities hold exactly at
    stationarity in any dimension: :math:`\tfrac12\operatorname{tr}(H_s P) = \mathrm{msd}/(4\eta)`
    (trace of the Lyapunov equation), and in one dimension :math:`\mathrm{msd} = 2\eta h\,\operatorname{Var}\theta`.

    Parameters
    ----------
    Hs : array_like, shape (d,) or (d, d)
        Hessian (a 1-D array is its diagonal); symmetric positive definite.
    eta : float
        Step size, ``0 < eta * lambda_max(Hs) < 2``.
    gammas : sequence of float in (0, 1]
        EMA weights.
    sigma, Sigma
        Noise covariance :math:`\sigma^2 I`, or ``Sigma``; as in :class:`~gvatheory.averaging.QuadraticSGD`.
    window : int
        If ``>= 1``, also the excess of the uniform average of ``window`` consecutive stationary
        iterates, :math:`\operatorname{Cov}\bar\theta_W = W^{-2}\big(W P + \sum_{k=1}^{W-1}(W-k)(F^kP + PF^k)\big)`,
        :math:`F = I - \eta H_s`: the reference of :func:`gvaempirics.noise_floor.measure_noise_floor`.
    """
    gammas = tuple(float(g) for g in np.atleast_1d(np.asarray(gammas, dtype=float)))
    model = QuadraticSGD(Hs=Hs, sigma=sigma, Sigma=Sigma, eta=eta, gammas=gammas)
    window = check_int("window", window, 0)
    law = model.stationary()
    H, Sig, d, m = model._H, model.noise_cov, model.dim, len(gammas)
    blocks = [law.cov[k * d : (k + 1) * d, k * d : (k + 1) * d] for k in range(1 + m)]
    excess = np.array([0.5 * float(np.trace(H @ P)) for P in blocks])
    P = blocks[0]
    msd = eta**2 * (float(np.trace(H @ P @ H)) + float(np.trace(Sig)))
    window_mean = float("nan")
    if window:
        lam, V = np.linalg.eigh(H)
        f = 1.0 - eta * lam
        p_diag = np.einsum("ij,jk,ki->i", V.T, P, V)  # diagonal of V^T P V
        cov_diag = p_diag * (window + 2.0 * window_sum(f, window)) / window**2
        window_mean = 0.5 * float(np.sum(lam * cov_diag))
    return NoiseFloor(
        eta=float(eta),
        gammas=np.asarray(gammas),
        raw=float(excess[0]),
        ema=excess[1:],
        msd=msd,
        var=float(np.trace(P)),
        window_mean=window_mean,
        window=window,
    )


# ---------------------------------------------------------------- a spectrum of curvatures


@dataclass(frozen=True)
class SpectrumFloor:
    r"""Stationary excess losses, mode by mode, of heavy-ball SGD and its EMAs on a quadratic
    given by its spectrum (:func:`spectrum_noise_floor`).

    Attributes
    ----------
    eta : float
        Step size.
    gammas : ndarray (m,)
        EMA weights.
    curvatures, noise : ndarray (k,)
        :math:`\lambda_i` and the noise variance :math:`s_i` of each mode.
    beta, c : float
        Momentum constants (:func:`gvatheory.moments.heavy_ball_ema_matrices`).
    raw_modes : ndarray (k,)
        :math:`\tfrac12\lambda_i\operatorname{Var}z_i` at stationarity.
    ema_modes : ndarray (k, m)
        The same for each EMA.
    window_modes : ndarray (k,)
        The same for the uniform average of ``window`` consecutive iterates (``nan``: no window).
    window : int
        That window's length (0: none).
    """

    eta: float
    gammas: np.ndarray
    curvatures: np.ndarray
    noise: np.ndarray
    beta: float
    c: float
    raw_modes: np.ndarray
    ema_modes: np.ndarray
    window_modes: np.ndarray
    window: int = 0

    @property
    def raw(self) -> float:
        """Raw excess summed over modes."""
        return float(self.raw_modes.sum())

    @property
    def ema(self) -> np.ndarray:
        """EMA excesses summed over modes, shape ``(m,)``."""
        return self.ema_modes.sum(axis=0)

    @property
    def window_mean(self) -> float:
        """The window mean's excess summed over modes (``nan`` without a window)."""
        return float(self.window_modes.sum())

    @property
    def ratio(self) -> np.ndarray:
        """EMA excess over raw excess, shape ``(m,)``."""
        return self.ema / self.raw

    def over_reference(self) -> tuple[float, np.ndarray]:
        """``(raw - window_mean, ema - window_mean)``: the excesses an experiment that measures
        against the window mean sees."""
        if not self.window:
            raise ValueError("window=0: this SpectrumFloor has no window mean; pass window= to spectrum_noise_floor")
        return self.raw - self.window_mean, self.ema - self.window_mean


def spectrum_noise_floor(
    curvatures: Any,
    noise: Any,
    eta: float,
    gammas: Sequence[float],
    *,
    beta: float = 0.0,
    c: float = 1.0,
    window: int = 0,
) -> SpectrumFloor:
    r"""Stationary excess loss of the iterate and of constant-:math:`\gamma` EMAs, summed over the
    modes of a spectrum (module docstring).

    Mode :math:`i` follows the heavy-ball recursion of
    :func:`gvatheory.moments.heavy_ball_ema_matrices` with curvature :math:`\lambda_i` and noise
    variance :math:`s_i`; its stationary covariance :math:`P^{(i)}` solves the Lyapunov equation
    (:func:`gvatheory.moments.stationary_cov`), and the excess of block :math:`k` is
    :math:`\tfrac12\lambda_i P^{(i)}_{kk}`. Plain SGD is ``beta = 0, c = 1``, where every mode is
    :func:`noise_floor` in one dimension. The raw excess is
    :math:`\sum_i \eta s_i/(2(2-\eta c\lambda_i))` for SGD; with momentum the same to first order
    in :math:`\eta\lambda_i`.

    Parameters
    ----------
    curvatures : array_like (k,)
        Curvatures :math:`\lambda_i > 0` (for Adam, eigenvalues of the preconditioned Hessian
        :math:`D^{1/2} H D^{1/2}`).
    noise : array_like (k,)
        Variance :math:`s_i \ge 0` of one step's gradient noise along eigen-direction :math:`i`
        (the minibatch's, in the same coordinates as the curvatures).
    eta : float
        Step size; every mode must be stable (spectral radius of its transition below 1; for
        SGD :math:`\eta\lambda_i < 2`).
    gammas : sequence of float in (0, 1]
        EMA weights.
    beta : float in [0, 1)
        Momentum.
    c : float in (0, 1]
        Weight of the gradient in the momentum buffer: 1 for SGD, ``1 - beta`` for Adam.
    window : int
        If ``>= 1``, also the excess of the uniform average of ``window`` consecutive iterates
        (module docstring).
    """
    lam = check_finite("curvatures", curvatures).reshape(-1)
    s = check_finite("noise", noise).reshape(-1)
    if lam.size == 0:
        raise ValueError("curvatures=[] is out of range: give at least one mode")
    check_range("curvatures", lam, 0.0, np.inf, low_open=True)
    check_range("noise", s, 0.0, np.inf)
    if s.shape != lam.shape:
        raise ValueError(f"noise has {s.size} values for {lam.size} curvatures: give one per mode")
    eta = float(check_range("eta", eta, 0.0, np.inf, low_open=True))
    g = np.atleast_1d(check_range("gammas", np.asarray(gammas, dtype=float), 0.0, 1.0, low_open=True)).reshape(-1)
    if g.size == 0:
        raise ValueError("gammas=() is out of range: give at least one EMA weight")
    beta = float(check_range("beta", beta, 0.0, 1.0, high_open=True))
    c = float(check_range("c", c, 0.0, 1.0, low_open=True))
    window = check_int("window", window, 0)
    m = g.size
    raw, ema, ref = np.empty(lam.size), np.empty((lam.size, m)), np.full(lam.size, np.nan)
    for i, (li, si) in enumerate(zip(lam, s)):
        M, B = heavy_ball_ema_matrices(np.array([[li]]), eta, beta, c, g)
        rho = float(np.max(np.abs(np.linalg.eigvals(M[:2, :2]))))
        if rho >= 1.0:
            raise ValueError(
                f"eta={eta:g} is out of range for curvature {li:.4g} (mode {i}): the recursion is unstable "
                f"(spectral radius {rho:.4g} >= 1; plain SGD needs eta * curvature < 2)"
            )
        P = stationary_cov(M, si * (B @ B.T))
        P = 0.5 * (P + P.T)
        raw[i] = 0.5 * li * P[0, 0]
        ema[i] = 0.5 * li * np.diag(P)[2:]
        if window:
            # Cov(z_{t+j}, z_t) = [A^j P]_zz, A the (z, n) block: the EMAs do not feed back
            S = window_sum(M[:2, :2], window)
            ref[i] = 0.5 * li * (window * P[0, 0] + 2.0 * (S @ P[:2, :2])[0, 0]) / window**2
    return SpectrumFloor(
        eta=eta,
        gammas=g,
        curvatures=lam,
        noise=s,
        beta=beta,
        c=c,
        raw_modes=raw,
        ema_modes=ema,
        window_modes=ref,
        window=window,
    )
