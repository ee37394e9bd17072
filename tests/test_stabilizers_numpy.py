"""Averaging rules in numpy: hand-expanded steps, closed forms against quadrature/recursions."""

import numpy as np
import pytest
from scipy import integrate

from gvatheory.schedules import BEMASchedule, ConstantEMA, PolyakEMA, PowerEMA
from gvatheory.stabilizers import (
    BEMA,
    EMA,
    PowerFunctionEMA,
    exponent_to_sigma_rel,
    posthoc_coefficients,
    power_ema_weights,
    power_profile_inner,
    sigma_rel_to_exponent,
)

TH = [np.array([1.0, -2.0]), np.array([3.0, 5.0]), np.array([-4.0, 0.5]), np.array([2.0, 2.0])]


def run(rule, thetas):
    state = rule.init(thetas[0])
    values = []
    for th in thetas:
        state = rule.update(state, th)
        values.append(rule.value(state))
    return state, values


def test_constant_ema_two_steps_by_hand():
    g = 0.1
    _, v = run(EMA(g), TH[:3])
    np.testing.assert_allclose(v[0], TH[0], rtol=0, atol=0)  # gamma_0 = 1: the zeros of init vanish
    np.testing.assert_allclose(v[1], 0.9 * TH[0] + 0.1 * TH[1], rtol=1e-15)
    np.testing.assert_allclose(v[2], 0.9 * (0.9 * TH[0] + 0.1 * TH[1]) + 0.1 * TH[2], rtol=1e-15)


def test_dict_params_nested():
    thetas = [{"w": th, "b": {"c": th[:1] * 2}} for th in TH[:2]]
    _, v = run(EMA(0.25), thetas)
    np.testing.assert_allclose(v[1]["w"], 0.75 * TH[0] + 0.25 * TH[1], rtol=1e-15)
    np.testing.assert_allclose(v[1]["b"]["c"], 2 * (0.75 * TH[0][:1] + 0.25 * TH[1][:1]), rtol=1e-15)


def test_debiased_ema_two_steps_by_hand_and_equivalent_schedule():
    g = 0.2
    state, v = run(EMA(g, debias=True), TH[:2])
    m0 = g * TH[0]
    m1 = (1 - g) * m0 + g * TH[1]
    np.testing.assert_allclose(state.average, m1, rtol=1e-15)
    np.testing.assert_allclose(v[0], m0 / g, rtol=1e-15)
    np.testing.assert_allclose(v[1], m1 / (1 - (1 - g) ** 2), rtol=1e-15)
    # debiasing == the schedule gamma_t = g / (1 - (1-g)^(t+1)) started from theta_0
    rng = np.random.default_rng(0)
    thetas = list(rng.normal(size=(30, 3)))
    _, deb = run(EMA(g, debias=True), thetas)
    ema = thetas[0]
    for t in range(1, 30):
        gt = g / (1 - (1 - g) ** (t + 1))
        ema = (1 - gt) * ema + gt * thetas[t]
    np.testing.assert_allclose(deb[-1], ema, rtol=1e-12)


def test_power_ema_with_burn_in_by_hand():
    rule = EMA(PowerEMA(alpha=0.5, gamma_min=0.6, burn_in=1))
    _, v = run(rule, TH)
    np.testing.assert_array_equal(v[0], TH[0])
    np.testing.assert_array_equal(v[1], TH[1])  # copies up to burn_in
    g2 = 2**-0.5
    e2 = (1 - g2) * TH[1] + g2 * TH[2]
    np.testing.assert_allclose(v[2], e2, rtol=1e-15)
    np.testing.assert_allclose(v[3], 0.4 * e2 + 0.6 * TH[3], rtol=1e-15)  # 3**-0.5 < gamma_min


def test_polyak_is_uniform_average_after_burn_in():
    rng = np.random.default_rng(1)
    thetas = list(rng.normal(size=(12, 4)))
    _, v = run(EMA(PolyakEMA(burn_in=3)), thetas)
    np.testing.assert_allclose(v[1], thetas[1], rtol=0, atol=0)
    np.testing.assert_allclose(v[4], (thetas[3] + thetas[4]) / 2, rtol=1e-15)
    np.testing.assert_allclose(v[-1], np.mean(thetas[3:], axis=0), rtol=1e-13)


def test_bema_two_steps_after_burn_in_by_hand():
    sched = BEMASchedule(kappa=0.5, p=0.2, c=1.0, lag=10, burn_in=1)
    state, v = run(BEMA(sched), TH)
    np.testing.assert_array_equal(v[0], TH[0])
    np.testing.assert_array_equal(v[1], TH[1])
    np.testing.assert_array_equal(state.anchor, TH[1])  # snapshot theta_{burn_in}
    tau2, tau3 = 2 - 1 + 10, 3 - 1 + 10
    g2, a2 = (1 + tau2) ** -0.5, (1 + tau2) ** -0.2
    g3, a3 = (1 + tau3) ** -0.5, (1 + tau3) ** -0.2
    e2 = (1 - g2) * TH[1] + g2 * TH[2]
    e3 = (1 - g3) * e2 + g3 * TH[3]
    np.testing.assert_allclose(v[2], e2 + a2 * (TH[2] - TH[1]), rtol=1e-15)
    np.testing.assert_allclose(v[3], e3 + a3 * (TH[3] - TH[1]), rtol=1e-15)


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="debias"):
        EMA(PowerEMA(0.5), debias=True)
    with pytest.raises(ValueError, match="debias"):
        EMA(ConstantEMA(0.1, burn_in=2), debias=True)
    rule = EMA(0.1)
    with pytest.raises(ValueError, match="count=0"):
        rule.value(rule.init(TH[0]))
    with pytest.raises(ValueError, match="shape"):
        rule.update(rule.init(TH[0]), np.zeros(3))
    with pytest.raises(ValueError, match="keys"):
        rule.update(rule.init({"a": TH[0]}), {"b": TH[0]})
    with pytest.raises(ValueError, match="BEMASchedule"):
        BEMA(PowerEMA(0.5))
    with pytest.raises(ValueError, match="sigma_rel"):
        PowerFunctionEMA(0.3)


# ---------------------------------------------------------------- power-function EMA, post-hoc


def test_sigma_rel_exponent_round_trip():
    exps = np.array([0.0, 1.0, 6.94, 16.97, 100.0])
    np.testing.assert_allclose(sigma_rel_to_exponent(exponent_to_sigma_rel(exps)), exps, rtol=1e-9, atol=1e-9)
    assert exponent_to_sigma_rel(0.0) == pytest.approx(12**-0.5)
    # exponent 0 is the uniform average: the power-function EMA is Polyak's
    np.testing.assert_allclose(PowerFunctionEMA(12**-0.5)(np.arange(8)), PolyakEMA()(np.arange(8)), rtol=1e-12)


def test_power_function_ema_weights_match_closed_form_and_sigma_rel():
    n, sigma = 400, 0.1
    # iterate t = e_t, so the average *is* the weight vector on the iterates
    _, v = run(EMA(PowerFunctionEMA(sigma)), list(np.eye(n)))
    w = power_ema_weights(n, sigma)
    np.testing.assert_allclose(v[-1], w, rtol=1e-10, atol=1e-15)
    assert w.sum() == pytest.approx(1.0, rel=1e-12)
    # relative std of the discrete weights -> sigma_rel, with an O(1/n) discretization error
    s = np.arange(n) + 0.5
    std = np.sqrt(np.sum(w * s**2) - np.sum(w * s) ** 2)
    assert abs(std / n - sigma) < 1.0 / n


def test_power_profile_inner_matches_quadrature():
    for a, sa, b, sb in [(3.0, 0.05, 7.0, 0.1), (7.0, 0.05, 3.0, 0.2), (5.0, 0.1, 5.0, 0.1)]:
        ea, eb = sigma_rel_to_exponent(sa), sigma_rel_to_exponent(sb)

        def f(tau):
            return (ea + 1) * tau**ea / a ** (ea + 1) * (eb + 1) * tau**eb / b ** (eb + 1)

        exact, _ = integrate.quad(f, 0.0, min(a, b), epsabs=0, epsrel=1e-12)
        assert power_profile_inner(a, sa, b, sb) == pytest.approx(exact, rel=1e-9)


def test_posthoc_coefficients_hand_example():
    # uniform profiles on [0,1] and [0,2] fitted to the triangle 2 tau / 4 on [0,2]:
    # Gram [[1, 1/2], [1/2, 1/2]], rhs [1/4, 1/2]  =>  x = (-1/2, 3/2)
    uniform, triangle = exponent_to_sigma_rel(0.0), exponent_to_sigma_rel(1.0)
    x = posthoc_coefficients([1, 2], [uniform, uniform], 2, triangle)
    np.testing.assert_allclose(x, [-0.5, 1.5], rtol=1e-8)


def test_posthoc_reproduces_a_tracked_profile():
    counts = np.repeat([100, 200, 300, 400], 2)
    sigmas = np.tile([0.05, 0.10], 4)
    x = posthoc_coefficients(counts, sigmas, 300, 0.10)
    expected = np.zeros(8)
    expected[5] = 1.0
    np.testing.assert_allclose(x, expected, atol=1e-6)
