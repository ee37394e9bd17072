r"""Stabilizers: iterate averages of any ``nn.Module``'s parameters (torch).

Block et al. (ICLR 2024, Sec. 5) show that evaluating an exponential moving average of the SGD
iterates, instead of the last iterate, removes most of the gradient variance amplification in
behavior cloning and autoregressive language models. These classes maintain such averages
during training; the same rules, in numpy and as pure functions, are in
:mod:`gvatheory.stabilizers`, and the tests run both on the same iterate sequences.

Conventions (as in :mod:`gvatheory.schedules`): iterates are counted ``t = 0, 1, 2, ...``; call
``update()`` once after each optimizer step (and once at the start, for :math:`\theta_0`, if the
initial iterate should count); update ``t`` absorbs :math:`\theta_t` with

.. math:: \bar\theta_t = (1-\gamma_t)\,\bar\theta_{t-1} + \gamma_t\,\theta_t, \qquad \gamma_0 = 1 .

* :class:`EMA` -- any :math:`\gamma` schedule: a number (constant :math:`\gamma`), ``ConstantEMA``,
  ``PowerEMA(alpha, gamma_min, burn_in)``, ``PolyakEMA``; :class:`Polyak` is the uniform average.
* :class:`BEMA` -- bias-corrected EMA (Block & Zhang 2025):
  :math:`\bar\theta_t + a_t(\theta_t - \theta_{\mathrm{burn\_in}})`.
* :class:`PostHocEMA` -- power-function EMAs with a few ``sigma_rel`` values, snapshotted at
  intervals, from which any EMA length is synthesized after training by least squares
  (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models").

Floating-point parameters are averaged (in float32 when the parameter is half precision,
otherwise in the parameter's dtype, on its device). Buffers (e.g. BatchNorm running statistics)
are *not* averaged: :meth:`averaged_model` and :meth:`swap` keep the module's current buffers.
To recompute BatchNorm statistics for the averaged weights use
``torch.optim.swa_utils.update_bn`` on the averaged copy.

The parameters are looked up when a stabilizer is constructed: build it after moving the module
to its device and dtype. Updates use ``torch._foreach_*`` kernels; ``foreach=False`` runs a plain per-parameter loop of
the textbook formula, the reference implementation the tests and the benchmark compare against.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gvatheory._checks import check_int
from gvatheory.schedules import BEMASchedule, ConstantEMA, PolyakEMA, PowerEMA, Schedule, as_schedule
from gvatheory.stabilizers import PowerFunctionEMA, posthoc_coefficients

__all__ = [
    "EMA",
    "Polyak",
    "BEMA",
    "PostHocEMA",
    "Snapshot",
    "synthesize",
    "averaged_copy",
    "swapped",
    "make_stabilizer",
]


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

    def __init__(self, module: nn.Module, *, foreach: bool):
        if not isinstance(module, nn.Module):
            raise ValueError(f"module={type(module).__name__} must be a torch.nn.Module")
        self.module = module
        self.foreach = bool(foreach)
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

    Examples
    --------
    >>> ema = EMA(model, PowerEMA(alpha=0.7, gamma_min=1e-3))    # doctest: +SKIP
    >>> for batch in data:                                         # doctest: +SKIP
    ...     loss(model, batch).backward(); opt.step(); ema.update()
    >>> with ema.swap(): evaluate(model)                           # doctest: +SKIP
    """

    def __init__(self, module: nn.Module, gamma: float | Schedule, *, foreach: bool = True):
        super().__init__(module, foreach=foreach)
        self.schedule = as_schedule(gamma, kind="gamma")
        self.average = self._new_buffers()

    def update(self) -> None:
        """Absorb the module's current parameters as iterate ``t = count``."""
        _ema_step(self.average, self._sources(), float(self.schedule(self.count)), self.foreach)
        self.count += 1

    def _value(self) -> list[Tensor]:
        return self.average

    def _rule(self) -> str:
        return f"EMA({self.schedule!r})"

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
    """

    def __init__(self, module: nn.Module, schedule: BEMASchedule | None = None, *, foreach: bool = True):
        super().__init__(module, foreach=foreach)
        self.schedule = BEMASchedule() if schedule is None else schedule
        if not isinstance(self.schedule, BEMASchedule):
            raise ValueError(f"schedule={self.schedule!r} must be a BEMASchedule")
        self.ema = self._new_buffers()
        self.anchor = self._new_buffers()

    @torch.no_grad()
    def update(self) -> None:
        """Absorb the module's current parameters as iterate ``t = count``."""
        t = self.count
        source = self._sources()
        _ema_step(self.ema, source, float(self.schedule(t)), self.foreach)
        if t <= self.schedule.burn_in:
            _ema_step(self.anchor, source, 1.0, self.foreach)
        self.count += 1

    @torch.no_grad()
    def _value(self) -> list[Tensor]:
        a = float(self.schedule.bias_weight(self.count - 1))
        if a == 0.0:
            return self.ema
        source = self._sources()
        if not self.foreach:
            return [m + a * (p - p0) for m, p, p0 in zip(self.ema, source, self.anchor)]
        out = torch._foreach_sub(source, self.anchor)
        torch._foreach_mul_(out, a)
        torch._foreach_add_(out, self.ema)
        return out

    def _rule(self) -> str:
        return f"BEMA({self.schedule!r})"

    def state_dict(self) -> dict[str, Any]:
        """``{'rule', 'count', 'ema', 'anchor'}`` (copies), enough to resume bit-identically."""
        return {
            "rule": self._rule(),
            "count": self.count,
            "ema": self._pack(self.ema),
            "anchor": self._pack(self.anchor),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_rule(state)
        self._unpack("ema", state["ema"], self.ema)
        self._unpack("anchor", state["anchor"], self.anchor)


# ---------------------------------------------------------------- post-hoc EMA


@dataclass(frozen=True)
class Snapshot:
    """A power-function EMA with ``sigma_rel`` after ``count`` iterates; ``params`` on CPU."""

    count: int
    sigma_rel: float
    params: dict[str, Tensor]


def synthesize(snapshots: Sequence[Snapshot], sigma_rel: float, *, count: int | None = None) -> dict[str, Tensor]:
    r"""The power-function EMA ``(count, sigma_rel)`` reconstructed from ``snapshots``.

    Uses the snapshots taken at or before ``count`` (default: the latest snapshot's count) and
    the least-squares weights of :func:`gvatheory.stabilizers.posthoc_coefficients`; the sum is
    accumulated in float64 because the weights can be large with alternating signs.
    """
    if not snapshots:
        raise ValueError("snapshots=[] is out of range: need at least one snapshot")
    latest = max(s.count for s in snapshots)
    target = latest if count is None else check_int("count", count, 1)
    used = [s for s in snapshots if s.count <= target]
    if not used:
        raise ValueError(
            f"count={target} is out of range: the first snapshot is at count {min(s.count for s in snapshots)}"
        )
    x = posthoc_coefficients([s.count for s in used], [s.sigma_rel for s in used], target, sigma_rel)
    out = {}
    for name, ref in used[0].params.items():
        acc = torch.zeros_like(ref, dtype=torch.float64)
        for w, s in zip(x, used):
            acc.add_(s.params[name].to(torch.float64), alpha=float(w))
        out[name] = acc.to(ref.dtype)
    return out


class PostHocEMA:
    r"""Post-hoc EMA (Karras et al. 2024, EDM2): choose the EMA length after training.

    Tracks one power-function EMA per entry of ``sigma_rels``
    (:class:`gvatheory.stabilizers.PowerFunctionEMA`:
    :math:`\gamma_t = 1 - (t/(t+1))^{\gamma_p+1}`, whose weights on the iterates follow the
    profile :math:`\tau^{\gamma_p}` with relative width ``sigma_rel``) and stores a CPU
    :class:`Snapshot` of each every ``snapshot_every`` updates. :meth:`averaged_parameters`
    then synthesizes the power-function EMA of any ``sigma_rel`` at any snapshot time as the
    least-squares combination of the snapshots (:func:`synthesize`).

    Memory: ``len(sigma_rels)`` averages on the device, plus ``len(sigma_rels)`` CPU copies per
    snapshot.
    """

    def __init__(
        self,
        module: nn.Module,
        sigma_rels: Sequence[float] = (0.05, 0.10),
        *,
        snapshot_every: int,
        foreach: bool = True,
    ):
        self.snapshot_every = check_int("snapshot_every", snapshot_every, 1)
        if len(sigma_rels) == 0:
            raise ValueError("sigma_rels=() is out of range: need at least one profile")
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.trackers = [EMA(module, PowerFunctionEMA(s), foreach=foreach) for s in self.sigma_rels]
        self.module = module
        self.snapshots: list[Snapshot] = []

    @property
    def count(self) -> int:
        return self.trackers[0].count

    def update(self) -> None:
        """Absorb the module's current parameters; snapshot every ``snapshot_every`` updates."""
        for tracker in self.trackers:
            tracker.update()
        if self.count % self.snapshot_every == 0:
            self.snapshot()

    def snapshot(self) -> None:
        """Store a CPU copy of every tracked EMA now (also called by :meth:`update` on schedule;
        call it at the end of training so the last iterate can be synthesized)."""
        if self.snapshots and self.snapshots[-1].count == self.count:
            return
        for s, tracker in zip(self.sigma_rels, self.trackers):
            params = {n: v.detach().to("cpu", copy=True) for n, v in zip(tracker.names, tracker.average)}
            self.snapshots.append(Snapshot(count=self.count, sigma_rel=s, params=params))

    def end(self) -> None:
        """End of training: snapshot the last iterate's EMAs so that it can be synthesized."""
        self.snapshot()

    def averaged_parameters(self, sigma_rel: float | None = None, *, count: int | None = None) -> dict[str, Tensor]:
        """Synthesized EMA ``(count, sigma_rel)`` as ``{name: tensor}`` (CPU, parameter dtype).

        With neither argument: the first tracked EMA itself (``sigma_rels[0]`` now, exact and
        on the module's device), so a ``PostHocEMA`` can stand wherever an :class:`EMA` does.
        """
        if sigma_rel is None and count is None:
            return self.trackers[0].averaged_parameters()
        if sigma_rel is None:
            sigma_rel = self.sigma_rels[0]
        params = synthesize(self.snapshots, sigma_rel, count=count)
        dtypes = dict(zip(self.trackers[0].names, (p.dtype for p in self.trackers[0]._params)))
        return {n: v.to(dtypes[n]) for n, v in params.items()}

    def averaged_model(self, sigma_rel: float | None = None, *, count: int | None = None) -> nn.Module:
        return averaged_copy(self.module, self.averaged_parameters(sigma_rel, count=count))

    @contextmanager
    def swap(self, sigma_rel: float | None = None, *, count: int | None = None) -> Iterator[nn.Module]:
        with swapped(self.module, self.averaged_parameters(sigma_rel, count=count)) as m:
            yield m

    def state_dict(self) -> dict[str, Any]:
        """Running averages and snapshots (copies), enough to resume bit-identically."""
        return {
            "sigma_rels": list(self.sigma_rels),
            "snapshot_every": self.snapshot_every,
            "trackers": [t.state_dict() for t in self.trackers],
            "snapshots": [
                {"count": s.count, "sigma_rel": s.sigma_rel, "params": dict(s.params)} for s in self.snapshots
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (
            list(state.get("sigma_rels", [])) != list(self.sigma_rels)
            or state.get("snapshot_every") != self.snapshot_every
        ):
            raise ValueError(
                f"state_dict has sigma_rels={state.get('sigma_rels')!r}, snapshot_every={state.get('snapshot_every')!r}; "
                f"expected {list(self.sigma_rels)!r}, {self.snapshot_every!r}"
            )
        for tracker, sd in zip(self.trackers, state["trackers"]):
            tracker.load_state_dict(sd)
        self.snapshots = [
            Snapshot(int(s["count"]), float(s["sigma_rel"]), dict(s["params"])) for s in state["snapshots"]
        ]


# ---------------------------------------------------------------- from a run configuration


def make_stabilizer(opts, module: nn.Module) -> EMA | BEMA | PostHocEMA:
    """The stabilizer named by ``opts.stabilizer`` (a :class:`gvaempirics.config.StabilizerOptions`)
    over ``module``: ``ema`` (power schedule), ``constant-ema``, ``polyak``, ``bema`` or
    ``posthoc`` (evaluated online as its first tracked power-function EMA)."""
    name = opts.stabilizer
    if name == "ema":
        return EMA(module, PowerEMA(opts.alpha, opts.gamma_min, opts.burn_in))
    if name == "constant-ema":
        return EMA(module, ConstantEMA(opts.gamma_min, opts.burn_in))
    if name == "polyak":
        return Polyak(module, burn_in=opts.burn_in)
    if name == "bema":
        return BEMA(module, BEMASchedule(gamma_min=opts.gamma_min, burn_in=opts.burn_in))
    if name == "posthoc":
        return PostHocEMA(module, opts.posthoc_sigma_rels, snapshot_every=opts.posthoc_every)
    raise ValueError(f"stabilizer={name!r} is not one of ema, constant-ema, polyak, bema, posthoc")
