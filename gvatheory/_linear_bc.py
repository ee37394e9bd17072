r"""The behavior-cloning problem of :mod:`gvatheory.linear_gva`: a linear plant, a linear expert, its
demonstrations, the imitation loss and the exact rollout cost (re-exported by :mod:`gvatheory.linear_gva`).

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
:mod:`gvatheory.prop31` satisfies :math:`\exp(-\|x\|^2/2s^2) \approx 1 - \|x\|^2/2s^2`, so for
small states and :math:`Q = I, R = 0` it is :math:`H - J_H/(2s^2)`):

.. math::
    J_H(K) = \mathbb E \sum_{h=0}^{H-1} x_h^\top Q x_h + u_h^\top R u_h
        = \mathrm{tr}\Big(\sum_{h=0}^{H-1} (M^h)^\top (Q + K^\top R K) M^h\, W\Big),
    \quad M = A + BK, \quad W = \mathbb E\, x_0 x_0^\top ,

summed by doubling (:math:`O(\log H)` products).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._checks import (
    MAX_SCALE,
    MIN_SCALE,
    check_int,
    check_matrix,
    check_memory,
    check_plant,
    check_psd,
    check_range,
    check_scale,
)
from .stats import seed_sequence


def double_integrator(rho: float = 0.995, dt: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Double integrator :math:`A = [[1, dt], [0, 1]]`, :math:`B = [[0], [dt]]` and the gain
    :math:`K^\star = [-(1-\rho)^2/dt^2, \ -2(1-\rho)/dt]` placing both closed-loop poles at
    :math:`\rho` (spectral radius :math:`\rho`; ``rho=1`` is marginally stable)."""
    rho = float(check_range("rho", rho, 0.0, 1.0))
    dt = float(check_range("dt", dt, MIN_SCALE, MAX_SCALE, low_open=True, high_open=True))  # dt**2 is a normal float
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
        A, B = check_plant(self.A, self.B)
        n, m = A.shape[0], B.shape[1]
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("A", A)
        set_("B", B)
        set_("K_star", check_matrix("K_star", self.K_star, (m, n)))
        set_("label_noise", float(check_scale("label_noise", self.label_noise)))
        set_("misspec", float(check_range("misspec", self.misspec, 0.0)))
        K_dir = np.ones((m, n)) / np.sqrt(m * n) if self.K_dir is None else check_matrix("K_dir", self.K_dir, (m, n))
        set_("K_dir", K_dir)
        set_("traj_len", check_int("traj_len", self.traj_len, 1))
        check_memory("traj_len", self.traj_len, 32 * (n * n + 2 * m * n + 1))  # gains, Phi, labels per step
        if self.N is not None:
            set_("N", check_int("N", self.N, 1))
            check_memory("N", self.N, 32 * self.traj_len * (n + m))  # states and labels, and their draws
        for name, size in (("x0_cov", n), ("Q", n), ("R", m), ("cost_x0_cov", n)):
            value = getattr(self, name)
            mat = np.eye(size) if value is None else check_matrix(name, value, (size, size))
            set_(name, check_psd(name, mat))
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below
            set_("_data", self._build_data())
            finite = all(np.isfinite(v).all() for v in (*self.moments(), self._data["Phi"], self._data["L"]))
        if not finite:
            raise ValueError(
                f"the demonstrations overflow float64 within traj_len={self.traj_len} steps: the expert's "
                f"closed loop A + B K*_t (misspec={self.misspec:g}) grows too fast; shorten traj_len or "
                "shrink the plant, the gain or misspec"
            )

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
        K = self.K_bar() if K is None else check_matrix("K", K, (self.m, self.n))
        if self.N is not None:
            X, U = self.demonstrations()
            G = (2 * (X @ K.T - U)[:, :, None] * X[:, None, :]).reshape(len(X), -1)
            return np.cov(G, rowvar=False, ddof=0).reshape(self.m * self.n, self.m * self.n)
        Phi, L, S = self._data["Phi"], self._data["L"], self.x0_cov
        Rt = K[None] @ Phi - L
        PhiT = np.swapaxes(Phi, 1, 2)
        Cuv = Rt @ S @ PhiT  # (T, m, n)  E r x^T
        Cuu = Rt @ S @ np.swapaxes(Rt, 1, 2)  # (T, m, m)
        Cvv = Phi @ S @ PhiT  # (T, n, n)
        noise = self.label_noise**2 * np.eye(self.m)
        second = (
            np.einsum("tab,tcd->tabcd", Cuv, Cuv)
            + np.einsum("tac,tbd->tabcd", Cuu + noise, Cvv)
            + np.einsum("tad,tcb->tabcd", Cuv, Cuv)
        ).mean(axis=0) * 4.0
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
                chunk = _cost_doubling(
                    self.A, self.B, self.Q, self.R, self.cost_x0_cov, flat[start : start + _COST_CHUNK], Hs[order]
                )
                vals[start : start + _COST_CHUNK, order] = chunk
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
        K = check_matrix("K", K, (self.m, self.n))
        d = K.size
        E = np.eye(d).reshape(d, self.m, self.n)
        h = float(step) * max(1.0, float(np.abs(K).max()))
        tiny = 1e-30
        grad = np.imag(self.cost(K[None] + 1j * tiny * E, H).value) / tiny
        plus = K[None, None] + 1j * h * E[:, None] + h * E[None, :]
        minus = K[None, None] + 1j * h * E[:, None] - h * E[None, :]
        hess = np.imag(self.cost(plus, H).value - self.cost(minus, H).value) / (2 * h * h)
        return float(self.cost(K, H).value), grad, (hess + hess.T) / 2
