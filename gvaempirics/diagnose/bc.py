"""The policy factory of the toolkit's own behavior-cloning runs (``gva bc train``).

A BC imitator reads augmented states (the observation and the previous action, in a window of
``history`` of them), so the policy that ``gva diagnose`` steps must carry that state between
calls: :class:`ClosedLoopImitator` wraps the imitator in the same
:class:`~gvaempirics.bc.train.AugmentedPolicy` the training run evaluates with, and loads and
saves the imitator's own state dict (the checkpoints' ``"model"`` entry).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from torch import Tensor, nn

from gvatheory.config import build_config


class ClosedLoopImitator(nn.Module):
    """An imitator stepped in closed loop: ``forward(obs (n, obs_dim)) -> actions (n, act_dim)``,
    feeding it ``[obs_t, u_{t-1}]`` (``u_{-1} = 0``); :meth:`reset` starts new episodes."""

    def __init__(self, imitator: nn.Module, history: int, low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.imitator = imitator
        self.history, self.low, self.high = history, np.asarray(low), np.asarray(high)
        self.reset()

    def reset(self) -> None:
        from ..bc.train import AugmentedPolicy

        self.loop = AugmentedPolicy(self.imitator, self.history, self.low, self.high)

    def forward(self, obs: Tensor) -> Tensor:
        return self.loop(obs)  # (n, act_dim)

    # the checkpoints hold the imitator's state dict, so that is this module's state dict
    def state_dict(self, *args, **kwargs):
        return self.imitator.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False):
        return self.imitator.load_state_dict(state_dict, strict=strict, assign=assign)


def bc_imitator(*, observation_space, action_space, run_config: dict | None = None) -> nn.Module:
    """Factory for ``gva bc train`` run directories: the run's imitator (architecture from its
    ``config.json``) in a :class:`ClosedLoopImitator`. ``gva diagnose RUN`` uses it by default."""
    from ..bc.config import BCConfig
    from ..bc.imitators import make_imitator

    if run_config is None:
        raise ValueError("bc_imitator needs a `gva bc train` run directory (with its config.json) as CHECKPOINTS")
    cfg = build_config(BCConfig, dict(run_config), source="the run's config.json")
    if observation_space is None or action_space is None:
        raise ValueError(f"bc_imitator needs the spaces of env={cfg.env!r}: pass --env, not --rollout")
    d_obs, d_act = int(np.prod(observation_space.shape)), int(np.prod(action_space.shape))
    imitator = make_imitator(cfg.imitator_spec(d_obs + d_act, d_act))
    return ClosedLoopImitator(imitator, cfg.history, action_space.low, action_space.high)


def is_bc_config(config: Mapping) -> bool:
    """Whether a run directory's config is a behavior-cloning run's (so ``bc_imitator`` fits)."""
    return all(key in config for key in ("env", "policy", "history", "demo_horizon"))
