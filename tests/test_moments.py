"""The linear-Gaussian moment engine: steps expanded by hand, Lyapunov against the long recursion,
and the two toy systems that run on it (averaging, linear_gva) against the engine directly."""

import numpy as np
import pytest

from gvatheory.moments import (
    moment_sequence,
    propagate,
    sgd_ema_matrices,
    sgd_ema_path,
    sgd_ema_stationary,
    stationary_cov,
)

H2 = np.array([[1.5, 0.4], [0.4, 0.8]])
S2 = np.array([[0.5, 0.2], [0.2, 0.3]])


def test_propagate_by_hand():
    A, S, c = np.array([[0.5, 1.0], [0.0, 2.0]]), np.diag([1.0, 3.0]), np.array([1.0, -1.0])
    m, P = propagate(np.array([2.0, 1.0]), np.eye(2), A, S, c)
    np.testing.assert_array_equal(m, [0.5 * 2 + 1 + 1, 2 - 1])
    np.testing.assert_array_equal(P, [[0.25 + 1 + 1, 2.0], [2.0, 4 + 3]])


def test_moment_sequence_is_repeated_propagation():
    A, S = np.array([[0.9, 0.1], [0.0, 0.8]]), 0.1 * np.eye(2)
    mean, cov = moment_sequence(A, np.array([1.0, 2.0]), np.eye(2), 5, S)
    m, P = np.array([1.0, 2.0]), np.eye(2)
    for h in range(5):
        np.testing.assert_array_equal(mean[h], m)
        np.testing.assert_array_equal(cov[h], P)
        m, P = propagate(m, P, A, S)


def test_sgd_ema_matrices_two_averages_by_hand():
    eta, g = 0.2, np.array([0.1, 1.0])
    M, B = sgd_ema_matrices(H2, eta, g)
    F = np.eye(2) - eta * H2
    np.testing.assert_array_equal(M[:2, :2], F)
    np.testing.assert_array_equal(M[2:4, :2], 0.1 * F)
    np.testing.assert_array_equal(M[2:4, 2:4], 0.9 * np.eye(2))
    np.testing.assert_array_equal(M[4:, :2], F)  # gamma = 1: the average copies the iterate
    np.testing.assert_array_equal(M[4:, 4:], np.zeros((2, 2)))
    np.testing.assert_array_equal(M[:2, 2:], 0.0)
    np.testing.assert_array_equal(B, np.vstack([-eta * np.eye(2), -0.1 * eta * np.eye(2), -eta * np.eye(2)]))


def test_sgd_ema_path_first_two_steps_by_hand():
    # x = theta - mu, e = ema - mu: x1 = F0 x0 - eta0 xi0, e1 = (1-g1) e0 + g1 x1, then one more step.
    etas, gam = np.array([0.3, 0.1]), np.array([[0.5, 0.2]])
    z0 = np.array([1.0, -1.0, 1.0, -1.0])
    path = sgd_ema_path(H2, S2, etas, gam, z0, [0, 1, 2])
    F0, F1 = np.eye(2) - 0.3 * H2, np.eye(2) - 0.1 * H2
    x1 = F0 @ z0[:2]
    e1 = 0.5 * z0[2:] + 0.5 * x1
    Vx1 = 0.09 * S2
    np.testing.assert_allclose(path[1][0], np.r_[x1, e1], rtol=1e-15)
    np.testing.assert_allclose(path[1][1][:2, :2], Vx1, rtol=1e-15)
    np.testing.assert_allclose(path[1][1][2:, 2:], 0.25 * Vx1, rtol=1e-15)
    x2 = F1 @ x1
    Vx2 = F1 @ Vx1 @ F1.T + 0.01 * S2
    np.testing.assert_allclose(path[2][0][:2], x2, rtol=1e-15)
    np.testing.assert_allclose(path[2][0][2:], 0.8 * e1 + 0.2 * x2, rtol=1e-15)
    np.testing.assert_allclose(path[2][1][:2, :2], Vx2, rtol=1e-14)
    np.testing.assert_array_equal(path[0][1], np.zeros((4, 4)))


def test_stationary_is_the_limit_of_the_recursion():
    eta, g = 0.3, np.array([0.05])
    T = 3000
    path = sgd_ema_path(H2, S2, np.full(T, eta), np.full((1, T), 0.05), np.zeros(4), [T])
    np.testing.assert_allclose(path[T][1], sgd_ema_stationary(H2, S2, eta, g), rtol=1e-10, atol=1e-15)
    M, B = sgd_ema_matrices(H2, eta, g)
    P = stationary_cov(M, B @ S2 @ B.T)
    np.testing.assert_allclose(P, M @ P @ M.T + B @ S2 @ B.T, rtol=1e-12, atol=1e-15)


def test_both_toy_systems_run_on_the_engine():
    from gvatheory.averaging import QuadraticSGD
    from gvatheory.linear_gva import LinearBC, double_integrator, predict_moments, stationary_moments

    model = QuadraticSGD(Hs=H2, Sigma=S2, eta=0.3, gammas=(0.05,), mu=[0.5, -1.0], theta0=[2.0, 0.0])
    law = model.moments(40)
    z = sgd_ema_path(H2, S2, np.full(40, 0.3), np.full((1, 40), 0.05), np.tile([1.5, 1.0], 2), [40])[40]
    np.testing.assert_array_equal(law.mean, z[0].reshape(2, 2) + [0.5, -1.0])
    np.testing.assert_array_equal(law.cov, z[1])

    p = LinearBC(*double_integrator(0.9, 0.1), N=5, traj_len=20)
    Hs, C, Kb = p.hessian(), p.gradient_noise_cov() / 4, p.K_bar()
    pr = predict_moments(p, eta=0.02, gamma=0.1, batch_size=4, steps=30)
    z = sgd_ema_path(Hs, C, np.full(30, 0.02), np.full((1, 30), 0.1), np.tile((p.K_star - Kb).ravel(), 2), [30])[30]
    np.testing.assert_array_equal(pr.cov_raw, z[1][:2, :2])
    np.testing.assert_array_equal(pr.mean_ema.ravel(), Kb.ravel() + z[0][2:])
    st = stationary_moments(p, eta=0.02, gamma=0.1, batch_size=4)
    np.testing.assert_array_equal(st.cov_ema, sgd_ema_stationary(Hs, C, 0.02, np.array([0.1]))[2:, 2:])


def test_overflow_is_silent_and_non_finite():
    with np.errstate(all="raise"):
        path = sgd_ema_path(np.eye(1), np.eye(1), np.full(2000, 3.0), np.full((1, 2000), 0.5), np.ones(2), [2000])
    assert not np.isfinite(path[2000][1]).all()


@pytest.mark.parametrize("n", [1, 3])
def test_moment_sequence_lengths(n):
    mean, cov = moment_sequence(np.eye(2), np.zeros(2), np.eye(2), n)
    assert mean.shape == (n, 2) and cov.shape == (n, 2, 2)
