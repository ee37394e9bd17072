"""Expert recipes: the stable-baselines3 settings an expert of each algorithm and environment is
trained with (:mod:`gvaempirics.bc.expert_runs` trains them; a run's manifest and its expert's
sidecar record the recipe, so a run keeps the one it started with)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

ALGORITHMS = ("ppo", "sac")


@dataclass(frozen=True)
class Recipe:
    """PPO settings of one environment's expert (everything else is SB3's default)."""

    n_steps: int = 512  # per env, per update
    batch_size: int = 64
    n_epochs: int = 10
    learning_rate: float = 3e-4
    hidden: tuple[int, ...] = (64, 64)  # tanh policy and value nets
    log_std_init: float = 0.0  # initial log standard deviation of the Gaussian actions
    n_envs: int = 4

    algorithm = "ppo"
    activation, output, vecnormalize = "tanh", "clip", "obs+reward"

    def algo_kwargs(self) -> dict[str, Any]:
        return dict(
            n_steps=self.n_steps, batch_size=self.batch_size, n_epochs=self.n_epochs, learning_rate=self.learning_rate
        )

    def policy_kwargs(self) -> dict[str, Any]:
        net = list(self.hidden)
        return dict(net_arch=dict(pi=net, vf=net), activation_fn=nn.Tanh, log_std_init=self.log_std_init)

    def record(self) -> dict[str, Any]:
        """What the manifest and the sidecar store (the manifest keeps ``n_envs`` itself)."""
        rec = {k: v for k, v in asdict(self).items() if k != "n_envs"}
        rec.update(hidden=list(self.hidden), activation=self.activation, vecnormalize=self.vecnormalize)
        if self.algorithm != "ppo":  # PPO records keep the fields they always had
            rec.update(algorithm=self.algorithm, output=self.output)
        return rec


@dataclass(frozen=True)
class SACRecipe(Recipe):
    """SAC settings of one environment's expert (SB3's defaults, the rl-zoo's warm-up)."""

    batch_size: int = 256
    hidden: tuple[int, ...] = (256, 256)  # ReLU actor and twin critics
    buffer_size: int = 1_000_000
    learning_starts: int = 10_000  # uniform random actions before the first update
    n_envs: int = 1

    algorithm = "sac"
    activation, output, vecnormalize = "relu", "squash", "none"

    def algo_kwargs(self) -> dict[str, Any]:
        return dict(
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            buffer_size=self.buffer_size,
            learning_starts=self.learning_starts,
        )

    def policy_kwargs(self) -> dict[str, Any]:
        return dict(net_arch=list(self.hidden))

    def record(self) -> dict[str, Any]:
        rec = super().record()
        for unused in ("n_steps", "n_epochs", "log_std_init"):  # PPO's fields, not SAC's
            rec.pop(unused)
        return rec


# PPO close to SB3's defaults: locomotes on Hopper, Walker2d and HalfCheetah on CPU. Ant flips over
# with it (docs/mujoco.md), so Ant gets wider nets, 4x longer rollouts and smaller initial action noise.
RECIPES: dict[tuple[str, str], Recipe] = {
    ("ppo", "default"): Recipe(),
    ("ppo", "Ant-v5"): Recipe(n_steps=1024, batch_size=256, learning_rate=1e-4, hidden=(256, 256), log_std_init=-1.0),
    ("sac", "default"): SACRecipe(),
}


def recipe_for(env_id: str, algorithm: str = "ppo") -> Recipe:
    """The recipe a new ``algorithm`` run of ``env_id`` is trained with."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r} is not valid: must be one of {', '.join(ALGORITHMS)}")
    return RECIPES.get((algorithm, env_id), RECIPES[(algorithm, "default")])
