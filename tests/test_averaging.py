"""SGD with iterate averaging: hand-expanded steps, exact recursion vs closed forms vs Lyapunov,
exact moments vs Monte Carlo (|z| <= 4 with fixed seeds) for every noise kind, kernels vs a plain
Python reference, determinism across thread counts, and bad input."""

import math

import numba
import numpy as np
import pytest

from gvatheory import _rng
from gvatheory.averaging import (
    NOISE_KINDS,
    JointGaussian,
    QuadraticSGD,
    scalar_moments,
    scalar_stationary,
    simulate_scalar,
    variance_estimate,
)
from gvatheory.schedules import BEMASchedule, InverseTimeLR, PolyakEMA, PowerEMA
from gvatheory.stabilizers import ema_update
from gvatheory.stats import chain_keys, estimate

# ---------------------------------------------------------------- hand expansions


def test_first_two_steps_by_hand_scalar_with_schedules():
    h, s, mu, th0 = 1.7, 0.6, 0.4, -1.1
    eta, gam = InverseTimeLR(0.3, 2.0), BEMASchedule()
    e0, e1 = eta(0), eta(1)  # 0.3, 0.2
    g1, g2 = gam(1), gam(2)  # 11**-0.5, 12**-0.5
    model = QuadraticSGD(Hs=[h], mu=mu, sigma=s, eta=eta, gammas=(gam,), theta0=th0)
    one, two = model.moment_path([1, 2])
    # theta1 = theta0 - e0 (h (theta0 - mu) + s xi0);  ema1 = (1-g1) theta0 + g1 theta1
    m_th1 = th0 - e0 * h * (th0 - mu)
    v_th1 = e0**2 * s**2
    m_e1 = (1 - g1) * th0 + g1 * m_th1
    np.testing.assert_allclose(one.mean[:, 0], [m_th1, m_e1], rtol=1e-14)
    np.testing.assert_allclose(one.cov, [[v_th1, g1 * v_th1], [g1 * v_th1, g1**2 * v_th1]], rtol=1e-14)
    # theta2 = a1 theta1 + e1 h mu - e1 s xi1;  ema2 = (1-g2) ema1 + g2 theta2
    a1 = 1 - e1 * h
    m_th2 = a1 * m_th1 + e1 * h * mu
    v_th2 = a1**2 * v_th1 + e1**2 * s**2
    c_th2_e1 = a1 * g1 * v_th1
    m_e2 = (1 - g2) * m_e1 + g2 * m_th2
    c2 = (1 - g2) * c_th2_e1 + g2 * v_th2
    v_e2 = (1 - g2) ** 2 * g1**2 * v_th1 + 2 * (1 - g2) * g2 * c_th2_e1 + g2**2 * v_th2
    np.testing.assert_allclose(two.mean[:, 0], [m_th2, m_e2], rtol=1e-14)
    np.testing.assert_allclose(two.cov, [[v_th2, c2], [c2, v_e2]], rtol=1e-14)


def test_first_step_by_hand_full_matrices():
    H = np.array([[2.0, 0.5], [0.5, 1.0]])
    S = np.array([[0.3, -0.1], [-0.1, 0.2]])
    mu, th0, eta, g = np.array([1.0, -2.0]), np.array([0.5, 0.5]), 0.25, 0.3
    law = QuadraticSGD(Hs=H, mu=mu, Sigma=S, eta=eta, gammas=(g, 1.0), theta0=th0).moments(1)
    m1 = th0 - eta * H @ (th0 - mu)
    np.testing.assert_allclose(law.mean, [m1, (1 - g) * th0 + g * m1, m1], rtol=1e-14)
    V = eta**2 * S
    want = np.block([[V, g * V, V], [g * V, g * g * V, g * V], [V, g * V, V]])
    np.testing.assert_allclose(law.cov, want, rtol=1e-14)
    mean1, cov1 = law.marginal(1)
    np.testing.assert_allclose(cov1, g * g * V, rtol=1e-14)
    np.testing.assert_allclose(mean1, (1 - g) * th0 + g * m1, rtol=1e-14)


def test_time_zero_is_the_deterministic_start():
    law = QuadraticSGD(Hs=[1.0, 2.0], theta0=[3.0, 4.0], gammas=(0.1,)).moments(0)
    np.testing.assert_array_equal(law.mean, [[3.0, 4.0], [3.0, 4.0]])
    assert not law.cov.any()
    m = scalar_moments(1.0, 1.0, 0.1, 0.1, 0, theta0=2.0, mu=0.5)
    assert (m.mean_theta, m.mean_ema, m.var_theta, m.var_ema, m.cov) == (2.0, 2.0, 0.0, 0.0, 0.0)


# ---------------------------------------------------------------- closed forms vs recursion vs Lyapunov


@pytest.mark.parametrize(
    "h,sigma,eta,gamma,T,theta0,mu",
    [
        (1.0, 0.5, 0.1, 0.01, 1, 1.0, 0.0),
        (2.5, 1.3, 0.7, 0.2, 37, -0.4, 0.3),
        (0.3, 0.2, 1.9, 1.0, 250, 2.0, -1.0),
        (1.0, 1.0, 0.05, 0.003, 1000, 0.0, 0.0),
    ],
)
def test_scalar_moments_equal_general_recursion(h, sigma, eta, gamma, T, theta0, mu):
    fast = scalar_moments(h, sigma, eta, gamma, T, theta0=theta0, mu=mu)
    law = QuadraticSGD(Hs=[h], mu=mu, sigma=sigma, eta=eta, gammas=(gamma,), theta0=theta0).moments(T)
    np.testing.assert_allclose([fast.mean_theta, fast.mean_ema], law.mean[:, 0], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(
        [fast.var_theta, fast.cov, fast.var_ema], [law.cov[0, 0], law.cov[0, 1], law.cov[1, 1]], rtol=1e-10, atol=1e-15
    )


def test_scalar_moments_broadcast_equals_pointwise():
    rng = np.random.default_rng(0)
    eta = rng.uniform(0.01, 1.5, (4, 1))
    gamma = rng.uniform(0.001, 1.0, (1, 5))
    T = np.array([0, 1, 7, 300, 4096])[None, :]
    grid = scalar_moments(1.3, 0.7, eta, gamma, T, theta0=0.9, mu=-0.2)
    assert grid.var_ema.shape == (4, 5)
    for i in range(4):
        for j in range(5):
            p = scalar_moments(1.3, 0.7, float(eta[i, 0]), float(gamma[0, j]), int(T[0, j]), theta0=0.9, mu=-0.2)
            for name in ("mean_theta", "mean_ema", "var_theta", "var_ema", "cov"):
                assert getattr(grid, name)[i, j] == pytest.approx(getattr(p, name), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("h,sigma,eta,gamma", [(1.0, 0.5, 0.1, 0.01), (3.0, 2.0, 0.6, 0.5), (0.2, 1.0, 9.0, 1.0)])
def test_stationary_scalar_formula_equals_lyapunov_and_long_recursion(h, sigma, eta, gamma):
    closed = scalar_stationary(h, sigma, eta, gamma)
    lyap = QuadraticSGD(Hs=[h], sigma=sigma, eta=eta, gammas=(gamma,)).stationary()
    np.testing.assert_allclose(
        [closed.var_theta, closed.cov, closed.var_ema], [lyap.cov[0, 0], lyap.cov[0, 1], lyap.cov[1, 1]], rtol=1e-10
    )
    # T so large that (1 - gamma)**T and (1 - eta h)**(2T) are below 1e-30
    T = int(np.ceil(70 / min(gamma, eta * h, 2 - eta * h)))
    far = scalar_moments(h, sigma, eta, gamma, T, theta0=1.0)
    np.testing.assert_allclose(
        [far.var_theta, far.cov, far.var_ema], [closed.var_theta, closed.cov, closed.var_ema], rtol=1e-9
    )
    assert abs(far.mean_theta) < 1e-12 and abs(far.mean_ema) < 1e-12


def test_lyapunov_diagonal_d_is_scalar_formula_per_coordinate():
    h = np.array([0.5, 1.0, 3.0])
    sig = np.array([0.3, 1.0, 2.0])
    eta, gammas = 0.4, (0.05, 0.5)
    law = QuadraticSGD(Hs=h, Sigma=np.diag(sig**2), eta=eta, gammas=gammas).stationary()
    d = 3
    for k, g in enumerate(gammas):
        c = scalar_stationary(h, sig, eta, g)
        np.testing.assert_allclose(law.var[0], c.var_theta, rtol=1e-10)
        np.testing.assert_allclose(law.var[1 + k], c.var_ema, rtol=1e-10)
        np.testing.assert_allclose(np.diag(law.cov[:d, (1 + k) * d : (2 + k) * d]), c.cov, rtol=1e-10)
    # coordinates are independent
    off = law.cov.copy()
    for i in range(d):
        off[i::d, i::d] = 0
    assert np.abs(off).max() < 1e-14


def test_stationary_full_matrix_equals_long_recursion():
    H = np.array([[2.0, 0.5], [0.5, 1.0]])
    S = np.array([[0.3, -0.1], [-0.1, 0.2]])
    model = QuadraticSGD(Hs=H, Sigma=S, eta=0.3, gammas=(0.2, 0.05), theta0=[1.0, 1.0])
    np.testing.assert_allclose(model.moments(3000).cov, model.stationary().cov, rtol=1e-9, atol=1e-15)


def test_ema_shrinks_variance_like_gamma_over_eta_h():
    # Var(ema)/Var(theta) -> gamma/(gamma + eta h) as eta, gamma -> 0 (derived in gvatheory.symbolic)
    h, eta = 2.0, 1e-4
    for gamma in (1e-6, 1e-5, 1e-4):
        m = scalar_stationary(h, 1.0, eta, gamma)
        assert m.var_ema / m.var_theta == pytest.approx(gamma / (gamma + eta * h), rel=1e-3)


# ---------------------------------------------------------------- Monte Carlo vs exact


def _covariance_z(samples: np.ndarray, exact_cov: np.ndarray) -> np.ndarray:
    """z-scores of every entry of the sample covariance of flattened ``samples`` (n, ...)."""
    x = samples.reshape(samples.shape[0], -1)
    dev = x - x.mean(axis=0)
    n = x.shape[0]
    prod = dev[:, :, None] * dev[:, None, :] * (n / (n - 1))
    return np.asarray(estimate(prod).z(exact_cov))


@pytest.mark.parametrize("noise", NOISE_KINDS)
def test_monte_carlo_matches_exact_moments_each_noise_kind(noise):
    H = np.array([[1.5, 0.4], [0.4, 0.8]])
    S = np.array([[0.5, 0.2], [0.2, 0.3]])
    model = QuadraticSGD(
        Hs=H,
        mu=[0.5, -1.0],
        Sigma=S,
        eta=0.3,
        gammas=(0.2, PolyakEMA(burn_in=3)),
        theta0=[2.0, 0.0],
        noise=noise,
        df=7.0,
        batch_size=3,
        n_data=20,
    )
    T, n = 25, 20_000
    exact = model.moments(T)
    mc = model.simulate(n, T, seed=7, quiet=True)
    assert mc.final.shape == (n, 3, 2) and not mc.divergent
    z_mean = mc.mean().z(exact.mean)
    z_cov = _covariance_z(mc.final, exact.cov)
    assert np.abs(z_mean).max() <= 4, z_mean
    assert np.abs(z_cov).max() <= 4, z_cov


def test_minibatch_dataset_gives_exact_noise_covariance():
    H = np.array([[1.5, 0.4], [0.4, 0.8]])
    S = np.array([[0.5, 0.2], [0.2, 0.3]])
    model = QuadraticSGD(Hs=H, mu=[0.5, -1.0], Sigma=S, noise="minibatch", batch_size=4, n_data=10)
    x = model.data
    np.testing.assert_allclose(x.mean(axis=0), [0.5, -1.0], atol=1e-12)  # minimizer of the dataset loss is mu
    g = (model.data - [0.5, -1.0]) @ H  # per-sample gradient noise H (x_i - mu), up to sign
    np.testing.assert_allclose(g.T @ g / 10 / 4, S, atol=1e-12)


def test_trajectories_match_exact_path_and_endpoints():
    model = QuadraticSGD(Hs=[1.0], sigma=0.8, eta=InverseTimeLR(0.5, 20.0), gammas=(PowerEMA(0.7),), theta0=3.0)
    times = [0, 5, 30, 60]
    mc = model.simulate(20_000, 60, seed=3, times=times, quiet=True)
    assert mc.path.shape == (20_000, 4, 2, 1)
    np.testing.assert_array_equal(mc.path[:, 0], 3.0)
    np.testing.assert_array_equal(mc.path[:, -1], mc.final)
    for slot, law in enumerate(model.moment_path(times[1:]), start=1):
        assert estimate(mc.path[:, slot]).agrees(law.mean, 4)
        assert variance_estimate(mc.path[:, slot]).agrees(law.var, 4)


@pytest.mark.parametrize(
    "h,eta,gamma,sigma,theta0,mu", [(1.0, 0.1, 0.02, 1.0, 0.0, 0.0), (2.5, 0.5, 0.3, 0.4, 2.0, -1.0)]
)
def test_simulate_scalar_matches_scalar_moments(h, eta, gamma, sigma, theta0, mu):
    T, n = 80, 40_000
    th, em = simulate_scalar(n, T, eta, gamma, sigma, theta0, mu, seed=12, h=h)
    ex = scalar_moments(h, sigma, eta, gamma, T, theta0=theta0, mu=mu)
    assert estimate(th).agrees(ex.mean_theta, 4) and estimate(em).agrees(ex.mean_ema, 4)
    assert variance_estimate(th).agrees(ex.var_theta, 4) and variance_estimate(em).agrees(ex.var_ema, 4)
    assert estimate((th - th.mean()) * (em - em.mean()) * n / (n - 1)).agrees(ex.cov, 4)


def test_scalar_kernel_equals_general_kernel_sample_for_sample():
    th, em = simulate_scalar(300, 40, 0.2, 0.1, 0.7, 1.5, 0.5, seed=4, h=1.3)
    mc = QuadraticSGD(Hs=[1.3], mu=0.5, sigma=0.7, eta=0.2, gammas=(0.1,), theta0=1.5).simulate(300, 40, 4, quiet=True)
    np.testing.assert_array_equal(mc.final[:, 0, 0], th)
    np.testing.assert_array_equal(mc.final[:, 1, 0], em)


# ---------------------------------------------------------------- kernels vs plain reference


def test_noise_codes_are_the_kinds_in_order():
    from gvatheory._averaging_kernels import NOISE_CODES

    assert [NOISE_CODES[k] for k in NOISE_KINDS] == list(range(len(NOISE_KINDS)))


def _reference_chain(model: QuadraticSGD, key: int, T: int) -> np.ndarray:
    """Plain Python twin of the numba kernel for one chain (Gaussian, Rademacher or minibatch noise);
    its EMAs are the numpy stabilizers' update (:func:`gvatheory.stabilizers.ema_update`)."""
    rng = _rng.XoshiroPy(key)
    H, mu, sigma_half, atoms = model._H, model._mu, model._Sigma_half, model._atoms
    etas, gammas, _ = model._schedule_arrays(T)
    theta = model._theta0.copy()
    emas = [theta.copy() for _ in range(model.n_averages)]
    d = model.dim
    for t in range(T):
        if model.noise == "minibatch":
            picks = [(rng.next_u64() * atoms.shape[0]) >> 64 for _ in range(model.batch_size)]
            xi = sum(atoms[i] for i in picks) / model.batch_size
        else:
            if model.noise == "gaussian":
                u = np.array([rng.normal() for _ in range(d)])
            else:
                u = np.array([1.0 if rng.next_u64() >> 63 else -1.0 for _ in range(d)])
            xi = sigma_half @ u
        theta = theta - etas[t] * (H @ (theta - mu) + xi)
        emas = [ema_update(e, theta, gammas[k, t + 1]) for k, e in enumerate(emas)]
    return np.array([theta, *emas])


@pytest.mark.parametrize("noise", ["gaussian", "rademacher", "minibatch"])
def test_kernel_matches_plain_reference(noise):
    model = QuadraticSGD(
        Hs=np.array([[1.5, 0.4], [0.4, 0.8]]),
        mu=[0.5, -1.0],
        Sigma=np.array([[0.5, 0.2], [0.2, 0.3]]),
        eta=InverseTimeLR(0.4, 10.0),
        gammas=(0.2, PolyakEMA()),
        theta0=[2.0, 0.0],
        noise=noise,
        batch_size=3,
        n_data=7,
    )
    mc = model.simulate(5, 30, seed=9, quiet=True)
    for c, key in enumerate(chain_keys(9, 5)):
        np.testing.assert_allclose(mc.final[c], _reference_chain(model, int(key), 30), rtol=1e-12, atol=1e-14)


def test_same_samples_for_any_thread_count_and_chain_count():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    model = QuadraticSGD(Hs=[1.0, 2.0], sigma=0.5, eta=0.2, gammas=(0.1,), noise="student-t")
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = model.simulate(64, 50, seed=5, quiet=True).final
        s_one = simulate_scalar(64, 50, 0.2, 0.1, 0.5, 0.0, 0.0, seed=5)
        numba.set_num_threads(2)
        two = model.simulate(64, 50, seed=5, quiet=True).final
        s_two = simulate_scalar(64, 50, 0.2, 0.1, 0.5, 0.0, 0.0, seed=5)
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(one, two)
    assert np.array_equal(s_one[0], s_two[0]) and np.array_equal(s_one[1], s_two[1])
    assert np.array_equal(model.simulate(20, 50, seed=5, quiet=True).final, one[:20])
    assert not np.array_equal(model.simulate(64, 50, seed=6, quiet=True).final, one)


# ---------------------------------------------------------------- divergence and bad input


def test_divergent_step_size_is_flagged_not_nan():
    with pytest.raises(ValueError, match=r"eta=2\.5 is out of range.*\(0, 2\)"):
        QuadraticSGD(Hs=[1.0], eta=2.5)
    model = QuadraticSGD(Hs=[1.0], eta=2.5, gammas=(0.1,), allow_divergent=True)
    assert model.stationary().divergent and np.all(np.isinf(model.stationary().cov))
    law = model.moments(2000)
    assert law.divergent and not np.isnan(law.cov).any() and np.isinf(law.cov[0, 0])
    mc = model.simulate(10, 2000, seed=0, quiet=True)
    assert mc.divergent and not np.isnan(mc.final).any()
    st = scalar_stationary(1.0, 1.0, [0.5, 2.0, 3.0], 0.1)
    assert np.isfinite(st.var_theta[0]) and np.all(np.isinf(st.var_theta[1:])) and np.all(np.isinf(st.var_ema[1:]))
    far = scalar_moments(1.0, 1.0, 3.0, 0.1, 5000)
    assert np.isinf(far.var_theta) and not math.isnan(far.mean_ema)
    with pytest.raises(ValueError, match="eta_t"):
        QuadraticSGD(Hs=[1.0], eta=InverseTimeLR(3.0)).moments(5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(Hs=[1.0], eta=0.0), r"eta=0\.0 is out of range"),
        (dict(Hs=[1.0], eta=-0.1), r"eta=-0\.1 is out of range"),
        (dict(Hs=[1.0], gammas=(0.0,)), r"gammas\[0\]=0\.0 is out of range: must be in \(0, 1\]"),
        (dict(Hs=[1.0], gammas=(1.5,)), r"gammas\[0\]=1\.5"),
        (dict(Hs=[1.0], gammas=0.1), r"gammas=0\.1 must be a tuple"),
        (dict(Hs=[1.0, -1.0]), r"Hs must be positive definite"),
        (dict(Hs=[[1.0, 2.0], [0.0, 1.0]]), r"Hs must be symmetric"),
        (dict(Hs=[1.0, np.nan]), r"Hs=.* must be finite"),
        (dict(Hs=[1.0], mu=np.inf), r"mu=inf must be finite"),
        (dict(Hs=[1.0, 2.0], mu=[1.0, 2.0, 3.0]), r"mu has shape \(3,\), expected"),
        (dict(Hs=[1.0, 2.0], theta0=[1.0]), r"theta0 has shape \(1,\)"),
        (dict(Hs=[1.0], sigma=-1.0), r"sigma=-1\.0 is out of range"),
        (dict(Hs=[1.0, 2.0], Sigma=[[1.0, 0.0], [0.0, -1.0]]), r"Sigma must be positive semidefinite"),
        (dict(Hs=[1.0, 2.0], Sigma=np.eye(3)), r"Sigma has shape"),
        (dict(Hs=[1.0], sigma=2.0, Sigma=[[1.0]]), r"both given"),
        (dict(Hs=[1.0], noise="cauchy"), r"noise='cauchy' is not valid"),
        (dict(Hs=[1.0], noise="student-t", df=2.0), r"df=2\.0 is out of range"),
        (dict(Hs=[1.0], noise="minibatch", batch_size=0), r"batch_size=0 is out of range"),
        (dict(Hs=[1.0, 1.0], noise="minibatch", n_data=2), r"n_data=2 is out of range"),
    ],
)
def test_bad_model_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuadraticSGD(**kwargs)


def test_bad_call_input():
    model = QuadraticSGD(Hs=[1.0], gammas=(0.1, PowerEMA(0.5)))
    with pytest.raises(ValueError, match=r"T=0 is out of range"):
        model.simulate(10, 0, seed=0)
    with pytest.raises(ValueError, match=r"chains=1 is out of range"):
        model.simulate(1, 10, seed=0)
    with pytest.raises(ValueError, match=r"times=11 is out of range"):
        model.simulate(10, 10, seed=0, times=[3, 11])
    with pytest.raises(ValueError, match=r"T=-1 is out of range"):
        model.moments(-1)
    with pytest.raises(ValueError, match=r"stationary\(\) needs constant eta and gammas.*PowerEMA"):
        model.stationary()
    with pytest.raises(ValueError, match=r"k=3 is out of range: must be an integer in \[0, 2\]"):
        model.moments(3).marginal(3)
    with pytest.raises(ValueError, match=r"gamma=\[0\.1 0\. \] is out of range: must be in \(0, 1\]"):
        scalar_moments(1.0, 1.0, 0.1, [0.1, 0.0], 10)
    with pytest.raises(ValueError, match=r"T=.* must be an integer"):
        scalar_moments(1.0, 1.0, 0.1, 0.1, 1.5)
    with pytest.raises(ValueError, match=r"h=0\.0 is out of range"):
        scalar_stationary(0.0, 1.0, 0.1, 0.1)
    with pytest.raises(ValueError, match=r"seed=-1"):
        simulate_scalar(10, 10, 0.1, 0.1, 1.0, 0.0, 0.0, seed=-1)


def test_joint_gaussian_marginal_shapes():
    law = QuadraticSGD(Hs=[1.0, 2.0, 3.0], gammas=(0.1, 0.2)).moments(4)
    assert isinstance(law, JointGaussian) and law.mean.shape == (3, 3) and law.cov.shape == (9, 9)
    mean, cov = law.marginal(2)
    assert mean.shape == (3,) and cov.shape == (3, 3)
    np.testing.assert_array_equal(np.diag(cov), law.var[2])


# ---------------------------------------------------------------- CLI and study


def test_cli_table_json_plot_and_bad_input(tmp_path, capsys):
    import json

    from validation.cli import main

    argv = [
        "theory",
        "averaging",
        "--steps",
        "60",
        "--chains",
        "2000",
        "--gamma",
        "0.05",
        "0.5",
        "--h",
        "1",
        "2",
        "--theta0",
        "1",
        "--noise",
        "minibatch",
        "--batch-size",
        "2",
        "--quiet",
    ]
    assert main(argv + ["--plot", str(tmp_path / "fig.png")]) == 0
    out = capsys.readouterr().out
    assert "var ema[gamma=0.05][1]" in out and "max |z|" in out
    assert (tmp_path / "fig.png").stat().st_size > 0
    assert main(argv + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["rows"]) == 3 * 2 * 2
    assert max(abs(r["z"]) for r in doc["rows"]) <= 4
    assert main(["theory", "averaging", "--eta", "2.5", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eta=2.5 is out of range" in err[0] and "allow_divergent" not in err[0]


@pytest.mark.slow
def test_study_quick_passes(tmp_path):
    from validation.studies.averaging import run

    section = run(tmp_path, quick=True, seed=0, quiet=True)
    assert section.passed, [v.detail for v in section.verdicts if not v.passed]
    assert all(f.exists() for f in section.figures)
