import warnings

import numpy as np
import pytest

from gvatheory.linear_gva import (
    LinearBC,
    delta_method,
    double_integrator,
    gva_experiment,
    predict_moments,
    run_sgd,
    sgd_reference,
    stationary_moments,
)
from gvatheory.stats import chain_keys, estimate


def _problem(**kw):
    A, B, K = double_integrator(kw.pop("rho", 0.995), kw.pop("dt", 0.1))
    return LinearBC(A, B, K, **kw)


def test_double_integrator_poles():
    A, B, K = double_integrator(0.97, 0.2)
    np.testing.assert_allclose(np.linalg.eigvals(A + B @ K), [0.97, 0.97], atol=1e-6)


def test_demonstrations_are_expert_rollouts():
    p = _problem(N=3, traj_len=7, label_noise=0.0, misspec=0.05)
    X, U = p.demonstrations()
    gains = p.expert_gains()
    for j in range(3):
        x = X[7 * j]
        for t in range(7):
            np.testing.assert_allclose(X[7 * j + t], x, atol=1e-12)
            np.testing.assert_allclose(U[7 * j + t], gains[t] @ x, atol=1e-12)
            x = p.A @ x + p.B @ (gains[t] @ x)


def test_loss_bc_exact_fixed_data():
    p = _problem(N=4, traj_len=30, misspec=0.02)
    X, U = p.demonstrations()
    K = p.K_star + np.array([[0.01, -0.03]])
    assert p.loss_bc(K) == pytest.approx(np.mean(np.sum((X @ K.T - U) ** 2, axis=1)), rel=1e-12)
    # K_bar minimizes it, with the normal equations
    Kb = p.K_bar()
    np.testing.assert_allclose(((X @ Kb.T - U).T @ X), 0.0, atol=1e-9)
    assert p.loss_bc(Kb) < p.loss_bc(K)


def test_fresh_moments_and_loss_match_monte_carlo():
    p = _problem(N=None, traj_len=40, misspec=0.05, label_noise=0.2)
    x, u = p.sample(np.random.default_rng(1), (200_000,))
    Sxx, Sux, suu = p.moments()
    assert estimate(x[:, :, None] * x[:, None, :]).agrees(Sxx)
    assert estimate(u[:, :, None] * x[:, None, :]).agrees(Sux)
    K = p.K_star + np.array([[0.02, 0.05]])
    assert estimate(np.sum((x @ K.T - u) ** 2, axis=1)).agrees(p.loss_bc(K))


@pytest.mark.parametrize("N", [None, 6])
def test_gradient_noise_covariance_matches_monte_carlo(N):
    p = _problem(N=N, traj_len=25, misspec=0.1, label_noise=0.3)
    Kb = p.K_bar()
    x, u = p.sample(np.random.default_rng(2), (200_000,))
    g = (2 * (x @ Kb.T - u)[:, :, None] * x[:, None, :]).reshape(len(x), -1)
    assert estimate(g).agrees(np.zeros(2))  # the mean gradient vanishes at K_bar
    C = p.gradient_noise_cov()
    assert estimate(g[:, :, None] * g[:, None, :]).agrees(C)


def test_cost_doubling_matches_plain_loop_and_rollouts():
    p = _problem(cost_x0_cov=[[0.5, 0.1], [0.1, 0.3]], R=[[2.0]])
    K = np.stack([p.K_star, p.K_star + [[-0.01, 0.02]], p.K_star + [[0.003, 0.01]]])
    Hs = [1, 2, 3, 7, 64, 100, 257]
    vals = p.cost(K, Hs).value
    for i in range(3):
        for k, H in enumerate(Hs):
            assert vals[i, k] == pytest.approx(p.cost_reference(K[i], H), rel=1e-10)
    # H=2 by hand: tr(Qk W) + tr(M^T Qk M W)
    M, Qk = p.A + p.B @ K[1], p.Q + K[1].T @ p.R @ K[1]
    assert p.cost(K[1], 2).value == pytest.approx(np.trace(Qk @ p.cost_x0_cov) + np.trace(M.T @ Qk @ M @ p.cost_x0_cov))
    # Monte Carlo rollouts from x0 ~ N(0, W)
    rng = np.random.default_rng(3)
    x = rng.multivariate_normal(np.zeros(2), p.cost_x0_cov, size=20000)
    total = np.zeros(len(x))
    for _ in range(100):
        u = x @ K[2].T
        total += np.sum(x * (x @ p.Q), axis=1) + np.sum(u * (u @ p.R), axis=1)
        x = x @ p.A.T + u @ p.B.T
    assert estimate(total).agrees(p.cost(K[2], 100).value)


def test_overflow_is_inf_with_flag_and_no_warning():
    p = _problem()
    K = np.stack([p.K_star, np.array([[5.0, 5.0]])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = p.cost(K, [10, 100_000])
    assert np.isfinite(c.value[0]).all() and not c.overflow[0].any()
    assert np.isfinite(c.value[1, 0]) and c.value[1, 1] == np.inf and c.overflow[1, 1]


def test_divergent_step_size_is_refused_unless_allowed():
    p = _problem()
    limit = 2 / np.linalg.eigvalsh(p.hessian()).max()
    for call in (
        lambda: run_sgd(p, eta=5.0, gamma=0.1, batch_size=2, steps=10, chains=2),
        lambda: predict_moments(p, eta=5.0, gamma=0.1, batch_size=2, steps=10),
        lambda: gva_experiment(p, eta=5.0, gamma=0.1, batch_size=2, steps=10, chains=2, H=[10]),
    ):
        with pytest.raises(ValueError, match=rf"eta=5 is out of range: .* eta in \(0, {limit:.4g}\)"):
            call()
    with pytest.raises(ValueError, match="chains=1 is out of range"):
        gva_experiment(p, eta=0.01, gamma=0.1, batch_size=2, steps=10, chains=1, H=[10])


def test_divergent_sgd_is_flagged_not_nan():
    p = _problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = run_sgd(p, eta=5.0, gamma=0.1, batch_size=2, steps=400, chains=3, record_every=400, allow_divergent=True)
        c = p.cost(run.K[:, -1], 50)
        loss = p.loss_bc(run.K[:, -1])
        exp = gva_experiment(p, eta=5.0, gamma=0.1, batch_size=2, steps=400, chains=3, H=[10, 50], allow_divergent=True)
    assert run.diverged.all()
    assert np.all(c.value == np.inf) and c.overflow.all() and np.all(loss == np.inf)
    assert np.all(exp.final_sd("raw")[0] == np.inf) and np.all(exp.pred_raw.sd == np.inf)
    assert exp.loss_cv() == np.inf


def test_first_sgd_steps_by_hand():
    p = _problem(N=5, traj_len=20, misspec=0.02)
    eta, gamma, b = 0.03, 0.2, 3
    K0 = p.K_star + [[0.01, -0.02]]
    run = run_sgd(p, eta=eta, gamma=gamma, batch_size=b, steps=2, chains=1, seed=7, init=K0)
    X, U = p.sample(np.random.default_rng(int(chain_keys(7, 1)[0])), (2, b))
    K1 = K0 - eta * 2 / b * sum(np.outer(K0 @ X[0, i] - U[0, i], X[0, i]) for i in range(b))
    K2 = K1 - eta * 2 / b * sum(np.outer(K1 @ X[1, i] - U[1, i], X[1, i]) for i in range(b))
    ema1 = (1 - gamma) * K0 + gamma * K1
    ema2 = (1 - gamma) * ema1 + gamma * K2
    np.testing.assert_allclose(run.K[0], [K0, K1, K2], rtol=1e-12)
    np.testing.assert_allclose(run.ema[0], [K0, ema1, ema2], rtol=1e-12)


@pytest.mark.parametrize("N", [None, 5])
def test_vectorized_sgd_matches_reference_and_is_seeded(N):
    p = _problem(N=N, traj_len=20, misspec=0.02)
    kw = dict(eta=0.01, gamma=0.05, batch_size=4, steps=300, seed=5)  # crosses a chunk of random draws
    run = run_sgd(p, chains=4, record_every=300, **kw)
    K, ema = sgd_reference(p, chain=2, **kw)
    np.testing.assert_allclose(run.K[2, -1], K, rtol=1e-10)
    np.testing.assert_allclose(run.ema[2, -1], ema, rtol=1e-10)
    # chain i does not depend on how many chains run
    np.testing.assert_array_equal(run_sgd(p, chains=2, record_every=300, **kw).K[:, -1], run.K[:2, -1])


def test_noiseless_realizable_has_no_gradient_noise():
    for N in (None, 4):
        p = _problem(N=N, label_noise=0.0, misspec=0.0, traj_len=30)
        np.testing.assert_allclose(p.K_bar(), p.K_star, atol=1e-9)
        assert np.abs(p.gradient_noise_cov(p.K_star)).max() < 1e-20
        run = run_sgd(p, eta=0.01, gamma=0.1, batch_size=2, steps=50, chains=3)
        np.testing.assert_allclose(run.K[:, -1], np.broadcast_to(p.K_star, (3, 1, 2)), atol=1e-12)


def test_moment_recursion_converges_to_lyapunov():
    p = _problem(N=5, traj_len=20)
    st = stationary_moments(p, eta=0.02, gamma=0.05, batch_size=4)
    pr = predict_moments(p, eta=0.02, gamma=0.05, batch_size=4, steps=30_000)
    np.testing.assert_allclose(pr.cov_raw, st.cov_raw, rtol=1e-6)
    np.testing.assert_allclose(pr.cov_ema, st.cov_ema, rtol=1e-6)
    np.testing.assert_allclose(pr.mean_raw, st.mean_raw, atol=1e-9)


def test_lyapunov_covariance_matches_monte_carlo():
    # small case: 5 short demonstrations, eta well inside the stable range, long enough to mix
    p = _problem(N=5, traj_len=20, rho=0.9)
    kw = dict(eta=0.05, gamma=0.05, batch_size=4)
    st = stationary_moments(p, **kw)
    run = run_sgd(p, steps=1500, chains=2000, seed=0, record_every=1500, init=p.K_bar(), **kw)
    for arr, mean, cov in ((run.K[:, -1], st.mean_raw, st.cov_raw), (run.ema[:, -1], st.mean_ema, st.cov_ema)):
        dev = arr.reshape(len(arr), -1) - mean.reshape(-1)
        assert estimate(dev).agrees(np.zeros(2))
        assert estimate(dev[:, :, None] * dev[:, None, :]).agrees(cov), (np.cov(dev, rowvar=False), cov)


def test_cost_derivatives_match_reference_finite_differences():
    p = _problem()
    K = p.K_star + [[0.001, -0.002]]
    J, g, Hj = p.cost_derivatives(K, 150)
    h = 1e-6
    E = np.eye(2).reshape(2, 1, 2)
    fd = [(p.cost_reference(K + h * E[i], 150) - p.cost_reference(K - h * E[i], 150)) / (2 * h) for i in range(2)]
    np.testing.assert_allclose(g, fd, rtol=1e-6)
    # Hessian: exact complex-step gradient of the plain loop, differenced
    tiny = 1e-30
    grad = lambda Kx: np.array([p.cost_reference(Kx + 1j * tiny * E[i], 150).imag / tiny for i in range(2)])
    h = 1e-5
    fd_h = np.array([(grad(K + h * E[j]) - grad(K - h * E[j])) / (2 * h) for j in range(2)])
    np.testing.assert_allclose(Hj, fd_h, rtol=1e-5)


def test_delta_method_matches_gaussian_monte_carlo_small_noise():
    p = _problem()
    mean = p.K_star
    cov = np.array([[4e-8, 1e-8], [1e-8, 2e-8]])
    dm = delta_method(p, mean, cov, [50, 200])
    Ks = np.random.default_rng(4).multivariate_normal(mean.reshape(-1), cov, size=20000).reshape(-1, 1, 2)
    J = p.cost(Ks, [50, 200]).value
    assert estimate(J).agrees(dm.mean)
    dev2 = (J - J.mean(axis=0)) ** 2
    assert estimate(dev2).agrees(dm.var)


def test_experiment_shows_amplification_and_ema_gain():
    p = _problem()
    exp = gva_experiment(p, eta=0.01, gamma=0.01, batch_size=8, steps=1500, chains=60, H=[25, 200], seed=1)
    sd_raw, _ = exp.final_sd("raw")
    sd_ema, _ = exp.final_sd("ema")
    assert sd_raw[1] > 50 * sd_raw[0]  # grows with H
    assert np.all(sd_ema < sd_raw)  # the EMA removes part of it
    assert exp.loss_cv() < 0.2  # while the loss barely moves
    assert len(exp.rows()) == 2 and exp.J_raw.shape == (60, len(exp.run.steps), 2)


def test_bad_inputs():
    with pytest.raises(ValueError, match="rho="):
        double_integrator(1.2)
    with pytest.raises(ValueError, match="N=0"):
        _problem(N=0)
    with pytest.raises(ValueError, match="label_noise="):
        _problem(label_noise=-1.0)
    with pytest.raises(ValueError, match="K_star has shape"):
        LinearBC(np.eye(2), [[0.0], [1.0]], [[1.0]])
    with pytest.raises(ValueError, match="K has shape"):
        _problem().cost(np.zeros((2, 2)), 5)
    with pytest.raises(ValueError, match="eta=.*unstable"):
        stationary_moments(_problem(N=5, traj_len=20), eta=10.0, gamma=0.1, batch_size=1)
    with pytest.raises(ValueError, match="batch_size=0"):
        run_sgd(_problem(), eta=0.01, gamma=0.1, batch_size=0, steps=1, chains=1)
    with pytest.raises(ValueError, match="no fixed data set"):
        _problem(N=None).demonstrations()


def test_cli_linear_gva_small_run(capsys, tmp_path):
    import json

    from validation.cli import main

    args = ["theory", "linear-gva", "--steps", "200", "--chains", "10", "--H", "25", "100", "--quiet", "--json"]
    assert main(args + ["--plot", str(tmp_path / "g.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["H"] for r in out["rows"]] == [25, 100] and out["loss_bc sd/mean raw"] > 0
    assert (tmp_path / "g.png").stat().st_size > 0
    assert (
        main(
            [
                "theory",
                "linear-gva",
                "--fresh",
                "--misspec",
                "0.05",
                "--steps",
                "50",
                "--chains",
                "4",
                "--H",
                "25",
                "--quiet",
            ]
        )
        == 0
    )


@pytest.mark.slow
def test_linear_gva_study_quick_passes(tmp_path):
    from validation.studies.linear_gva import run

    section = run(tmp_path, quick=True, seed=0, quiet=True)
    assert section.passed, [v for v in section.verdicts if not v.passed]
    assert all(p.exists() for p in section.figures)


def test_predict_moments_first_steps_by_hand_with_schedules():
    from gvatheory.schedules import InverseTimeLR, PowerEMA

    p = _problem(N=5, traj_len=20)
    eta, gamma = InverseTimeLR(0.05, t0=10), PowerEMA(alpha=0.5)
    K0 = p.K_star + [[0.01, 0.02]]
    Kb, Hs, C = p.K_bar(), p.hessian(), p.gradient_noise_cov() / 3
    pr1 = predict_moments(p, eta=eta, gamma=gamma, batch_size=3, steps=1, init=K0)
    F0 = np.eye(2) - eta(0) * Hs
    d1 = F0 @ (K0 - Kb).reshape(-1)
    np.testing.assert_allclose(pr1.mean_raw.reshape(-1), Kb.reshape(-1) + d1, rtol=1e-12)
    np.testing.assert_allclose(pr1.cov_raw, eta(0) ** 2 * C, rtol=1e-12)
    # EMA after one step: (1 - gamma_1) ema_0 + gamma_1 K_1
    g1 = gamma(1)
    np.testing.assert_allclose(pr1.mean_ema.reshape(-1), Kb.reshape(-1) + (1 - g1) * (K0 - Kb).reshape(-1) + g1 * d1)
    np.testing.assert_allclose(pr1.cov_ema, g1**2 * eta(0) ** 2 * C, rtol=1e-12)


def test_predict_moments_with_schedules_matches_monte_carlo():
    from gvatheory.schedules import InverseTimeLR, PowerEMA

    p = _problem(N=5, traj_len=20, rho=0.9)
    kw = dict(eta=InverseTimeLR(0.05, t0=100), gamma=PowerEMA(alpha=0.7, gamma_min=0.02), batch_size=4)
    K0 = p.K_star + [[0.05, -0.05]]
    pr = predict_moments(p, steps=400, init=K0, **kw)
    run = run_sgd(p, steps=400, chains=2000, seed=3, record_every=400, init=K0, **kw)
    for arr, mean, cov in ((run.K[:, -1], pr.mean_raw, pr.cov_raw), (run.ema[:, -1], pr.mean_ema, pr.cov_ema)):
        x = arr.reshape(len(arr), -1)
        assert estimate(x).agrees(mean.reshape(-1))
        dev = x - mean.reshape(-1)
        assert estimate(dev[:, :, None] * dev[:, None, :]).agrees(cov)
