import numpy as np
import pytest

from gvatheory.stats import Estimate, chain_keys, estimate, seed_sequence


def test_estimate_by_hand():
    e = estimate(np.array([1.0, 2.0, 3.0, 6.0]))
    assert e.mean == 3.0 and e.n == 4
    assert e.se == pytest.approx(np.sqrt(np.var([1, 2, 3, 6], ddof=1) / 4))
    assert e.z(3.0 + 2 * e.se) == pytest.approx(-2.0)
    assert e.agrees(3.0 + 3 * e.se) and not e.agrees(3.0 + 5 * e.se)


def test_estimate_vector_and_zero_se():
    e = estimate(np.array([[1.0, 5.0], [3.0, 5.0]]))
    np.testing.assert_allclose(e.mean, [2.0, 5.0])
    assert e.agrees(np.array([2.0, 5.0]))
    assert not Estimate(5.0, 0.0, 3).agrees(5.1)
    with pytest.raises(ValueError, match="at least 2"):
        estimate(np.ones(1))


def test_chain_keys_prefix_stable_and_seeded():
    np.testing.assert_array_equal(chain_keys(3, 4), chain_keys(3, 10)[:4])
    assert not np.array_equal(chain_keys(3, 4), chain_keys(4, 4))
    assert chain_keys(np.random.SeedSequence(3), 2).dtype == np.uint64
    with pytest.raises(ValueError, match="seed=-1"):
        seed_sequence(-1)
