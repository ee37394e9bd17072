r"""Post-hoc EMA (Karras et al. 2024, EDM2): choose the EMA length after training.

:class:`PostHocEMA` tracks power-function EMAs of a few widths and snapshots them;
:func:`synthesize` reconstructs the power-function EMA of any width at any snapshot time as the
least-squares combination of the snapshots (:func:`gvatheory.stabilizers.posthoc_fit`).

A synthesis uses only the snapshots taken at or before its ``count`` (an EMA at ``count`` must
not depend on later iterates), and every :class:`Synthesis` reports the relative :math:`L^2`
residual of its profile fit. A request the snapshots cannot represent -- a narrow profile
ending between two snapshots or after the latest, whose recent iterates are in no snapshot --
has a residual near 1 (the fit returns a small multiple of old snapshots); it is refused above
``max_residual`` (default :data:`MAX_RESIDUAL`) instead of returned as if it were that EMA.
``causal=False`` uses every snapshot, as ema-pytorch's ``PostHocEMA.synthesize_ema_model``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gvatheory._checks import check_int, check_range
from gvatheory.stabilizers import PowerFunctionEMA, posthoc_fit

from .averagers import EMA, averaged_copy, swapped

__all__ = ["MAX_RESIDUAL", "Snapshot", "Synthesis", "synthesize", "PostHocEMA"]

#: Default largest relative L2 residual of a synthesis. A tracked width at a snapshot time has
#: 0; sigma_rel = 0.07 from snapshots of 0.05 and 0.10 every 5 % of the run about 0.003; a profile
#: of width 0.05 one step after a snapshot (snapshots every 20 of 400 steps) about 0.3.
MAX_RESIDUAL = 0.1


@dataclass(frozen=True)
class Snapshot:
    """A power-function EMA with ``sigma_rel`` after ``count`` iterates; ``params`` on CPU."""

    count: int
    sigma_rel: float
    params: dict[str, Tensor]


@dataclass(frozen=True)
class Synthesis:
    """A synthesized power-function EMA and the quality of its fit.

    Attributes
    ----------
    params : dict of str to Tensor
        The synthesized parameters (dtype of the snapshots).
    count, sigma_rel : int, float
        The target profile: ``sigma_rel`` after ``count`` iterates.
    residual : float
        Relative :math:`L^2` error of the fitted weight profile, in ``[0, 1]``.
    coefficients : ndarray
        Weight of each snapshot used.
    counts, sigma_rels : tuple
        The snapshots used, in the order of ``coefficients``.
    """

    params: dict[str, Tensor]
    count: int
    sigma_rel: float
    residual: float
    coefficients: np.ndarray
    counts: tuple[int, ...]
    sigma_rels: tuple[float, ...]


def synthesize(
    snapshots: Sequence[Snapshot],
    sigma_rel: float,
    *,
    count: int | None = None,
    max_residual: float | None = MAX_RESIDUAL,
    causal: bool = True,
) -> Synthesis:
    r"""The power-function EMA ``(count, sigma_rel)`` reconstructed from ``snapshots``.

    Parameters
    ----------
    snapshots : sequence of Snapshot
        Stored power-function EMAs (e.g. :attr:`PostHocEMA.snapshots`, or loaded from a run).
    sigma_rel : float
        Relative width of the target profile, in ``(0, 12**-0.5]``.
    count : int, optional
        Iterates of the target; default the latest snapshot's count.
    max_residual : float or None
        Refuse (``ValueError``) a fit whose relative :math:`L^2` residual is larger; ``None``
        accepts any fit (the residual is still reported).
    causal : bool
        ``True``: only the snapshots at or before ``count``; ``False``: all of them, as
        ema-pytorch does (later snapshots hold iterates after ``count``).

    Returns
    -------
    Synthesis
        The parameters, the residual and the weights of the least-squares combination
        (:func:`gvatheory.stabilizers.posthoc_fit`), summed in float64 because the weights can
        be large with alternating signs.
    """
    if not snapshots:
        raise ValueError("snapshots=[] is out of range: need at least one snapshot")
    if max_residual is not None:
        check_range("max_residual", max_residual, 0.0, 1.0)
    latest = max(s.count for s in snapshots)
    target = latest if count is None else check_int("count", count, 1)
    used = [s for s in snapshots if s.count <= target] if causal else list(snapshots)
    if not used:
        raise ValueError(
            f"count={target} is out of range: the first snapshot is at count {min(s.count for s in snapshots)}"
        )
    fit = posthoc_fit([s.count for s in used], [s.sigma_rel for s in used], target, sigma_rel)
    if max_residual is not None and fit.residual > max_residual:
        at_or_before = sorted({s.count for s in snapshots if s.count <= target})
        nearest = f"the latest at or before it is {at_or_before[-1]}" if at_or_before else "none is before it"
        raise ValueError(
            f"count={target}, sigma_rel={sigma_rel:g}: the least-squares fit from {len(used)} snapshots leaves a "
            f"relative L2 residual of {fit.residual:.4f} > max_residual={max_residual:g}; snapshot counts "
            f"{sorted({s.count for s in snapshots})} ({nearest}); synthesize at a snapshot count, "
            "or pass max_residual=None to accept the fit"
        )
    out = {}
    for name, ref in used[0].params.items():
        acc = torch.zeros_like(ref, dtype=torch.float64)
        for w, s in zip(fit.coefficients, used):
            acc.add_(s.params[name].to(torch.float64), alpha=float(w))
        out[name] = acc.to(ref.dtype)
    return Synthesis(
        params=out,
        count=target,
        sigma_rel=float(sigma_rel),
        residual=fit.residual,
        coefficients=fit.coefficients,
        counts=tuple(s.count for s in used),
        sigma_rels=tuple(s.sigma_rel for s in used),
    )


class PostHocEMA:
    r"""Post-hoc EMA (Karras et al. 2024, EDM2): choose the EMA length after training.

    Tracks one power-function EMA per entry of ``sigma_rels``
    (:class:`gvatheory.stabilizers.PowerFunctionEMA`:
    :math:`\gamma_t = 1 - (t/(t+1))^{\gamma_p+1}`, whose weights on the iterates follow the
    profile :math:`\tau^{\gamma_p}` with relative width ``sigma_rel``) and stores a CPU
    :class:`Snapshot` of each every ``snapshot_every`` updates. :meth:`synthesize` (and
    :meth:`averaged_parameters` with arguments) then reconstructs the power-function EMA of
    any ``sigma_rel`` at any snapshot time as the least-squares combination of the snapshots
    (:func:`synthesize`), refusing a fit worse than ``max_residual``.

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

    def synthesize(
        self,
        sigma_rel: float | None = None,
        *,
        count: int | None = None,
        max_residual: float | None = MAX_RESIDUAL,
        causal: bool = True,
    ) -> Synthesis:
        """:func:`synthesize` from this tracker's snapshots (``sigma_rel`` default: the first
        tracked width), with the parameters in the parameters' dtypes."""
        if sigma_rel is None:
            sigma_rel = self.sigma_rels[0]
        syn = synthesize(self.snapshots, sigma_rel, count=count, max_residual=max_residual, causal=causal)
        dtypes = dict(zip(self.trackers[0].names, (p.dtype for p in self.trackers[0]._params)))
        params = {n: v.to(dtypes[n]) for n, v in syn.params.items()}
        return Synthesis(**{**syn.__dict__, "params": params})

    def averaged_parameters(
        self, sigma_rel: float | None = None, *, count: int | None = None, max_residual: float | None = MAX_RESIDUAL
    ) -> dict[str, Tensor]:
        """Synthesized EMA ``(count, sigma_rel)`` as ``{name: tensor}`` (CPU, parameter dtype);
        see :meth:`synthesize` for the residual and ``max_residual``.

        With neither ``sigma_rel`` nor ``count``: the first tracked EMA itself (``sigma_rels[0]``
        now, exact and on the module's device), so a ``PostHocEMA`` can stand wherever an
        :class:`EMA` does.
        """
        if sigma_rel is None and count is None:
            return self.trackers[0].averaged_parameters()
        return self.synthesize(sigma_rel, count=count, max_residual=max_residual).params

    def averaged_model(
        self, sigma_rel: float | None = None, *, count: int | None = None, max_residual: float | None = MAX_RESIDUAL
    ) -> nn.Module:
        return averaged_copy(self.module, self.averaged_parameters(sigma_rel, count=count, max_residual=max_residual))

    @contextmanager
    def swap(
        self, sigma_rel: float | None = None, *, count: int | None = None, max_residual: float | None = MAX_RESIDUAL
    ) -> Iterator[nn.Module]:
        params = self.averaged_parameters(sigma_rel, count=count, max_residual=max_residual)
        with swapped(self.module, params) as m:
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
