"""The expert policy as plain tensors (paper Section 3: the fixed deterministic expert :math:`\\pi^\\star`).

:class:`ExpertMLP` is a stable-baselines3 policy with its ``VecNormalize`` observation statistics
folded in (:func:`fold`), acting deterministically. A PPO policy (tanh MLP) acts with its Gaussian
mean clipped to the action bounds; a SAC actor (ReLU MLP) with its squashed mean
:math:`\\tanh(\\mu)` mapped affinely onto the bounds, as SB3's ``predict`` does.
Its state dict holds tensors only, so its files load with ``torch.load(weights_only=True)``
(:func:`load_expert_file`): no code runs when an expert is read, whoever wrote the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..rundir import load_checked, load_torch_file
from .envs import check_env_id

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
OUTPUTS = ("clip", "squash")  # PPO's clipped Gaussian mean; SAC's tanh-squashed mean


class ExpertMLP(nn.Module):
    """Deterministic expert: folded observation normalization, MLP, then the action bounds
    (``output="clip"``: clip the mean, PPO; ``"squash"``: ``low + (tanh(mean) + 1) (high - low) / 2``, SAC)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: tuple[int, ...] = (64, 64),
        *,
        activation: str = "tanh",
        output: str = "clip",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not one of {sorted(ACTIVATIONS)}")
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r} is not one of {list(OUTPUTS)}")
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, tuple(hidden)
        self.activation, self.output = activation, output
        layers: list[nn.Module] = []
        d = obs_dim
        for h in hidden:
            layers += [nn.Linear(d, h), ACTIVATIONS[activation]()]
            d = h
        layers.append(nn.Linear(d, act_dim))
        self.net = nn.Sequential(*layers)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_scale", torch.ones(obs_dim))  # sqrt(var + eps)
        self.register_buffer("obs_clip", torch.tensor(np.inf))
        self.register_buffer("act_low", torch.full((act_dim,), -np.inf))
        self.register_buffer("act_high", torch.full((act_dim,), np.inf))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        z = ((obs - self.obs_mean) / self.obs_scale).clamp(-self.obs_clip, self.obs_clip)  # (..., obs_dim)
        u = self.net(z)  # (..., act_dim)
        if self.output == "squash":
            return self.act_low + (torch.tanh(u) + 1.0) * (0.5 * (self.act_high - self.act_low))
        return torch.maximum(torch.minimum(u, self.act_high), self.act_low)


def fold(env_id: str, policy, vecnormalize) -> ExpertMLP:
    """Fold an SB3 PPO or SAC ``policy`` and its ``VecNormalize`` statistics (objects in memory:
    training calls this at every checkpoint) into an :class:`ExpertMLP`. The policy's observation
    and action sizes must be ``env_id``'s."""
    import gymnasium as gym

    from .envs import act_dim, obs_dim

    check_env_id(env_id)
    dims, want = (policy.observation_space.shape[0], policy.action_space.shape[0]), (obs_dim(env_id), act_dim(env_id))
    if dims != want:
        raise ValueError(f"the policy has obs_dim, act_dim = {dims}, but {env_id} has {want}")
    if hasattr(policy, "actor"):  # SAC: latent_pi (ReLU MLP), then the mean layer mu, squashed
        linears = [m for m in policy.actor.latent_pi if isinstance(m, nn.Linear)] + [policy.actor.mu]
        kind = dict(activation="relu", output="squash")
    else:  # PPO: the policy half of the MLP extractor, then action_net, clipped
        linears = [m for m in policy.mlp_extractor.policy_net if isinstance(m, nn.Linear)] + [policy.action_net]
        kind = dict(activation="tanh", output="clip")
    expert = ExpertMLP(*dims, tuple(m.out_features for m in linears[:-1]), **kind)
    own = [m for m in expert.net if isinstance(m, nn.Linear)]
    vn = vecnormalize
    with torch.no_grad():
        for dst, src in zip(own, linears):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        if vn.norm_obs:
            expert.obs_mean.copy_(torch.as_tensor(vn.obs_rms.mean))
            expert.obs_scale.copy_(torch.as_tensor(np.sqrt(vn.obs_rms.var + vn.epsilon)))
            expert.obs_clip.fill_(float(vn.clip_obs))
        space = gym.make(env_id).action_space
        expert.act_low.copy_(torch.as_tensor(space.low))
        expert.act_high.copy_(torch.as_tensor(space.high))
    return expert.eval()


def load_expert_file(
    path: Path, obs_n: int, act_n: int, hidden: tuple[int, ...], *, activation: str = "tanh", output: str = "clip"
) -> ExpertMLP:
    """The :class:`ExpertMLP` of sizes ``obs_n, act_n, hidden`` (and ``activation``, ``output``) in
    the plain-tensor file ``path``:
    the one loader of expert weights (exported experts, a run's policy files). Refused, naming
    the file: a file that is not plain tensors, does not fit the architecture, or holds NaN
    (or infinite weights, or a non-positive observation scale), which would act as NaN."""
    expert = ExpertMLP(obs_n, act_n, hidden, activation=activation, output=output)
    load_checked(
        expert, load_torch_file(path), source=path, what=f"the expert of sizes {obs_n}, {list(hidden)}, {act_n}"
    )
    bad = [n for n, t in expert.state_dict().items() if torch.isnan(t).any()]
    bad += [n for n, t in expert.named_parameters() if not torch.isfinite(t).all() and n not in bad]
    if not (torch.isfinite(expert.obs_scale).all() and (expert.obs_scale > 0).all()):
        bad.append("obs_scale")
    if bad:
        raise ValueError(f"expert file {path} holds non-finite or invalid values in {', '.join(bad[:3])}: refusing it")
    return expert.eval()
