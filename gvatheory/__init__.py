"""Exact and Monte Carlo toy systems for gradient variance amplification (GVA).

Light by design: numpy, scipy, numba and sympy only. Never imports torch, gymnasium or mujoco.
One toy system per module, named like its ``gva theory`` command, its study and its doc page:

* ``averaging`` -- SGD with iterate averaging on quadratics: exact moments, Lyapunov, Monte Carlo
  (``gva theory averaging``, ``docs/averaging.md``);
* ``noise_floor`` -- the stationary excess loss of SGD and its EMAs, for a Hessian or a measured
  spectrum of curvatures (study ``noise-floor``, ``docs/studies/noise_floor.md``);
* ``cliff`` -- the cliff problem of paper Eq. 4.2: exact and Monte Carlo gaps of SGD and its EMA
  (``gva theory cliff``, ``docs/cliff.md``);
* ``prop41`` -- paper Prop. 4.1 on the cliff problem, as written and in a precise version
  (``gva theory prop41``, ``docs/cliff.md``);
* ``prop31`` -- linear closed loops, paper Prop. 3.1 (``gva theory prop31``, ``docs/prop31.md``);
* ``linear_gva`` -- GVA in a linear closed loop: BC by minibatch SGD, EMA, predictions
  (``gva theory linear-gva``, ``docs/linear_gva.md``);
* ``stabilizers`` -- EMA, Polyak, BEMA and post-hoc EMA update rules in numpy
  (``docs/stabilizers.md``; the torch twin is ``gvaempirics.stabilizers``).

Shared pieces: ``moments`` (the linear-Gaussian moment engine and Lyapunov solve), ``schedules``
(step sizes and EMA weights), ``stats`` (estimates with standard errors, seeding), ``symbolic``
(sympy derivations), ``plots`` (figures from result objects), ``config`` (self-checking
configuration dataclasses). The public classes and functions of every toy system are
re-exported here (``from gvatheory import QuadraticSGD, CliffProblem, LinearBC``); each module is
imported on first use, so ``import gvatheory`` stays light.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "averaging": (
        "QuadraticSGD",
        "SGDSamples",
        "AveragingComparison",
        "compare",
        "ScalarMoments",
        "scalar_moments",
        "scalar_stationary",
        "simulate_scalar",
    ),
    "cliff": (
        "CliffProblem",
        "CliffExpectation",
        "CliffSGD",
        "agreement_z",
        "gaussian_expectation",
        "sgd_expectation",
        "sgd_monte_carlo",
    ),
    "prop41": (
        "Prop41Grid",
        "default_grid",
        "Prop41Precise",
        "prop41_precise",
        "Prop41AsWritten",
        "prop41_as_written",
        "GapCurves",
        "gap_curves",
        "precise_sgd_margin",
        "precise_ema_margin",
        "gamma_at_text_boundary",
    ),
    "prop31": (
        "LinearClosedLoop",
        "prop31_system",
        "WorstCaseGap",
        "worst_case_gap",
        "GrowthFit",
        "Prop31Table",
        "prop31_table",
    ),
    "linear_gva": (
        "LinearBC",
        "double_integrator",
        "MomentPrediction",
        "predict_moments",
        "stationary_moments",
        "DeltaMethod",
        "delta_method",
        "SGDRun",
        "run_sgd",
        "GVAExperiment",
        "gva_experiment",
    ),
    "stabilizers": ("EMA", "BEMA", "PowerFunctionEMA", "posthoc_coefficients"),
    "moments": ("JointGaussian",),
    "stats": ("Estimate", "estimate", "variance_estimate"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [name for names in _EXPORTS.values() for name in names]


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'gvatheory' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
