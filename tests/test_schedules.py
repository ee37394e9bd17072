import numpy as np
import pytest

from gvatheory.schedules import (
    BEMASchedule,
    ConstantEMA,
    ConstantLR,
    CosineLR,
    InverseTimeLR,
    PolyakEMA,
    PowerEMA,
    StepDecayLR,
    as_schedule,
)


def test_step_sizes_by_hand():
    assert ConstantLR(0.3)(7) == 0.3
    np.testing.assert_allclose(InverseTimeLR(1.0, t0=1)(np.arange(4)), [1, 1 / 2, 1 / 3, 1 / 4])
    np.testing.assert_allclose(InverseTimeLR(2.0, t0=10)(np.array([0, 10])), [2.0, 1.0])
    np.testing.assert_allclose(
        CosineLR(1.0, T=4)(np.arange(6)), [1, (1 + np.sqrt(0.5)) / 2, 0.5, (1 - np.sqrt(0.5)) / 2, 0, 0], atol=1e-15
    )
    np.testing.assert_allclose(StepDecayLR(1.0, drop=0.5, every=2)(np.arange(5)), [1, 1, 0.5, 0.5, 0.25])


def test_ema_weights_by_hand():
    np.testing.assert_allclose(ConstantEMA(0.1)(np.arange(3)), [1, 0.1, 0.1])
    np.testing.assert_allclose(ConstantEMA(0.1, burn_in=2)(np.arange(4)), [1, 1, 1, 0.1])
    np.testing.assert_allclose(PowerEMA(0.5, gamma_min=0.4)(np.arange(5)), [1, 1, 2**-0.5, 3**-0.5, 0.5])
    np.testing.assert_allclose(PowerEMA(0.5, gamma_min=0.6)(np.arange(5)), [1, 1, 2**-0.5, 0.6, 0.6])
    np.testing.assert_allclose(PowerEMA(1.0, burn_in=3)(np.arange(6)), [1, 1, 1, 1, 1 / 4, 1 / 5])
    np.testing.assert_allclose(PolyakEMA()(np.arange(4)), [1, 1 / 2, 1 / 3, 1 / 4])
    np.testing.assert_allclose(PolyakEMA(burn_in=2)(np.arange(5)), [1, 1, 1, 1 / 2, 1 / 3])


def test_polyak_weights_give_uniform_average():
    rng = np.random.default_rng(0)
    theta = rng.normal(size=20)
    gam = PolyakEMA()(np.arange(20))
    ema = theta[0]
    for t in range(1, 20):
        ema = (1 - gam[t]) * ema + gam[t] * theta[t]
    assert ema == pytest.approx(theta.mean(), rel=1e-12)


def test_bema_weights_by_hand():
    s = BEMASchedule(burn_in=5)
    # tau = t - burn_in + lag = 1 at t = burn_in + 1 - 10 + 10 ...
    t = np.array([0, 5, 6, 7])
    tau = np.array([6, 7]) - 5 + 10
    np.testing.assert_allclose(s(t), [1, 1, *((1 + tau) ** -0.5)])
    np.testing.assert_allclose(s.bias_weight(t), [0, 0, *((1 + tau) ** -0.2)])
    assert BEMASchedule(gamma_min=0.3)(100) == 0.3


def test_scalar_in_scalar_out_and_vectorized_shape():
    assert isinstance(PowerEMA(0.7)(3), float)
    assert PowerEMA(0.7)(np.zeros((2, 3), dtype=int)).shape == (2, 3)
    assert isinstance(as_schedule(0.1, kind="eta"), ConstantLR)
    assert isinstance(as_schedule(0.1, kind="gamma"), ConstantEMA)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ConstantLR(0.0), r"eta=0\.0 is out of range: must be in \(0, inf\)"),
        (lambda: ConstantLR(float("nan")), "eta=nan must be finite"),
        (lambda: ConstantEMA(1.5), r"gamma=1\.5 is out of range: must be in \(0, 1\]"),
        (lambda: ConstantEMA(0.0), "gamma=0.0 is out of range"),
        (lambda: PowerEMA(0.0), "alpha=0.0 is out of range"),
        (lambda: PowerEMA(0.5, burn_in=-1), "burn_in=-1 is out of range"),
        (lambda: CosineLR(1.0, T=0), "T=0 is out of range"),
        (lambda: ConstantLR(1.0)(-1), "t=-1 is out of range"),
        (lambda: ConstantLR(1.0)(0.5), "must be a non-negative integer"),
    ],
)
def test_bad_input_names_parameter_and_range(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_training_lr_family_by_hand_and_against_the_plain_schedules():
    from gvatheory.schedules import TrainingLR

    t = np.arange(0, 40)
    # without warmup each kind is the plain schedule of the same name
    np.testing.assert_allclose(TrainingLR(0.5, "inverse", t0=7.0)(t), InverseTimeLR(0.5, 7.0)(t), rtol=1e-15)
    np.testing.assert_allclose(TrainingLR(0.5, "step", drop=0.3, every=9)(t), StepDecayLR(0.5, 0.3, 9)(t), rtol=1e-15)
    np.testing.assert_allclose(TrainingLR(0.5, "cosine", steps=30)(t), CosineLR(0.5, T=30)(t), rtol=0, atol=1e-15)
    # warmup by hand: eta (t+1)/(w+1), then the schedule shifted by w
    lr = TrainingLR(1.0, "step", warmup=3, drop=0.5, every=2)
    assert [lr(i) for i in range(8)] == [0.25, 0.5, 0.75, 1.0, 1.0, 0.5, 0.5, 0.25]
    wsd = TrainingLR(2.0, "wsd", steps=10, decay_fraction=0.3)
    assert [wsd(i) for i in (0, 6, 7, 8, 9, 10)] == [2.0, 2.0, 2.0, 2.0 * 2 / 3, 2.0 / 3, 0.0]
    assert isinstance(lr(3), float) and lr(np.array([0, 3])).tolist() == [0.25, 1.0]
    with pytest.raises(ValueError, match="kind='linear' is not valid"):
        TrainingLR(1.0, "linear")


def test_power_ema_clock_options_by_hand():
    # ema-pytorch's warmup: clock restarted at burn_in, time scale inv_gamma, decay capped
    s = PowerEMA(0.5, gamma_min=0.1, burn_in=3, t0=2.0, origin=3, gamma_max=0.5)
    t = np.arange(8)
    warm = np.clip((1 + np.maximum(t - 3, 0) / 2.0) ** -0.5, 0.1, 0.5)
    np.testing.assert_allclose(s(t), np.where(t <= 3, 1.0, warm), rtol=1e-15)
    # the defaults are the absolute-step schedule t^-alpha
    np.testing.assert_array_equal(PowerEMA(0.7, t0=1.0, origin=1)(t[1:]), t[1:] ** -0.7)
    with pytest.raises(ValueError, match=r"origin=5 is out of range: must be an integer in \[0, 4\]"):
        PowerEMA(0.5, burn_in=3, origin=5)
    with pytest.raises(ValueError, match=r"gamma_max=0\.05 is out of range"):
        PowerEMA(0.5, gamma_min=0.1, gamma_max=0.05)


def test_bema_authors_options_by_hand():
    base = dict(kappa=0.5, p=0.2, c=2.0, lag=0.5, burn_in=4)
    plain, theirs = BEMASchedule(**base), BEMASchedule(**base, correction_c=False, seeded_burn_in=True)
    tau = np.array([1.5, 2.5])  # t = 5, 6
    np.testing.assert_allclose(plain.bias_weight([5, 6]), (1 + 2.0 * tau) ** -0.2, rtol=1e-15)
    np.testing.assert_allclose(theirs.bias_weight([5, 6]), (1 + tau) ** -0.2, rtol=1e-15)
    np.testing.assert_array_equal(theirs([5, 6]), plain([5, 6]))
    # seeded: at t = burn_in one EMA step on the clock max(lag, 1) instead of a copy
    assert plain(4) == 1.0 and theirs(4) == pytest.approx((1 + 2.0 * 1.0) ** -0.5, rel=1e-15)
    assert theirs(3) == 1.0 and theirs.bias_weight(4) == 0.0
    assert BEMASchedule(kappa=0.0)(7) == 1.0  # kappa = 0: no averaging
    with pytest.raises(ValueError, match="seeded_burn_in=1 must be True or False"):
        BEMASchedule(seeded_burn_in=1)
    with pytest.raises(ValueError, match=r"lag=-1\.0 is out of range"):
        BEMASchedule(lag=-1.0)
