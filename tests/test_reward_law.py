"""Study 3's verdicts on synthetic rollouts: controls built to support and built to contradict.

No environment is stepped: the analysis functions of ``validation.studies.reward_law`` take reward
arrays shaped as the evaluator returns them, and the study decides on what they give."""

from __future__ import annotations

import numpy as np
import pytest

from validation.studies import reward_law as study

CHAINS, PER_CHAIN, N, ICS = 8, study.PRED_PER_CHAIN, 12, 10


def _windows(windows: int, sd: float, seed: int) -> np.ndarray:
    """(windows, N, ICS) rewards: a level per IC plus independent noise of ``sd`` per iterate."""
    rng = np.random.default_rng(seed)
    level = np.linspace(0.5, 1.0, ICS)
    return level + sd * rng.standard_normal((windows, N, ICS))


@pytest.mark.parametrize("weights", ["raw", "ema"])
def test_spread_supports_when_the_law_is_right_and_contradicts_when_4x_off(weights):
    real = _windows(CHAINS, 0.05, 0)
    right = study.spread_ratios(real, _windows(CHAINS * PER_CHAIN, 0.05, 1), scale=1.0)
    assert right["interval"].n == CHAINS  # the unit is the chain, not (window, IC)
    assert study.spread_verdict(weights, right).outcome == "supports"
    wide = study.spread_ratios(real, _windows(CHAINS * PER_CHAIN, 0.2, 1), scale=1.0)
    assert wide["interval"].high < 0.5
    assert study.spread_verdict(weights, wide).outcome == "contradicts"


def test_flips_support_when_the_law_is_right_and_contradict_when_4x_off():
    real = _windows(CHAINS, 0.05, 2)  # |Delta J| > 0.1 in about 16% of pairs
    right = study.flip_ratios(real, _windows(CHAINS * PER_CHAIN, 0.05, 3), scale=1.0)
    assert right["interval"].n == CHAINS
    assert study.flips_verdict(right).outcome == "supports"
    wide = study.flip_ratios(real, _windows(CHAINS * PER_CHAIN, 0.2, 3), scale=1.0)  # about 72% of pairs
    assert study.flips_verdict(wide).outcome == "contradicts"


def test_a_window_without_flips_leaves_the_verdict_inconclusive():
    real = _windows(CHAINS, 0.05, 2)
    real[0] = real[0, :1]  # chain 0 never moves: its flip rate is zero
    r = study.flip_ratios(real, _windows(CHAINS * PER_CHAIN, 0.05, 3), scale=1.0)
    v = study.flips_verdict(r)
    assert v.outcome == "inconclusive" and "no log" in v.detail


def _delta(reward) -> list:
    """delta_ratios for a reward ``reward(z) -> (points, ICS)`` of a 2-d Gaussian law."""
    cov = np.array([[1.0, 0.3], [0.3, 0.5]])
    sd = np.sqrt(np.diag(cov))
    draws = np.random.default_rng(4).multivariate_normal(np.zeros(2), cov, 48)
    return study.delta_ratios(reward(study.probe_offsets(sd)), reward(draws), sd, cov)


def test_delta_method_on_a_linear_reward_holds_and_does_not_break():
    """A reward exactly linear in the weights: the delta method is exact at every step h, so the
    short-horizon claim supports and the breakdown claim is contradicted (must not support)."""
    a = np.random.default_rng(5).normal(size=(2, ICS))
    per_step = _delta(lambda z: z @ a + 3.0)
    assert [r["h"] for r in per_step] == list(study.FD_STEPS) == [0.03, 0.1, 0.3, 1.0]
    assert all(r["interval"].n == ICS for r in per_step)  # the unit is the IC
    assert study.delta_verdict("reward-law/delta-short", per_step).outcome == "supports"
    assert study.delta_verdict("reward-law/delta-long-breaks", per_step).outcome == "contradicts"


def test_delta_method_on_a_curved_reward_breaks_at_every_step():
    """A reward flat at the mean and curved across the law's width (u^3 plus a small slope per IC):
    the slope at the mean misses most of the spread at every step h, so the breakdown claim supports
    and the short-horizon claim is contradicted."""
    beta = np.linspace(0.2, 0.5, ICS)

    def reward(z):
        u = (z @ np.array([1.0, 0.5]))[:, None]
        return u**3 + beta * u

    per_step = _delta(reward)
    assert all(r["interval"].high < 0.5 for r in per_step)
    assert study.delta_verdict("reward-law/delta-long-breaks", per_step).outcome == "supports"
    assert study.delta_verdict("reward-law/delta-short", per_step).outcome == "contradicts"


def test_steps_that_disagree_leave_the_delta_verdict_inconclusive():
    a = np.random.default_rng(5).normal(size=(2, ICS))
    linear = _delta(lambda z: z @ a)
    curved = _delta(lambda z: (z @ np.array([1.0, 0.5]))[:, None] ** 3 + 0.3 * (z @ a))
    mixed = linear[:2] + curved[2:]
    assert study.delta_verdict("reward-law/delta-long-breaks", mixed).outcome == "inconclusive"
