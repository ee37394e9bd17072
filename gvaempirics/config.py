"""Fields shared by every empirical run: the stabilizer and the training loop.

A run's configuration is one frozen dataclass (:class:`gvaempirics.bc.config.BCConfig`,
:class:`gvaempirics.lm.config.LMConfig`) built on :class:`TrainingOptions`, which itself extends
:class:`StabilizerOptions`. Fields are declared with :func:`gvatheory.config.option` and checked
on creation (types, choices, ranges), so a config file is held to the same rules as flags.
A subclass redeclares a field to change its default. Imports no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gvatheory.config import Config, option
from gvatheory.schedules import LR_SCHEDULES, TrainingLR

STABILIZERS = ("ema", "constant-ema", "polyak", "bema", "posthoc")
OPTIMIZERS = ("sgd", "adam", "adamw")
_LR = {f.name: f.default for f in dataclasses.fields(TrainingLR)}  # the schedule's defaults, declared once


@dataclass(frozen=True)
class StabilizerOptions(Config):
    """Fields of every training run that keeps averaged weights beside the raw iterate; built
    into a stabilizer by :func:`gvaempirics.stabilizers.make_stabilizer`."""

    stabilizer: str = option(
        "ema",
        "averaged weights evaluated beside the raw ones: power EMA, constant EMA, "
        "Polyak average, bias-corrected EMA, or post-hoc EMA",
        choices=STABILIZERS,
    )
    alpha: float = option(0.5, "power EMA: gamma_t = max(t^-alpha, gamma_min)", low=0.0, low_open=True)
    gamma_min: float = option(
        1e-3,
        "the EMA weight's floor for --stabilizer ema and bema; the constant weight gamma itself for constant-ema",
        low=0.0,
        high=1.0,
        low_open=True,
    )  # one field, three uses: gvaempirics.stabilizers.weight_schedule maps it
    burn_in: int = option(0, "steps during which the average copies the iterate", low=0)
    posthoc_sigma_rels: tuple[float, ...] = option(
        (0.05, 0.1),
        "posthoc: relative widths of the tracked power-function EMAs (the first is the one evaluated during training)",
        low=0.0,
        high=12**-0.5,
        low_open=True,
    )  # 12**-0.5: the uniform average
    posthoc_every: int = option(100, "posthoc: updates between snapshots of the tracked EMAs", low=1)

    def check(self) -> None:
        super().check()
        if not self.posthoc_sigma_rels:
            raise ValueError("posthoc_sigma_rels=() is out of range: give at least one relative width")


@dataclass(frozen=True)
class TrainingOptions(StabilizerOptions):
    """Fields of the one training loop (:class:`gvaempirics.training.Trainer`): optimizer,
    learning-rate schedule (:class:`gvatheory.schedules.TrainingLR`), minibatches, evaluation
    schedule, checkpoints, seed and threads."""

    optimizer: str = option("adam", "optimizer", choices=OPTIMIZERS)
    eta: float = option(3e-4, "peak learning rate eta", low=0.0, low_open=True)
    schedule: str = option(
        _LR["kind"],
        "learning-rate schedule after warmup (cosine and wsd decay to zero at the last step)",
        choices=LR_SCHEDULES,
    )
    warmup: int = option(_LR["warmup"], "linear warmup steps", low=0)
    t0: float = option(_LR["t0"], "inverse schedule: eta / (1 + t/t0)", low=0.0, low_open=True)
    drop: float = option(_LR["drop"], "step schedule: factor of each drop", low=0.0, high=1.0, low_open=True)
    drop_every: int = option(_LR["every"], "step schedule: steps between drops", low=1)
    decay_fraction: float = option(
        _LR["decay_fraction"],
        "wsd schedule: final fraction of the steps decayed linearly to zero",
        low=0.0,
        high=1.0,
        low_open=True,
    )
    momentum: float = option(0.9, "SGD momentum", low=0.0, high=1.0, high_open=True)
    beta1: float = option(0.9, "Adam/AdamW beta1", low=0.0, high=1.0, high_open=True)
    beta2: float = option(0.999, "Adam/AdamW beta2", low=0.0, high=1.0, high_open=True)
    weight_decay: float = option(
        0.0, "weight decay (of matrices; biases, norms and embeddings' 1-d parameters are not decayed)", low=0.0
    )
    grad_clip: float = option(0.0, "gradient norm clip (0: none)", low=0.0)
    batch_size: int = option(64, "minibatch size", low=1)
    grad_accum: int = option(1, "minibatches accumulated per step", low=1)
    steps: int = option(20000, "optimizer steps", low=1, high=10**9)
    eval_every: int = option(500, "evaluate raw and stabilized weights every this many steps", low=1)
    zoom_windows: tuple[int, ...] = option((), "first steps of windows evaluated at every step", low=0)
    zoom_length: int = option(50, "consecutive steps in each zoom window", low=1)
    checkpoint_every: int = option(2000, "steps between checkpoints (always at the end)", low=1)
    seed: int = option(1, "seed of initialization, minibatches and dropout", low=0)
    threads: int = option(2, "torch threads (and MuJoCo threads for behavior cloning)", low=1)

    def check(self) -> None:
        super().check()
        if self.steps // self.eval_every > 10**6:
            raise ValueError(
                f"steps={self.steps} with eval_every={self.eval_every} is out of range: "
                "more than 10^6 evaluations; raise eval_every"
            )
        for start in self.zoom_windows:
            if start > self.steps:
                raise ValueError(f"zoom_windows={start} is out of range: must be in [0, steps={self.steps}]")

    def lr_schedule(self) -> TrainingLR:
        """The learning rate as a function of the step."""
        return TrainingLR(
            self.eta,
            self.schedule,
            steps=self.steps,
            warmup=self.warmup,
            t0=self.t0,
            drop=self.drop,
            every=self.drop_every,
            decay_fraction=self.decay_fraction,
        )

    def eval_steps(self) -> list[int]:
        """Evaluated iterates: 0, every ``eval_every``, the zoom windows, and the last one."""
        steps = set(range(0, self.steps + 1, self.eval_every)) | {self.steps}
        for start in self.zoom_windows:
            steps |= set(range(start, min(start + self.zoom_length, self.steps + 1)))
        return sorted(steps)
