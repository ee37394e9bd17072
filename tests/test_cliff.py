"""The cliff problem: exact Gaussian expectations, SGD/EMA gaps, and the Prop. 4.1 checks.

Monte Carlo comparisons use fixed seeds and a tolerance of 4 standard errors (|z| <= 4).
"""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from gvatheory.cliff import CliffProblem, gaussian_expectation

# (mean, var, mu, eps, C): on the cliff, straddling the edge, far off, nearly deterministic.
CASES_1D = [
    (0.3, 0.04, 0.3, 0.5, 2.0),
    (1.0, 0.3, 0.3, 0.5, 2.0),
    (0.31, 1e-6, 0.3, 0.5, 0.25),
    (-0.2, 0.5, 0.0, 0.1, 10.0),
    (4.0, 1.0, 0.0, 1.0, 1.0),
    (0.0, 2.0, 0.0, 1.5, 3.0),
]


def _quad_gap(problem, mean, var):
    """E[J* - J] by adaptive quadrature of the reward against the normal density."""
    s = math.sqrt(var)
    lo, hi = problem.mu - problem.eps, problem.mu + problem.eps
    f = lambda t: -problem.reward(t) * stats.norm.pdf(t, mean, s)  # noqa: E731
    return integrate.quad(f, mean - 40 * s, mean + 40 * s, points=[lo, hi], limit=400, epsabs=1e-13, epsrel=1e-11)[0]


# ---------------------------------------------------------------- the problem itself


def test_reward_and_loss_by_hand():
    p = CliffProblem(mu=1.0, eps=0.5, C=3.0)
    assert p.reward(1.2) == pytest.approx(-0.04)
    assert p.reward(1.5) == pytest.approx(-0.25)  # the edge counts as on the cliff
    assert p.reward(1.6) == -3.0
    assert p.loss_bc(1.6) == pytest.approx(0.18)
    q = CliffProblem(mu=[0.0, 0.0], eps=1.0, C=2.0)
    np.testing.assert_allclose(q.reward(np.array([[0.6, 0.0], [0.6, 0.9]])), [-0.36, -2.0])
    assert q.d == 2 and q.mu == (0.0, 0.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(mu=0.0, eps=0.0, C=1.0), "eps=0.0 is out of range"),
    (dict(mu=0.0, eps=-1.0, C=1.0), "eps"),
    (dict(mu=0.0, eps=2.0, C=3.0), r"C=3 is out of range: must be in \[eps\*\*2, inf\) = \[4, inf\)"),
    (dict(mu=float("nan"), eps=1.0, C=1.0), "mu=nan must be finite"),
    (dict(mu=0.0, eps=1.0, C=float("inf")), "C=inf must be finite"),
    (dict(mu=[[0.0]], eps=1.0, C=1.0), "mu has shape"),
])
def test_bad_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CliffProblem(**kwargs)


def test_bad_expectation_inputs():
    with pytest.raises(ValueError, match="var=-0.1 is out of range"):
        gaussian_expectation(0.0, -0.1, eps=1.0, C=1.0)
    with pytest.raises(ValueError, match="C=0.5 is out of range"):
        gaussian_expectation(0.0, 1.0, eps=np.array([0.5, 1.0]), C=0.5)
    with pytest.raises(ValueError, match="method='erf' needs d=1"):
        gaussian_expectation(0.0, 1.0, eps=1.0, C=1.0, d=2, method="erf")
    with pytest.raises(ValueError, match="method='x'"):
        gaussian_expectation(0.0, 1.0, eps=1.0, C=1.0, method="x")


# ---------------------------------------------------------------- exact Gaussian expectations


@pytest.mark.parametrize("mean, var, mu, eps, C", CASES_1D)
def test_erf_form_matches_quadrature(mean, var, mu, eps, C):
    p = CliffProblem(mu, eps, C)
    assert p.expected(mean, var).gap == pytest.approx(_quad_gap(p, mean, var), rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("mean, var, mu, eps, C", CASES_1D)
def test_ncx2_form_at_d1_matches_erf_form(mean, var, mu, eps, C):
    p = CliffProblem(mu, eps, C)
    a, b = p.expected(mean, var, method="erf"), p.expected(mean, var, method="ncx2")
    for field in ("gap", "loss_bc", "p_off"):
        assert getattr(b, field) == pytest.approx(getattr(a, field), rel=1e-9, abs=1e-14)


@pytest.mark.parametrize("d, seed", [(1, 1), (3, 2), (10, 3)])
def test_exact_matches_monte_carlo(d, seed):
    rng = np.random.default_rng(seed)
    p = CliffProblem(mu=list(rng.normal(size=d)) if d > 1 else 0.4, eps=0.8 * math.sqrt(d), C=2.0 * d)
    # Per-coordinate variances around eps^2/d, so the law straddles the cliff edge in every d.
    for mean_shift, f in [(0.1, 0.3), (0.3, 0.8), (1.0, 1.5)]:
        var = f * p.eps**2 / d
        mean = np.asarray(p.mu) + mean_shift / math.sqrt(d)
        samples = mean + math.sqrt(var) * rng.standard_normal((200_000,) + ((d,) if d > 1 else ()))
        exact, mc = p.expected(mean, var), p.monte_carlo(samples)
        for field in ("gap", "loss_bc", "p_off"):
            est = getattr(mc, field)
            assert est.agrees(getattr(exact, field), n_se=4.0), (field, d, var, str(est), getattr(exact, field))


def test_vectorized_matches_pointwise():
    rng = np.random.default_rng(5)
    o2, var, eps = rng.uniform(0, 2, 50), rng.uniform(0, 1, 50), rng.uniform(0.2, 1.5, 50)
    C = eps**2 * rng.uniform(1, 10, 50)
    for d in (1, 4):
        grid = gaussian_expectation(o2, var, eps=eps, C=C, d=d)
        one = [gaussian_expectation(o2[i], var[i], eps=eps[i], C=C[i], d=d).gap for i in range(50)]
        np.testing.assert_allclose(grid.gap, one, rtol=1e-12)
        assert grid.gap.shape == (50,)
    assert gaussian_expectation(o2[:, None], var[None, :10], eps=1.0, C=1.0).gap.shape == (50, 10)


@pytest.mark.parametrize("d", [1, 3])
def test_zero_variance_limit_is_deterministic(d):
    # Deterministic theta: gap = |m - mu|^2 on the cliff, C off it; tiny variance must approach that.
    for offset2, want in [(0.25, 0.25), (0.81, 0.81), (1.21, 5.0)]:
        assert gaussian_expectation(offset2, 0.0, eps=1.0, C=5.0, d=d).gap == want
        assert gaussian_expectation(offset2, 1e-12, eps=1.0, C=5.0, d=d).gap == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("d", [1, 3])
def test_wide_cliff_limit_is_minus_second_moment(d):
    # eps -> inf: J = -|theta - mu|^2 everywhere, so E[J] = -(|m - mu|^2 + d s^2).
    e = gaussian_expectation(0.7, 0.3, eps=60.0, C=3600.0, d=d)
    assert e.reward == pytest.approx(-(0.7 + d * 0.3), rel=1e-12)
    assert e.p_off < 1e-300 or e.p_off == pytest.approx(0.0, abs=1e-300)
