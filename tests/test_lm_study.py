"""The ``lm`` section of ``gva reproduce --quick`` (about 2 minutes on 2 cores)."""

import matplotlib

matplotlib.use("Agg")

import pytest


@pytest.mark.slow
def test_quick_study_verdicts(tmp_path):
    from validation.studies.lm import run

    section = run(tmp_path, quick=True, seed=0, quiet=True)
    assert len(section.verdicts) == 4 and section.passed, section.verdicts
    assert all(p.stat().st_size > 0 for p in section.figures)
