"""The numeric closed forms of gvatheory.averaging equal the sympy derivation exactly."""

import numpy as np
import pytest
import sympy as sp

from gvatheory._averaging_scalar import _scalar_step_matrix, _stationary_formulas, scalar_stationary
from gvatheory.symbolic import moment_step_matrix, scalar_symbols, small_step_variance_ratio, stationary_scalar


def test_stationary_formulas_equal_derivation():
    s = scalar_symbols()
    derived = stationary_scalar(s)
    numeric = dict(zip(("var_theta", "cov", "var_ema"), _stationary_formulas(s.h, s.sigma, s.eta, s.gamma)))
    for name, expr in derived.items():
        assert sp.simplify(numeric[name] - expr) == 0, name


@pytest.mark.parametrize("point", [(1.0, 0.5, 0.1, 0.01), (2.5, 1.3, 0.7, 0.2), (0.3, 0.2, 6.0, 1.0)])
def test_stationary_spot_checks(point):
    s = scalar_symbols()
    derived = stationary_scalar(s)
    subs = dict(zip((s.h, s.sigma, s.eta, s.gamma), map(sp.Rational, map(str, point))))
    num = scalar_stationary(*point)
    for name in ("var_theta", "cov", "var_ema"):
        assert getattr(num, name) == pytest.approx(float(derived[name].subs(subs)), rel=1e-13)


def test_step_matrix_equals_derivation():
    s = scalar_symbols()
    derived = moment_step_matrix(s)
    f = sp.lambdify((s.h, s.sigma, s.eta, s.gamma), derived, "numpy")
    rng = np.random.default_rng(0)
    for _ in range(5):
        p = (rng.uniform(0.1, 3), rng.uniform(0, 2), rng.uniform(0.01, 0.6), rng.uniform(0.01, 1))
        np.testing.assert_allclose(_scalar_step_matrix(*p), np.array(f(*p), dtype=float), rtol=1e-14, atol=1e-15)


def test_small_step_variance_ratio_is_gamma_over_gamma_plus_eta_h():
    s = scalar_symbols()
    kappa = sp.Symbol("kappa", positive=True)
    assert sp.simplify(small_step_variance_ratio(s) - kappa / (kappa + s.h)) == 0
