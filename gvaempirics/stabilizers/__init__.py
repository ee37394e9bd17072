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
  (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models");
  :func:`synthesize` reports the residual of each fit and refuses one above ``max_residual``.

``EMA.from_ema_pytorch``, ``BEMA.from_authors`` and ``BEMA.from_trl`` take the settings of
ema-pytorch, the BEMA authors' code and TRL's ``BEMACallback`` and return the stabilizer that
computes the same average (:mod:`gvatheory.stabilizer_mappings`; ``docs/stabilizers.md`` lists
the differences). An update period ``every`` absorbs only every ``every``-th iterate.

Floating-point parameters are averaged (in float32 when the parameter is half precision,
otherwise in the parameter's dtype, on its device). Buffers (e.g. BatchNorm running statistics)
are *not* averaged: :meth:`averaged_model` and :meth:`swap` keep the module's current buffers.
To recompute BatchNorm statistics for the averaged weights use
``torch.optim.swa_utils.update_bn`` on the averaged copy.

The parameters are looked up when a stabilizer is constructed: build it after moving the module
to its device and dtype. Updates use ``torch._foreach_*`` kernels; ``foreach=False`` runs a
plain per-parameter loop of the textbook formula, the reference implementation the tests and the
benchmark compare against.

Modules: :mod:`.averagers` (EMA, Polyak, BEMA and their plumbing), :mod:`.posthoc` (post-hoc
EMA); everything is importable from here.
"""

from __future__ import annotations

from torch import nn

from gvatheory.schedules import BEMASchedule, ConstantEMA, PolyakEMA, PowerEMA, Schedule

from .averagers import BEMA, EMA, Polyak, averaged_copy, swapped
from .posthoc import MAX_RESIDUAL, PostHocEMA, Snapshot, Synthesis, synthesize

__all__ = [
    "EMA",
    "Polyak",
    "BEMA",
    "PostHocEMA",
    "Snapshot",
    "Synthesis",
    "synthesize",
    "MAX_RESIDUAL",
    "averaged_copy",
    "swapped",
    "make_stabilizer",
    "weight_schedule",
]


def weight_schedule(opts) -> Schedule | None:
    """The schedule of :math:`\\gamma_t` that ``opts.stabilizer`` averages with (``None`` for
    ``posthoc``, whose tracked EMAs have their own widths): the one place where the options'
    fields become schedule parameters."""
    name = opts.stabilizer
    # opts.gamma_min is the floor of gamma_t for "ema" and "bema", and the constant gamma itself for "constant-ema"
    if name == "ema":
        return PowerEMA(opts.alpha, gamma_min=opts.gamma_min, burn_in=opts.burn_in)
    if name == "constant-ema":
        return ConstantEMA(gamma=opts.gamma_min, burn_in=opts.burn_in)
    if name == "polyak":
        return PolyakEMA(burn_in=opts.burn_in)
    if name == "bema":
        return BEMASchedule(gamma_min=opts.gamma_min, burn_in=opts.burn_in)
    if name == "posthoc":
        return None
    raise ValueError(f"stabilizer={name!r} is not one of ema, constant-ema, polyak, bema, posthoc")


def make_stabilizer(opts, module: nn.Module) -> EMA | BEMA | PostHocEMA:
    """The stabilizer named by ``opts.stabilizer`` (a :class:`gvaempirics.config.StabilizerOptions`)
    over ``module``: ``ema`` (power schedule), ``constant-ema``, ``polyak``, ``bema`` or
    ``posthoc`` (evaluated online as its first tracked power-function EMA); its schedule is
    :func:`weight_schedule`."""
    name, schedule = opts.stabilizer, weight_schedule(opts)
    if name in ("ema", "constant-ema"):
        return EMA(module, schedule)
    if name == "polyak":
        return Polyak(module, burn_in=opts.burn_in)
    if name == "bema":
        return BEMA(module, schedule)
    return PostHocEMA(module, opts.posthoc_sigma_rels, snapshot_every=opts.posthoc_every)
