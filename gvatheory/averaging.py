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
(:meth:`QuadraticSGD.moments`, through the engine of :mod:`gvatheory.moments`). For constant
:math:`\eta, \gamma` the stationary covariance solves the discrete Lyapunov equation
:math:`P = M P M^\top + B\Sigma B^\top`, and in one dimension (:math:`a = 1 - \eta h`,
:math:`b = 1 - \gamma`, noise variance :math:`\sigma^2`)

.. math::

    \operatorname{Var}\theta = \frac{\eta\sigma^2}{h(2 - \eta h)}, \quad
    \operatorname{Cov}(\theta, \bar\theta) = \frac{\gamma\operatorname{Var}\theta}{1 - ab}, \quad
    \operatorname{Var}\bar\theta = \frac{\gamma(1 + ab)}{(2-\gamma)(1 - ab)}\operatorname{Var}\theta ,

so :math:`\operatorname{Var}\bar\theta \approx \frac{\gamma}{\gamma + \eta h}\operatorname{Var}\theta`:
the EMA shrinks the iterate's variance by about :math:`\gamma / (\eta h)` when :math:`\gamma \ll \eta h`
(derived symbolically in :mod:`gvatheory.symbolic`; the scalar closed forms and fast paths
:func:`scalar_moments`, :func:`scalar_stationary` and :func:`simulate_scalar` live in
``gvatheory._averaging_scalar`` and are re-exported here). Noise kinds for Monte Carlo, all with
covariance exactly :math:`\Sigma`, so that the exact moments hold for each:
``gaussian``, ``rademacher`` and ``student-t`` (:math:`\xi = \Sigma^{1/2} u`, :math:`u` i.i.d.
unit-variance coordinates), and ``minibatch`` (see :class:`QuadraticSGD`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import _rng
from ._averaging_kernels import NOISE_CODES, sgd_kernel
from ._averaging_scalar import ScalarMoments, scalar_moments, scalar_stationary, simulate_scalar
from ._checks import check_choice, check_finite, check_int, check_memory, check_range, check_scale, nan_to_inf
from .moments import JointGaussian, sgd_ema_path, sgd_ema_stationary
from .schedules import ConstantEMA, ConstantLR, Schedule, as_schedule
from .stats import Estimate, SeedLike, chain_keys, estimate, seed_sequence, variance_estimate

__all__ = [
    "NOISE_KINDS",
    "JointGaussian",
    "SGDSamples",
    "QuadraticSGD",
    "AveragingComparison",
    "compare",
    "variance_estimate",
    "ScalarMoments",
    "scalar_moments",
    "scalar_stationary",
    "simulate_scalar",
]

NOISE_KINDS = ("gaussian", "rademacher", "student-t", "minibatch")


# ---------------------------------------------------------------- result objects


@dataclass(frozen=True)
class SGDSamples:
    """Monte Carlo output of :meth:`QuadraticSGD.simulate`.

    Attributes
    ----------
    final : ndarray, shape (chains, 1+m, d)
        :math:`(\\theta_T, \\bar\\theta^{(1)}_T, \\dots)` per chain.
    times : ndarray or None
        Steps at which ``path`` was recorded.
    path : ndarray or None, shape (chains, len(times), 1+m, d)
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
        with np.errstate(over="ignore"):
            start_finite = np.all(np.isfinite(self._theta0 - self._mu))
        if not start_finite:
            raise ValueError(f"theta0={self.theta0!r} is out of range: theta0 - mu={self.mu!r} overflows float64")
        if self.Sigma is None:
            sigma = float(check_scale("sigma", self.sigma))
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
                raise ValueError(
                    f"Sigma must be positive semidefinite: smallest eigenvalue {w[0]:.4g} is out of range [0, inf)"
                )
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
            raise ValueError(
                f"{what}={eta_max:g} is out of range: SGD diverges unless eta * lambda_max(Hs) < 2, "
                f"i.e. eta in (0, {2.0 / self._lam_max:g})"
            )
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
        gammas = np.array([np.atleast_1d(g(np.arange(T + 1))) for g in self._gammas]).reshape(self.n_averages, T + 1)
        check_range("gamma_t", gammas, 0.0, 1.0, low_open=True)
        divergent = self._check_divergence(float(etas.max()), "eta_t") if T > 0 else False
        return etas, gammas, divergent

    def _check_steps_memory(self, name: str, T: int) -> None:
        """The per-step arrays (schedules, record slots) of a run of ``T`` steps must fit."""
        check_memory(name, T, 8 * (4 + 2 * self.n_averages))

    def _chain_bytes(self, n_times: int) -> int:
        """Bytes per Monte Carlo chain: its key, final state and path, and their overflow-checked copies."""
        return 8 + 16 * (1 + self.n_averages) * self.dim * (1 + n_times)

    def moment_path(self, times: Sequence[int]) -> list[JointGaussian]:
        r"""Exact laws at each step in ``times`` (non-negative integers), in one pass of the recursion."""
        times_arr = np.asarray(times)
        if times_arr.ndim != 1 or times_arr.size == 0:
            raise ValueError(f"times={times!r} must be a non-empty 1-D sequence of steps")
        for t in times_arr:
            check_int("times", t, 0)
        times_arr = times_arr.astype(int)
        T = int(times_arr.max())
        self._check_steps_memory("times", T)
        etas, gammas, divergent = self._schedule_arrays(T)
        z0 = np.tile(self._theta0 - self._mu, 1 + self.n_averages)
        path = sgd_ema_path(self._H, self._Sigma, etas, gammas[:, 1:], z0, times_arr)
        laws = {t: self._law(mean, cov, t, divergent) for t, (mean, cov) in path.items()}
        return [laws[int(t)] for t in times_arr]

    def _law(self, centred_mean: np.ndarray, P: np.ndarray, t: int | None, divergent: bool) -> JointGaussian:
        mean = centred_mean.reshape(1 + self.n_averages, self.dim) + self._mu
        if divergent:  # overflow is reported as inf, never NaN
            mean = np.where(np.isnan(mean), np.inf, mean)
            P = np.where(np.isnan(P), np.inf, P)
        return JointGaussian(mean=mean, cov=P, t=t, divergent=divergent)

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
        P = sgd_ema_stationary(self._H, self._Sigma, eta, np.array([g.gamma for g in self._gammas]))
        return JointGaussian(mean=mean, cov=0.5 * (P + P.T), t=None, divergent=False)

    # ------------------------------------------------------------ Monte Carlo

    def simulate(
        self, chains: int, T: int, seed: SeedLike, times: Sequence[int] | None = None, quiet: bool = False
    ) -> SGDSamples:
        r"""Simulate ``chains`` independent chains for ``T`` steps (numba, parallel over chains).

        Chain ``i`` draws its noise from its own generator keyed by
        ``chain_keys(seed, chains)[i]``, so samples do not depend on the thread count.
        ``times`` (steps in ``[0, T]``) also records the trajectory there.
        """
        chains = check_int("chains", chains, 2)
        T = check_int("T", T, 1)
        self._check_steps_memory("T", T)
        n_times = 0 if times is None else np.asarray(times).size
        check_memory("chains", chains, self._chain_bytes(n_times))
        etas, gammas, divergent = self._schedule_arrays(T)
        record = np.full(T + 1, -1, dtype=np.int64)
        if times is not None:
            times_arr = np.unique(np.asarray([check_int("times", t, 0, T) for t in np.asarray(times).ravel()]))
            record[times_arr] = np.arange(times_arr.size)
        else:
            times_arr = np.zeros(0, dtype=int)
        m, d = self.n_averages, self.dim
        final = np.empty((chains, 1 + m, d))
        path = np.empty((chains, times_arr.size, 1 + m, d))
        keys = chain_keys(seed, chains)
        noise = NOISE_CODES[self.noise]
        # Blocks of chains only drive the progress bar; each chain's numbers depend on its key alone.
        blocks = np.array_split(np.arange(chains), min(chains, 16))
        with np.errstate(over="ignore", invalid="ignore"):
            for idx in tqdm(blocks, desc="SGD chains", unit="block", disable=quiet):
                sl = slice(idx[0], idx[-1] + 1)
                sgd_kernel(
                    keys[sl],
                    self._H,
                    self._mu,
                    self._theta0,
                    self._Sigma_half,
                    self._atoms,
                    int(self.batch_size),
                    noise,
                    float(self.df),
                    etas,
                    gammas,
                    record,
                    _rng.ZIG_X,
                    _rng.ZIG_F,
                    final[sl],
                    path[sl],
                )
        divergent = divergent or not bool(np.all(np.isfinite(final)))
        if divergent:  # an overflowed chain (inf - inf) is reported as inf, never NaN
            final, path = nan_to_inf(final), nan_to_inf(path)
        return SGDSamples(
            final=final,
            times=times_arr if times is not None else None,
            path=path if times is not None else None,
            divergent=divergent,
        )


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
                    rows.append(
                        {
                            "quantity": f"{q} {label}" + (f"[{i}]" if self.model.dim > 1 else ""),
                            "exact": float(exact[q][c, i]),
                            "MC": float(est[q].mean[c, i]),
                            "SE": float(est[q].se[c, i]),
                            "z": float(z[q][c, i]),
                            "stationary": float(stat[q][c, i]) if stat else float("nan"),
                        }
                    )
        return rows

    def max_abs_z(self) -> float:
        """Largest :math:`|z|` over the rows (means and variances at ``T``)."""
        return max(abs(r["z"]) for r in self.rows())


def compare(
    model: QuadraticSGD, steps: int, chains: int, seed: SeedLike, *, n_times: int = 25, quiet: bool = False
) -> AveragingComparison:
    r"""Run the exact recursion and the Monte Carlo of ``model`` to step ``T = steps``, recording up
    to ``n_times`` geometrically spaced steps (always 0, 1 and ``T``)."""
    T = check_int("steps", steps, 1)
    chains = check_int("chains", chains, 2)
    n_times = check_int("n_times", n_times, 2)
    # each size is checked with the others as given, the smallest first (2 chains for n_times)
    check_memory("n_times", n_times, 32 + 2 * (model._chain_bytes(1) - model._chain_bytes(0)))
    model._check_steps_memory("steps", T)
    check_memory("chains", chains, model._chain_bytes(n_times))
    times = np.unique(np.concatenate([[0], np.geomspace(1, T, n_times - 1).round().astype(int)]))
    exact = tuple(model.moment_path(times))
    samples = model.simulate(chains, T, seed, times=times, quiet=quiet)
    try:
        stationary = model.stationary()
    except ValueError:  # time-varying schedules have no stationary law
        stationary = None
    return AveragingComparison(model=model, times=times, exact=exact, samples=samples, stationary=stationary)
