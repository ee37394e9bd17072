"""Interventions: named, documented changes to a behavior-cloning configuration (paper Figures 2 and 3).

The paper (Block et al., ICLR 2024, Section 3) asks which of the usual remedies of deep learning
cures gradient variance amplification, and tries hundreds of them on a base configuration:
architecture and scale, regularization, optimization, data, and stabilizers (iterate averaging).
Its finding is that only those which damp the *step-to-step* noise of the iterate — a smaller or
decaying learning rate, a larger batch, and above all an average of the iterates — remove the
reward oscillation; capacity, regularization and more data barely change it.

Here each intervention is an :class:`Intervention`: a name, a group, a one-line reason, and the
absolute field values it sets on a :class:`~gvaempirics.bc.config.BCConfig`
(``{"eta": 1e-4}``, not "eta / 3"), so that one name means one configuration change whatever the
base. :data:`INTERVENTIONS` is the registry (in group order), :func:`apply_interventions`
composes several on a field dict (a preset, say) and refuses two that disagree about a field.
Values are sized for the ``quick`` preset (6000 steps, batch 64, Adam at 3e-4); a sweep over a
longer base can override any field after them.

``gva bc interventions`` lists the registry; ``gva bc train --intervention NAME`` applies it.
Imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from gvatheory.config import check_field, field_types

from .config import BCConfig

GROUPS = ("architecture", "regularization", "optimization", "data", "stabilizers")


@cache
def _fields() -> dict[str, tuple[Any, dict[str, Any]]]:
    hints = field_types(BCConfig)
    return {f.name: (hints[f.name], dict(f.metadata)) for f in BCConfig.__dataclass_fields__.values() if f.init}


@dataclass(frozen=True)
class Intervention:
    """One named change to a base configuration.

    ``changes`` maps :class:`~gvaempirics.bc.config.BCConfig` field names to the values it sets;
    each is checked (type, choices, range) against the field's declaration on creation.
    """

    name: str
    group: str
    doc: str
    changes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"intervention {self.name!r}: group={self.group!r} is not one of {', '.join(GROUPS)}")
        if not self.changes:
            raise ValueError(f"intervention {self.name!r} changes nothing: give at least one field")
        known = _fields()
        checked = {}
        for key, value in self.changes.items():
            if key not in known:
                raise ValueError(
                    f"intervention {self.name!r} sets {key!r}, which is not a BCConfig field; "
                    f"valid fields are {', '.join(known)}"
                )
            tp, meta = known[key]
            checked[key] = check_field(key, value, tp, meta)
        object.__setattr__(self, "changes", checked)

    def describe(self) -> str:
        """What it sets, as ``field=value`` pairs (``eta=0.0001, schedule=cosine``)."""
        return ", ".join(f"{k}={v}" for k, v in self.changes.items())


def _iv(name: str, group: str, doc: str, **changes: Any) -> Intervention:
    return Intervention(name, group, doc, changes)


_ALL = [
    # ------------------------------------------------------------------ architecture and scale
    _iv("depth-2", "architecture", "one hidden layer: does less capacity (a smoother map) calm the rollouts?", depth=2),
    _iv("depth-6", "architecture", "six layers: deeper nets fit better; does their reward still swing?", depth=6),
    _iv("depth-8", "architecture", "eight layers: scale in depth", depth=8),
    _iv("width-64", "architecture", "narrow hidden layers (64): scale down in width", width=64),
    _iv("width-512", "architecture", "wide hidden layers (512): scale up in width", width=512),
    _iv("width-1024", "architecture", "very wide hidden layers (1024): near the lazy regime", width=1024),
    _iv(
        "policy-transformer",
        "architecture",
        "a causal transformer over the last 4 augmented states instead of an MLP on one",
        policy="transformer",
        history=4,
    ),
    _iv("act-tanh", "architecture", "tanh activations: smooth and bounded instead of ReLU's kinks", activation="tanh"),
    _iv("act-gelu", "architecture", "GELU activations: smooth ReLU", activation="gelu"),
    _iv("act-silu", "architecture", "SiLU (swish) activations: smooth ReLU", activation="silu"),
    # ------------------------------------------------------------------ regularization
    _iv(
        "wd-1e-4",
        "regularization",
        "AdamW weight decay 1e-4: smaller weights, a smaller Lipschitz constant of the policy",
        optimizer="adamw",
        weight_decay=1e-4,
    ),
    _iv(
        "wd-1e-2",
        "regularization",
        "AdamW weight decay 1e-2: strong shrinkage of the weights",
        optimizer="adamw",
        weight_decay=1e-2,
    ),
    _iv("dropout-0.1", "regularization", "dropout 0.1 in training: a noise-robust policy", dropout=0.1),
    _iv("layer-norm", "regularization", "layer norm after each hidden linear layer (MLP)", layer_norm=True),
    _iv(
        "obs-noise-0.01",
        "regularization",
        "Gaussian noise (sd 0.01) on the training inputs: robustness to the states a rollout drifts into",
        obs_noise=0.01,
    ),
    _iv(
        "obs-noise-0.1",
        "regularization",
        "Gaussian noise (sd 0.1) on the training inputs: strong input augmentation",
        obs_noise=0.1,
    ),
    _iv("clip-1", "regularization", "clip the gradient norm at 1: bounds the size of a noisy step", grad_clip=1.0),
    # ------------------------------------------------------------------ optimization
    _iv(
        "lr-cosine",
        "optimization",
        "cosine decay of eta to zero: late iterates take ever smaller steps",
        schedule="cosine",
    ),
    _iv(
        "lr-step",
        "optimization",
        "halve eta every 1000 steps: the classic staircase decay",
        schedule="step",
        drop=0.5,
        drop_every=1000,
    ),
    _iv("lr-inverse", "optimization", "eta / (1 + t/1000): the Robbins-Monro rate", schedule="inverse", t0=1000.0),
    _iv(
        "lr-wsd",
        "optimization",
        "warmup-stable-decay: constant eta, linear decay to zero over the last 20% of the steps",
        schedule="wsd",
        decay_fraction=0.2,
    ),
    _iv("warmup-500", "optimization", "linear warmup over the first 500 steps", warmup=500),
    _iv("eta-1e-3", "optimization", "a larger step size (1e-3): more noise per step", eta=1e-3),
    _iv("eta-1e-4", "optimization", "a smaller step size (1e-4): less noise per step, slower progress", eta=1e-4),
    _iv("eta-3e-5", "optimization", "a much smaller step size (3e-5)", eta=3e-5),
    _iv("batch-16", "optimization", "minibatches of 16: four times the gradient variance of 64", batch_size=16),
    _iv("batch-256", "optimization", "minibatches of 256: a quarter of the gradient variance of 64", batch_size=256),
    _iv(
        "batch-1024", "optimization", "minibatches of 1024: a sixteenth of the gradient variance of 64", batch_size=1024
    ),
    _iv(
        "accum-4",
        "optimization",
        "accumulate 4 minibatches per step: a larger batch at the same memory",
        grad_accum=4,
    ),
    _iv("beta1-0.5", "optimization", "Adam beta1 = 0.5: a shorter momentum memory", beta1=0.5),
    _iv("beta2-0.99", "optimization", "Adam beta2 = 0.99: a faster-adapting second moment", beta2=0.99),
    _iv(
        "sgd-momentum",
        "optimization",
        "SGD with momentum 0.9 at eta 1e-2 instead of Adam: the optimizer of the theory",
        optimizer="sgd",
        momentum=0.9,
        eta=1e-2,
    ),
    # ------------------------------------------------------------------ data
    _iv("demos-10", "data", "10 expert trajectories: less data", n_demos=10),
    _iv("demos-100", "data", "100 expert trajectories: more data", n_demos=100),
    _iv("demos-250", "data", "250 expert trajectories: ten times the quick preset's data", n_demos=250),
    _iv(
        "fresh-data",
        "data",
        "new expert trajectories every 100 steps: the infinite-data control (no overfitting)",
        fresh_data=True,
        fresh_every=100,
    ),
    # ------------------------------------------------------------------ stabilizers
    _iv(
        "ema-alpha-0.3",
        "stabilizers",
        "power EMA with alpha 0.3: gamma_t = t^-0.3 decays slowly, a short memory",
        stabilizer="ema",
        alpha=0.3,
    ),
    _iv(
        "ema-alpha-0.7",
        "stabilizers",
        "power EMA with alpha 0.7: gamma_t = t^-0.7, a long memory",
        stabilizer="ema",
        alpha=0.7,
    ),
    _iv("gamma-min-1e-2", "stabilizers", "EMA weight floor 1e-2: an average over about 100 steps", gamma_min=1e-2),
    _iv("gamma-min-1e-4", "stabilizers", "EMA weight floor 1e-4: an average over about 10^4 steps", gamma_min=1e-4),
    _iv("burn-in-1000", "stabilizers", "the average copies the iterate for the first 1000 steps", burn_in=1000),
    _iv(
        "constant-ema",
        "stabilizers",
        "a constant-weight EMA (gamma = gamma_min) instead of the power schedule",
        stabilizer="constant-ema",
    ),
    _iv("polyak", "stabilizers", "the uniform (Polyak-Ruppert) average of all iterates", stabilizer="polyak"),
    _iv("bema", "stabilizers", "bias-corrected EMA (BEMA): an EMA without its lag", stabilizer="bema"),
    _iv(
        "posthoc",
        "stabilizers",
        "post-hoc EMA: power-function EMAs tracked and snapshotted, any width synthesized after training",
        stabilizer="posthoc",
    ),
]

INTERVENTIONS: dict[str, Intervention] = {
    iv.name: iv for group in GROUPS for iv in _ALL if iv.group == group
}  # the registry, in group order
if len(INTERVENTIONS) != len(_ALL):
    raise RuntimeError("two interventions share a name")


def apply_interventions(values: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """``values`` (a :class:`BCConfig` field dict, e.g. a preset) updated by the named interventions.

    They are composed in order, and all are checked before anything is returned: an unknown name
    raises ``ValueError`` listing the valid ones, a name given twice raises ``ValueError`` naming
    it (the one rule of ``gva bc train --intervention`` and sweep specs), and two interventions
    that set one field to different values raise ``ValueError`` naming both and the field.
    ``values`` is not changed; a single name may be given as a string.
    """
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in INTERVENTIONS]
    if unknown:
        raise ValueError(
            f"unknown intervention {', '.join(map(repr, unknown))}: valid ones are {', '.join(INTERVENTIONS)}"
        )
    if twice := sorted({n for n in names if list(names).count(n) > 1}):
        raise ValueError(f"interventions {list(names)!r} name {twice[0]!r} twice: each intervention is applied once")
    setter: dict[str, str] = {}  # field -> the first intervention that set it
    merged: dict[str, Any] = {}
    for name in names:
        for key, value in INTERVENTIONS[name].changes.items():
            if key in merged and merged[key] != value:
                raise ValueError(
                    f"interventions {setter[key]!r} and {name!r} conflict: {setter[key]} sets "
                    f"{key}={merged[key]!r}, {name} sets {key}={value!r}"
                )
            setter.setdefault(key, name)
            merged[key] = value
    return {**values, **merged}
