"""The cliff problem: exact Gaussian expectations and SGD/EMA gaps, against quadrature and Monte Carlo.

Monte Carlo comparisons use fixed seeds and a tolerance of 4 standard errors (|z| <= 4).
"""

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats

from gvatheory.cliff import CliffProblem, agreement_z, gaussian_expectation, sgd_expectation, sgd_monte_carlo
from validation.cli import main

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


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mu=0.0, eps=0.0, C=1.0), "eps=0.0 is out of range"),
        (dict(mu=0.0, eps=-1.0, C=1.0), "eps"),
        (dict(mu=0.0, eps=2.0, C=3.0), r"C=3 is out of range: must be in \[eps\*\*2, inf\) = \[4, inf\)"),
        (dict(mu=float("nan"), eps=1.0, C=1.0), "mu=nan must be finite"),
        (dict(mu=0.0, eps=1.0, C=float("inf")), "C=inf must be finite"),
        (dict(mu=[[0.0]], eps=1.0, C=1.0), "mu has shape"),
    ],
)
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


def test_overflowed_law_is_off_the_cliff():
    # An infinite variance or distance (an overflowed moment) has left every ball: p_off = 1, gap = C.
    e = gaussian_expectation([np.inf, 0.5, np.inf], [1.0, np.inf, np.inf], eps=1.0, C=3.0, d=2)
    np.testing.assert_array_equal(e.p_off, 1.0)
    np.testing.assert_array_equal(e.gap, 3.0)
    np.testing.assert_array_equal(e.loss_bc, np.inf)
    with pytest.raises(ValueError, match="var=nan is out of range"):
        gaussian_expectation(0.0, np.nan, eps=1.0, C=1.0)


# ---------------------------------------------------------------- SGD and its EMA on the cliff


def test_sgd_first_two_steps_by_hand():
    # theta_1 - mu = (1-eta) o - eta sigma xi_0, ema_1 = (1-gamma) theta_0 + gamma theta_1, and one more step.
    eta, gamma, sigma, o, eps, C = 0.3, 0.4, 0.7, 0.25, 0.3, 1.5
    a, b = 1 - eta, 1 - gamma
    hand = {
        1: ((a * o, (eta * sigma) ** 2), (b * o + gamma * a * o, (gamma * eta * sigma) ** 2)),
        2: (
            (a * a * o, (eta * sigma) ** 2 * (a * a + 1)),
            (b * b * o + b * gamma * a * o + gamma * a * a * o, (eta * sigma * gamma) ** 2 * ((b + a) ** 2 + 1)),
        ),
    }
    for T, ((mt, vt), (me, ve)) in hand.items():
        got = sgd_expectation(eta=eta, gamma=gamma, sigma=sigma, eps=eps, C=C, T=T, offset0=o)
        want_t = gaussian_expectation(mt**2, vt, eps=eps, C=C)
        want_e = gaussian_expectation(me**2, ve, eps=eps, C=C)
        assert got.theta.gap == pytest.approx(want_t.gap, rel=1e-12)
        assert got.ema.gap == pytest.approx(want_e.gap, rel=1e-12)
        assert got.ema.loss_bc == pytest.approx(0.5 * (me**2 + ve), rel=1e-12)


def test_noiseless_sgd_is_deterministic():
    # sigma = 0: theta_T - mu = (1-eta)^T o exactly, so the gap is its square on the cliff and C off it.
    eta, o, T = 0.2, 0.5, 3
    got = sgd_expectation(eta=eta, gamma=1.0, sigma=0.0, eps=0.3, C=2.0, T=T, offset0=o)
    assert got.theta.gap == pytest.approx(((1 - eta) ** T * o) ** 2, rel=1e-12)
    assert sgd_expectation(eta=eta, gamma=1.0, sigma=0.0, eps=0.3, C=2.0, T=1, offset0=o).theta.gap == 2.0


def test_stationary_loss_by_hand_and_as_limit():
    eta, gamma, sigma = 0.05, 0.01, 1.3
    stat = sgd_expectation(eta=eta, gamma=gamma, sigma=sigma, eps=0.2, C=1.0, d=3)
    # Var(theta_inf) = sigma^2 eta / (2 - eta) per coordinate.
    assert stat.theta.loss_bc == pytest.approx(1.5 * sigma**2 * eta / (2 - eta), rel=1e-12)
    late = sgd_expectation(eta=eta, gamma=gamma, sigma=sigma, eps=0.2, C=1.0, d=3, T=20_000, offset0=1.0)
    for it in ("theta", "ema"):
        assert getattr(late, it).gap == pytest.approx(getattr(stat, it).gap, rel=1e-9)


SGD_MC_CASES = [  # (mu, eps, C, eta, gamma, sigma, T, theta0)
    (0.0, 0.3, 1.0, 0.1, 0.01, 1.0, 200, 0.0),
    (0.5, 0.2, 2.0, 0.5, 0.1, 0.4, 40, 0.9),
    (0.0, 0.1, 1.0, 1.5, 0.3, 0.2, 25, 0.05),
    ([0.0, 1.0, -1.0], 0.5, 1.0, 0.1, 0.02, 1.0, 150, [0.2, 0.9, -1.1]),
]


@pytest.mark.parametrize("case", range(len(SGD_MC_CASES)))
def test_sgd_exact_matches_monte_carlo(case):
    mu, eps, C, eta, gamma, sigma, T, theta0 = SGD_MC_CASES[case]
    p = CliffProblem(mu, eps, C)
    exact = p.sgd(eta=eta, gamma=gamma, sigma=sigma, T=T, theta0=theta0)
    mc = sgd_monte_carlo(p, eta=eta, gamma=gamma, sigma=sigma, T=T, chains=20_000, seed=100 + case, theta0=theta0)
    for it in ("theta", "ema"):
        z = agreement_z(getattr(mc, it), getattr(exact, it))
        assert max(abs(v) for v in z.values()) <= 4.0, (it, z)


def test_agreement_z_handles_degenerate_samples():
    # Every chain on the cliff while the exact p_off is 1e-11: the proportion test says consistent.
    p = CliffProblem(0.0, 1.0, 2.0)
    exact = p.expected(0.0, 0.02)
    z = agreement_z(p.monte_carlo(np.random.default_rng(0).normal(0, np.sqrt(0.02), 4000)), exact)
    assert exact.p_off > 0 and abs(z["p_off"]) < 1e-3
    # Every chain off the cliff but the exact law puts mass 1/2 on it: flagged.
    z = agreement_z(p.monte_carlo(np.full(100, 3.0)), p.expected(1.0, 0.02))
    assert abs(z["gap"]) > 4 and abs(z["p_off"]) > 4


def test_sgd_monte_carlo_is_seeded():
    p = CliffProblem([0.0, 0.0], 0.3, 1.0)
    kw = dict(eta=0.2, gamma=0.1, sigma=1.0, T=30, chains=500)
    a, b = sgd_monte_carlo(p, seed=7, **kw), sgd_monte_carlo(p, seed=7, **kw)
    c = sgd_monte_carlo(p, seed=8, **kw)
    assert a.ema.gap.mean == b.ema.gap.mean and a.theta.gap.mean == b.theta.gap.mean
    assert a.ema.gap.mean != c.ema.gap.mean


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(eta=0.0), r"eta=0.0 is out of range: must be in \(0, 2\)"),
        (dict(eta=2.0), "eta=2.0 is out of range"),
        (dict(gamma=0.0), r"gamma=0.0 is out of range: must be in \(0, 1\]"),
        (dict(gamma=1.5), "gamma=1.5"),
        (dict(sigma=-1.0), "sigma=-1.0"),
        (dict(T=-1), "T=-1"),
        (dict(offset0=-0.1), "offset0=-0.1"),
    ],
)
def test_bad_sgd_inputs(kwargs, match):
    base = dict(eta=0.1, gamma=0.1, sigma=1.0, eps=0.1, C=1.0, T=5)
    with pytest.raises(ValueError, match=match):
        sgd_expectation(**(base | kwargs))


def test_monte_carlo_needs_finite_T():
    with pytest.raises(ValueError, match="T=None"):
        sgd_monte_carlo(CliffProblem(0.0, 0.1, 1.0), eta=0.1, gamma=0.1, sigma=1.0, T=None, chains=10, seed=0)


# ---------------------------------------------------------------- command line


def test_cli_cliff_table_and_json(capsys, tmp_path):
    args = ["theory", "cliff", "--steps", "300", "--chains", "4000", "--quiet", "--plot", str(tmp_path / "c.png")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "E[J*-J]" in out and "exact within 4 SE: yes" in out
    assert (tmp_path / "c.png").stat().st_size > 0
    assert (
        main(["theory", "cliff", "--d", "3", "--eps", "0.4", "--steps", "50", "--chains", "2000", "--json", "-q"]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["rows"]) == 6 and doc["exact within 4 SE"] is True
