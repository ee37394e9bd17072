"""Input checks shared by gvatheory: memory estimates before allocating, scales whose squares are finite."""

import math

import numpy as np
import pytest

from gvatheory._checks import MAX_SCALE, MIN_SCALE, check_memory, check_plant, check_scale, nan_to_inf
from gvatheory.stats import estimate


def test_check_memory_names_the_largest_value_that_fits():
    assert check_memory("chains", 1000, 8, limit=8000) == 1000
    with pytest.raises(ValueError, match=r"chains=1001 is too large: .* the largest chains that fits is 1000"):
        check_memory("chains", 1001, 8, limit=8000)
    with pytest.raises(ValueError, match="the largest steps that fits is 500"):
        check_memory("steps", 10**12, 4, fixed=6000, limit=8000)
    with pytest.raises(ValueError, match="the largest H that fits is 0"):
        check_memory("H", 1, 8, fixed=9000, limit=8000)


def test_check_memory_uses_available_memory_by_default():
    check_memory("chains", 10, 8)
    with pytest.raises(ValueError, match="chains=10000000000000 is too large"):
        check_memory("chains", 10**13, 8)


def test_scales_whose_square_is_finite():
    assert math.isfinite(np.nextafter(MAX_SCALE, 0) ** 2) and MIN_SCALE**2 > 0
    check_scale("sigma", 1e150)
    with pytest.raises(ValueError, match=r"sigma=1e\+200 is out of range"):
        check_scale("sigma", 1e200)


def test_overflow_helpers_report_inf_never_nan():
    np.testing.assert_array_equal(nan_to_inf(np.array([1.0, np.nan, -np.inf])), [1.0, np.inf, -np.inf])
    est = estimate(np.array([1.0, np.inf, 2.0]))
    assert est.mean == np.inf and est.se == np.inf
    assert estimate(np.array([1.0, 2.0, 3.0])).se == pytest.approx(1 / math.sqrt(3))


def test_check_plant_promotes_scalars_and_refuses_mismatched_shapes():
    A, B = check_plant(0.5, 1.0)
    assert A.shape == B.shape == (1, 1) and A.dtype == B.dtype == float
    A, B = check_plant(np.eye(2), [[0.0], [1.0]])
    assert A.shape == (2, 2) and B.shape == (2, 1)
    with pytest.raises(ValueError, match=r"A has shape \(2, 3\), expected \(2, 2\)"):
        check_plant(np.ones((2, 3)), np.ones((2, 1)))
    with pytest.raises(ValueError, match=r"B has shape \(3, 1\), expected \(2, m\) to match A"):
        check_plant(np.eye(2), np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"(?s)B=.* must be finite"):
        check_plant(np.eye(2), [[np.nan], [1.0]])
