r"""Symbolic derivation (sympy) of the scalar SGD + EMA moment formulas of :mod:`gvatheory.averaging`.

Starting from the recursion alone,

.. math::

    x_{t+1} = a\,x_t - \eta\sigma\xi_t, \qquad e_{t+1} = b\,e_t + \gamma x_{t+1}, \qquad
    a = 1 - \eta h,\; b = 1 - \gamma,

with :math:`x = \theta - \mu`, :math:`e = \bar\theta - \mu` and :math:`\xi_t` of unit variance,
the covariance :math:`P` of :math:`(x, e)` obeys :math:`P' = MPM^\top + \sigma^2 BB^\top`. This
module solves the fixed point :math:`P = MPM^\top + \sigma^2 BB^\top` for the stationary
variances, writes the one-step map of the moments as a matrix, and takes the small-step limit
of :math:`\operatorname{Var}\bar\theta / \operatorname{Var}\theta` that underlies the EMA's
advantage in the paper's Prop. 4.1. The tests check that the numeric closed forms equal these
derivations exactly (``simplify(difference) == 0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp


@dataclass(frozen=True)
class ScalarSymbols:
    """The symbols of the scalar model: curvature, noise scale, step size, EMA weight."""

    h: sp.Symbol
    sigma: sp.Symbol
    eta: sp.Symbol
    gamma: sp.Symbol


def scalar_symbols() -> ScalarSymbols:
    """Positive symbols ``h, sigma, eta, gamma``."""
    h, sigma, eta, gamma = sp.symbols("h sigma eta gamma", positive=True)
    return ScalarSymbols(h=h, sigma=sigma, eta=eta, gamma=gamma)


def _one_step(s: ScalarSymbols) -> tuple[sp.Matrix, sp.Matrix]:
    """``M, B`` with :math:`(x, e)' = M (x, e) + B\\xi`, read off from the recursion."""
    a, b = 1 - s.eta * s.h, 1 - s.gamma
    # x' = a x - eta sigma xi ; e' = b e + gamma x' = gamma a x + b e - gamma eta sigma xi
    M = sp.Matrix([[a, 0], [s.gamma * a, b]])
    B = sp.Matrix([-s.eta * s.sigma, -s.gamma * s.eta * s.sigma])
    return M, B


def stationary_scalar(s: ScalarSymbols | None = None) -> dict[str, sp.Expr]:
    r"""Stationary ``var_theta``, ``cov`` (theta with EMA) and ``var_ema``, solved from the fixed point."""
    s = s or scalar_symbols()
    vx, c, ve = sp.symbols("V_x C V_e")
    M, B = _one_step(s)
    P = sp.Matrix([[vx, c], [c, ve]])
    residual = M * P * M.T + B * B.T - P
    sol = sp.solve([residual[0, 0], residual[0, 1], residual[1, 1]], [vx, c, ve], dict=True)[0]
    return {"var_theta": sp.factor(sol[vx]), "cov": sp.factor(sol[c]), "var_ema": sp.factor(sol[ve])}


def moment_step_matrix(s: ScalarSymbols | None = None) -> sp.Matrix:
    r"""The 6x6 matrix mapping ``(m_x, m_e, V_x, C, V_e, 1)`` at step t to step t+1."""
    s = s or scalar_symbols()
    mx, me, vx, c, ve = sp.symbols("m_x m_e V_x C V_e")
    M, B = _one_step(s)
    mean = M * sp.Matrix([mx, me])
    P = M * sp.Matrix([[vx, c], [c, ve]]) * M.T + B * B.T
    new = [mean[0], mean[1], P[0, 0], P[0, 1], P[1, 1]]
    A, rhs = sp.linear_eq_to_matrix([sp.expand(v) for v in new], [mx, me, vx, c, ve])
    return (A.row_join(-rhs)).col_join(sp.Matrix([[0, 0, 0, 0, 0, 1]]))


def small_step_variance_ratio(s: ScalarSymbols | None = None) -> sp.Expr:
    r""":math:`\lim_{\epsilon\to0}\operatorname{Var}\bar\theta/\operatorname{Var}\theta` with
    :math:`\eta = \epsilon`, :math:`\gamma = \kappa\epsilon`; returned as a function of ``kappa`` and ``h``
    (it is :math:`\kappa/(\kappa + h)`, i.e. :math:`\gamma/(\gamma + \eta h)`)."""
    s = s or scalar_symbols()
    eps, kappa = sp.symbols("epsilon kappa", positive=True)
    law = stationary_scalar(s)
    ratio = (law["var_ema"] / law["var_theta"]).subs({s.eta: eps, s.gamma: kappa * eps})
    return sp.simplify(sp.limit(sp.simplify(ratio), eps, 0))
