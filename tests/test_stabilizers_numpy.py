"""Averaging rules in numpy: hand-expanded steps, closed forms against quadrature/recursions."""

import bema_references as ref
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
    posthoc_fit,
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


# ---------------------------------------------------------------- update period, references


def test_update_period_absorbs_every_kth_iterate_by_hand():
    rng = np.random.default_rng(2)
    thetas = list(rng.normal(size=(8, 3)))
    _, v = run(EMA(0.5, every=3), thetas)
    e3 = 0.5 * thetas[0] + 0.5 * thetas[3]
    np.testing.assert_array_equal(v[2], thetas[0])  # steps 1, 2 leave the average alone
    np.testing.assert_allclose(v[3], e3, rtol=1e-15)
    np.testing.assert_allclose(v[6], 0.5 * e3 + 0.5 * thetas[6], rtol=1e-15)
    # BEMA between absorbed iterates reports the BEMA of the last absorbed one
    sched = BEMASchedule(lag=2, burn_in=0)
    _, b = run(BEMA(sched, every=3), thetas)
    g3, a3 = sched(3), sched.bias_weight(3)
    want3 = (1 - g3) * thetas[0] + g3 * thetas[3] + a3 * (thetas[3] - thetas[0])
    np.testing.assert_allclose(b[3], want3, rtol=1e-14)
    np.testing.assert_array_equal(b[4], b[3])
    np.testing.assert_array_equal(b[5], b[3])


def _values(rule, thetas):
    state, values = rule.init(thetas[0]), []
    for th in thetas:
        state = rule.update(state, th)
        values.append(rule.value(state))
    return values


def _max_error(got: list, want: dict) -> float:
    return max(float(np.max(np.abs(got[s] - w))) for s, w in want.items())


@pytest.mark.parametrize("settings", ref.AUTHORS_GRID, ids=ref.grid_id)
def test_bema_from_authors_matches_their_rule(settings):
    thetas = ref.trajectory(120)
    want = ref.authors_offline(thetas, **settings)
    got = _values(BEMA.from_authors(**settings), thetas)
    # float64 end to end; the rules differ only in the order of a few roundings
    assert _max_error(got, want) <= 1e-12 * np.abs(thetas).max()


@pytest.mark.parametrize("settings", ref.TRL_GRID, ids=ref.grid_id)
def test_bema_from_trl_matches_its_rule(settings):
    thetas = ref.trajectory(120)
    want = ref.trl_callback(thetas, **settings)
    got = _values(BEMA.from_trl(**settings), thetas)
    assert len(want) > 20
    assert _max_error(got, want) <= 1e-12 * np.abs(thetas).max()


def test_nominal_bema_settings_differ_from_the_references():
    """Without the mappings the same nominal numbers give other averages: the gaps of the issue
    (burn-in seeding, the c-free correction, the clock, TRL's absolute clock) are real."""
    thetas = ref.trajectory(120)
    scale = np.abs(thetas).max()
    seeded = ref.authors_offline(thetas, update_freq=1, update_after=20, scaling_lag=10)
    plain = _values(BEMA(BEMASchedule(lag=10, burn_in=20)), thetas)
    assert abs(plain[21] - seeded[21]).max() > 1e-2 * scale
    c2 = ref.authors_offline(thetas, update_freq=1, ema_gamma=2.0, scaling_lag=10)
    assert _max_error(_values(BEMA(BEMASchedule(c=2.0, lag=10, burn_in=0)), thetas), c2) > 1e-2 * scale
    every4 = ref.authors_offline(thetas, update_freq=4, scaling_lag=10)
    # updating every 4 steps with the clock counting update() calls
    calls = _values(BEMA(BEMASchedule(lag=10)), thetas[::4])
    assert max(abs(calls[s // 4] - w).max() for s, w in every4.items()) > 1e-2 * scale
    trl = ref.trl_callback(thetas, update_freq=1, update_after=20, lag=10.0, multiplier=2.0)
    nominal = _values(BEMA(BEMASchedule(c=2.0, lag=10, burn_in=20)), thetas)
    assert _max_error(nominal, trl) > 1e-3 * scale


def test_reference_settings_without_equivalent_are_refused():
    with pytest.raises(ValueError, match="eta_power=-1 has no equivalent"):
        BEMA.from_authors(update_freq=4, eta_power=-1)
    with pytest.raises(ValueError, match="ema_update_after=30 has no equivalent"):
        BEMA.from_authors(update_freq=4, update_after=20, ema_update_after=30)
    with pytest.raises(
        ValueError, match="update_after=6 has no equivalent here: it must be a multiple of update_freq=4"
    ):
        BEMA.from_trl(update_freq=4, update_after=6)
    with pytest.raises(ValueError, match="lag=0.5 has no equivalent"):
        BEMA.from_trl(update_freq=1, lag=0.5, multiplier=0.1)
    with pytest.raises(ValueError, match="ignore_names"):
        EMA.from_ema_pytorch(ignore_names={"bias"})
    with pytest.raises(ValueError, match="update_model_with_ema_every=10 has no equivalent"):
        EMA.from_ema_pytorch(update_model_with_ema_every=10)
    with pytest.raises(ValueError, match=r"min_value=0\.5 is out of range"):
        EMA.from_ema_pytorch(beta=0.4, min_value=0.5)
    with pytest.raises(ValueError, match="update_freq=0 is out of range"):
        BEMA.from_trl(update_freq=0)
    with pytest.raises(ValueError, match="every=0 is out of range"):
        EMA(0.1, every=0)
    with pytest.raises(TypeError, match="use_foreach"):
        EMA.from_ema_pytorch(use_foreach=True)  # no effect on the numbers, not taken


def test_posthoc_fit_residual_is_zero_on_grid_and_near_one_off_grid():
    counts = np.repeat([50, 100], 2)
    sigmas = np.tile([0.05, 0.10], 2)
    assert posthoc_fit(counts, sigmas, 100, 0.10).residual < 1e-6
    # the case: snapshots every 50 steps, an EMA at count 130 from those at 50 and 100
    off = posthoc_fit(counts, sigmas, 130, 0.05)
    assert off.residual > 0.99 and abs(off.coefficients.sum()) < 0.1
    # the residual is the L2 norm of the profile mismatch, checked by quadrature on [0, 130]
    exps = [sigma_rel_to_exponent(s) for s in sigmas]
    e_out = sigma_rel_to_exponent(0.05)

    def profile(tau, n, e):
        return np.where(tau <= n, (e + 1) * tau**e / n ** (e + 1), 0.0)

    def mismatch2(tau):
        fitted = sum(x * profile(tau, n, e) for x, n, e in zip(off.coefficients, counts, exps))
        return (fitted - profile(tau, 130, e_out)) ** 2

    err2 = sum(
        integrate.quad(mismatch2, a, b, epsabs=1e-15, epsrel=1e-10)[0] for a, b in [(0, 50), (50, 100), (100, 130)]
    )
    assert off.residual == pytest.approx(np.sqrt(err2 / power_profile_inner(130, 0.05, 130, 0.05)), rel=1e-6)
