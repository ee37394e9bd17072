"""The ``lm`` study (R5 over seeds): its interval arithmetic, and the quick budget end to end (slow)."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from validation.studies.lm import paired_interval, three_way


def test_paired_interval_is_the_student_t_interval_by_hand():
    d = np.array([0.1, -0.2, 0.4])
    mean, low, high = paired_interval(d)
    sd = math.sqrt(((d - d.mean()) ** 2).sum() / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t quantile 0.975 with 2 degrees of freedom
    assert mean == pytest.approx(0.1) and low == pytest.approx(0.1 - half) and high == pytest.approx(0.1 + half)
    assert paired_interval([0.3])[1:] == (-math.inf, math.inf)  # one seed decides nothing


@pytest.mark.parametrize(
    "low, high, outcome", [(-0.3, -0.1, "supports"), (0.1, 0.2, "contradicts"), (-0.1, 0.1, "inconclusive")]
)
def test_three_way(low, high, outcome):
    assert three_way(low, high, below=0.0) == outcome


@pytest.mark.slow
def test_quick_study_verdicts(tmp_path):
    from validation.studies.lm import run

    section = run(tmp_path, quick=True, seed=0, quiet=True)
    assert len(section.verdicts) == 4 and not section.contradicted, section.verdicts
    assert all(p.stat().st_size > 0 for p in section.figures)
    assert "± " in section.body  # spreads over seeds
