"""Configuration of a behavior-cloning run (:class:`BCConfig`) and its named presets.

Kept free of torch so that ``gva --help`` and the theory commands start without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gvatheory.config import Config, option, to_dict

from ..config import TrainingOptions

ENV_IDS: tuple[str, ...] = ("Walker2d-v5", "Hopper-v5", "HalfCheetah-v5", "Ant-v5", "Humanoid-v5")
POLICIES = ("mlp", "transformer")
ACTIVATIONS = ("relu", "tanh", "gelu", "silu")
POSTHOC_ZOOM = ("snapshot", "rollout")


@dataclass(frozen=True)
class DemoOptions(Config):
    """Which expert demonstrations a run imitates; ``gva bc demos`` collects them ahead of time."""

    env: str = option("Hopper-v5", "gymnasium MuJoCo environment id", choices=ENV_IDS)
    expert: str = option(
        "", "expert file (.pt), or the name of a shipped expert (Walker2d-v5-sac); empty: the expert shipped for env"
    )
    n_demos: int = option(50, "expert trajectories in the training set", low=1)
    demo_horizon: int = option(1000, "length of each demonstration", low=1)
    val_demos: int = option(5, "extra expert trajectories held out for the validation loss", low=1)
    demo_seed: int = option(0, "seed of the demonstrations' initial conditions", low=0)
    drop_falls: bool = option(
        False,
        "imitate only the training demonstrations that reach demo_horizon without a fall (validation stays whole)",
    )

    def check(self) -> None:
        super().check()
        if self.n_demos * self.demo_horizon > 10**8:  # ~12 GB of float32 augmented states
            raise ValueError(
                f"n_demos={self.n_demos} x demo_horizon={self.demo_horizon} is out of range: "
                "at most 10^8 demonstration steps fit in memory"
            )

    def demo_settings(self) -> dict[str, Any]:
        """The settings a demonstration cache is keyed on (besides the expert file's digest)."""
        return dict(
            env_id=self.env, n=self.n_demos, n_val=self.val_demos, horizon=self.demo_horizon, seed=self.demo_seed
        )


def defaults() -> dict[str, Any]:
    """Every :class:`BCConfig` field at its default, as ``config.json`` holds it: what a run written
    before a field existed ran with (:meth:`gvaempirics.rundir.RunDir.read_config`)."""
    return to_dict(BCConfig())


@dataclass(frozen=True)
class BCConfig(TrainingOptions, DemoOptions):
    """A behavior-cloning run. Every field is a ``gva bc train`` flag and a config-file key (the
    optimizer, schedule, evaluation and stabilizer fields come from
    :class:`~gvaempirics.config.TrainingOptions`, the demonstrations' from :class:`DemoOptions`)."""

    demos: str = option("", "demonstration cache written by `gva bc demos` (empty: collect into the run directory)")
    fresh_data: bool = option(
        False, "replace the training set by new expert trajectories every fresh_every steps (infinite-data control)"
    )
    fresh_every: int = option(1000, "steps between fresh data draws (with fresh_data)", low=1)
    policy: str = option("mlp", "imitator architecture", choices=POLICIES)
    depth: int = option(4, "layers (MLP) or transformer blocks", low=1)
    width: int = option(256, "hidden width", low=1)
    activation: str = option("relu", "activation", choices=ACTIVATIONS)
    layer_norm: bool = option(False, "layer norm after each hidden linear layer (MLP)")
    dropout: float = option(0.0, "dropout probability", low=0.0, high=1.0, high_open=True)
    obs_noise: float = option(
        0.0, "sd of Gaussian noise added to each minibatch's raw augmented input states (0: none)", low=0.0
    )
    history: int = option(1, "augmented states the policy reads (transformer window; 1 for MLP)", low=1)
    ics: int = option(20, "seeded initial conditions per evaluation (same set for every iterate)", low=1, high=10**4)
    H: int = option(1000, "rollout horizon H", low=1, high=10**6)
    ic_seed: int = option(12345, "seed of the evaluation initial conditions", low=0)
    eval_batch: int = option(8, "checkpoints rolled out together", low=1)
    posthoc_zoom: str = option(
        "snapshot",
        "posthoc: at zoom iterates, snapshot the tracked EMAs for `gva bc posthoc` to synthesize any width "
        "later (snapshot), or roll out every tracked width now (rollout: exact widths, small checkpoints)",
        choices=POSTHOC_ZOOM,
    )

    def check(self) -> None:
        super().check()
        if self.policy == "mlp" and self.history != 1:
            raise ValueError(
                f"history={self.history} is out of range for policy='mlp': an MLP reads one augmented state (history=1)"
            )

    def imitator_spec(self, d_in: int, d_act: int):
        from .imitators import ImitatorSpec

        return ImitatorSpec(
            d_in=d_in,
            d_act=d_act,
            kind=self.policy,
            depth=self.depth,
            width=self.width,
            activation=self.activation,
            layer_norm=self.layer_norm,
            dropout=self.dropout,
            history=self.history,
        )


# Named configurations; any field can still be overridden from the command line.
PRESETS: dict[str, dict[str, Any]] = {
    # seconds: the CI smoke run (Hopper, small nets, few iterations, short rollouts)
    "tiny": dict(
        env="Hopper-v5",
        n_demos=3,
        val_demos=1,
        demo_horizon=100,
        depth=2,
        width=32,
        steps=60,
        eval_every=20,
        zoom_windows=(40,),
        zoom_length=6,
        ics=3,
        H=100,
        checkpoint_every=20,
        batch_size=32,
        eta=1e-3,
    ),
    # short enough for a CPU, long enough that raw iterates oscillate and the EMA does not
    "quick": dict(
        env="Hopper-v5",
        n_demos=25,
        val_demos=5,
        demo_horizon=1000,
        depth=4,
        width=256,
        steps=6000,
        eval_every=300,
        zoom_windows=(5000,),
        zoom_length=30,
        ics=10,
        H=1000,
        checkpoint_every=1000,
        batch_size=64,
        eta=3e-4,
    ),
    # the paper's setup (Section 3): N = H = 1000 demonstrations, 4-layer MLP, Adam, power EMA
    "paper": dict(
        env="Walker2d-v5",
        n_demos=1000,
        val_demos=50,
        demo_horizon=1000,
        depth=4,
        width=256,
        steps=100000,
        eval_every=1000,
        zoom_windows=(50000, 90000),
        zoom_length=100,
        ics=20,
        H=1000,
        checkpoint_every=5000,
        batch_size=256,
        eta=3e-4,
    ),
}
