r"""Step-size schedules :math:`\eta_t` and EMA weight schedules :math:`\gamma_t`.

Conventions used across the toolkit (theory, torch training loops and docs alike):

* iterations are counted ``t = 0, 1, 2, ...``; ``eta(t)`` is the step size of the update that
  produces :math:`\theta_{t+1}` from :math:`\theta_t`;
* the EMA is updated *after* each step with the newest iterate,

  .. math:: \bar\theta_t = (1 - \gamma_t)\,\bar\theta_{t-1} + \gamma_t\,\theta_t ,

  and ``gamma(0) = 1`` for every schedule, so :math:`\bar\theta_0 = \theta_0`;
* ``beta = 1 - gamma`` is the weight on the old average.

Every schedule is a frozen dataclass, validated on construction and vectorized over ``t``:
``schedule(t)`` accepts an int or an integer array and returns floats of the same shape.

BEMA (Block & Zhang 2025, "EMA without the lag") is described by :class:`BEMASchedule`;
its update rule, which needs a snapshot :math:`\theta_0` at burn-in, is in
:mod:`gvatheory.stabilizers`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ._checks import check_int, check_positive, check_range


def _steps(t) -> np.ndarray:
    arr = np.asarray(t)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.floor(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"t={t!r} must be a non-negative integer or integer array")
    if np.any(arr < 0):
        raise ValueError(f"t={t!r} is out of range: steps must be >= 0")
    return arr.astype(np.float64)


def _out(t, values: np.ndarray):
    return float(values) if np.ndim(t) == 0 else values


@runtime_checkable
class Schedule(Protocol):
    """Anything that maps a step (or array of steps) to a float (or array)."""

    def __call__(self, t): ...


# ---------------------------------------------------------------- step sizes eta_t

# The decay formulas, once for the theory schedules (numpy arrays) and TrainingLR (Python
# floats); each caller keeps its own clock ``s`` (steps since the start of the decay).


def _inverse_time(eta0, s, t0):
    return eta0 / (1.0 + s / t0)


def _step_decay(eta0, drop, drops):
    return eta0 * drop**drops


def _half_cosine(eta0, eta_min, cos_angle):
    r"""From ``eta0`` (``cos_angle = 1``) down to ``eta_min`` (``cos_angle = -1``); the caller takes
    the cosine of :math:`\pi` times its progress, with numpy or ``math``."""
    return eta_min + 0.5 * (eta0 - eta_min) * (1.0 + cos_angle)


@dataclass(frozen=True)
class ConstantLR:
    r""":math:`\eta_t = \eta`."""

    eta: float

    def __post_init__(self):
        check_positive("eta", self.eta)

    def __call__(self, t):
        return _out(t, np.full(np.shape(_steps(t)), float(self.eta)))


@dataclass(frozen=True)
class InverseTimeLR:
    r""":math:`\eta_t = \eta_0 / (1 + t / t_0)`; ``t0=1`` is the classic 1/t schedule."""

    eta0: float
    t0: float = 1.0

    def __post_init__(self):
        check_positive("eta0", self.eta0)
        check_positive("t0", self.t0)

    def __call__(self, t):
        s = _steps(t)
        return _out(t, _inverse_time(self.eta0, s, self.t0))


@dataclass(frozen=True)
class CosineLR:
    r""":math:`\eta_t = \eta_{min} + \tfrac12(\eta_0-\eta_{min})(1+\cos(\pi\min(t,T)/T))`, reaching
    :math:`\eta_{min}` (default 0) at ``t = T`` and staying there."""

    eta0: float
    T: int
    eta_min: float = 0.0

    def __post_init__(self):
        check_positive("eta0", self.eta0)
        check_int("T", self.T, 1)
        check_range("eta_min", self.eta_min, 0.0, float(self.eta0))

    def __call__(self, t):
        s = np.minimum(_steps(t), self.T)
        return _out(t, _half_cosine(self.eta0, self.eta_min, np.cos(np.pi * s / self.T)))


@dataclass(frozen=True)
class StepDecayLR:
    r""":math:`\eta_t = \eta_0\,\mathrm{drop}^{\lfloor t/\mathrm{every}\rfloor}`."""

    eta0: float
    drop: float = 0.1
    every: int = 1000

    def __post_init__(self):
        check_positive("eta0", self.eta0)
        check_range("drop", self.drop, 0.0, 1.0, low_open=True)
        check_int("every", self.every, 1)

    def __call__(self, t):
        s = _steps(t)
        return _out(t, _step_decay(self.eta0, self.drop, np.floor(s / self.every)))


# ---------------------------------------------------------------- EMA weights gamma_t


@dataclass(frozen=True)
class ConstantEMA:
    r""":math:`\gamma_t = \gamma` for ``t >= 1`` (and 1 at ``t = 0``, and before ``burn_in``)."""

    gamma: float
    burn_in: int = 0

    def __post_init__(self):
        check_range("gamma", self.gamma, 0.0, 1.0, low_open=True)
        check_int("burn_in", self.burn_in, 0)

    def __call__(self, t):
        s = _steps(t)
        return _out(t, np.where(s <= self.burn_in, 1.0, float(self.gamma)))


def _repr_hiding_defaults(obj, optional: tuple[str, ...]) -> str:
    """The dataclass repr without the fields in ``optional`` that hold their defaults.

    Stabilizers store the repr of their schedule as the rule of a checkpoint and refuse to resume
    under another rule; options added after checkpoints were written must not change the repr of
    the schedules those checkpoints were written with.
    """
    shown = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in optional and value == f.default:
            continue
        shown.append(f"{f.name}={value!r}")
    return f"{type(obj).__name__}({', '.join(shown)})"


@dataclass(frozen=True)
class PowerEMA:
    r"""Power schedule: :math:`\gamma_t = 1` (copy the iterate) for ``t <= burn_in``, then

    .. math:: \gamma_t = \min\big(\max\big((1 + (t - \mathrm{origin})/t_0)^{-\alpha},
              \gamma_{min}\big), \gamma_{max}\big) .

    With the defaults ``origin = 1, t0 = 1, gamma_max = 1`` this is
    :math:`\gamma_t = \max(t^{-\alpha}, \gamma_{min})` on the absolute step;
    ``alpha = 1, gamma_min = 0`` is Polyak averaging from ``t=1``. ema-pytorch's warmup
    :math:`1 - \mathrm{decay} = (1 + (t - u)/\mathrm{inv\_gamma})^{-\mathrm{power}}` restarts
    its clock at ``update_after_step = u``: ``origin = burn_in = u, t0 = inv_gamma``
    (:func:`gvatheory.stabilizer_mappings.ema_pytorch`).

    Parameters
    ----------
    alpha : float
        Decay exponent, ``> 0``.
    gamma_min, gamma_max : float
        Floor and ceiling of :math:`\gamma_t` after burn-in, ``0 <= gamma_min <= gamma_max <= 1``.
    burn_in : int
        Last step at which the average copies the iterate, ``>= 0``.
    t0 : float
        Time scale of the power law, ``> 0``.
    origin : int
        Step at which the power clock reads zero, in ``[0, burn_in + 1]`` (so the base is at
        least 1 after burn-in).
    """

    alpha: float
    gamma_min: float = 0.0
    burn_in: int = 0
    t0: float = 1.0
    origin: int = 1
    gamma_max: float = 1.0

    def __post_init__(self):
        check_positive("alpha", self.alpha)
        check_range("gamma_min", self.gamma_min, 0.0, 1.0)
        check_int("burn_in", self.burn_in, 0)
        check_positive("t0", self.t0)
        check_int("origin", self.origin, 0, self.burn_in + 1)
        check_range("gamma_max", self.gamma_max, float(self.gamma_min), 1.0)

    def __repr__(self) -> str:
        return _repr_hiding_defaults(self, ("t0", "origin", "gamma_max"))

    def __call__(self, t):
        s = _steps(t)
        base = 1.0 + np.maximum(s - self.origin, 0.0) / float(self.t0)
        g = np.minimum(np.maximum(base ** (-float(self.alpha)), self.gamma_min), self.gamma_max)
        return _out(t, np.where(s <= self.burn_in, 1.0, g))


@dataclass(frozen=True)
class PolyakEMA:
    r""":math:`\gamma_t = 1/(t - \mathrm{burn\_in} + 1)` after burn-in: the uniform average of
    :math:`\theta_{\mathrm{burn\_in}}, \dots, \theta_t`."""

    burn_in: int = 0

    def __post_init__(self):
        check_int("burn_in", self.burn_in, 0)

    def __call__(self, t):
        s = _steps(t)
        return _out(t, 1.0 / (np.maximum(s - self.burn_in, 0.0) + 1.0))


@dataclass(frozen=True)
class BEMASchedule:
    r"""Weights of BEMA, the bias-corrected EMA of Block & Zhang (2025).

    With :math:`\tau = t - \mathrm{burn\_in} + \mathrm{lag}` for ``t > burn_in``:

    .. math::
        \gamma_t = \max\big((1 + c\,\tau)^{-\kappa}, \gamma_{min}\big), \qquad
        a_t = (1 + c\,\tau)^{-p},

    and the reported iterate is :math:`\bar\theta_t + a_t(\theta_t - \theta_{\mathrm{burn\_in}})`.
    (The BEMA paper calls :math:`\gamma_t` "beta_t"; here it is the weight on the newest
    iterate, as everywhere in this toolkit.) Before and at burn-in, ``gamma = 1`` and ``a = 0``.
    Defaults are the authors': ``kappa=0.5, p=0.2, c=1, lag=10``.

    Two options reproduce the authors' offline code (``abblock/bema``, ``src/core_offline.py``,
    see :func:`gvatheory.stabilizer_mappings.bema_authors`):

    * ``correction_c=False``: :math:`a_t = (1 + \tau)^{-p}`, without ``c``;
    * ``seeded_burn_in=True``: at ``t = burn_in > 0`` the EMA is not restarted at
      :math:`\theta_{\mathrm{burn\_in}}` but takes one step from the previous iterate it holds,
      :math:`\gamma_{\mathrm{burn\_in}} = \max((1 + c\max(\mathrm{lag}, 1))^{-\kappa}, \gamma_{min})`.

    Parameters
    ----------
    kappa : float
        EMA exponent in ``[0, 1]`` (0: no averaging, the EMA is the iterate).
    p : float
        Exponent of the correction weight, ``>= 0``.
    c : float
        Time scale multiplier, ``> 0``.
    lag : float
        Age of the average at burn-in, ``>= 0`` (not necessarily an integer).
    gamma_min : float
        Floor of :math:`\gamma_t` in ``[0, 1]``.
    burn_in : int
        Step at which :math:`\theta_{\mathrm{burn\_in}}` is snapshotted, ``>= 0``.
    correction_c, seeded_burn_in : bool
        The authors' conventions above.
    """

    kappa: float = 0.5
    p: float = 0.2
    c: float = 1.0
    lag: float = 10
    gamma_min: float = 0.0
    burn_in: int = 0
    correction_c: bool = True
    seeded_burn_in: bool = False

    def __post_init__(self):
        check_range("kappa", self.kappa, 0.0, 1.0)
        check_range("p", self.p, 0.0)
        check_positive("c", self.c)
        check_range("lag", self.lag, 0.0)
        check_range("gamma_min", self.gamma_min, 0.0, 1.0)
        check_int("burn_in", self.burn_in, 0)
        for name in ("correction_c", "seeded_burn_in"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")

    def __repr__(self) -> str:
        return _repr_hiding_defaults(self, ("correction_c", "seeded_burn_in"))

    def _tau(self, s: np.ndarray) -> np.ndarray:
        # clipped at 0 where t < burn_in - lag: those steps are masked, and 1 + c tau must stay > 0
        return np.maximum(s - self.burn_in + self.lag, 0.0)

    def __call__(self, t):
        s = _steps(t)
        g = np.maximum((1.0 + self.c * self._tau(s)) ** (-float(self.kappa)), self.gamma_min)
        out = np.where(s <= self.burn_in, 1.0, np.minimum(g, 1.0))
        if self.seeded_burn_in and self.burn_in > 0:
            # the authors' clock max(t - burn_in + lag, 1) at the burn-in step itself
            seed = max((1.0 + self.c * max(float(self.lag), 1.0)) ** (-float(self.kappa)), self.gamma_min)
            out = np.where(s == self.burn_in, min(seed, 1.0), out)
        return _out(t, out)

    def bias_weight(self, t):
        """:math:`a_t`, the weight on :math:`\\theta_t - \\theta_{burn\\_in}` (0 up to burn-in)."""
        s = _steps(t)
        scale = self.c if self.correction_c else 1.0
        a = (1.0 + scale * self._tau(s)) ** (-float(self.p))
        return _out(t, np.where(s <= self.burn_in, 0.0, a))


def as_schedule(value: float | Schedule, *, kind: str) -> Schedule:
    """Accept a number for a constant schedule: ``kind`` is ``"eta"`` or ``"gamma"``."""
    if isinstance(value, Schedule) and not isinstance(value, (int, float, np.number)):
        return value
    if kind == "eta":
        return ConstantLR(float(value))
    if kind == "gamma":
        return ConstantEMA(float(value))
    raise ValueError(f"kind={kind!r} must be 'eta' or 'gamma'")


# ---------------------------------------------------------------- the training loops' family

LR_SCHEDULES = ("constant", "cosine", "inverse", "step", "wsd")


@dataclass(frozen=True)
class TrainingLR:
    r"""The learning-rate family of the training loops (behavior cloning and language models).

    A linear warmup :math:`\eta_t = \eta\,(t+1)/(w+1)` for :math:`t < w`, then, with
    :math:`s = t - w` steps after warmup and :math:`S = \text{steps} - w`:

    * ``constant``: :math:`\eta`;
    * ``cosine``: :math:`\tfrac12\eta\,(1 + \cos(\pi \min(1, s/S)))`, zero at the last step;
    * ``inverse``: :math:`\eta / (1 + s/t_0)`;
    * ``step``: :math:`\eta\,\mathrm{drop}^{\lfloor s/\mathrm{every}\rfloor}`;
    * ``wsd`` (warmup-stable-decay): :math:`\eta` until the last ``decay_fraction`` of the
      steps, then linear to zero at ``steps``.

    Evaluated in Python floats (``math``), so a training run's rates do not depend on numpy's
    vectorized kernels; ``__call__`` also accepts integer arrays.
    """

    eta: float
    kind: str = "constant"
    steps: int = 1
    warmup: int = 0
    t0: float = 1000.0
    drop: float = 0.1
    every: int = 10000
    decay_fraction: float = 0.2

    def __post_init__(self):
        check_positive("eta", self.eta)
        if self.kind not in LR_SCHEDULES:
            raise ValueError(f"kind={self.kind!r} is not valid: choose one of {', '.join(LR_SCHEDULES)}")
        check_int("steps", self.steps, 1)
        check_int("warmup", self.warmup, 0)
        check_positive("t0", self.t0)
        check_range("drop", self.drop, 0.0, 1.0, low_open=True)
        check_int("every", self.every, 1)
        check_range("decay_fraction", self.decay_fraction, 0.0, 1.0, low_open=True)

    def _at(self, t: int) -> float:
        eta, w = float(self.eta), self.warmup
        if t < w:
            return eta * (t + 1) / (w + 1)
        if self.kind == "constant":
            return eta
        if self.kind == "cosine":
            progress = min(1.0, (t - w) / max(1, self.steps - w))
            return _half_cosine(eta, 0.0, math.cos(math.pi * progress))
        if self.kind == "inverse":
            return _inverse_time(eta, t - w, self.t0)
        if self.kind == "step":
            return _step_decay(eta, self.drop, (t - w) // self.every)
        decay_start = self.steps - int(round(self.decay_fraction * self.steps))
        if t < decay_start:
            return eta
        return eta * max(0.0, (self.steps - t) / max(1, self.steps - decay_start))

    def __call__(self, t):
        s = _steps(t).astype(np.int64)
        if np.ndim(t) == 0:
            return self._at(int(s))
        return np.array([self._at(int(v)) for v in s.ravel()]).reshape(s.shape)
