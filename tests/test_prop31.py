import numpy as np
import pytest

from gvatheory.prop31 import LinearClosedLoop, prop31_system, prop31_table, worst_case_gap


def _two_dim(x0_cov=None):
    return LinearClosedLoop(
        A=[[1.0, 0.5], [0.0, 0.9]], B=[[0.0], [1.0]], K=[[-0.1, -0.3]], s=0.7, x0_mean=[0.2, -0.1], x0_cov=x0_cov
    )


def test_exact_J_matches_rollout_deterministic():
    sys = _two_dim()
    D = np.array([[0.05, -0.02]])
    rollout = sys.simulate(30, sys.x0_mean[None, :], lambda x: x @ D.T)[0]
    np.testing.assert_allclose(sys.rewards(30, D), rollout, rtol=1e-12)
    assert sys.J(30, D) == pytest.approx(rollout.sum(), rel=1e-12)


def test_first_steps_by_hand():
    a, b, k, d, x0, s = 1.1, 0.5, -0.4, 0.03, 0.3, 0.8
    sys = prop31_system(a=a, b=b, k=k, x0=x0, s=s)
    r = lambda x: np.exp(-x * x / (2 * s * s))
    x1 = (a + b * (k + d)) * x0
    assert sys.J(1, [[d]]) == pytest.approx(r(x0), rel=1e-14)
    assert sys.J(2, [[d]]) == pytest.approx(r(x0) + r(x1), rel=1e-14)
    # imitation loss under the expert's states x*_0 = x0, x*_1 = (a + b k) x0
    assert sys.imitation_loss(1, [[d]]) == pytest.approx(d * d * x0 * x0, rel=1e-14)
    assert sys.imitation_loss(2, [[d]]) == pytest.approx(d * d * x0 * x0 * (1 + (a + b * k) ** 2), rel=1e-14)


def test_gaussian_expected_reward_by_hand():
    # scalar: E exp(-x^2/2s^2), x ~ N(m, v) = (1 + v/s^2)^(-1/2) exp(-m^2 / (2 (s^2 + v)))
    sys = prop31_system(x0=0.4, x0_sd=0.3, s=0.5)
    m, v, s = 0.4, 0.09, 0.5
    assert sys.J(1) == pytest.approx((1 + v / s**2) ** -0.5 * np.exp(-m * m / (2 * (s * s + v))), rel=1e-13)


def test_imitation_loss_random_states_matches_monte_carlo():
    cov = np.array([[0.04, 0.01], [0.01, 0.02]])
    sys = _two_dim(cov)
    D = np.array([[0.2, -0.1]])
    rng = np.random.default_rng(5)
    x = rng.multivariate_normal(sys.x0_mean, cov, size=20000)
    per = np.zeros(len(x))
    for _ in range(6):
        per += ((x @ D.T) ** 2).sum(axis=1)
        x = x @ (sys.A + sys.B @ sys.K).T
    se = per.std(ddof=1) / np.sqrt(len(per))
    assert abs(per.mean() - sys.imitation_loss(6, D)) <= 4 * se


@pytest.mark.parametrize("H", [1, 5, 40])
def test_monte_carlo_twin_random_initial_states(H):
    cov = np.array([[0.3, 0.05], [0.05, 0.2]])
    sys = _two_dim(cov)
    D = np.array([[0.1, 0.05]])
    est = sys.monte_carlo_J(H, D, n=20000, seed=11)
    assert est.agrees(sys.J(H, D), n_se=4.0), (est, sys.J(H, D))


def test_prop31_construction_and_worst_case():
    sys = prop31_system(x0=0.01)
    H, delta = 200, 0.02
    w = worst_case_gap(sys, H, delta)
    assert w.exact and w.D[0, 0] == delta
    # loss is H delta^2 x0^2; gap sits between the exact small-state formula's value and the certificate
    assert w.loss == pytest.approx(H * delta**2 * 1e-4, rel=1e-12)
    assert w.loss <= w.loss_bound * (1 + 1e-12)
    assert 0 < w.gap <= w.upper
    # no D in the ball does worse: a grid over [-delta, delta]
    grid = [sys.J(H) - sys.J(H, [[d]]) for d in np.linspace(-delta, delta, 41)]
    assert max(grid) == pytest.approx(w.gap, rel=1e-12)


def test_multi_dim_optimizer_is_certified():
    sys = _two_dim(np.eye(2) * 1e-3)
    w = worst_case_gap(sys, 30, 0.05, restarts=3, seed=1)
    assert not w.exact
    assert np.linalg.norm(w.D, 2) <= 0.05 * (1 + 1e-9)
    assert 0 < w.gap <= w.upper
    # the optimizer beats random feasible directions
    rng = np.random.default_rng(0)
    for _ in range(20):
        W = rng.standard_normal((1, 2))
        D = 0.05 * W / np.linalg.norm(W, 2)
        assert sys.J(30) - sys.J(30, D) <= w.gap + 1e-12


def test_gap_grows_exponentially_then_saturates():
    sys = prop31_system(x0=0.01)
    table = prop31_table(sys, [50, 100, 200, 400, 800], [0.005, 0.01, 0.02, 0.04])
    fit = table.fit()
    # small-state expansion: gap ~ exp(2 H log(1 + delta)) / delta, so kappa ~ 2, lambda ~ -1
    assert abs(fit.kappa - 2.0) < 0.25 and abs(fit.lam + 1.0) < 0.25
    assert np.all(table.gap <= table.ceiling[:, None])
    assert np.all(table.gap <= table.upper * (1 + 1e-12))


def test_unstable_loop_overflow_gives_zero_reward():
    sys = prop31_system(a=3.0, x0=1.0)
    r = sys.rewards(2000)
    assert np.all(np.isfinite(r)) and r[-1] == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="s="):
        prop31_system(s=0.0)
    with pytest.raises(ValueError, match="H=0"):
        prop31_system().J(0)
    with pytest.raises(ValueError, match="delta="):
        worst_case_gap(prop31_system(), 10, -0.1)
    with pytest.raises(ValueError, match="K has shape"):
        LinearClosedLoop(A=np.eye(2), B=[[0.0], [1.0]], K=[[1.0]], s=1.0, x0_mean=[0, 0])
    with pytest.raises(ValueError, match="x0_cov"):
        LinearClosedLoop(A=[[1.0]], B=[[1.0]], K=[[0.0]], s=1.0, x0_mean=[0], x0_cov=[[-1.0]])
    with pytest.raises(ValueError, match="exponential regime"):
        prop31_table(prop31_system(), [10], [0.01]).fit()


def test_cli_prop31_table_json_plot(capsys, tmp_path):
    import json

    from validation.cli import main

    assert (
        main(
            [
                "theory",
                "prop31",
                "--H",
                "50",
                "100",
                "200",
                "400",
                "--delta",
                "0.01",
                "0.02",
                "--json",
                "--plot",
                str(tmp_path / "p.png"),
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert len(out["rows"]) == 8 and out["fitted kappa"] > 0
    assert (tmp_path / "p.png").stat().st_size > 0


@pytest.mark.slow
def test_prop31_study_quick_passes(tmp_path):
    from validation.studies.prop31 import run

    section = run(tmp_path, quick=True, seed=0, quiet=True)
    assert section.passed, [v for v in section.verdicts if not v.passed]
    assert all(p.exists() for p in section.figures)
