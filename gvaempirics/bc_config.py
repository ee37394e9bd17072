"""Configuration of a behavior-cloning run (:class:`BCConfig`) and its named presets.

Kept free of torch so that ``gva --help`` and the theory commands start without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gvatheory._checks import check_int, check_positive, check_range
from gvatheory.schedules import ConstantLR, CosineLR, InverseTimeLR, StepDecayLR

from .config import StabilizerOptions, option


@dataclass(frozen=True)
class BCConfig(StabilizerOptions):
    """A behavior-cloning run. Every field is a ``gva bc train`` flag and a config-file key
    (the stabilizer fields come from :class:`~gvaempirics.config.StabilizerOptions`)."""

    env: str = option("Hopper-v5", "gymnasium MuJoCo environment id")
    expert: str = option("", "expert file (.pt); empty: the expert shipped for env")
    n_demos: int = option(50, "expert trajectories in the training set")
    demo_horizon: int = option(1000, "length of each demonstration")
    val_demos: int = option(5, "extra expert trajectories held out for the validation loss")
    demo_seed: int = option(0, "seed of the demonstrations' initial conditions")
    fresh_data: bool = option(False, "replace the training set by new expert trajectories every fresh_every steps (infinite-data control)")
    fresh_every: int = option(1000, "steps between fresh data draws (with fresh_data)")
    policy: str = option("mlp", "imitator architecture", choices=("mlp", "transformer"))
    depth: int = option(4, "layers (MLP) or transformer blocks")
    width: int = option(256, "hidden width")
    activation: str = option("relu", "activation", choices=("relu", "tanh", "gelu", "silu"))
    layer_norm: bool = option(False, "layer norm after each hidden linear layer (MLP)")
    dropout: float = option(0.0, "dropout probability")
    history: int = option(1, "augmented states the policy reads (transformer window; 1 for MLP)")
    optimizer: str = option("adam", "optimizer", choices=("sgd", "adam", "adamw"))
    lr: float = option(3e-4, "peak learning rate eta")
    lr_schedule: str = option("constant", "learning-rate schedule", choices=("constant", "cosine", "inverse", "step"))
    lr_t0: float = option(1000.0, "t0 of the inverse schedule eta/(1+t/t0)")
    lr_drop: float = option(0.1, "factor of the step schedule")
    lr_every: int = option(10000, "steps between drops of the step schedule")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(0.0, "weight decay")
    batch_size: int = option(64, "minibatch size")
    grad_accum: int = option(1, "minibatches accumulated per step")
    steps: int = option(20000, "optimizer steps")
    eval_every: int = option(500, "evaluate raw and stabilized weights every this many steps")
    zoom_windows: tuple[int, ...] = option((), "first steps of windows evaluated at every step")
    zoom_length: int = option(50, "consecutive steps in each zoom window")
    eval_ics: int = option(20, "seeded initial conditions per evaluation (same set for every iterate)")
    eval_horizon: int = option(1000, "rollout horizon H")
    eval_seed: int = option(12345, "seed of the evaluation initial conditions")
    eval_batch: int = option(8, "checkpoints rolled out together")
    checkpoint_every: int = option(2000, "steps between checkpoints (always at the end)")
    seed: int = option(1, "seed of initialization, minibatches and dropout")
    threads: int = option(2, "torch and MuJoCo threads")

    def __post_init__(self):
        super().__post_init__()
        for name in ("n_demos", "demo_horizon", "fresh_every", "depth", "width", "history", "lr_every",
                     "batch_size", "grad_accum", "steps", "eval_every", "zoom_length", "eval_ics",
                     "eval_horizon", "eval_batch", "checkpoint_every", "threads"):
            check_int(name, getattr(self, name), 1)
        for name in ("val_demos", "demo_seed", "eval_seed", "seed"):
            check_int(name, getattr(self, name), 0)
        check_positive("lr", self.lr)
        check_positive("lr_t0", self.lr_t0)
        check_range("lr_drop", self.lr_drop, 0.0, 1.0, low_open=True)
        check_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        for start in self.zoom_windows:
            check_int("zoom_windows", start, 0, self.steps)
        if self.policy == "mlp" and self.history != 1:
            raise ValueError(f"history={self.history} is out of range for policy='mlp': an MLP reads one augmented state (history=1)")

    def imitator_spec(self, d_in: int, d_act: int):
        from .imitators import ImitatorSpec

        return ImitatorSpec(d_in=d_in, d_act=d_act, kind=self.policy, depth=self.depth, width=self.width,
                            activation=self.activation, layer_norm=self.layer_norm, dropout=self.dropout,
                            history=self.history)

    def lr_schedule_fn(self):
        return {
            "constant": lambda: ConstantLR(self.lr),
            "cosine": lambda: CosineLR(self.lr, self.steps),
            "inverse": lambda: InverseTimeLR(self.lr, self.lr_t0),
            "step": lambda: StepDecayLR(self.lr, self.lr_drop, self.lr_every),
        }[self.lr_schedule]()

    def eval_steps(self) -> list[int]:
        """Evaluated iterates: 0, every ``eval_every``, the zoom windows, and the last one."""
        steps = set(range(0, self.steps + 1, self.eval_every)) | {self.steps}
        for start in self.zoom_windows:
            steps |= set(range(start, min(start + self.zoom_length, self.steps + 1)))
        return sorted(steps)


# Named configurations; any field can still be overridden from the command line.
PRESETS: dict[str, dict[str, Any]] = {
    # seconds: the CI smoke run (Hopper, small nets, few iterations, short rollouts)
    "tiny": dict(env="Hopper-v5", n_demos=3, val_demos=1, demo_horizon=100, depth=2, width=32, steps=60,
                 eval_every=20, zoom_windows=(40,), zoom_length=6, eval_ics=3, eval_horizon=100,
                 checkpoint_every=20, batch_size=32, lr=1e-3),
    # about 10 minutes on 2 CPU cores: raw iterates oscillate, the EMA does not
    "quick": dict(env="Hopper-v5", n_demos=25, val_demos=5, demo_horizon=1000, depth=4, width=256, steps=6000,
                  eval_every=300, zoom_windows=(5000,), zoom_length=30, eval_ics=10, eval_horizon=1000,
                  checkpoint_every=1000, batch_size=64, lr=3e-4),
    # the paper's setup (Section 3): N = H = 1000 demonstrations, 4-layer MLP, Adam, power EMA
    "paper": dict(env="Walker2d-v5", n_demos=1000, val_demos=50, demo_horizon=1000, depth=4, width=256, steps=100000,
                  eval_every=1000, zoom_windows=(50000, 90000), zoom_length=100, eval_ics=20, eval_horizon=1000,
                  checkpoint_every=5000, batch_size=256, lr=3e-4),
}
