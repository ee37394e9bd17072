r"""The running averages of :mod:`gvaempirics.stabilizers`: :class:`EMA`, :class:`Polyak`,
:class:`BEMA`, over the shared plumbing (which parameters, dtypes, export, state dicts).

Update ``t`` absorbs :math:`\theta_t`:
:math:`\bar\theta_t = (1-\gamma_t)\,\bar\theta_{t-1} + \gamma_t\,\theta_t`, :math:`\gamma_0 = 1`;
with an update period ``every > 1`` only the iterates with ``t % every == 0`` are absorbed.
The same rules in numpy are :mod:`gvatheory.stabilizers`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from gvatheory import stabilizer_mappings
from gvatheory._checks import check_int
from gvatheory.schedules import BEMASchedule, PolyakEMA, Schedule, as_schedule

__all__ = ["EMA", "Polyak", "BEMA", "averaged_copy", "swapped"]


def _average_dtype(p: Tensor) -> torch.dtype:
    # half-precision averages would lose the small gamma * (theta - ema) increments
    return torch.promote_types(p.dtype, torch.float32)


@torch.no_grad()
def _ema_step(average: list[Tensor], source: list[Tensor], gamma: float, foreach: bool) -> None:
    """``average <- (1 - gamma) average + gamma source`` in place."""
    if foreach:
        if gamma == 1.0:
            torch._foreach_copy_(average, source)
        else:
            torch._foreach_lerp_(average, source, gamma)
    else:
        for a, p in zip(average, source):
            a.copy_((1.0 - gamma) * a + gamma * p)


def averaged_copy(module: nn.Module, params: dict[str, Tensor]) -> nn.Module:
    """A deep copy of ``module`` holding ``params`` (name -> tensor), with gradients off.

    Buffers are the module's current ones. Use it to evaluate an average while training goes on.
    """
    out = copy.deepcopy(module)
    named = dict(out.named_parameters())
    _check_names(params, named)
    with torch.no_grad():
        for name, value in params.items():
            named[name].copy_(value)
    return out.requires_grad_(False)


@contextmanager
def swapped(module: nn.Module, params: dict[str, Tensor]) -> Iterator[nn.Module]:
    """Context manager: ``module`` holds ``params`` inside the block, its own weights after.

    Cheaper than :func:`averaged_copy` in memory; the original weights are restored even if the
    block raises.
    """
    named = dict(module.named_parameters())
    _check_names(params, named)
    saved = {name: named[name].detach().clone() for name in params}
    with torch.no_grad():
        for name, value in params.items():
            named[name].copy_(value)
    try:
        yield module
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                named[name].copy_(value)


def _check_names(params: dict[str, Tensor], named: dict[str, Tensor]) -> None:
    for name, value in params.items():
        if name not in named:
            raise ValueError(f"params has parameter name {name!r}, which the module does not have")
        if tuple(value.shape) != tuple(named[name].shape):
            raise ValueError(f"params[{name!r}] has shape {tuple(value.shape)}, expected {tuple(named[name].shape)}")


class _Averager:
    """Shared plumbing: which parameters are averaged, value export, state dict checks."""

    def __init__(self, module: nn.Module, *, foreach: bool, every: int = 1):
        if not isinstance(module, nn.Module):
            raise ValueError(f"module={type(module).__name__} must be a torch.nn.Module")
        self.module = module
        self.foreach = bool(foreach)
        self.every = check_int("every", every, 1)
        named = [(n, p) for n, p in module.named_parameters() if p.is_floating_point()]
        if not named:
            raise ValueError("module has no floating-point parameters to average")
        self.names = [n for n, _ in named]
        self._params = [p for _, p in named]
        self.count = 0

    def _new_buffers(self) -> list[Tensor]:
        return [
            torch.zeros_like(p, dtype=_average_dtype(p), memory_format=torch.contiguous_format) for p in self._params
        ]

    def _sources(self) -> list[Tensor]:
        return [p.detach() if p.dtype == _average_dtype(p) else p.detach().to(_average_dtype(p)) for p in self._params]

    def _absorbs(self, t: int) -> bool:
        """Whether update ``t`` absorbs the iterate (the update period)."""
        return t % self.every == 0

    def _value(self) -> list[Tensor]:
        raise NotImplementedError

    def averaged_parameters(self) -> dict[str, Tensor]:
        """The average as a fresh ``{name: tensor}`` dict in the parameters' dtype and device."""
        if self.count < 1:
            raise ValueError(f"count={self.count} is out of range: call update() at least once first")
        return {n: v.detach().to(p.dtype, copy=True) for n, v, p in zip(self.names, self._value(), self._params)}

    def averaged_model(self) -> nn.Module:
        """A deep copy of the module holding the average (buffers: the module's current ones)."""
        return averaged_copy(self.module, self.averaged_parameters())

    @contextmanager
    def swap(self) -> Iterator[nn.Module]:
        """``with stab.swap(): evaluate(model)`` -- the module holds the average inside the block."""
        with swapped(self.module, self.averaged_parameters()) as m:
            yield m

    def end(self) -> None:
        """End-of-training hook of the stabilizer protocol; nothing to do for a running average."""

    def _pack(self, tensors: list[Tensor]) -> dict[str, Tensor]:
        return {n: t.detach().clone() for n, t in zip(self.names, tensors)}

    def _unpack(self, key: str, stored: dict[str, Tensor], into: list[Tensor]) -> None:
        if sorted(stored) != sorted(self.names):
            raise ValueError(f"state_dict[{key!r}] has parameters {sorted(stored)}, expected {sorted(self.names)}")
        with torch.no_grad():
            for name, t in zip(self.names, into):
                if tuple(stored[name].shape) != tuple(t.shape):
                    raise ValueError(
                        f"state_dict[{key!r}][{name!r}] has shape {tuple(stored[name].shape)}, expected {tuple(t.shape)}"
                    )
                t.copy_(stored[name])

    def _check_rule(self, state: dict[str, Any]) -> None:
        # resuming under another rule would silently change the average; refuse instead
        if state.get("rule") != self._rule():
            raise ValueError(
                f"state_dict['rule']={state.get('rule')!r} does not match this stabilizer, {self._rule()!r}"
            )
        count = state.get("count")
        check_int("state_dict['count']", count, 0)
        self.count = int(count)

    def _rule(self) -> str:
        raise NotImplementedError

    def _with_period(self, rule: str) -> str:
        # every = 1 keeps the rule strings of checkpoints written before the option existed
        return rule if self.every == 1 else f"{rule[:-1]}, every={self.every})"


class EMA(_Averager):
    r"""EMA of ``module``'s parameters with weight schedule ``gamma``.

    Parameters
    ----------
    module : nn.Module
        The model being trained; its floating-point parameters are averaged.
    gamma : float or Schedule
        Weight on the newest iterate: a number means ``ConstantEMA(gamma)``; or any schedule of
        :mod:`gvatheory.schedules` (``PowerEMA(alpha, gamma_min, burn_in)``: power schedule
        :math:`\gamma_t = \max(t^{-\alpha}, \gamma_{min})` that copies until ``burn_in``).
    foreach : bool
        ``True``: fused ``torch._foreach_lerp_``; ``False``: the per-parameter reference loop.
    every : int
        Update period: only the iterates with ``t % every == 0`` are absorbed (``gamma_t`` read
        at the absolute ``t``); the other calls of :meth:`update` only advance the count, as
        ema-pytorch's ``update_every``.

    Examples
    --------
    >>> ema = EMA(model, PowerEMA(alpha=0.7, gamma_min=1e-3))    # doctest: +SKIP
    >>> for batch in data:                                         # doctest: +SKIP
    ...     loss(model, batch).backward(); opt.step(); ema.update()
    >>> with ema.swap(): evaluate(model)                           # doctest: +SKIP
    """

    def __init__(self, module: nn.Module, gamma: float | Schedule, *, foreach: bool = True, every: int = 1):
        super().__init__(module, foreach=foreach, every=every)
        self.schedule = as_schedule(gamma, kind="gamma")
        self.average = self._new_buffers()

    @classmethod
    def from_ema_pytorch(cls, module: nn.Module, *, foreach: bool = True, **settings: Any) -> EMA:
        """The average that ``ema_pytorch.EMA(module, **settings)`` computes, with :meth:`update`
        called once per step as theirs.

        ``settings``: the keyword arguments of ema-pytorch's ``EMA`` that
        :func:`gvatheory.stabilizer_mappings.ema_pytorch` takes, with the same names and
        defaults (``beta=0.9999, update_after_step=100, update_every=10, inv_gamma=1,
        power=2/3, min_value=0``); a setting without an equivalent raises ``ValueError``.
        """
        eq = stabilizer_mappings.ema_pytorch(**settings)
        return EMA(module, eq.schedule, foreach=foreach, every=eq.every)

    def update(self) -> None:
        """Absorb the module's current parameters as iterate ``t = count`` (if in the period)."""
        if self._absorbs(self.count):
            _ema_step(self.average, self._sources(), float(self.schedule(self.count)), self.foreach)
        self.count += 1

    def _value(self) -> list[Tensor]:
        return self.average

    @torch.no_grad()
    def last_movement(self) -> float:
        r"""How far the average moved at its last update, :math:`\|\bar\theta_t - \bar\theta_{t-1}\|`,
        while the module still holds :math:`\theta_t` (call it before the next optimizer step).

        The update moved it by :math:`\gamma_t(\theta_t - \bar\theta_{t-1}) =
        \frac{\gamma_t}{1-\gamma_t}(\theta_t - \bar\theta_t)`, so no earlier average is kept
        (a run resumed inside a zoom window measures what it would have). 0 if the last update
        absorbed nothing (``every``); NaN if it copied the iterate (:math:`\gamma_t = 1`).
        """
        if self.count < 1:
            raise ValueError(f"count={self.count} is out of range: call update() at least once first")
        t = self.count - 1
        if not self._absorbs(t):
            return 0.0
        gamma = float(self.schedule(t))
        if gamma >= 1.0:
            return float("nan")
        gap = sum(float(((s - a) ** 2).sum()) for s, a in zip(self._sources(), self.average))
        return gamma / (1.0 - gamma) * math.sqrt(gap)

    def _rule(self) -> str:
        return self._with_period(f"EMA({self.schedule!r})")

    def state_dict(self) -> dict[str, Any]:
        """``{'rule', 'count', 'average'}`` (copies), enough to resume bit-identically."""
        return {"rule": self._rule(), "count": self.count, "average": self._pack(self.average)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_rule(state)
        self._unpack("average", state["average"], self.average)


class Polyak(EMA):
    r"""Uniform average of :math:`\theta_{\mathrm{burn\_in}}, \dots, \theta_t`:
    ``EMA(module, PolyakEMA(burn_in))``, i.e. :math:`\gamma_t = 1/(t - \mathrm{burn\_in} + 1)`."""

    def __init__(self, module: nn.Module, *, burn_in: int = 0, foreach: bool = True):
        super().__init__(module, PolyakEMA(burn_in=burn_in), foreach=foreach)


class BEMA(_Averager):
    r"""Bias-corrected EMA (Block & Zhang 2025) with weights from a :class:`BEMASchedule`.

    .. math::
        \bar\theta_t = (1-\gamma_t)\bar\theta_{t-1} + \gamma_t\theta_t, \qquad
        \mathrm{bema}_t = \bar\theta_t + a_t(\theta_t - \theta_{\mathrm{burn\_in}}),

    :math:`\gamma_t = 1, a_t = 0` up to ``burn_in``, where :math:`\theta_{\mathrm{burn\_in}}` is
    snapshotted. The reported value uses the module's *current* parameters as
    :math:`\theta_t`, so read it right after ``update()`` (before the next optimizer step).

    With an update period ``every > 1`` only the iterates with ``t % every == 0`` are absorbed,
    and the value between them is the BEMA of the last absorbed iterate, whose copy is kept
    (one more copy of the parameters), as the authors' code and TRL report it.
    :meth:`from_authors` and :meth:`from_trl` build the BEMA of those references.
    """

    def __init__(
        self, module: nn.Module, schedule: BEMASchedule | None = None, *, foreach: bool = True, every: int = 1
    ):
        super().__init__(module, foreach=foreach, every=every)
        self.schedule = BEMASchedule() if schedule is None else schedule
        if not isinstance(self.schedule, BEMASchedule):
            raise ValueError(f"schedule={self.schedule!r} must be a BEMASchedule")
        self.ema = self._new_buffers()
        self.anchor = self._new_buffers()
        self.last = self._new_buffers() if self.every > 1 else None

    @classmethod
    def from_authors(cls, module: nn.Module, *, foreach: bool = True, **settings: Any) -> BEMA:
        """The BEMA of the authors' offline code (``abblock/bema``, ``core_offline.BEMA``) fed the
        checkpoints every ``update_freq`` steps, with :meth:`update` called once per step.

        ``settings``: ``update_freq`` and the keyword arguments of their ``BEMA`` that
        :func:`gvatheory.stabilizer_mappings.bema_authors` takes, with the same names and
        defaults (``ema_power=0.5, update_after=0, eta_power=0.2, ema_gamma=1,
        scaling_lag=0, min_ema_multiplier=0``).
        """
        eq = stabilizer_mappings.bema_authors(**settings)
        return BEMA(module, eq.schedule, foreach=foreach, every=eq.every)

    @classmethod
    def from_trl(cls, module: nn.Module, *, foreach: bool = True, **settings: Any) -> BEMA:
        """The BEMA of TRL's ``BEMACallback(**settings)``, with :meth:`update` called once per step.

        ``settings``: the keyword arguments of ``BEMACallback`` that
        :func:`gvatheory.stabilizer_mappings.bema_trl` takes, with the same names and defaults
        (``update_freq=400, ema_power=0.5, bias_power=0.2, lag=10, update_after=0,
        multiplier=1, min_ema_multiplier=0``).
        """
        eq = stabilizer_mappings.bema_trl(**settings)
        return BEMA(module, eq.schedule, foreach=foreach, every=eq.every)

    @torch.no_grad()
    def update(self) -> None:
        """Absorb the module's current parameters as iterate ``t = count`` (if in the period)."""
        t = self.count
        self.count += 1
        if not self._absorbs(t):
            return
        source = self._sources()
        _ema_step(self.ema, source, float(self.schedule(t)), self.foreach)
        if t <= self.schedule.burn_in:
            _ema_step(self.anchor, source, 1.0, self.foreach)
        if self.last is not None:
            _ema_step(self.last, source, 1.0, self.foreach)

    @torch.no_grad()
    def _value(self) -> list[Tensor]:
        absorbed = (self.count - 1) // self.every * self.every  # the last absorbed iterate
        a = float(self.schedule.bias_weight(absorbed))
        if a == 0.0:
            return self.ema
        source = self._sources() if self.last is None else self.last
        if not self.foreach:
            return [m + a * (p - p0) for m, p, p0 in zip(self.ema, source, self.anchor)]
        out = torch._foreach_sub(source, self.anchor)
        torch._foreach_mul_(out, a)
        torch._foreach_add_(out, self.ema)
        return out

    def _rule(self) -> str:
        return self._with_period(f"BEMA({self.schedule!r})")

    def state_dict(self) -> dict[str, Any]:
        """``{'rule', 'count', 'ema', 'anchor'}`` (and ``'last'`` with ``every > 1``; copies),
        enough to resume bit-identically."""
        state = {
            "rule": self._rule(),
            "count": self.count,
            "ema": self._pack(self.ema),
            "anchor": self._pack(self.anchor),
        }
        if self.last is not None:
            state["last"] = self._pack(self.last)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_rule(state)
        self._unpack("ema", state["ema"], self.ema)
        self._unpack("anchor", state["anchor"], self.anchor)
        if self.last is not None:
            self._unpack("last", state["last"], self.last)
