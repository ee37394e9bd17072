"""Sweeps: grids of behavior-cloning runs over interventions, seeds and envs (paper Figures 2, 3).

The paper asks which remedy cures gradient variance amplification by running a base
configuration under many interventions and seeds. A sweep is that grid: a spec
(:class:`SweepSpec`: base x interventions x seeds x envs) becomes one run directory per run
under one sweep directory; the runs execute on a local process pool or on Ray
(:mod:`~gvaempirics.sweeps.backends`), share one demonstration cache per (env, demo settings,
expert), resume after a kill without redoing a finished run, and end in one results table
(one row per run) and a summary per intervention with confidence intervals over seeds
(:mod:`~gvaempirics.sweeps.results`). ``gva sweep SPEC`` is the command; ``docs/sweeps.md`` the page.
"""

from .results import InterventionStats, SweepSummary, iqm_interval, prob_lower, summarize_sweep
from .run import SweepOutcome, run_sweep
from .spec import SweepRun, SweepSpec

__all__ = [
    "InterventionStats",
    "SweepOutcome",
    "SweepRun",
    "SweepSpec",
    "SweepSummary",
    "iqm_interval",
    "prob_lower",
    "run_sweep",
    "summarize_sweep",
]
