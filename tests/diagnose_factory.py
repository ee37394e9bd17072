"""Policy factories and a rollout function for ``tests/test_diagnose.py``, importable as
``diagnose_factory:NAME`` (pytest puts ``tests/`` on ``sys.path``)."""

import numpy as np
import torch
from torch import nn

NOT_CALLABLE = 3


def linear_policy(*, observation_space, action_space) -> nn.Module:
    """A linear map from observations to one score per action (CartPole: 4 -> 2)."""
    return nn.Linear(int(np.prod(observation_space.shape)), int(action_space.n))


def box_policy(*, observation_space, action_space) -> nn.Module:
    """A linear map from observations to a Box action (Pendulum: 3 -> 1)."""
    return nn.Linear(int(np.prod(observation_space.shape)), int(np.prod(action_space.shape)))


def wrong_policy(*, observation_space, action_space) -> nn.Module:
    """A module the checkpoints' state dicts do not fit (hidden layer)."""
    return nn.Sequential(nn.Linear(int(np.prod(observation_space.shape)), 8), nn.Linear(8, int(action_space.n)))


def rollout_policy(*, observation_space, action_space) -> nn.Module:
    """For ``--rollout``, where there are no spaces: CartPole's sizes."""
    assert observation_space is None and action_space is None
    return nn.Linear(4, 2)


def linear_rollout(policy: nn.Module, seeds) -> np.ndarray:
    """A return linear in the weights: ``sum(weight) + bias[0] * (seed mod 5)``."""
    w, b = policy.weight.detach().double(), policy.bias.detach().double()
    return np.array([float(w.sum() + b[0] * (int(s) % 5)) for s in seeds])


def bad_rollout(policy: nn.Module, seeds) -> list:
    return [1.0]  # one return, whatever the number of seeds


def plain_returns(env_id: str, state: dict, seeds, H: int) -> np.ndarray:
    """The reference evaluator: a plain gymnasium loop, one env per seed, a linear policy acting
    greedily (Discrete: argmax of the scores) or clipped to the action bounds (Box)."""
    import gymnasium as gym

    out = []
    for s in seeds:
        env = gym.make(env_id)
        obs, _ = env.reset(seed=int(s))
        total = 0.0
        for _ in range(H):
            with torch.no_grad():
                scores = torch.as_tensor(obs, dtype=torch.float32) @ state["weight"].T + state["bias"]
            if isinstance(env.action_space, gym.spaces.Discrete):
                action = int(scores.argmax())
            else:
                action = np.clip(scores.numpy(), env.action_space.low, env.action_space.high)
            obs, r, terminated, truncated, _ = env.step(action)
            total += float(r)
            if terminated or truncated:
                break
        out.append(total)
        env.close()
    return np.array(out)
