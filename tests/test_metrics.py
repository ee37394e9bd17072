import numpy as np
import pytest

from gvaempirics.metrics import flip_rate, gva_indices, oscillation_index, window_spread


def test_indices_by_hand():
    assert oscillation_index([10.0, 12.0, 9.0, 9.0], scale=10.0) == pytest.approx((2 + 3 + 0) / 3 / 10)
    assert window_spread([1.0, 3.0], scale=2.0) == pytest.approx(np.sqrt(2) / 2)
    r = np.array([[100.0, 0.0], [100.0, 100.0], [0.0, 100.0]])
    # jumps: ic0: 0, 100 ; ic1: 100, 0 -> two of four pairs exceed 0.1 * 100
    assert flip_rate(r, scale=100.0, threshold=0.1) == 0.5


def test_gva_indices_amplification():
    r = np.array([[100.0], [50.0], [100.0]])
    loss = np.array([1.0, 0.1, 0.11])
    idx = gva_indices(r, loss, reward_scale=100.0, loss_scale=0.9)
    assert idx.reward_oscillation == pytest.approx(0.5)
    assert idx.loss_oscillation == pytest.approx((0.9 + 0.01) / 2 / 0.9)
    assert idx.amplification == pytest.approx(idx.reward_oscillation / idx.loss_oscillation)
    assert idx.flip_rate == 1.0


def test_bad_input():
    with pytest.raises(ValueError, match="scale=0"):
        oscillation_index([1.0, 2.0], scale=0.0)
    with pytest.raises(ValueError, match="at least 2"):
        oscillation_index([1.0], scale=1.0)
    with pytest.raises(ValueError, match="shape"):
        flip_rate(np.ones(3), scale=1.0)
