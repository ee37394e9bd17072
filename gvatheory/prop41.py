r"""Paper Prop. 4.1 on the cliff problem: the statement as written, and a precise version, exactly.

Block et al. (ICLR 2024, arXiv 2310.11428), Prop. 4.1 (informal): for SGD on the cliff problem of
:mod:`gvatheory.cliff` with step :math:`\eta` and an EMA with weight :math:`\gamma`,
:math:`\mathbb{E}\ell_{bc}(\theta_T) = \Theta(\eta)`, :math:`\mathbb{E}\ell_{bc}(\bar\theta_T) = \Theta(\gamma)`, and
when :math:`\eta > c_1\varepsilon` and :math:`\gamma\log(C/\gamma) \le c_2\varepsilon`,

.. math::

    \mathbb{E}[J^\star - J(\theta_T)] \ge C/2, \qquad \mathbb{E}[J^\star - J(\bar\theta_T)] = O(\gamma).

:func:`prop41_as_written` tests the text on a wide grid and on computed counterexample families;
:func:`prop41_precise` checks, at every grid point and from exact gaps, a precise version whose
conditions compare :math:`\sigma^2\eta` and :math:`\sigma^2\gamma` with :math:`\varepsilon^2`
(:func:`precise_sgd_margin`, :func:`precise_ema_margin`; proofs in ``docs/cliff.md``).
:func:`gap_curves` traces both gaps against :math:`\eta` and :math:`\gamma` for the figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

from ._checks import check_int, check_range
from .cliff import sgd_expectation

__all__ = [
    "MEDIAN_CHI2_1",
    "C1_STATIONARY",
    "C1_FINITE",
    "log_plus",
    "precise_sgd_margin",
    "precise_ema_margin",
    "Prop41Grid",
    "default_grid",
    "Prop41Precise",
    "prop41_precise",
    "gamma_at_text_boundary",
    "Prop41AsWritten",
    "prop41_as_written",
    "GapCurves",
    "gap_curves",
]

#: Median of the chi-square law with one degree of freedom: :math:`\Pr(Z^2 \le m_1) = 1/2`.
MEDIAN_CHI2_1 = float(stats.chi2.median(1))

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
    return Prop41Grid(
        eta=tuple(np.logspace(-3, 0, n)),
        gamma=tuple(np.logspace(-4, 0, n + 2)),
        eps=tuple(np.logspace(-2, 1, n)),
        C=(1e-2, 1.0, 1e2),
        sigma=(0.1, 1.0, 10.0),
        d=(1, 3) if quick else (1, 2, 5),
        T=(None, 10, 1000) if quick else (None, 1, 10, 100, 1000),
    )


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
    return Prop41Precise(
        grid=grid,
        n_points=int(sx.size),
        loss_theta=(float(lt[0]), float(lt[1])),
        loss_ema=(float(le[0]), float(le[1])),
        sgd_gap=float(np.min(sy[on_s])) if np.any(on_s) else float("nan"),
        sgd_active=int(on_s.sum()),
        ema_gap=float(np.max(ey[on_e])) if np.any(on_e) else float("nan"),
        ema_active=int(on_e.sum()),
        sgd_x=sx,
        sgd_y=sy,
        sgd_stationary=st,
        ema_x=ex,
        ema_y=ey,
    )


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
        sigma=tuple(grid.sigma),
        loss_theta_ratio=tuple(lt),
        loss_ema_ratio=tuple(le),
        c1_values=c1_values,
        c1_needed=tuple(needed),
        loss_family={"eta": eta_f, "ratio": ema_f.ema.loss_bc / 0.1},
        theta_family={"c1": c1, "eps": eps_t, "sigma": eps_t / 2, "gap_over_C": theta_t.gap / C_t},
        c2_values=c2_values,
        ema_eps=eps_e,
        ema_gamma=gam,
        ema_ratio=ema_e.gap / gam,
    )


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


def gap_curves(
    *,
    eps: float,
    C: float,
    sigma: float,
    eta0: float,
    gamma0: float,
    T: int | None = None,
    d: int = 1,
    c1: float = 1.0,
    c2: float = 1.0,
    n: int = 200,
) -> GapCurves:
    """Exact gaps on ``eta`` in [1e-4, 1] (at ``gamma0``) and ``gamma`` in [1e-5, 1] (at ``eta0``)."""
    n = check_int("n", n, minimum=2)
    c1, c2 = (float(check_range(name, c, 0.0, math.inf, low_open=True)) for name, c in (("c1", c1), ("c2", c2)))
    eta = np.logspace(-4, 0, n)
    gamma = np.logspace(-5, 0, n)
    by_eta = sgd_expectation(eta=eta, gamma=gamma0, sigma=sigma, eps=eps, C=C, T=T, d=d)
    by_gamma = sgd_expectation(eta=eta0, gamma=gamma, sigma=sigma, eps=eps, C=C, T=T, d=d)
    return GapCurves(
        eps=float(eps),
        C=float(C),
        sigma=float(sigma),
        d=d,
        T=T,
        eta0=float(eta0),
        gamma0=float(gamma0),
        c1=float(c1),
        c2=float(c2),
        eta=eta,
        theta_vs_eta=by_eta.theta.gap,
        ema_vs_eta=by_eta.ema.gap,
        gamma=gamma,
        theta_vs_gamma=by_gamma.theta.gap,
        ema_vs_gamma=by_gamma.ema.gap,
    )
