r"""Iterate-averaging rules as tiny pure updates with explicit state (numpy).

The paper's remedy for gradient variance amplification is to evaluate an average of the SGD
iterates instead of the last one (Block et al., ICLR 2024, Sec. 5: an EMA of the iterates removes
most of the oscillation of the rollout reward :math:`J_H`). This module holds the averaging
rules themselves, in the style of optax: ``rule.init(params) -> state``,
``rule.update(state, params) -> state``, ``rule.value(state) -> params``; states are frozen
dataclasses and ``params`` is a numpy array or a (nested) dict of arrays.

* :class:`EMA` -- driven by any :math:`\gamma` schedule of :mod:`gvatheory.schedules`,

  .. math:: \bar\theta_t = (1-\gamma_t)\,\bar\theta_{t-1} + \gamma_t\,\theta_t ,
            \qquad \gamma_0 = 1,

  so ``ConstantEMA`` gives the constant-decay EMA, ``PowerEMA`` the power schedule
  :math:`\gamma_t = \max(t^{-\alpha}, \gamma_{min})`, ``PolyakEMA`` the uniform (Polyak) average
  and :class:`PowerFunctionEMA` the power-function profile of post-hoc EMA. With
  ``debias=True`` a constant-:math:`\gamma` EMA is started at zero instead and divided by
  :math:`1-(1-\gamma)^{n}` after :math:`n` iterates, as optax does.
* :class:`BEMA` -- bias-corrected EMA (Block & Zhang 2025): after burn-in it reports
  :math:`\bar\theta_t + a_t(\theta_t - \theta_{\mathrm{burn\_in}})`.
* post-hoc EMA (Karras et al. 2024, EDM2): :func:`posthoc_coefficients` solves for the
  combination of stored power-function EMA snapshots that best reproduces an EMA profile chosen
  after training.

Both rules take an update period ``every`` (only :math:`\theta_t` with ``t % every == 0`` is
absorbed; the schedule's clock still counts every step), and ``EMA.from_ema_pytorch``,
``BEMA.from_authors`` and ``BEMA.from_trl`` build them from the settings of those libraries
(:mod:`gvatheory.stabilizer_mappings`).

The torch implementation for ``nn.Module`` parameters is :mod:`gvaempirics.stabilizers`; its tests
run both on the same iterate sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from . import stabilizer_mappings
from ._checks import check_int, check_range
from .schedules import BEMASchedule, ConstantEMA, Schedule, _out, _steps, as_schedule

Params = Union[np.ndarray, dict]


def _map(fn: Callable[..., np.ndarray], *trees: Any) -> Any:
    """Apply ``fn`` leafwise over arrays or identically keyed (nested) dicts of arrays."""
    if isinstance(trees[0], dict):
        keys = trees[0].keys()
        for other in trees[1:]:
            if not isinstance(other, dict) or other.keys() != keys:
                raise ValueError(f"params keys {sorted(getattr(other, 'keys', list)())} do not match {sorted(keys)}")
        return {k: _map(fn, *(tr[k] for tr in trees)) for k in keys}
    return fn(*(np.asarray(tr, dtype=np.float64) for tr in trees))


def _check_shapes(name: str, reference: Params, params: Params) -> None:
    def check(r, p):
        if r.shape != p.shape:
            raise ValueError(f"{name} has shape {p.shape}, expected {r.shape}")
        return r

    _map(check, reference, params)


def ema_update(average: Params, params: Params, gamma: float) -> Params:
    r"""One EMA step, leafwise: :math:`(1-\gamma)\,\bar\theta + \gamma\,\theta`.

    The update of :class:`EMA` and :class:`BEMA`, and of every numpy loop that carries an EMA
    beside its iterates (:mod:`gvatheory.linear_gva`, the local model's continuation); the numba
    kernels of :mod:`gvatheory.averaging` keep their own, tested against this one. ``gamma`` is a
    number (or an array that broadcasts against the leaves).
    """
    return _map(lambda m, p: (1.0 - gamma) * m + gamma * p, average, params)


# ---------------------------------------------------------------- EMA (and Polyak)


@dataclass(frozen=True)
class EMAState:
    """``count`` iterates :math:`\\theta_0..\\theta_{count-1}` absorbed; ``average`` is the raw
    recursion (before debiasing)."""

    count: int
    average: Params


@dataclass(frozen=True)
class EMA:
    r"""EMA of the iterates with weight schedule ``gamma`` (a number means ``ConstantEMA``).

    ``update`` absorbs :math:`\theta_t` with ``t = state.count``:
    :math:`\bar\theta_t = (1-\gamma_t)\bar\theta_{t-1} + \gamma_t\theta_t`. Every schedule has
    :math:`\gamma_0 = 1`, so the zeros of ``init`` never reach the average.

    ``debias=True`` (constant ``gamma`` without burn-in only) runs the optax recursion
    :math:`m_t = (1-\gamma)m_{t-1} + \gamma\theta_t`, :math:`m_{-1} = 0`, and ``value`` returns
    :math:`m_t / (1-(1-\gamma)^{t+1})` -- the same as the schedule
    :math:`\gamma_t = \gamma/(1-(1-\gamma)^{t+1})`, which weights early iterates less than the
    plain ``gamma_0 = 1`` start. Polyak averaging is ``EMA(PolyakEMA(burn_in))``.

    ``every > 1`` absorbs only the iterates with ``t % every == 0`` (``gamma_t`` still read at
    the absolute ``t``); the others leave the average unchanged, as ema-pytorch's
    ``update_every``.
    """

    gamma: Any
    debias: bool = False
    every: int = 1
    schedule: Schedule = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "schedule", as_schedule(self.gamma, kind="gamma"))
        check_int("every", self.every, 1)
        if self.debias and not (
            isinstance(self.schedule, ConstantEMA) and self.schedule.burn_in == 0 and self.every == 1
        ):
            raise ValueError(
                f"debias=True needs a constant gamma without burn-in and every=1, got gamma={self.gamma!r}, "
                f"every={self.every}"
            )

    @classmethod
    def from_ema_pytorch(cls, **settings: Any) -> EMA:
        """The EMA that ``ema_pytorch.EMA(model, **settings)`` computes, called once per step.

        ``settings``: the keyword arguments of ema-pytorch's ``EMA`` that
        :func:`gvatheory.stabilizer_mappings.ema_pytorch` takes (same names, same defaults);
        a setting without an equivalent raises ``ValueError``.
        """
        eq = stabilizer_mappings.ema_pytorch(**settings)
        return cls(eq.schedule, every=eq.every)

    def init(self, params: Params) -> EMAState:
        return EMAState(count=0, average=_map(np.zeros_like, params))

    def update(self, state: EMAState, params: Params) -> EMAState:
        _check_shapes("params", state.average, params)
        if state.count % self.every:
            return EMAState(count=state.count + 1, average=state.average)
        g = float(self.schedule.gamma) if self.debias else self.schedule(state.count)
        return EMAState(count=state.count + 1, average=ema_update(state.average, params, g))

    def value(self, state: EMAState) -> Params:
        _check_count(state.count)
        if not self.debias:
            return state.average
        scale = 1.0 - (1.0 - float(self.schedule.gamma)) ** state.count
        return _map(lambda m: m / scale, state.average)


def _check_count(count: int) -> None:
    if count < 1:
        raise ValueError(f"count={count} is out of range: value() needs at least one update (count >= 1)")


# ---------------------------------------------------------------- BEMA


@dataclass(frozen=True)
class BEMAState:
    """EMA of the iterates, the snapshot ``anchor`` :math:`= \\theta_{burn\\_in}` and the newest
    absorbed iterate ``last`` (:math:`\\theta_{count-1}` when ``every = 1``)."""

    count: int
    ema: Params
    anchor: Params
    last: Params


@dataclass(frozen=True)
class BEMA:
    r"""Bias-corrected EMA (Block & Zhang 2025) with weights from :class:`BEMASchedule`.

    .. math::
        \bar\theta_t = (1-\gamma_t)\bar\theta_{t-1} + \gamma_t\theta_t, \qquad
        \mathrm{bema}_t = \bar\theta_t + a_t\,(\theta_t - \theta_{\mathrm{burn\_in}}),

    with :math:`\gamma_t = 1, a_t = 0` up to burn-in, so :math:`\mathrm{bema}_t = \theta_t` there.
    The correction :math:`a_t(\theta_t - \theta_{\mathrm{burn\_in}})` removes the lag of the EMA
    behind a drifting iterate.

    ``every > 1`` absorbs only the iterates with ``t % every == 0``; in between, ``value`` is
    the BEMA of the last absorbed iterate (as the references report it).
    """

    schedule: BEMASchedule = field(default_factory=BEMASchedule)
    every: int = 1

    def __post_init__(self):
        if not isinstance(self.schedule, BEMASchedule):
            raise ValueError(f"schedule={self.schedule!r} must be a BEMASchedule")
        check_int("every", self.every, 1)

    @classmethod
    def from_authors(cls, **settings: Any) -> BEMA:
        """The BEMA of the authors' offline code (``abblock/bema``, ``core_offline.BEMA``) fed the
        checkpoints every ``update_freq`` steps, with ``update()`` called once per step.

        ``settings``: ``update_freq`` and the keyword arguments of their ``BEMA`` that
        :func:`gvatheory.stabilizer_mappings.bema_authors` takes (same names, same defaults).
        """
        eq = stabilizer_mappings.bema_authors(**settings)
        return cls(eq.schedule, every=eq.every)

    @classmethod
    def from_trl(cls, **settings: Any) -> BEMA:
        """The BEMA of TRL's ``BEMACallback(**settings)``, with ``update()`` called once per step.

        ``settings``: the keyword arguments of ``BEMACallback`` that
        :func:`gvatheory.stabilizer_mappings.bema_trl` takes (same names, same defaults).
        """
        eq = stabilizer_mappings.bema_trl(**settings)
        return cls(eq.schedule, every=eq.every)

    def init(self, params: Params) -> BEMAState:
        zeros = _map(np.zeros_like, params)
        return BEMAState(count=0, ema=zeros, anchor=zeros, last=zeros)

    def update(self, state: BEMAState, params: Params) -> BEMAState:
        _check_shapes("params", state.ema, params)
        t = state.count
        if t % self.every:
            return BEMAState(count=t + 1, ema=state.ema, anchor=state.anchor, last=state.last)
        g = self.schedule(t)
        ema = ema_update(state.ema, params, g)
        copy = _map(np.array, params)
        anchor = copy if t <= self.schedule.burn_in else state.anchor
        return BEMAState(count=t + 1, ema=ema, anchor=anchor, last=copy)

    def value(self, state: BEMAState) -> Params:
        _check_count(state.count)
        absorbed = (state.count - 1) // self.every * self.every  # the last absorbed iterate
        a = self.schedule.bias_weight(absorbed)
        return _map(lambda m, p, p0: m + a * (p - p0), state.ema, state.last, state.anchor)


# ---------------------------------------------------------------- post-hoc EMA (EDM2)


def sigma_rel_to_exponent(sigma_rel):
    r"""Exponent :math:`\gamma_p` of the power-function profile with relative std ``sigma_rel``.

    The profile :math:`p(\tau) \propto \tau^{\gamma_p}` on :math:`[0, t]` has standard deviation
    :math:`\sigma_{rel}\,t` with
    :math:`\sigma_{rel}^2 = (\gamma_p+1)/((\gamma_p+2)^2(\gamma_p+3))`, so :math:`\gamma_p` is the
    largest real root of :math:`x^3 + 7x^2 + (16-\sigma_{rel}^{-2})x + 12 - \sigma_{rel}^{-2}`
    (Karras et al. 2024, Eq. 3 and App. C). ``sigma_rel`` must be in
    :math:`(0, 12^{-1/2}]`; :math:`12^{-1/2}` is the uniform average (:math:`\gamma_p = 0`).
    """
    s = check_range("sigma_rel", sigma_rel, 0.0, 12**-0.5, low_open=True)
    inv2 = s.reshape(-1) ** -2.0
    roots = [np.roots([1.0, 7.0, 16.0 - v, 12.0 - v]) for v in inv2]
    # max(0, .) absorbs the rounding of sigma_rel**-2 at the uniform end, where the root is 0
    exp = np.array([max(0.0, r[np.abs(r.imag) < 1e-9].real.max()) for r in roots]).reshape(s.shape)
    return float(exp) if exp.ndim == 0 else exp


def exponent_to_sigma_rel(exponent):
    r""":math:`\sigma_{rel} = \sqrt{(\gamma_p+1)/((\gamma_p+2)^2(\gamma_p+3))}`, the inverse of
    :func:`sigma_rel_to_exponent` (``exponent >= 0``)."""
    e = check_range("exponent", exponent, 0.0)
    out = np.sqrt((e + 1.0) / ((e + 2.0) ** 2 * (e + 3.0)))
    return float(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class PowerFunctionEMA:
    r"""The power-function EMA schedule of EDM2 in this toolkit's indexing.

    Karras et al. update with :math:`\beta = (1 - 1/n)^{\gamma_p+1}` when the ``n``-th iterate
    arrives; here iterate :math:`\theta_t` is the ``(t+1)``-th, so

    .. math:: \gamma_t = 1 - \Big(\frac{t}{t+1}\Big)^{\gamma_p+1}, \qquad \gamma_0 = 1 .

    After ``n`` iterates the weight on :math:`\theta_s` is exactly
    :math:`((s+1)^{\gamma_p+1} - s^{\gamma_p+1})/n^{\gamma_p+1} = \int_s^{s+1} p_n(\tau)\,d\tau`
    for the continuous profile :math:`p_n(\tau) = (\gamma_p+1)\tau^{\gamma_p}/n^{\gamma_p+1}` on
    :math:`[0, n]`, whose relative std is ``sigma_rel``.
    """

    sigma_rel: float
    exponent: float = field(init=False)

    def __post_init__(self):
        # solved once: the schedule is called at every training step
        object.__setattr__(self, "exponent", sigma_rel_to_exponent(self.sigma_rel))

    def __call__(self, t):
        s = _steps(t)
        return _out(t, 1.0 - (s / (s + 1.0)) ** (self.exponent + 1.0))


def power_profile_inner(a_count, a_sigma_rel, b_count, b_sigma_rel):
    r"""Inner product :math:`\int_0^\infty p_a(\tau)\,p_b(\tau)\,d\tau` of two power-function
    profiles ending at ``a_count`` and ``b_count`` (broadcasting).

    For :math:`a \le b`, with exponents :math:`\gamma_a, \gamma_b`,

    .. math:: \langle p_a, p_b\rangle = \frac{(\gamma_a+1)(\gamma_b+1)(a/b)^{\gamma_b}}
              {(\gamma_a+\gamma_b+1)\,b} .
    """
    a = check_range("a_count", a_count, 0.0, low_open=True)
    b = check_range("b_count", b_count, 0.0, low_open=True)
    ea = np.asarray(sigma_rel_to_exponent(a_sigma_rel), dtype=float)
    eb = np.asarray(sigma_rel_to_exponent(b_sigma_rel), dtype=float)
    ratio_exp = np.where(a < b, eb, -ea)
    return (ea + 1.0) * (eb + 1.0) * (a / b) ** ratio_exp / ((ea + eb + 1.0) * np.maximum(a, b))


@dataclass(frozen=True)
class PosthocFit:
    r"""The least-squares synthesis of a power-function EMA from snapshots.

    Attributes
    ----------
    coefficients : ndarray
        Weights ``x`` on the snapshots.
    residual : float
        Relative :math:`L^2` error of the synthesized profile,
        :math:`\|\sum_i x_i p_i - p_{out}\| / \|p_{out}\|`, in ``[0, 1]``: 0 reproduces the
        target exactly, 1 reproduces nothing of it (as ``x = 0`` would).
    """

    coefficients: np.ndarray
    residual: float


def posthoc_fit(in_counts, in_sigma_rels, out_count: float, out_sigma_rel: float) -> PosthocFit:
    r"""Weights ``x`` such that :math:`\sum_i x_i\,\mathrm{snapshot}_i` best approximates the
    power-function EMA ``(out_count, out_sigma_rel)``, and the residual of that fit.

    Snapshot ``i`` is a power-function EMA with ``in_sigma_rels[i]`` after ``in_counts[i]``
    iterates. ``x`` minimises :math:`\|\sum_i x_i p_i - p_{out}\|_{L^2}`, i.e. solves the normal
    equations :math:`A x = b` with the Gram matrix :math:`A_{ij} = \langle p_i, p_j\rangle` and
    :math:`b_i = \langle p_i, p_{out}\rangle` (:func:`power_profile_inner`); ``lstsq`` handles a
    singular :math:`A` (duplicated snapshots) with the minimum-norm solution, as in EDM2. The
    residual is
    :math:`\sqrt{\langle p_{out}, p_{out}\rangle - 2x^\top b + x^\top A x} / \|p_{out}\|`;
    it is large when the snapshots cannot represent the target, e.g. a narrow profile ending
    between two snapshots (its recent iterates are in no snapshot at or before it).
    """
    counts, sigmas = np.broadcast_arrays(np.asarray(in_counts, dtype=float), np.asarray(in_sigma_rels, dtype=float))
    counts, sigmas = counts.reshape(-1), sigmas.reshape(-1)
    if counts.size == 0:
        raise ValueError("in_counts=[] is out of range: need at least one snapshot")
    gram = power_profile_inner(counts[:, None], sigmas[:, None], counts[None, :], sigmas[None, :])
    rhs = power_profile_inner(counts, sigmas, out_count, out_sigma_rel)
    x = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    norm2 = float(power_profile_inner(out_count, out_sigma_rel, out_count, out_sigma_rel))
    # clipped at 0: for an exact fit the difference is rounding of either sign
    err2 = max(norm2 - 2.0 * float(x @ rhs) + float(x @ gram @ x), 0.0)
    return PosthocFit(coefficients=x, residual=min(float(np.sqrt(err2 / norm2)), 1.0))


def posthoc_coefficients(in_counts, in_sigma_rels, out_count: float, out_sigma_rel: float) -> np.ndarray:
    """The weights ``x`` of :func:`posthoc_fit` alone."""
    return posthoc_fit(in_counts, in_sigma_rels, out_count, out_sigma_rel).coefficients


def power_ema_weights(count: int, sigma_rel: float) -> np.ndarray:
    r"""Weights on :math:`\theta_0..\theta_{count-1}` of a power-function EMA after ``count``
    iterates: :math:`w_s = ((s+1)^{\gamma_p+1} - s^{\gamma_p+1})/count^{\gamma_p+1}`."""
    e = sigma_rel_to_exponent(sigma_rel) + 1.0
    s = np.arange(count + 1, dtype=float) / count
    return np.diff(s**e)
