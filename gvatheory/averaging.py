r"""SGD with iterate averaging on a quadratic: exact Gaussian moments and Monte Carlo.

The model behind the paper's EMA results (Block et al. 2024, Sec. 4 and Prop. 4.1): SGD on a
quadratic with additive gradient noise, :math:`\theta \in \mathbb{R}^d`,

.. math::

    \theta_{t+1} = \theta_t - \eta_t\big(H_s(\theta_t - \mu) + \xi_t\big), \qquad
    \mathbb{E}\,\xi_t = 0, \quad \operatorname{Cov}\xi_t = \Sigma,

with :math:`m` averages of the iterates tracked alongside, each an EMA with its own schedule,

.. math::

    \bar\theta^{(k)}_t = (1 - \gamma^{(k)}_t)\,\bar\theta^{(k)}_{t-1} + \gamma^{(k)}_t\,\theta_t,
    \qquad \bar\theta^{(k)}_0 = \theta_0 .

The joint state :math:`z_t = (\theta_t, \bar\theta^{(1)}_t, \dots, \bar\theta^{(m)}_t) - \mu`
follows the time-varying linear recursion :math:`z_{t+1} = M_t z_t + B_t \xi_t` with

.. math::

    M_t = \begin{pmatrix} A_t & 0 \\ \gamma^{(k)}_{t+1} A_t & (1-\gamma^{(k)}_{t+1}) I \end{pmatrix},
    \quad B_t = -\eta_t \begin{pmatrix} I \\ \gamma^{(k)}_{t+1} I \end{pmatrix}, \quad A_t = I - \eta_t H_s,

so its mean and covariance are exact for any schedules:
:math:`m_{t+1} = M_t m_t`, :math:`P_{t+1} = M_t P_t M_t^\top + B_t \Sigma B_t^\top`
(:meth:`QuadraticSGD.moments`). For constant :math:`\eta, \gamma` the stationary covariance
solves the discrete Lyapunov equation :math:`P = M P M^\top + B\Sigma B^\top`, and in one
dimension (:math:`a = 1 - \eta h`, :math:`b = 1 - \gamma`, noise variance :math:`\sigma^2`)

.. math::

    \operatorname{Var}\theta = \frac{\eta\sigma^2}{h(2 - \eta h)}, \quad
    \operatorname{Cov}(\theta, \bar\theta) = \frac{\gamma\operatorname{Var}\theta}{1 - ab}, \quad
    \operatorname{Var}\bar\theta = \frac{\gamma(1 + ab)}{(2-\gamma)(1 - ab)}\operatorname{Var}\theta ,

so :math:`\operatorname{Var}\bar\theta \approx \frac{\gamma}{\gamma + \eta h}\operatorname{Var}\theta`:
the EMA shrinks the iterate's variance by about :math:`\gamma / (\eta h)` when :math:`\gamma \ll \eta h`
(derived symbolically in :mod:`gvatheory.symbolic`). Noise kinds for Monte Carlo, all with
covariance exactly :math:`\Sigma`, so that the exact moments hold for each:
``gaussian``, ``rademacher`` and ``student-t`` (:math:`\xi = \Sigma^{1/2} u`, :math:`u` i.i.d.
unit-variance coordinates), and ``minibatch`` (see :class:`QuadraticSGD`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numba
import numpy as np
import scipy.linalg
from tqdm.auto import tqdm

from . import _rng
from ._checks import check_choice, check_finite, check_int, check_range
from .schedules import ConstantEMA, ConstantLR, Schedule, as_schedule
from .stats import Estimate, SeedLike, chain_keys, estimate, seed_sequence

NOISE_KINDS = ("gaussian", "rademacher", "student-t", "minibatch")


# ---------------------------------------------------------------- result objects


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
        return self.mean[k], self.cov[k * d:(k + 1) * d, k * d:(k + 1) * d]

    @property
    def var(self) -> np.ndarray:
        """Coordinate variances, shape ``(1+m, d)``."""
        return np.diag(self.cov).reshape(self.mean.shape)


@dataclass(frozen=True)
class ScalarMoments:
    r"""Moments of the scalar iterate and its EMA; every field broadcasts over the parameter grid."""

    mean_theta: np.ndarray
    mean_ema: np.ndarray
    var_theta: np.ndarray
    var_ema: np.ndarray
    cov: np.ndarray


def variance_estimate(samples: np.ndarray, axis: int = 0) -> Estimate:
    r"""Sample variance along ``axis`` with its standard error.

    The estimate is the mean of :math:`(x_i - \bar x)^2 n/(n-1)` and its SE the standard error of
    that mean; the error from estimating :math:`\bar x` is :math:`O(1/n)`, below the SE.
    """
    x = np.asarray(samples, dtype=float)
    n = x.shape[axis]
    dev2 = (x - x.mean(axis=axis, keepdims=True)) ** 2 * (n / max(n - 1, 1))
    return estimate(dev2, axis=axis)


@dataclass(frozen=True)
class SGDSamples:
    """Monte Carlo output of :meth:`QuadraticSGD.simulate`.

    Attributes
    ----------
    final : ndarray, shape (n_chains, 1+m, d)
        :math:`(\\theta_T, \\bar\\theta^{(1)}_T, \\dots)` per chain.
    times : ndarray or None
        Steps at which ``path`` was recorded.
    path : ndarray or None, shape (n_chains, len(times), 1+m, d)
    divergent : bool
        Some chain overflowed (non-finite values).
    """

    final: np.ndarray
    times: np.ndarray | None = None
    path: np.ndarray | None = None
    divergent: bool = False

    def mean(self) -> Estimate:
        """Mean over chains of ``final``, shape ``(1+m, d)``, with SE."""
        return estimate(self.final, axis=0)

    def var(self) -> Estimate:
        """Coordinate variances over chains of ``final``, shape ``(1+m, d)``, with SE."""
        return variance_estimate(self.final, axis=0)


# ---------------------------------------------------------------- the model


def _is_constant(schedule: Schedule) -> bool:
    return isinstance(schedule, (ConstantLR, ConstantEMA))


def _sqrtm_psd(S: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(S)
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T


@dataclass(frozen=True, eq=False)
class QuadraticSGD:
    r"""SGD on :math:`\tfrac12(\theta-\mu)^\top H_s(\theta-\mu)` with additive noise and EMAs of the iterates.

    Parameters
    ----------
    Hs : array_like, shape (d,) or (d, d)
        Hessian, symmetric positive definite; a 1-D array is its diagonal.
    mu : array_like, shape () or (d,)
        Minimizer.
    sigma : float
        Noise scale: the noise covariance is :math:`\sigma^2 I` unless ``Sigma`` is given.
    Sigma : array_like or None, shape (d, d)
        Noise covariance (symmetric positive semidefinite). Give ``sigma`` or ``Sigma``, not both.
    eta : float or schedule
        Step size :math:`\eta_t` (``eta(t)`` makes :math:`\theta_{t+1}` from :math:`\theta_t`).
    gammas : tuple of floats or gamma schedules
        One EMA per entry; a float ``g`` is ``ConstantEMA(g)``. Empty for no averages.
    theta0 : array_like, shape () or (d,)
        Deterministic start :math:`\theta_0`.
    noise : {"gaussian", "rademacher", "student-t", "minibatch"}
        Law of the Monte Carlo noise; all have covariance :math:`\Sigma`, so the exact moments
        are the same for every kind.
    df : float
        Degrees of freedom of ``student-t`` noise (> 2; scaled to unit variance).
    batch_size, n_data, data_seed : int
        ``minibatch`` noise: a fixed dataset :math:`x_1, \dots, x_n` (``n = n_data``, drawn once
        from ``data_seed``) with loss :math:`\frac1{2n}\sum_i (\theta - x_i)^\top H_s(\theta - x_i)`,
        whose minimizer is :math:`\mu`; each step takes the gradient on ``batch_size`` points
        sampled uniformly with replacement, so :math:`\xi_t = \frac1b\sum_{j\in B_t} H_s(\mu - x_j)`.
        The dataset is centred at :math:`\mu` and shaped so that
        :math:`\frac1n\sum_i H_s(x_i-\mu)(x_i-\mu)^\top H_s = b\,\Sigma`, making the minibatch
        noise covariance exactly :math:`\Sigma`.
    allow_divergent : bool
        If False, :math:`\eta_t\lambda_{max}(H_s) \ge 2` raises ``ValueError``; if True, results
        carry ``divergent=True`` and overflow to ``inf``.
    """

    Hs: Any
    mu: Any = 0.0
    sigma: float = 1.0
    Sigma: Any = None
    eta: Any = 0.1
    gammas: tuple = (0.01,)
    theta0: Any = 0.0
    noise: str = "gaussian"
    df: float = 5.0
    batch_size: int = 1
    n_data: int = 64
    data_seed: int = 0
    allow_divergent: bool = False

    def __post_init__(self):
        Hs = check_finite("Hs", self.Hs)
        if Hs.ndim == 1:
            Hs = np.diag(Hs)
        if Hs.ndim != 2 or Hs.shape[0] != Hs.shape[1] or Hs.shape[0] < 1:
            raise ValueError(f"Hs has shape {np.shape(self.Hs)}, expected (d,) or (d, d) with d >= 1")
        if not np.allclose(Hs, Hs.T, rtol=1e-12, atol=0.0):
            raise ValueError("Hs must be symmetric (got Hs != Hs.T)")
        lam = np.linalg.eigvalsh(Hs)
        if lam[0] <= 0:
            raise ValueError(f"Hs must be positive definite: smallest eigenvalue {lam[0]:.4g} is out of range (0, inf)")
        d = Hs.shape[0]
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        set_("_H", Hs)
        set_("_lam_max", float(lam[-1]))
        set_("_mu", self._vector("mu", self.mu, d))
        set_("_theta0", self._vector("theta0", self.theta0, d))
        if self.Sigma is None:
            sigma = float(check_range("sigma", self.sigma, 0.0))
            Sigma = sigma**2 * np.eye(d)
        else:
            if self.sigma != 1.0:
                raise ValueError(f"sigma={self.sigma!r} and Sigma were both given: give one (Sigma overrides sigma=1)")
            Sigma = check_finite("Sigma", self.Sigma)
            if Sigma.shape != (d, d):
                raise ValueError(f"Sigma has shape {Sigma.shape}, expected {(d, d)}")
            if not np.allclose(Sigma, Sigma.T, rtol=1e-12, atol=0.0):
                raise ValueError("Sigma must be symmetric (got Sigma != Sigma.T)")
            w = np.linalg.eigvalsh(Sigma)
            if w[0] < -1e-12 * max(abs(w[-1]), 1.0):
                raise ValueError(f"Sigma must be positive semidefinite: smallest eigenvalue {w[0]:.4g} "
                                 "is out of range [0, inf)")
        set_("_Sigma", Sigma)
        set_("_Sigma_half", _sqrtm_psd(Sigma))
        if isinstance(self.eta, (int, float, np.number)):
            check_range("eta", self.eta, 0.0, math.inf, low_open=True)
        set_("_eta", as_schedule(self.eta, kind="eta"))
        if isinstance(self.gammas, (int, float, np.number)) or not isinstance(self.gammas, Sequence):
            raise ValueError(f"gammas={self.gammas!r} must be a tuple of EMA weights in (0, 1] or gamma schedules")
        for k, g in enumerate(self.gammas):
            if isinstance(g, (int, float, np.number)):
                check_range(f"gammas[{k}]", g, 0.0, 1.0, low_open=True)
        set_("_gammas", tuple(as_schedule(g, kind="gamma") for g in self.gammas))
        check_choice("noise", self.noise, NOISE_KINDS)
        check_range("df", self.df, 2.0, math.inf, low_open=True)
        check_int("batch_size", self.batch_size, 1)
        check_int("n_data", self.n_data, d + 1)
        if isinstance(self._eta, ConstantLR):
            self._check_divergence(float(self._eta.eta), "eta")
        set_("_atoms", self._minibatch_atoms() if self.noise == "minibatch" else np.zeros((1, d)))

    @staticmethod
    def _vector(name: str, value: Any, d: int) -> np.ndarray:
        arr = check_finite(name, value)
        if arr.ndim == 0:
            return np.full(d, float(arr))
        if arr.shape != (d,):
            raise ValueError(f"{name} has shape {arr.shape}, expected () or {(d,)}")
        return arr.copy()

    def _check_divergence(self, eta_max: float, what: str) -> bool:
        divergent = eta_max * self._lam_max >= 2.0
        if divergent and not self.allow_divergent:
            raise ValueError(f"{what}={eta_max:g} is out of range: SGD diverges unless eta * lambda_max(Hs) < 2, "
                             f"i.e. eta in (0, {2.0 / self._lam_max:g}) (pass allow_divergent=True to study it)")
        return bool(divergent)

    def _minibatch_atoms(self) -> np.ndarray:
        """Per-sample noise :math:`g_i = H_s(\\mu - x_i)`: mean 0, empirical covariance ``batch_size * Sigma``."""
        d = self.dim
        z = np.random.default_rng(seed_sequence(self.data_seed)).standard_normal((self.n_data, d))
        z -= z.mean(axis=0)
        chol = np.linalg.cholesky(z.T @ z / self.n_data)
        z = np.linalg.solve(chol, z.T).T  # exactly whitened: (1/n) sum z_i z_i^T = I
        return math.sqrt(self.batch_size) * z @ self._Sigma_half

    @property
    def dim(self) -> int:
        """Dimension ``d``."""
        return self._H.shape[0]

    @property
    def n_averages(self) -> int:
        """Number ``m`` of averages."""
        return len(self._gammas)

    @property
    def noise_cov(self) -> np.ndarray:
        """:math:`\\Sigma`, shape ``(d, d)``."""
        return self._Sigma.copy()

    @property
    def data(self) -> np.ndarray:
        """The ``minibatch`` dataset :math:`x_i = \\mu - H_s^{-1} g_i`, shape ``(n_data, d)``."""
        if self.noise != "minibatch":
            raise ValueError(f"noise={self.noise!r} has no dataset: only noise='minibatch' does")
        return self._mu - np.linalg.solve(self._H, self._atoms.T).T

    # ------------------------------------------------------------ exact moments

    def _schedule_arrays(self, T: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """``eta_t`` for t < T, ``gamma_t^(k)`` for t <= T (shape (m, T+1)), and the divergence flag."""
        etas = np.atleast_1d(np.asarray(self._eta(np.arange(T)), dtype=float))
        check_range("eta_t", etas, 0.0, math.inf, low_open=True)
        gam = np.array([np.atleast_1d(g(np.arange(T + 1))) for g in self._gammas]).reshape(self.n_averages, T + 1)
        check_range("gamma_t", gam, 0.0, 1.0, low_open=True)
        divergent = self._check_divergence(float(etas.max()), "eta_t") if T > 0 else False
        return etas, gam, divergent

    def _step_matrices(self, eta: float, gam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``M`` and ``B`` of :math:`z_{t+1} = M z_t + B\\xi_t` for step size ``eta`` and weights ``gam`` (m,)."""
        d, m = self.dim, self.n_averages
        eye = np.eye(d)
        A = eye - eta * self._H
        M = np.zeros(((1 + m) * d, (1 + m) * d))
        B = np.zeros(((1 + m) * d, d))
        M[:d, :d] = A
        B[:d] = -eta * eye
        for k in range(m):
            rows = slice((1 + k) * d, (2 + k) * d)
            M[rows, :d] = gam[k] * A
            M[rows, rows] = (1.0 - gam[k]) * eye
            B[rows] = -gam[k] * eta * eye
        return M, B

    def moment_path(self, times: Sequence[int]) -> list[JointGaussian]:
        r"""Exact laws at each step in ``times`` (non-negative integers), in one pass of the recursion."""
        times_arr = np.asarray(times)
        if times_arr.ndim != 1 or times_arr.size == 0:
            raise ValueError(f"times={times!r} must be a non-empty 1-D sequence of steps")
        for t in times_arr:
            check_int("times", t, 0)
        times_arr = times_arr.astype(int)
        T = int(times_arr.max())
        etas, gam, divergent = self._schedule_arrays(T)
        d, m = self.dim, self.n_averages
        mean = np.tile(self._theta0 - self._mu, 1 + m)
        P = np.zeros(((1 + m) * d, (1 + m) * d))
        laws: dict[int, JointGaussian] = {}
        wanted = set(times_arr.tolist())
        params = None
        with np.errstate(over="ignore", invalid="ignore"):
            for t in range(T + 1):
                if t in wanted:
                    laws[t] = self._law(mean, P, t, divergent)
                if t == T:
                    break
                if params is None or etas[t] != params[0] or np.any(gam[:, t + 1] != params[1]):
                    params = (etas[t], gam[:, t + 1])  # rebuild only when a schedule moves
                    M, B = self._step_matrices(*params)
                    Q = B @ self._Sigma @ B.T
                mean = M @ mean
                P = M @ P @ M.T + Q
        return [laws[int(t)] for t in times_arr]

    def _law(self, centred_mean: np.ndarray, P: np.ndarray, t: int | None, divergent: bool) -> JointGaussian:
        mean = centred_mean.reshape(1 + self.n_averages, self.dim) + self._mu
        if divergent:  # overflow is reported as inf, never NaN
            mean = np.where(np.isnan(mean), np.inf, mean)
            P = np.where(np.isnan(P), np.inf, P)
        return JointGaussian(mean=mean, cov=P.copy(), t=t, divergent=divergent)

    def moments(self, T: int) -> JointGaussian:
        r"""Exact law of :math:`(\theta_T, \bar\theta^{(1)}_T, \dots, \bar\theta^{(m)}_T)`, ``T >= 0``."""
        return self.moment_path([check_int("T", T, 0)])[0]

    def stationary(self) -> JointGaussian:
        r"""Stationary law for constant :math:`\eta` and constant :math:`\gamma^{(k)}`.

        Mean :math:`\mu` in every block; covariance from
        ``scipy.linalg.solve_discrete_lyapunov`` (:math:`P = MPM^\top + B\Sigma B^\top`).
        Divergent step sizes give an all-``inf`` covariance and ``divergent=True``.
        """
        varying = [repr(s) for s in (self._eta, *self._gammas) if not _is_constant(s)]
        if varying:
            raise ValueError(f"stationary() needs constant eta and gammas; these vary with t: {', '.join(varying)}")
        eta = float(self._eta.eta)
        divergent = self._check_divergence(eta, "eta")
        n = (1 + self.n_averages) * self.dim
        mean = np.tile(self._mu, (1 + self.n_averages, 1))
        if divergent:
            return JointGaussian(mean=mean, cov=np.full((n, n), np.inf), t=None, divergent=True)
        M, B = self._step_matrices(eta, np.array([g.gamma for g in self._gammas]))
        P = scipy.linalg.solve_discrete_lyapunov(M, B @ self._Sigma @ B.T)
        return JointGaussian(mean=mean, cov=0.5 * (P + P.T), t=None, divergent=False)

    # ------------------------------------------------------------ Monte Carlo

    def simulate(self, n_chains: int, T: int, seed: SeedLike, times: Sequence[int] | None = None,
                 quiet: bool = False) -> SGDSamples:
        r"""Simulate ``n_chains`` independent chains for ``T`` steps (numba, parallel over chains).

        Chain ``i`` draws its noise from its own generator keyed by
        ``chain_keys(seed, n_chains)[i]``, so samples do not depend on the thread count.
        ``times`` (steps in ``[0, T]``) also records the trajectory there.
        """
        n_chains = check_int("n_chains", n_chains, 2)
        T = check_int("T", T, 1)
        etas, gam, divergent = self._schedule_arrays(T)
        record = np.full(T + 1, -1, dtype=np.int64)
        if times is not None:
            times_arr = np.unique(np.asarray([check_int("times", t, 0, T) for t in np.asarray(times).ravel()]))
            record[times_arr] = np.arange(times_arr.size)
        else:
            times_arr = np.zeros(0, dtype=int)
        m, d = self.n_averages, self.dim
        final = np.empty((n_chains, 1 + m, d))
        path = np.empty((n_chains, times_arr.size, 1 + m, d))
        keys = chain_keys(seed, n_chains)
        kind = NOISE_KINDS.index(self.noise)
        # Blocks of chains only drive the progress bar; each chain's numbers depend on its key alone.
        blocks = np.array_split(np.arange(n_chains), min(n_chains, 16))
        with np.errstate(over="ignore", invalid="ignore"):
            for idx in tqdm(blocks, desc="SGD chains", unit="block", disable=quiet):
                sl = slice(idx[0], idx[-1] + 1)
                _sgd_kernel(keys[sl], self._H, self._mu, self._theta0, self._Sigma_half, self._atoms,
                            int(self.batch_size), kind, float(self.df), etas, gam, record,
                            _rng.ZIG_X, _rng.ZIG_F, final[sl], path[sl])
        divergent = divergent or not bool(np.all(np.isfinite(final)))
        if divergent:  # an overflowed chain (inf - inf) is reported as inf, never NaN
            final, path = _nan_to_inf(final), _nan_to_inf(path)
        return SGDSamples(final=final, times=times_arr if times is not None else None,
                          path=path if times is not None else None, divergent=divergent)


@numba.njit(parallel=True, cache=True)
def _sgd_kernel(keys, H, mu, theta0, L, atoms, batch, kind, df, etas, gam, record, zx, zf, out_final, out_path):
    """Chains of :math:`\\theta_{t+1} = \\theta_t - \\eta_t(H(\\theta_t-\\mu) + \\xi_t)` with EMAs; writes ``out_*``."""
    T = etas.shape[0]
    m = gam.shape[0]
    d = H.shape[0]
    n_atoms = atoms.shape[0]
    for c in numba.prange(keys.shape[0]):
        s0, s1, s2, s3 = _rng.seed_state(keys[c])
        theta = theta0.copy()
        ema = np.empty((m, d))
        for k in range(m):
            ema[k] = theta0
        u = np.empty(d)
        xi = np.empty(d)
        grad = np.empty(d)
        for t in range(T + 1):
            slot = record[t]
            if slot >= 0:
                out_path[c, slot, 0] = theta
                for k in range(m):
                    out_path[c, slot, 1 + k] = ema[k]
            if t == T:
                break
            if kind == 3:
                xi[:] = 0.0
                for j in range(batch):
                    i, s0, s1, s2, s3 = _rng.next_index(n_atoms, s0, s1, s2, s3)
                    for a in range(d):
                        xi[a] += atoms[i, a]
                for a in range(d):
                    xi[a] /= batch
            else:
                for a in range(d):
                    u[a], s0, s1, s2, s3 = _rng.next_unit_noise(kind, df, s0, s1, s2, s3, zx, zf)
                for a in range(d):
                    acc = 0.0
                    for b in range(d):
                        acc += L[a, b] * u[b]
                    xi[a] = acc
            for a in range(d):
                acc = 0.0
                for b in range(d):
                    acc += H[a, b] * (theta[b] - mu[b])
                grad[a] = acc + xi[a]
            eta = etas[t]
            for a in range(d):
                theta[a] = theta[a] - eta * grad[a]
            for k in range(m):
                g = gam[k, t + 1]
                for a in range(d):
                    ema[k, a] = (1.0 - g) * ema[k, a] + g * theta[a]
        out_final[c, 0] = theta
        for k in range(m):
            out_final[c, 1 + k] = ema[k]


# ---------------------------------------------------------------- scalar fast paths (parameter grids)


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
        _, v_x, c, v_e = _lower_power_apply(step[np.ix_(var_idx, var_idx)], np.stack([one, zero, zero, zero]),
                                            T_arr)
    state = np.stack([m_x, m_e, v_x, c, v_e], axis=-1)
    state = np.where(np.isnan(state), np.inf, state)
    out = {"mean_theta": state[..., 0] + mu, "mean_ema": state[..., 1] + mu,
           "var_theta": state[..., 2], "cov": state[..., 3], "var_ema": state[..., 4]}
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


@numba.njit(parallel=True, cache=True)
def _scalar_kernel(keys, T, eta, gamma, sigma, theta0, mu, h, zx, zf, out_theta, out_ema):
    for c in numba.prange(keys.shape[0]):
        s0, s1, s2, s3 = _rng.seed_state(keys[c])
        theta = theta0
        ema = theta0
        for _ in range(T):
            z, s0, s1, s2, s3 = _rng.next_normal(s0, s1, s2, s3, zx, zf)
            theta = theta - eta * (h * (theta - mu) + sigma * z)
            ema = (1.0 - gamma) * ema + gamma * theta
        out_theta[c] = theta
        out_ema[c] = ema


def simulate_scalar(n_chains: int, T: int, eta: float, gamma: float, sigma: float, theta0: float, mu: float,
                    seed: SeedLike, *, h: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    r"""Monte Carlo of 1-D SGD with Gaussian noise and one constant-gamma EMA: ``(theta_T, ema_T)``.

    The fast kernel for the cliff problem (:math:`h = 1`, :math:`\ell_{bc} = |\theta-\mu|^2/2`):
    :math:`\theta_{t+1} = \theta_t - \eta(h(\theta_t - \mu) + \sigma\xi_t)`,
    :math:`\bar\theta_t = (1-\gamma)\bar\theta_{t-1} + \gamma\theta_t`, :math:`\bar\theta_0 = \theta_0`.
    Same law as :meth:`QuadraticSGD.simulate` with ``d = 1``, and the same per-chain streams, so the
    two agree sample for sample. Returns two arrays of shape ``(n_chains,)``; ``T = 0`` returns
    ``theta0``. Unstable step sizes are simulated as given (chains may overflow to ``inf``).
    """
    n_chains = check_int("n_chains", n_chains, 1)
    T = check_int("T", T, 0)
    h, sigma, eta, gamma = (float(v) for v in _check_scalar(h, sigma, eta, gamma))
    theta0, mu = float(check_finite("theta0", theta0)), float(check_finite("mu", mu))
    out_theta, out_ema = np.empty(n_chains), np.empty(n_chains)
    with np.errstate(over="ignore", invalid="ignore"):
        _scalar_kernel(chain_keys(seed, n_chains), T, eta, gamma, sigma, theta0, mu, h, _rng.ZIG_X, _rng.ZIG_F,
                       out_theta, out_ema)
    return _nan_to_inf(out_theta), _nan_to_inf(out_ema)


def _nan_to_inf(x: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), np.inf, x)


# ---------------------------------------------------------------- exact vs Monte Carlo, side by side


@dataclass(frozen=True)
class AveragingComparison:
    r"""Exact laws and Monte Carlo samples of the same :class:`QuadraticSGD`, at the steps ``times``.

    ``exact[j]`` is the law at ``times[j]``; ``samples.path[:, j]`` are the chains there; the last
    time is ``T``. ``stationary`` is the stationary law (``None`` for time-varying schedules).
    """

    model: QuadraticSGD
    times: np.ndarray
    exact: tuple[JointGaussian, ...]
    samples: SGDSamples
    stationary: JointGaussian | None

    @property
    def labels(self) -> list[str]:
        """``theta`` and one label per average (``ema[gamma=...]`` or the schedule's repr)."""
        names = []
        for g in self.model._gammas:
            names.append(f"ema[gamma={g.gamma:g}]" if isinstance(g, ConstantEMA) and g.burn_in == 0 else f"ema[{g!r}]")
        return ["theta", *names]

    def rows(self) -> list[dict[str, Any]]:
        """Mean and variance of every component and coordinate at ``T``: exact, MC, SE, z, stationary."""
        final = self.samples.path[:, -1]
        law = self.exact[-1]
        est = {"mean": estimate(final, axis=0), "var": variance_estimate(final, axis=0)}
        exact = {"mean": law.mean, "var": law.var}
        stat = None if self.stationary is None else {"mean": self.stationary.mean, "var": self.stationary.var}
        z = {k: np.asarray(est[k].z(exact[k])) for k in est}
        rows = []
        for c, label in enumerate(self.labels):
            for i in range(self.model.dim):
                for q in ("mean", "var"):
                    rows.append({"quantity": f"{q} {label}" + (f"[{i}]" if self.model.dim > 1 else ""),
                                 "exact": float(exact[q][c, i]), "MC": float(est[q].mean[c, i]),
                                 "SE": float(est[q].se[c, i]), "z": float(z[q][c, i]),
                                 "stationary": float(stat[q][c, i]) if stat else float("nan")})
        return rows

    def max_abs_z(self) -> float:
        """Largest :math:`|z|` over the rows (means and variances at ``T``)."""
        return max(abs(r["z"]) for r in self.rows())

    def plot(self):
        """Variance along t (mean over coordinates) of the iterate and each average: exact lines,
        Monte Carlo points with 2-SE bars, stationary levels dashed."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        var_exact = np.array([law.var.mean(axis=1) for law in self.exact])  # (n_times, 1+m)
        est = variance_estimate(self.samples.path, axis=0)
        d = self.model.dim
        mc = est.mean.mean(axis=2)
        se = np.sqrt((est.se**2).sum(axis=2)) / d
        t = self.times
        for c, label in enumerate(self.labels):
            (line,) = ax.plot(t[1:], var_exact[1:, c], label=f"{label} exact")
            ax.errorbar(t[1:], mc[1:, c], yerr=2 * se[1:, c], fmt="o", ms=3, color=line.get_color(),
                        label=f"{label} Monte Carlo ± 2 SE")
            if self.stationary is not None:
                ax.axhline(self.stationary.var[c].mean(), color=line.get_color(), ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step t")
        ax.set_ylabel("variance per coordinate")
        ax.set_title(f"SGD + averaging: {self.samples.final.shape[0]} chains, {self.model.noise} noise")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


def compare(model: QuadraticSGD, T: int, n_chains: int, seed: SeedLike, *, n_times: int = 25,
            quiet: bool = False) -> AveragingComparison:
    r"""Run the exact recursion and the Monte Carlo of ``model`` to step ``T``, recording up to
    ``n_times`` geometrically spaced steps (always 0, 1 and ``T``)."""
    T = check_int("T", T, 1)
    n_times = check_int("n_times", n_times, 2)
    times = np.unique(np.concatenate([[0], np.geomspace(1, T, n_times - 1).round().astype(int)]))
    exact = tuple(model.moment_path(times))
    samples = model.simulate(n_chains, T, seed, times=times, quiet=quiet)
    try:
        stationary = model.stationary()
    except ValueError:  # time-varying schedules have no stationary law
        stationary = None
    return AveragingComparison(model=model, times=times, exact=exact, samples=samples, stationary=stationary)
