r"""Linear closed loops with a bounded reward: paper Prop. 3.1, exactly.

Block et al. (ICLR 2024, arXiv 2310.11428), Prop. 3.1: there are deterministic, Lipschitz
linear dynamics and a Lipschitz expert :math:`\pi^\star` such that a :math:`\delta`-Lipschitz
perturbation :math:`\Delta` with :math:`\Delta(0) = 0` has imitation loss :math:`O(H\delta^2)`
under the expert's states, yet loses reward :math:`e^{\Omega(H\delta)}` over horizon :math:`H`
(until the gap saturates at its ceiling, which is at most :math:`H` for rewards in [0, 1]).

Model. State :math:`x_h \in \mathbb{R}^n`, input :math:`u_h \in \mathbb{R}^m`,

.. math::
    x_{h+1} = A x_h + B u_h, \qquad u_h = K x_h + D x_h, \qquad
    x_0 \sim \mathcal{N}(m_0, \Sigma_0) \ (\Sigma_0 = 0: \text{deterministic}),

with the expert :math:`\pi^\star(x) = Kx` and a *linear* perturbation :math:`\Delta(x) = Dx`,
which is :math:`\delta`-Lipschitz with :math:`\Delta(0)=0` exactly when
:math:`\|D\|_{op} \le \delta`. The reward is the Gaussian bump

.. math:: r(x) = \exp\!\big(-\|x\|^2 / (2 s^2)\big) \in (0, 1],

chosen because (i) it is bounded in [0, 1] as the proposition needs, (ii) it is smooth with
:math:`1 - r(x) \approx \|x\|^2/(2s^2)` near the origin, so it is the bounded version of the
quadratic cost used in :mod:`gvatheory.linear_gva`, and (iii) its expectation under a Gaussian state is
closed-form: for :math:`x \sim \mathcal N(\mu, \Sigma)`,

.. math::
    \mathbb E\, r(x) = \det(I + \Sigma/s^2)^{-1/2}
        \exp\!\big(-\tfrac12 \mu^\top (s^2 I + \Sigma)^{-1} \mu\big).

The closed-loop state is Gaussian with :math:`\mu_h = M^h m_0`, :math:`\Sigma_h = M^h \Sigma_0
(M^h)^\top`, :math:`M = A + B(K + D)`, so

.. math::
    J_H(K + D) = \sum_{h=0}^{H-1} \mathbb E\, r(x_h), \qquad
    \mathrm{loss}_{bc}(D) = \sum_{h=0}^{H-1} \mathbb E\,\|D x^\star_h\|^2
        = \sum_{h=0}^{H-1} \mathrm{tr}\big(D (\Sigma^\star_h + \mu^\star_h \mu^{\star\top}_h) D^\top\big)
        \le \delta^2 \sum_{h=0}^{H-1} \mathbb E\|x^\star_h\|^2

are exact (the loss is summed over the horizon, under the expert's states :math:`x^\star_h`).

The construction of :func:`prop31_system` is scalar, :math:`A = B = 1`, :math:`K = 0`: the
expert holds the state at :math:`x_0` (Lipschitz constant 0, closed loop marginally stable), so
:math:`\mathrm{loss}_{bc} = H\delta^2 x_0^2`, while :math:`D = \delta` gives
:math:`x_h = (1+\delta)^h x_0` and, while the state stays small,

.. math::
    J_H(K) - J_H(K+D) \approx \frac{x_0^2}{2 s^2}\Big(\frac{(1+\delta)^{2H} - 1}{(1+\delta)^2 - 1} - H\Big)
        \approx \frac{x_0^2}{4\delta s^2}\, e^{2 H \log(1+\delta)} .

The exponential regime ends when :math:`|x_H|` reaches the reward scale,
:math:`H\delta \approx \log(s/|x_0|)`; beyond it the gap grows only linearly and never exceeds
:math:`\sum_h \mathbb E\, r(x^\star_h) \le H`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from ._checks import (
    MAX_SCALE,
    MIN_SCALE,
    check_finite,
    check_int,
    check_matrix,
    check_memory,
    check_plant,
    check_positive,
    check_psd,
    check_range,
    check_shape,
)
from .moments import moment_sequence
from .stats import Estimate, SeedLike, estimate, seed_sequence

__all__ = [
    "LinearClosedLoop",
    "prop31_system",
    "WorstCaseGap",
    "worst_case_gap",
    "GrowthFit",
    "Prop31Table",
    "prop31_table",
]


@dataclass(frozen=True)
class LinearClosedLoop:
    r"""Linear plant :math:`(A, B)`, linear expert :math:`K`, Gaussian-bump reward of scale ``s``.

    Parameters
    ----------
    A : (n, n) array
    B : (n, m) array
    K : (m, n) array
        Expert gain, :math:`\pi^\star(x) = Kx`.
    s : float
        Reward scale in :math:`r(x) = \exp(-\|x\|^2/(2s^2))`.
    x0_mean : (n,) array
        Mean :math:`m_0` of the initial state.
    x0_cov : (n, n) array, optional
        Covariance :math:`\Sigma_0` of the initial state; zero (the default) is a deterministic start.
    """

    A: np.ndarray
    B: np.ndarray
    K: np.ndarray
    s: float
    x0_mean: np.ndarray
    x0_cov: np.ndarray = field(default=None)

    def __post_init__(self):
        A, B = check_plant(self.A, self.B)
        n, m = A.shape[0], B.shape[1]
        K = check_matrix("K", self.K, (m, n))
        # s^2 must be a positive, finite float: the reward and its expectation divide by it
        check_range("s", self.s, MIN_SCALE, MAX_SCALE, low_open=True, high_open=True)
        mean = check_finite("x0_mean", self.x0_mean).reshape(-1)
        check_shape("x0_mean", mean, (n,))
        cov = np.zeros((n, n)) if self.x0_cov is None else check_matrix("x0_cov", self.x0_cov, (n, n))
        check_psd("x0_cov", cov)
        for name, value in (("A", A), ("B", B), ("K", K), ("x0_mean", mean), ("x0_cov", cov)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "s", float(self.s))

    @property
    def n(self) -> int:
        return self.A.shape[0]

    @property
    def m(self) -> int:
        return self.B.shape[1]

    def _D(self, D) -> np.ndarray:
        if D is None:
            return np.zeros((self.m, self.n))
        return check_matrix("D", D, (self.m, self.n))

    def closed_loop(self, D=None) -> np.ndarray:
        r""":math:`M = A + B(K + D)`."""
        return self.A + self.B @ (self.K + self._D(D))

    def _moments(self, D, H: int) -> tuple[np.ndarray, np.ndarray]:
        """State means (H, n) and covariances (H, n, n) of the closed loop, h = 0..H-1."""
        # the moments and the few temporaries of expected_reward, per step
        check_memory("H", H, 64 * self.n * (self.n + 1))
        return moment_sequence(self.closed_loop(D), self.x0_mean, self.x0_cov, H)

    def expected_reward(self, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
        r""":math:`\mathbb E\, r(x)` for :math:`x \sim \mathcal N(\mu, \Sigma)`, batched over leading axes.

        A state that overflowed (non-finite moments) has left every bounded region: its expected
        reward is the limit 0.
        """
        mean = np.asarray(mean, dtype=float)
        cov = np.asarray(cov, dtype=float)
        ok = np.isfinite(mean).all(axis=-1) & np.isfinite(cov).all(axis=(-1, -2))
        mean = np.where(ok[..., None], mean, 0.0)
        cov = np.where(ok[..., None, None], cov, 0.0)
        s2 = self.s**2
        eye = np.eye(self.n)
        with np.errstate(over="ignore"):  # a huge state: the quadratic form overflows, the reward is 0
            _, logdet = np.linalg.slogdet(eye + cov / s2)
            quad = np.einsum("...i,...i->...", mean, np.linalg.solve(s2 * eye + cov, mean[..., None])[..., 0])
            return np.where(ok, np.exp(-0.5 * logdet - 0.5 * quad), 0.0)

    def rewards(self, H: int, D=None) -> np.ndarray:
        r"""Exact :math:`\mathbb E\, r(x_h)` for ``h = 0..H-1`` under the policy :math:`(K + D)x`."""
        H = check_int("H", H, 1)
        mu, cov = self._moments(D, H)
        return self.expected_reward(mu, cov)

    def J(self, H: int, D=None) -> float:
        r"""Exact :math:`J_H(K + D) = \sum_{h<H} \mathbb E\, r(x_h)`."""
        return float(self.rewards(H, D).sum())

    def imitation_loss(self, H: int, D) -> float:
        r"""Exact :math:`\sum_{h<H} \mathbb E \|D x^\star_h\|^2` under the expert's states."""
        H = check_int("H", H, 1)
        D = self._D(D)
        mu, cov = self._moments(None, H)
        with np.errstate(over="ignore", invalid="ignore"):  # a huge D overflows to inf
            second = cov + mu[:, :, None] * mu[:, None, :]
            loss = float(np.einsum("ij,hjk,ik->", D, second, D))
        return loss if math.isfinite(loss) else math.inf

    def loss_bound(self, H: int, delta: float) -> float:
        r""":math:`\delta^2 \sum_{h<H} \mathbb E\|x^\star_h\|^2`, the bound for every :math:`\|D\|_{op} \le \delta`."""
        H = check_int("H", H, 1)
        delta = float(check_range("delta", delta, 0.0))
        mu, cov = self._moments(None, H)
        with np.errstate(over="ignore", invalid="ignore"):  # a huge delta overflows to inf
            bound = float(np.float64(delta) ** 2 * (np.einsum("hi,hi->", mu, mu) + np.einsum("hii->", cov)))
        return bound if math.isfinite(bound) else math.inf

    def simulate(self, H: int, x0: np.ndarray, Delta: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        r"""Plain rollout from a batch of initial states; the reference for the closed forms.

        Parameters
        ----------
        H : int
            Horizon.
        x0 : (R, n) array
            Initial states.
        Delta : callable, optional
            Perturbation :math:`\Delta`, mapping an (R, n) batch of states to (R, m) inputs; any
            (also nonlinear) function. ``None`` runs the expert.

        Returns
        -------
        (R, H) array of rewards :math:`r(x_h)`.
        """
        H = check_int("H", H, 1)
        x = np.array(check_finite("x0", x0), dtype=float, ndmin=2)
        check_shape("x0", x, (x.shape[0], self.n))
        out = np.empty((x.shape[0], H))
        for h in range(H):
            with np.errstate(over="ignore", invalid="ignore"):
                out[:, h] = np.exp(-np.sum(x**2, axis=1) / (2 * self.s**2))
                u = x @ self.K.T
                if Delta is not None:
                    u = u + Delta(x)
                x = x @ self.A.T + u @ self.B.T
        return np.nan_to_num(out, nan=0.0)

    def monte_carlo_J(self, H: int, D=None, *, n: int = 10_000, seed: SeedLike = 0) -> Estimate:
        """Monte Carlo twin of :meth:`J`: ``n`` rollouts from random initial states."""
        n = check_int("n", n, 2)
        D = self._D(D)
        rng = np.random.default_rng(seed_sequence(seed))
        x0 = rng.multivariate_normal(self.x0_mean, self.x0_cov, size=n, method="eigh")
        return estimate(self.simulate(H, x0, lambda x: x @ D.T).sum(axis=1))


def prop31_system(
    *, x0: float = 0.01, s: float = 1.0, a: float = 1.0, k: float = 0.0, b: float = 1.0, x0_sd: float = 0.0
) -> LinearClosedLoop:
    r"""The scalar construction: :math:`x_{h+1} = a x_h + b u_h`, expert :math:`u = kx`.

    The defaults :math:`a = b = 1, k = 0` make the expert closed loop marginally stable
    (:math:`a + bk = 1`): the expert keeps :math:`x_h = x_0`. ``x0_sd > 0`` makes the initial
    state Gaussian instead of deterministic.
    """
    check_range("x0_sd", x0_sd, 0.0)
    return LinearClosedLoop(A=[[a]], B=[[b]], K=[[k]], s=s, x0_mean=[x0], x0_cov=[[float(x0_sd) ** 2]])


@dataclass(frozen=True)
class WorstCaseGap:
    r"""Reward gap :math:`J_H(K) - J_H(K+D)` of the worst linear :math:`D` with :math:`\|D\|_{op}\le\delta`.

    ``gap`` is attained by the returned ``D`` (a certified lower bound on the worst case; exact
    when ``exact``); ``upper`` is a certified upper bound (see :func:`worst_case_gap`).
    ``overflow`` marks a value that overflowed float64 (reported as ``inf``, for a huge ``delta``).
    """

    H: int
    delta: float
    D: np.ndarray
    gap: float
    upper: float
    exact: bool
    loss: float
    loss_bound: float

    @property
    def overflow(self) -> bool:
        return not all(math.isfinite(v) for v in (self.gap, self.upper, self.loss, self.loss_bound))


def _gap_upper(system: LinearClosedLoop, H: int, delta: float) -> float:
    # E r(x) >= 1 - E|x|^2/(2 s^2) and E|x_h|^2 <= c^{2h} E|x_0|^2 with c >= ||A + B(K+D)||_op.
    c = np.linalg.norm(system.closed_loop(), 2) + np.linalg.norm(system.B, 2) * delta
    h = np.arange(H)
    with np.errstate(over="ignore", invalid="ignore"):  # huge x0 or delta: q saturates at 1
        second0 = system.x0_mean @ system.x0_mean + np.trace(system.x0_cov)
        q = np.minimum(c ** (2.0 * h) * second0 / (2 * system.s**2), 1.0)
    q = np.where(second0 > 0, q, 0.0)  # a state at 0 stays there, whatever c (inf * 0)
    return float(np.sum(np.maximum(system.rewards(H) - (1.0 - q), 0.0)))


def worst_case_gap(
    system: LinearClosedLoop, H: int, delta: float, *, restarts: int = 8, seed: SeedLike = 0
) -> WorstCaseGap:
    r"""Worst reward gap over linear perturbations :math:`\|D\|_{op} \le \delta`.

    Scalar systems (``n = m = 1``) are solved exactly: the closed-loop law depends on
    :math:`c = a + b(k + D)` only through :math:`c^{2h}` (mean :math:`c^h m_0`, variance
    :math:`c^{2h} v_0`), and the bump reward decreases in :math:`|x|`, so :math:`J_H` decreases
    in :math:`|c|` and the worst :math:`D` pushes :math:`|c|` up:
    :math:`D = \delta\,\mathrm{sign}(b(a + bk))`.

    Otherwise :math:`D = \delta\, W/\max(1, \|W\|_{op})` is optimized from ``restarts`` random
    starts (Nelder-Mead); the attained gap is a certified *lower* bound on the worst case (which
    is all an existence statement such as Prop. 3.1 needs). In both cases ``upper`` is the
    certificate :math:`\sum_h \big[\mathbb E\, r(x^\star_h) - 1 + \min(1, c^{2h}\mathbb E\|x_0\|^2/(2s^2))\big]_+`
    with :math:`c = \|A + BK\|_{op} + \|B\|_{op}\delta`, from :math:`r \ge 1 - \|x\|^2/(2s^2)`.
    """
    H = check_int("H", H, 1)
    delta = float(check_range("delta", delta, 0.0))
    restarts = check_int("restarts", restarts, 1)
    J0 = system.J(H)
    if system.n == 1 and system.m == 1:
        c0 = float(system.closed_loop()[0, 0])
        direction = np.sign(system.B[0, 0] * c0) or 1.0
        D = np.array([[direction * delta]])
        exact = True
    else:
        rng = np.random.default_rng(seed_sequence(seed))
        shape = (system.m, system.n)

        def project(w):
            W = w.reshape(shape)
            return delta * W / max(1.0, np.linalg.norm(W, 2))

        best_D, best = np.zeros(shape), 0.0
        for _ in range(restarts):
            w0 = rng.standard_normal(shape)
            w0 /= np.linalg.norm(w0, 2)
            res = optimize.minimize(
                lambda w: system.J(H, project(w)),
                w0.ravel(),
                method="Nelder-Mead",
                options={"xatol": 1e-6, "fatol": 1e-12, "maxiter": 400 * w0.size},
            )
            gap = J0 - system.J(H, project(res.x))
            if gap > best:
                best, best_D = gap, project(res.x)
        D, exact = best_D, False
    return WorstCaseGap(
        H=H,
        delta=delta,
        D=D,
        gap=J0 - system.J(H, D),
        upper=_gap_upper(system, H, delta),
        exact=exact,
        loss=system.imitation_loss(H, D),
        loss_bound=system.loss_bound(H, delta),
    )


@dataclass(frozen=True)
class GrowthFit:
    r"""Least-squares fit :math:`\log \mathrm{gap} = c + \kappa\, H\delta + \lambda \log\delta`.

    ``kappa`` is the fitted exponent of :math:`e^{\kappa H\delta}` with its regression standard
    error ``kappa_se``; ``used`` marks the grid points inside the exponential regime.
    """

    kappa: float
    kappa_se: float
    lam: float
    intercept: float
    r2: float
    used: np.ndarray


@dataclass(frozen=True)
class Prop31Table:
    """Worst-case gaps on an ``H`` x ``delta`` grid (arrays of shape ``(len(H), len(delta))``).

    ``overflow`` marks the grid points where a value overflowed float64 and is reported as ``inf``.
    """

    system: LinearClosedLoop
    H: np.ndarray
    delta: np.ndarray
    gap: np.ndarray
    upper: np.ndarray
    loss: np.ndarray
    loss_bound: np.ndarray
    ceiling: np.ndarray
    exact: bool

    @property
    def overflow(self) -> np.ndarray:
        finite = np.isfinite(self.gap) & np.isfinite(self.upper) & np.isfinite(self.loss) & np.isfinite(self.loss_bound)
        return ~finite

    def rows(self) -> list[dict]:
        inf = lambda v: float(v) if np.isfinite(v) else math.inf  # noqa: E731 (overflow is inf, never NaN)
        with np.errstate(over="ignore", invalid="ignore"):
            return [
                {
                    "H": int(H),
                    "delta": float(d),
                    "H*delta": inf(H * d),
                    "gap": float(self.gap[i, j]),
                    "gap_upper": float(self.upper[i, j]),
                    "ceiling": float(self.ceiling[i]),
                    "loss_bc": float(self.loss[i, j]),
                    "loss/(H delta^2)": inf(self.loss[i, j] / (H * d * d)),
                }
                for i, H in enumerate(self.H)
                for j, d in enumerate(self.delta)
            ]

    def fit(self, *, min_Hdelta: float = 1.0, max_fraction: float = 0.1) -> GrowthFit:
        r"""Fit the exponent on points with :math:`H\delta \ge` ``min_Hdelta`` and gap below
        ``max_fraction`` of its ceiling :math:`\sum_h \mathbb E\, r(x^\star_h)` (pre-saturation)."""
        with np.errstate(over="ignore"):  # a huge delta gives H delta = inf, outside the regime anyway
            Hd = self.H[:, None] * self.delta[None, :]
        logd = np.broadcast_to(np.log(self.delta)[None, :], Hd.shape)
        used = (Hd >= min_Hdelta) & (self.gap > 0) & (self.gap <= max_fraction * self.ceiling[:, None])
        if used.sum() < 4:
            raise ValueError(
                f"only {int(used.sum())} grid points lie in the exponential regime "
                f"(H*delta >= {min_Hdelta}, gap <= {max_fraction} x ceiling); at least 4 are needed: "
                "widen the H or delta grid"
            )
        X = np.column_stack([np.ones(used.sum()), Hd[used], logd[used]])
        y = np.log(self.gap[used])
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        resid = y - X @ coef
        dof = max(len(y) - 3, 1)
        cov = (resid @ resid / dof) * np.linalg.pinv(X.T @ X)
        r2 = 1.0 - resid @ resid / max(np.sum((y - y.mean()) ** 2), 1e-300)
        return GrowthFit(
            kappa=float(coef[1]),
            kappa_se=float(np.sqrt(cov[1, 1])),
            lam=float(coef[2]),
            intercept=float(coef[0]),
            r2=float(r2),
            used=used,
        )


def prop31_table(system: LinearClosedLoop, H_grid, delta_grid, *, restarts: int = 8, seed: SeedLike = 0) -> Prop31Table:
    """Worst-case gap, its certificate and the imitation loss on every (H, delta) of the grids."""
    H_arr = np.array([check_int("H", h, 1) for h in np.atleast_1d(H_grid)])
    d_arr = check_positive("delta", np.atleast_1d(delta_grid)).astype(float)
    shape = (len(H_arr), len(d_arr))
    gap, upper, loss, bound = (np.empty(shape) for _ in range(4))
    exact = True
    for i, H in enumerate(H_arr):
        for j, d in enumerate(d_arr):
            w = worst_case_gap(system, int(H), float(d), restarts=restarts, seed=seed)
            gap[i, j], upper[i, j], loss[i, j], bound[i, j] = w.gap, w.upper, w.loss, w.loss_bound
            exact &= w.exact
    ceiling = np.array([system.J(int(H)) for H in H_arr])
    return Prop31Table(
        system=system,
        H=H_arr,
        delta=d_arr,
        gap=gap,
        upper=upper,
        loss=loss,
        loss_bound=bound,
        ceiling=ceiling,
        exact=exact,
    )
