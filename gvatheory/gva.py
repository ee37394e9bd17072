r"""Gradient variance amplification (GVA) in a linear closed loop, exactly and by Monte Carlo.

Serves Block et al. (ICLR 2024, arXiv 2310.11428), Sec. 3: behavior cloning of a linear expert
by minibatch SGD. The one-step imitation loss is a quadratic in the gain :math:`K` whose
fluctuation under SGD noise stays small, while the rollout cost :math:`J_H(K)` depends on
:math:`K` through matrix powers :math:`(A + BK)^h` and amplifies the same fluctuation
exponentially in :math:`H` when the closed loop is (nearly) marginally stable. An EMA of the
iterates removes most of it.

Plant and expert (time ``t`` of a demonstration, ``t = 0..T-1``):

.. math::
    x_{t+1} = A x_t + B u_t, \qquad u_t = K^\star_t x_t, \qquad
    K^\star_t = K^\star + \mathrm{misspec}\,(-1)^t K_{dir}, \qquad x_0 \sim \mathcal N(0, \Sigma_0).

``misspec > 0`` puts the expert slightly outside the (stationary) linear class. The recorded
label is :math:`\tilde u_t = u_t + \sigma\varepsilon_t` (label noise on the record only, so
states stay exactly Gaussian: :math:`x_t = \Phi_t x_0`, :math:`\Phi_{t+1} = (A + BK^\star_t)\Phi_t`).
BC data are either a fixed set of ``N`` such trajectories, or fresh ones at every SGD step
(``N=None``: every minibatch sample is an independent draw of a time :math:`t` uniform in
``0..T-1`` and a fresh trajectory).

Imitation loss and SGD on a linear policy :math:`u = Kx`, with data moments
:math:`S_{xx} = \mathbb E\,xx^\top`, :math:`S_{ux} = \mathbb E\,\tilde u x^\top`,
:math:`s_{uu} = \mathbb E\|\tilde u\|^2` (empirical for a fixed set, population otherwise):

.. math::
    \mathrm{loss}_{bc}(K) = \mathbb E\|Kx - \tilde u\|^2
        = \mathrm{tr}(K S_{xx} K^\top) - 2\,\mathrm{tr}(K S_{ux}^\top) + s_{uu}, \qquad
    \bar K = S_{ux} S_{xx}^{-1},

    K_{t+1} = K_t - \eta_t \frac{2}{b}\sum_{i \in \text{batch}} (K_t x_i - \tilde u_i) x_i^\top,
    \qquad \bar K^{ema}_t = (1 - \gamma_t)\bar K^{ema}_{t-1} + \gamma_t K_t .

Rollout cost (an unbounded cost, lower is better; the bounded reward of
:mod:`gvatheory.linear` satisfies :math:`\exp(-\|x\|^2/2s^2) \approx 1 - \|x\|^2/2s^2`, so for
small states and :math:`Q = I, R = 0` it is :math:`H - J_H/(2s^2)`):

.. math::
    J_H(K) = \mathbb E \sum_{h=0}^{H-1} x_h^\top Q x_h + u_h^\top R u_h
        = \mathrm{tr}\Big(\sum_{h=0}^{H-1} (M^h)^\top (Q + K^\top R K) M^h\, W\Big),
    \quad M = A + BK, \quad W = \mathbb E\, x_0 x_0^\top ,

summed by doubling (:math:`O(\log H)` products).

Predictions. The mean gradient :math:`2(K - \bar K)S_{xx}` is exactly linear, so the mean of
:math:`K_t` is exact; its covariance is the linear-noise (Lyapunov) prediction, with the
minibatch noise covariance :math:`C/b` taken at :math:`\bar K`,

.. math::
    V_{t+1} = F_t V_t F_t^\top + \eta_t^2 C / b, \qquad F_t = I - \eta_t\,\mathcal H, \qquad
    \mathcal H = 2\, I_m \otimes S_{xx} \ (\text{row-major } \mathrm{vec}\,K),

jointly with the EMA; for constant :math:`\eta, \gamma` the stationary covariance solves a
discrete Lyapunov equation. The delta method turns it into
:math:`\mathbb E J_H \approx J_H(\mu) + \tfrac12\mathrm{tr}(\nabla^2 J_H V)`,
:math:`\mathrm{Var}\,J_H \approx \nabla J_H^\top V \nabla J_H + \tfrac12\mathrm{tr}((\nabla^2 J_H V)^2)`,
with the gradient by complex step and the Hessian by complex step + central differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import solve_discrete_lyapunov

from ._checks import check_finite, check_int, check_range, check_shape
from .schedules import Schedule, as_schedule
from .stats import SeedLike, chain_keys, seed_sequence


def _matrix(name: str, value, shape: tuple[int, int]) -> np.ndarray:
    arr = np.atleast_2d(check_finite(name, value))
    return check_shape(name, arr, shape)


def double_integrator(rho: float = 0.995, dt: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Double integrator :math:`A = [[1, dt], [0, 1]]`, :math:`B = [[0], [dt]]` and the gain
    :math:`K^\star = [-(1-\rho)^2/dt^2, \ -2(1-\rho)/dt]` placing both closed-loop poles at
    :math:`\rho` (spectral radius :math:`\rho`; ``rho=1`` is marginally stable)."""
    rho = float(check_range("rho", rho, 0.0, 1.0))
    dt = float(check_range("dt", dt, 0.0, np.inf, low_open=True))
    A = np.array([[1.0, dt], [0.0, 1.0]])
    B = np.array([[0.0], [dt]])
    K = np.array([[-((1 - rho) ** 2) / dt**2, -2 * (1 - rho) / dt]])
    return A, B, K


# ------------------------------------------------------------------------ rollout cost J_H


@dataclass(frozen=True)
class Cost:
    r"""Exact rollout cost values with an overflow flag: ``value`` is ``inf`` where ``overflow``."""

    value: np.ndarray
    overflow: np.ndarray


_COST_CHUNK = 16_384  # gains per batch of the doubling sums


def _cost_doubling(A, B, Q, R, W, K: np.ndarray, horizons: np.ndarray) -> np.ndarray:
    """J_H for a batch of gains ``K`` (..., m, n) and sorted ``horizons``: (..., len(horizons)).

    Works for complex ``K`` too (transposes, never conjugates), for complex-step derivatives.
    """
    M = A + B @ K
    Qk = Q + np.swapaxes(K, -1, -2) @ R @ K
    out = np.empty(K.shape[:-2] + (len(horizons),), dtype=np.result_type(K, float))
    # blocks[j] = (M^(2^j), sum_{h < 2^j} (M^h)^T Qk M^h)
    power, block = M, Qk
    blocks = []
    for _ in range(int(horizons.max()).bit_length()):
        blocks.append((power, block))
        block = block + np.swapaxes(power, -1, -2) @ block @ power
        power = power @ power
    for k, H in enumerate(horizons):
        acc = np.zeros_like(Qk)
        acc_pow = np.broadcast_to(np.eye(A.shape[0]), M.shape).astype(out.dtype)
        for j, (pw, bl) in enumerate(blocks):
            if (int(H) >> j) & 1:
                # S_{a + 2^j} = S_a + (M^a)^T S_{2^j} M^a
                acc = acc + np.swapaxes(acc_pow, -1, -2) @ bl @ acc_pow
                acc_pow = pw @ acc_pow
        out[..., k] = np.einsum("...ij,ji->...", acc, W)
    return out


@dataclass(frozen=True)
class LinearBC:
    r"""A linear plant, a (possibly misspecified, noisily labelled) linear expert, BC data and a cost.

    Parameters
    ----------
    A, B : arrays (n, n), (n, m)
    K_star : (m, n) array
        Expert gain :math:`K^\star`.
    label_noise : float
        :math:`\sigma`, standard deviation of the noise on recorded actions.
    misspec : float
        Amplitude of the alternating gain :math:`\pm\,\mathrm{misspec}\,K_{dir}` of the expert.
    K_dir : (m, n) array, optional
        Direction of the misspecification; default all ones divided by its norm.
    traj_len : int
        :math:`T`, length of each demonstration.
    N : int or None
        Number of fixed demonstrations; ``None`` draws fresh ones at every SGD step.
    x0_cov : (n, n) array, optional
        :math:`\Sigma_0` of the demonstrations' initial states (default identity).
    data_seed : int
        Seed of the fixed demonstrations (ignored when ``N is None``).
    Q, R : arrays, optional
        Cost weights (default identities).
    cost_x0_cov : (n, n) array, optional
        :math:`W = \mathbb E\, x_0 x_0^\top` of the rollouts that define :math:`J_H` (default identity).
    """

    A: np.ndarray
    B: np.ndarray
    K_star: np.ndarray
    label_noise: float = 0.1
    misspec: float = 0.0
    K_dir: np.ndarray | None = None
    traj_len: int = 100
    N: int | None = 50
    x0_cov: np.ndarray | None = None
    data_seed: int = 0
    Q: np.ndarray | None = None
    R: np.ndarray | None = None
    cost_x0_cov: np.ndarray | None = None
    _data: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        A = np.atleast_2d(check_finite("A", self.A))
        n = A.shape[0]
        check_shape("A", A, (n, n))
        B = np.atleast_2d(check_finite("B", self.B))
        if B.ndim != 2 or B.shape[0] != n:
            raise ValueError(f"B has shape {B.shape}, expected ({n}, m) to match A")
        m = B.shape[1]
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("A", A)
        set_("B", B)
        set_("K_star", _matrix("K_star", self.K_star, (m, n)))
        set_("label_noise", float(check_range("label_noise", self.label_noise, 0.0)))
        set_("misspec", float(check_range("misspec", self.misspec, 0.0)))
        K_dir = np.ones((m, n)) / np.sqrt(m * n) if self.K_dir is None else _matrix("K_dir", self.K_dir, (m, n))
        set_("K_dir", K_dir)
        set_("traj_len", check_int("traj_len", self.traj_len, 1))
        if self.N is not None:
            set_("N", check_int("N", self.N, 1))
        for name, size in (("x0_cov", n), ("Q", n), ("R", m), ("cost_x0_cov", n)):
            value = getattr(self, name)
            mat = np.eye(size) if value is None else _matrix(name, value, (size, size))
            if not np.allclose(mat, mat.T) or np.linalg.eigvalsh((mat + mat.T) / 2).min() < -1e-12:
                raise ValueError(f"{name}={mat.tolist()} must be symmetric positive semi-definite")
            set_(name, mat)
        set_("_data", self._build_data())

    # ---------------------------------------------------------------- demonstrations
    @property
    def n(self) -> int:
        return self.A.shape[0]

    @property
    def m(self) -> int:
        return self.B.shape[1]

    def expert_gains(self) -> np.ndarray:
        r""":math:`K^\star_t` for ``t = 0..T-1``: (T, m, n)."""
        sign = (-1.0) ** np.arange(self.traj_len)
        return self.K_star[None] + self.misspec * sign[:, None, None] * self.K_dir[None]

    def _build_data(self) -> dict:
        gains = self.expert_gains()
        Phi = np.empty((self.traj_len, self.n, self.n))
        Phi[0] = np.eye(self.n)
        for t in range(1, self.traj_len):
            Phi[t] = (self.A + self.B @ gains[t - 1]) @ Phi[t - 1]
        L = gains @ Phi  # clean label u_t = L_t x_0
        w, V = np.linalg.eigh(self.x0_cov)
        data = {"Phi": Phi, "L": L, "sqrt0": V * np.sqrt(np.maximum(w, 0.0))}  # sqrt0 @ sqrt0.T = x0_cov
        if self.N is not None:
            rng = np.random.default_rng(seed_sequence(self.data_seed))
            z = rng.multivariate_normal(np.zeros(self.n), self.x0_cov, size=self.N, method="eigh")  # (N, n)
            X = np.einsum("tij,Nj->Nti", Phi, z).reshape(-1, self.n)
            U = np.einsum("tij,Nj->Nti", L, z).reshape(-1, self.m)
            data["X"], data["U"] = X, U + self.label_noise * rng.standard_normal(U.shape)
        return data

    def demonstrations(self) -> tuple[np.ndarray, np.ndarray]:
        """The fixed data set ``(X, U)``: states (N*T, n) and recorded actions (N*T, m)."""
        if self.N is None:
            raise ValueError("N=None draws fresh demonstrations at every step: there is no fixed data set")
        return self._data["X"], self._data["U"]

    def sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Draw minibatch samples ``(x, u)`` of shapes ``size + (n,)``, ``size + (m,)``."""
        if self.N is not None:
            idx = rng.integers(0, self.N * self.traj_len, size=size)
            return self._data["X"][idx], self._data["U"][idx]
        t = rng.integers(0, self.traj_len, size=size)
        z = rng.standard_normal(size + (self.n,)) @ self._data["sqrt0"].T
        eps = rng.standard_normal(size + (self.m,))
        x = np.einsum("...ij,...j->...i", self._data["Phi"][t], z)
        u = np.einsum("...ij,...j->...i", self._data["L"][t], z) + self.label_noise * eps
        return x, u

    # ---------------------------------------------------------------- exact moments and loss
    def moments(self) -> tuple[np.ndarray, np.ndarray, float]:
        r""":math:`(S_{xx}, S_{ux}, s_{uu})` of the distribution SGD samples from."""
        if self.N is not None:
            X, U = self.demonstrations()
            k = len(X)
            return X.T @ X / k, U.T @ X / k, float(np.sum(U * U) / k)
        Phi, L, S = self._data["Phi"], self._data["L"], self.x0_cov
        Sxx = np.mean(Phi @ S @ np.swapaxes(Phi, 1, 2), axis=0)
        Sux = np.mean(L @ S @ np.swapaxes(Phi, 1, 2), axis=0)
        suu = float(np.mean(np.einsum("tij,jk,tik->t", L, S, L))) + self.m * self.label_noise**2
        return Sxx, Sux, suu

    def K_bar(self) -> np.ndarray:
        r""":math:`\bar K = S_{ux} S_{xx}^{-1}`, the minimizer of :math:`\mathrm{loss}_{bc}`."""
        Sxx, Sux, _ = self.moments()
        return np.linalg.solve(Sxx, Sux.T).T

    def loss_bc(self, K) -> np.ndarray:
        """Exact imitation loss for a gain or a batch of gains ``K`` (..., m, n)."""
        K = np.asarray(K, dtype=float)
        Sxx, Sux, suu = self.moments()
        with np.errstate(over="ignore", invalid="ignore"):
            val = np.einsum("...ij,jk,...ik->...", K, Sxx, K) - 2 * np.einsum("...ij,ij->...", K, Sux) + suu
        # a diverged gain (inf/NaN entries) has infinite loss, reported as such rather than NaN
        return np.where(np.isfinite(val), val, np.inf)

    def hessian(self) -> np.ndarray:
        r""":math:`\mathcal H = 2 I_m \otimes S_{xx}`, Hessian of :math:`\mathrm{loss}_{bc}` in row-major vec K."""
        return 2.0 * np.kron(np.eye(self.m), self.moments()[0])

    def gradient_noise_cov(self, K=None) -> np.ndarray:
        r"""Covariance of one sample's gradient :math:`2(Kx - \tilde u)x^\top` (row-major vec), at ``K``
        (default :math:`\bar K`). A minibatch of ``b`` samples drawn with replacement has ``C / b``.

        Fixed data: the exact covariance over the data set. Fresh data: exact by Isserlis'
        theorem, since :math:`r = Kx - u = R_t x_0 - \sigma\varepsilon` and :math:`x = \Phi_t x_0`
        are jointly Gaussian given :math:`t`.
        """
        K = self.K_bar() if K is None else _matrix("K", K, (self.m, self.n))
        if self.N is not None:
            X, U = self.demonstrations()
            G = (2 * (X @ K.T - U)[:, :, None] * X[:, None, :]).reshape(len(X), -1)
            return np.cov(G, rowvar=False, ddof=0).reshape(self.m * self.n, self.m * self.n)
        Phi, L, S = self._data["Phi"], self._data["L"], self.x0_cov
        Rt = K[None] @ Phi - L
        PhiT = np.swapaxes(Phi, 1, 2)
        Cuv = Rt @ S @ PhiT                         # (T, m, n)  E r x^T
        Cuu = Rt @ S @ np.swapaxes(Rt, 1, 2)        # (T, m, m)
        Cvv = Phi @ S @ PhiT                        # (T, n, n)
        noise = self.label_noise**2 * np.eye(self.m)
        second = (np.einsum("tab,tcd->tabcd", Cuv, Cuv) + np.einsum("tac,tbd->tabcd", Cuu + noise, Cvv)
                  + np.einsum("tad,tcb->tabcd", Cuv, Cuv)).mean(axis=0) * 4.0
        mean = 2.0 * Cuv.mean(axis=0).reshape(-1)
        d = self.m * self.n
        return second.reshape(d, d) - np.outer(mean, mean)

    # ---------------------------------------------------------------- rollout cost
    def cost(self, K, H) -> Cost:
        r"""Exact :math:`J_H(K)` for gains ``K`` (..., m, n) and horizons ``H`` (int or sequence).

        Returns values of shape ``K.shape[:-2] + (len(H),)`` (no last axis for an int ``H``);
        closed loops whose cost overflows float64 give ``inf`` with ``overflow`` set.
        """
        K = np.asarray(K)
        if K.shape[-2:] != (self.m, self.n):
            raise ValueError(f"K has shape {K.shape}, expected (..., {self.m}, {self.n})")
        scalar = np.ndim(H) == 0
        Hs = np.array([check_int("H", h, 1) for h in np.atleast_1d(H)])
        order = np.argsort(Hs)
        flat = K.reshape((-1, self.m, self.n))
        vals = np.empty((len(flat), len(Hs)), dtype=np.result_type(K, float))
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, len(flat), _COST_CHUNK):  # bounded memory for many gains
                chunk = _cost_doubling(self.A, self.B, self.Q, self.R, self.cost_x0_cov,
                                       flat[start:start + _COST_CHUNK], Hs[order])
                vals[start:start + _COST_CHUNK, order] = chunk
        vals = vals.reshape(K.shape[:-2] + (len(Hs),))
        if np.iscomplexobj(vals):
            return Cost(vals[..., 0] if scalar else vals, np.zeros(vals.shape, bool))
        overflow = ~np.isfinite(vals)
        vals = np.where(overflow, np.inf, vals)
        return Cost(vals[..., 0] if scalar else vals, overflow[..., 0] if scalar else overflow)

    def cost_reference(self, K, H: int) -> float:
        """Plain loop over ``h`` for one gain: the reference for :meth:`cost` (complex K allowed)."""
        K = np.asarray(K)
        M = self.A + self.B @ K
        Qk = self.Q + K.T @ self.R @ K
        W = self.cost_x0_cov.astype(K.dtype)
        total = 0.0
        for _ in range(check_int("H", H, 1)):
            total = total + np.trace(Qk @ W)
            W = M @ W @ M.T
        return total

    def cost_derivatives(self, K, H: int, *, step: float = 1e-5) -> tuple[float, np.ndarray, np.ndarray]:
        r"""``(J, grad, hess)`` of :math:`J_H` at ``K`` in row-major vec K.

        Gradient by complex step (exact to rounding); Hessian by central differences of
        complex-step gradients, :math:`\partial_i\partial_j J \approx
        \mathrm{Im}[J(K + i h e_i + h e_j) - J(K + i h e_i - h e_j)]/(2h^2)`.
        """
        K = _matrix("K", K, (self.m, self.n))
        d = K.size
        E = np.eye(d).reshape(d, self.m, self.n)
        h = float(step) * max(1.0, float(np.abs(K).max()))
        tiny = 1e-30
        grad = np.imag(self.cost(K[None] + 1j * tiny * E, H).value) / tiny
        plus = K[None, None] + 1j * h * E[:, None] + h * E[None, :]
        minus = K[None, None] + 1j * h * E[:, None] - h * E[None, :]
        hess = np.imag(self.cost(plus, H).value - self.cost(minus, H).value) / (2 * h * h)
        return float(self.cost(K, H).value), grad, (hess + hess.T) / 2


# ------------------------------------------------------------------------ predictions


@dataclass(frozen=True)
class MomentPrediction:
    r"""Linear-noise prediction of the law of :math:`(K_t, \bar K^{ema}_t)` at step ``step``.

    ``mean_raw``/``mean_ema`` are (m, n) (exact); ``cov_raw``/``cov_ema`` are (mn, mn) in row-major
    vec K (the Lyapunov / linear-noise approximation, noise at :math:`\bar K`).
    """

    step: int
    mean_raw: np.ndarray
    mean_ema: np.ndarray
    cov_raw: np.ndarray
    cov_ema: np.ndarray


def _joint(F: np.ndarray, eta: float, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    d = F.shape[0]
    I = np.eye(d)
    T = np.block([[F, np.zeros((d, d))], [gamma * F, (1 - gamma) * I]])
    G = np.vstack([-eta * I, -gamma * eta * I])
    return T, G


def predict_moments(problem: LinearBC, *, eta: float | Schedule, gamma: float | Schedule, batch: int,
                    steps: int, init=None) -> MomentPrediction:
    r"""Iterate the mean and linear-noise covariance of :math:`(K_t, \bar K^{ema}_t)` for ``steps`` steps.

    .. math::
        Z_{t+1} = \mathcal T_t Z_t + \mathcal G_t \xi_t, \quad
        \mathcal T_t = \begin{pmatrix} F_t & 0 \\ \gamma_{t+1} F_t & (1-\gamma_{t+1}) I \end{pmatrix},
        \quad \mathcal G_t = -\eta_t \begin{pmatrix} I \\ \gamma_{t+1} I \end{pmatrix},
        \quad \mathrm{Cov}\,\xi_t = C/b,

    with :math:`Z = (\mathrm{vec}(K - \bar K), \mathrm{vec}(\bar K^{ema} - \bar K))`,
    :math:`Z_0 = (K_0 - \bar K, K_0 - \bar K)` deterministic.
    """
    eta_s, gamma_s = as_schedule(eta, kind="eta"), as_schedule(gamma, kind="gamma")
    batch = check_int("batch", batch, 1)
    steps = check_int("steps", steps, 0)
    Kb = problem.K_bar()
    K0 = problem.K_star if init is None else _matrix("init", init, Kb.shape)
    Hs = problem.hessian()
    C = problem.gradient_noise_cov() / batch
    d = Kb.size
    z = np.concatenate([(K0 - Kb).reshape(-1)] * 2)
    P = np.zeros((2 * d, 2 * d))
    etas, gammas = np.atleast_1d(eta_s(np.arange(steps))), np.atleast_1d(gamma_s(np.arange(1, steps + 1)))
    with np.errstate(over="ignore", invalid="ignore"):  # an unstable eta gives non-finite moments
        for t in range(steps):
            T, G = _joint(np.eye(d) - etas[t] * Hs, etas[t], gammas[t])
            z = T @ z
            P = T @ P @ T.T + G @ C @ G.T
    z, P = np.where(np.isfinite(z), z, np.inf), np.where(np.isfinite(P), P, np.inf)
    return MomentPrediction(step=steps, mean_raw=Kb + z[:d].reshape(Kb.shape), mean_ema=Kb + z[d:].reshape(Kb.shape),
                            cov_raw=P[:d, :d], cov_ema=P[d:, d:])


def stationary_moments(problem: LinearBC, *, eta: float, gamma: float, batch: int) -> MomentPrediction:
    r"""Stationary law for constant :math:`\eta, \gamma`: :math:`P = \mathcal T P \mathcal T^\top +
    \mathcal G (C/b) \mathcal G^\top` solved by :func:`scipy.linalg.solve_discrete_lyapunov`.

    Raises ``ValueError`` when SGD is unstable (spectral radius of :math:`I - \eta\mathcal H` >= 1).
    """
    eta = float(check_range("eta", eta, 0.0, np.inf, low_open=True))
    gamma = float(check_range("gamma", gamma, 0.0, 1.0, low_open=True))
    batch = check_int("batch", batch, 1)
    Hs = problem.hessian()
    d = Hs.shape[0]
    F = np.eye(d) - eta * Hs
    radius = np.abs(np.linalg.eigvals(F)).max()
    if radius >= 1:
        limit = 2 / np.linalg.eigvalsh(Hs).max()
        raise ValueError(f"eta={eta:g} makes SGD on loss_bc unstable: must be in (0, {limit:.4g})")
    T, G = _joint(F, eta, gamma)
    P = solve_discrete_lyapunov(T, G @ (problem.gradient_noise_cov() / batch) @ G.T)
    Kb = problem.K_bar()
    return MomentPrediction(step=-1, mean_raw=Kb, mean_ema=Kb, cov_raw=P[:d, :d], cov_ema=P[d:, d:])


@dataclass(frozen=True)
class DeltaMethod:
    r"""Delta-method law of :math:`J_H(K)` for :math:`\mathrm{vec} K \sim (\mu, V)`, per horizon."""

    H: np.ndarray
    mean: np.ndarray
    var_first: np.ndarray
    var: np.ndarray

    @property
    def sd(self) -> np.ndarray:
        return np.sqrt(self.var)


def delta_method(problem: LinearBC, mean, cov, H) -> DeltaMethod:
    r"""Second-order delta method for :math:`J_H` at :math:`K \sim (\mu, V)`, Gaussian :math:`K`:
    :math:`\mathbb E J \approx J(\mu) + \tfrac12 \mathrm{tr}(\nabla^2 J\, V)`,
    :math:`\mathrm{Var} J \approx g^\top V g + \tfrac12 \mathrm{tr}((\nabla^2 J\, V)^2)`
    (``var_first`` keeps only :math:`g^\top V g`)."""
    Hs = np.array([check_int("H", h, 1) for h in np.atleast_1d(H)])
    cov = np.asarray(cov, dtype=float)
    if not (np.isfinite(cov).all() and np.isfinite(np.asarray(mean, dtype=float)).all()):  # moments of a divergent SGD
        inf = np.full(len(Hs), np.inf)
        return DeltaMethod(H=Hs, mean=inf, var_first=inf, var=inf)
    out = np.empty((3, len(Hs)))
    for k, h in enumerate(Hs):
        J, g, Hj = problem.cost_derivatives(mean, int(h))
        HV = Hj @ cov
        first = g @ cov @ g
        out[:, k] = J + 0.5 * np.trace(HV), first, first + 0.5 * np.trace(HV @ HV)
    return DeltaMethod(H=Hs, mean=out[0], var_first=out[1], var=out[2])


# ------------------------------------------------------------------------ Monte Carlo SGD


@dataclass(frozen=True)
class SGDRun:
    r"""Gains along training for ``S`` SGD seeds: ``K`` and ``ema`` are (S, R, m, n) at ``steps`` (R,).

    ``diverged`` (S,) marks chains whose gain overflowed (SGD unstable at this step size); their
    gains hold inf/NaN and every cost or loss computed from them is ``inf``.
    """

    steps: np.ndarray
    K: np.ndarray
    ema: np.ndarray
    eta: Schedule
    gamma: Schedule
    batch: int
    diverged: np.ndarray


_CHUNK = 256  # steps of random draws per seed at once; fixed so results never depend on memory


def _seed_rngs(seed: SeedLike, seeds: int) -> list[np.random.Generator]:
    return [np.random.default_rng(int(k)) for k in chain_keys(seed, seeds)]


def run_sgd(problem: LinearBC, *, eta: float | Schedule, gamma: float | Schedule, batch: int, steps: int,
            seeds: int, seed: SeedLike = 0, record_every: int = 1, init=None, quiet: bool = True) -> SGDRun:
    r"""Minibatch SGD on :math:`\mathrm{loss}_{bc}` with an EMA, vectorized over ``seeds`` chains.

    Chain ``i`` draws its minibatches (with replacement) from its own generator keyed by
    :func:`gvatheory.stats.chain_keys`, so its path does not depend on how many chains run.
    ``init`` is :math:`K_0` (default the expert gain :math:`K^\star`). Records steps
    ``0, record_every, ...`` and the last step.
    """
    from tqdm.auto import tqdm

    eta_s, gamma_s = as_schedule(eta, kind="eta"), as_schedule(gamma, kind="gamma")
    batch = check_int("batch", batch, 1)
    steps = check_int("steps", steps, 0)
    seeds = check_int("seeds", seeds, 1)
    record_every = check_int("record_every", record_every, 1)
    K0 = problem.K_star if init is None else _matrix("init", init, problem.K_star.shape)
    rngs = _seed_rngs(seed, seeds)
    rec = np.unique(np.r_[np.arange(0, steps + 1, record_every), steps])
    K = np.broadcast_to(K0, (seeds,) + K0.shape).copy()
    ema = K.copy()
    out_K = np.empty((seeds, len(rec)) + K0.shape)
    out_E = np.empty_like(out_K)
    out_K[:, 0], out_E[:, 0] = K, ema
    r = 1
    etas = np.atleast_1d(eta_s(np.arange(steps))) if steps else np.zeros(0)
    gammas = np.atleast_1d(gamma_s(np.arange(1, steps + 1))) if steps else np.zeros(0)
    with tqdm(total=steps, disable=quiet, desc="linear-gva SGD", unit="step") as bar, \
            np.errstate(over="ignore", invalid="ignore"):  # divergence is flagged below
        for start in range(0, steps, _CHUNK):
            c = min(_CHUNK, steps - start)
            draws = [problem.sample(g, (c, batch)) for g in rngs]
            X = np.stack([d[0] for d in draws], axis=1)  # (c, S, b, n)
            U = np.stack([d[1] for d in draws], axis=1)  # (c, S, b, m)
            for i in range(c):
                t = start + i
                resid = np.einsum("smn,sbn->sbm", K, X[i]) - U[i]
                K = K - etas[t] * (2.0 / batch) * np.einsum("sbm,sbn->smn", resid, X[i])
                ema = (1 - gammas[t]) * ema + gammas[t] * K
                if r < len(rec) and rec[r] == t + 1:
                    out_K[:, r], out_E[:, r] = K, ema
                    r += 1
            bar.update(c)
    diverged = ~np.isfinite(out_K).all(axis=(1, 2, 3))
    return SGDRun(steps=rec, K=out_K, ema=out_E, eta=eta_s, gamma=gamma_s, batch=batch, diverged=diverged)


def sgd_reference(problem: LinearBC, *, eta: float | Schedule, gamma: float | Schedule, batch: int, steps: int,
                  seed: SeedLike = 0, chain: int = 0, init=None) -> tuple[np.ndarray, np.ndarray]:
    """One chain of :func:`run_sgd` as a plain loop (same random draws): final ``(K, ema)``."""
    eta_s, gamma_s = as_schedule(eta, kind="eta"), as_schedule(gamma, kind="gamma")
    rng = _seed_rngs(seed, chain + 1)[chain]
    K = (problem.K_star if init is None else np.asarray(init, dtype=float)).copy()
    ema = K.copy()
    for start in range(0, steps, _CHUNK):
        c = min(_CHUNK, steps - start)
        X, U = problem.sample(rng, (c, batch))
        for i in range(c):
            t = start + i
            grad = np.zeros_like(K)
            for x, u in zip(X[i], U[i]):
                grad += 2.0 * np.outer(K @ x - u, x) / batch
            K = K - eta_s(t) * grad
            ema = (1 - gamma_s(t + 1)) * ema + gamma_s(t + 1) * K
    return K, ema


# ------------------------------------------------------------------------ experiment


@dataclass(frozen=True)
class GVAExperiment:
    r"""Monte Carlo of SGD + EMA next to the predictions, along training and across horizons.

    Arrays over horizons ``H`` (length k) and recorded ``steps`` (length R). ``J_raw``/``J_ema``:
    exact :math:`J_H` of every chain's iterate, (S, R, k) (``inf`` where ``overflow``);
    ``loss_raw``/``loss_ema``: exact :math:`\mathrm{loss}_{bc}`, (S, R). ``pred_raw``/``pred_ema``:
    delta-method laws of :math:`J_H` at the last step; ``moments``: the predicted law of the gains.
    """

    problem: LinearBC
    run: SGDRun
    H: np.ndarray
    J_raw: np.ndarray
    J_ema: np.ndarray
    overflow_raw: np.ndarray
    overflow_ema: np.ndarray
    loss_raw: np.ndarray
    loss_ema: np.ndarray
    moments: MomentPrediction
    pred_raw: DeltaMethod
    pred_ema: DeltaMethod

    def final_sd(self, which: str = "raw") -> tuple[np.ndarray, np.ndarray]:
        r"""Across-seed sd of :math:`J_H` at the last step and its standard error, per horizon.

        The SE is the delta-method SE of the sd, :math:`\mathrm{se}(\hat v)/(2\hat\sigma)`, with
        :math:`\mathrm{se}(\hat v)` the standard error of the mean of squared deviations (valid
        for any finite fourth moment; ``inf`` sd where a chain overflowed).
        """
        J = (self.J_raw if which == "raw" else self.J_ema)[:, -1]
        S = J.shape[0]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # huge costs give inf, not NaN
            dev2 = (J - J.mean(axis=0)) ** 2
            sd = np.sqrt(dev2.sum(axis=0) / (S - 1))
            se = dev2.std(axis=0, ddof=1) / np.sqrt(S) / (2 * sd)
        finite = np.isfinite(J).all(axis=0)
        sd = np.where(finite, sd, np.inf)
        se = np.where(finite & np.isfinite(sd), se, np.inf)
        return sd, se

    def loss_cv(self, which: str = "raw") -> float:
        """sd/mean of :math:`\\mathrm{loss}_{bc}` across seeds at the last step."""
        L = (self.loss_raw if which == "raw" else self.loss_ema)[:, -1]
        if not np.isfinite(L).all():  # a diverged chain
            return float("inf")
        return float(L.std(ddof=1) / L.mean())

    def rows(self) -> list[dict]:
        sd_r, se_r = self.final_sd("raw")
        sd_e, se_e = self.final_sd("ema")
        return [{"H": int(h), "sd J raw": sd_r[k], "se": se_r[k], "pred raw": self.pred_raw.sd[k],
                 "sd J ema": sd_e[k], "se ema": se_e[k], "pred ema": self.pred_ema.sd[k],
                 "raw/ema": sd_r[k] / sd_e[k], "overflow": int(self.overflow_raw[:, -1, k].sum())}
                for k, h in enumerate(self.H)]

    def plot(self):
        """Left: sd of J_H vs H (MC with 2 SE bars, predictions dashed). Right: J_H (largest H)
        and loss_bc along training, median and 10-90% band over seeds, raw vs EMA."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        ax = axes[0]
        for which, pred, color in (("raw", self.pred_raw, "C3"), ("ema", self.pred_ema, "C0")):
            sd, se = self.final_sd(which)
            ax.errorbar(self.H, sd, yerr=2 * se, fmt="o-", color=color, capsize=3, label=f"{which}: Monte Carlo")
            ax.plot(self.H, pred.sd, "--", color=color, label=f"{which}: delta method")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(self.H, [str(h) for h in self.H], minor=False)
        ax.set_xticks([], minor=True)
        ax.set_xlabel("horizon H")
        ax.set_ylabel("sd of J_H across SGD seeds")
        ax.legend(fontsize=7)
        steps = self.run.steps
        for ax, (name, raw, ema) in zip(axes[1:], ((f"J_H, H={self.H[-1]}", self.J_raw[..., -1], self.J_ema[..., -1]),
                                                  ("loss_bc", self.loss_raw, self.loss_ema))):
            for label, arr, color in (("raw", raw, "C3"), ("ema", ema, "C0")):
                lo, mid, hi = np.nanquantile(np.where(np.isfinite(arr), arr, np.nan), [0.1, 0.5, 0.9], axis=0)
                ax.plot(steps, mid, color=color, label=label)
                ax.fill_between(steps, lo, hi, color=color, alpha=0.25)
            ax.set_yscale("log" if ax is axes[1] else "linear")
            ax.set_xlabel("SGD step")
            ax.set_ylabel(name)
            ax.legend(fontsize=7)
        axes[1].set_title("median and 10-90% band over seeds")
        fig.tight_layout()
        return fig


def gva_experiment(problem: LinearBC, *, eta: float | Schedule, gamma: float | Schedule, batch: int, steps: int,
                   seeds: int, H, seed: SeedLike = 0, record_every: int | None = None, init=None,
                   quiet: bool = True) -> GVAExperiment:
    """Run :func:`run_sgd`, evaluate exact J_H and loss_bc at every recorded iterate, and predict."""
    steps = check_int("steps", steps, 1)
    record_every = max(steps // 100, 1) if record_every is None else record_every
    Hs = np.array([check_int("H", h, 1) for h in np.atleast_1d(H)])
    run = run_sgd(problem, eta=eta, gamma=gamma, batch=batch, steps=steps, seeds=seeds, seed=seed,
                  record_every=record_every, init=init, quiet=quiet)
    raw, ema = problem.cost(run.K, Hs), problem.cost(run.ema, Hs)
    moments = predict_moments(problem, eta=eta, gamma=gamma, batch=batch, steps=steps, init=init)
    return GVAExperiment(problem=problem, run=run, H=Hs, J_raw=raw.value, J_ema=ema.value,
                         overflow_raw=raw.overflow, overflow_ema=ema.overflow,
                         loss_raw=problem.loss_bc(run.K), loss_ema=problem.loss_bc(run.ema), moments=moments,
                         pred_raw=delta_method(problem, moments.mean_raw, moments.cov_raw, Hs),
                         pred_ema=delta_method(problem, moments.mean_ema, moments.cov_ema, Hs))
