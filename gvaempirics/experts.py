"""Expert policies for the behavior-cloning experiments (Section 3 and Figure 1 of the paper).

The imitators of the paper clone a fixed deterministic expert :math:`\\pi^\\star(s)`. Here the
expert is a stable-baselines3 PPO policy trained with one recipe (4 envs, ``VecNormalize`` on
observations and rewards, 64x64 tanh nets, ``n_steps`` 512, batch 64, 10 epochs, lr 3e-4), and
exported as a plain torch MLP that acts with the Gaussian mean,

.. math::

    \\pi^\\star(s) = \\operatorname{clip}_{[u_{lo}, u_{hi}]}\\big(W_3 \\tanh(W_2 \\tanh(W_1 \\bar s + b_1) + b_2) + b_3\\big),
    \\qquad \\bar s = \\operatorname{clip}_{[-c, c]}\\Big(\\frac{s - m}{\\sqrt{v + \\epsilon}}\\Big),

with the ``VecNormalize`` statistics :math:`(m, v, \\epsilon, c)` folded in and the final clip to
the action bounds that SB3's ``predict`` applies. Training writes SB3 checkpoints every 50k env
steps (``ppo_<N>_steps.zip`` + ``ppo_vecnormalize_<N>_steps.pkl``) and resumes from the newest.
PPO is noisy between checkpoints, so the shipped expert is *selected*: every checkpoint is
evaluated deterministically over 20 seeded initial conditions at H=1000, and the best robust one
(no episode terminated early) with the highest mean return is exported.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from gvaempirics.envs import check_env_id  # one list of valid ids for experts, demos and the evaluator
from gvaempirics.rundir import atomic_write_bytes, load_torch_file

SHIPPED_DIR = Path(__file__).with_name("experts")
_CKPT = re.compile(r"^ppo_(\d+)_steps\.zip$")

# The recipe of the issue: PPO close to SB3's defaults, which locomotes on Hopper and Walker2d on CPU.
PPO_KWARGS = dict(n_steps=512, batch_size=64, n_epochs=10, learning_rate=3e-4)
HIDDEN = (64, 64)


class ExpertMLP(nn.Module):
    """Deterministic PPO expert: folded observation normalization, tanh MLP, clip to action bounds."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = HIDDEN):
        super().__init__()
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, tuple(hidden)
        layers: list[nn.Module] = []
        d = obs_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.Tanh()]
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
        return torch.maximum(torch.minimum(self.net(z), self.act_high), self.act_low)  # (..., act_dim)


@dataclass(frozen=True)
class ExpertEval:
    """Deterministic returns and episode lengths of an expert over seeded initial conditions."""

    returns: np.ndarray  # (n_ics,)
    lengths: np.ndarray  # (n_ics,)
    horizon: int

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def sd(self) -> float:
        return float(self.returns.std(ddof=1)) if len(self.returns) > 1 else 0.0

    @property
    def falls(self) -> int:
        """Episodes that terminated before the horizon (Walker2d/Hopper fall; HalfCheetah never terminates)."""
        return int((self.lengths < self.horizon).sum())


def ic_seeds(seed: int, n: int, stream: int) -> list[int]:
    """``n`` reset seeds of one stream (0 expert evaluation, 1 demo training, 2 demo validation,
    3 + r fresh round r), drawn from ``SeedSequence([seed, stream])`` so streams never overlap."""
    return [int(s) for s in np.random.SeedSequence([seed, stream]).generate_state(n, np.uint32)]


def run_episodes(env_id: str, policy: Callable[[torch.Tensor], torch.Tensor], seeds: list[int],
                 horizon: int, *, record: bool = False, threads: int = 2) -> dict[str, np.ndarray]:
    """Roll a deterministic policy from ``env.reset(seed=s)`` for each seed, batching the policy.

    Runs on the batched evaluator :func:`gvaempirics.rollout.rollout` (bitwise equal to stepping
    gymnasium envs, tested there); an episode stops at termination or at ``horizon``. Returns
    ``returns (I,)``, ``lengths (I,)`` and with ``record`` ``obs (I, H, obs_dim)`` and
    ``actions (I, H, act_dim)`` (float32, zero after termination).
    """
    from .envs import initial_conditions_from_seeds
    from .rollout import rollout

    ics = initial_conditions_from_seeds(env_id, seeds)
    res = rollout(env_id, ics, horizon, lambda obs: policy(obs[0])[None], record=record, threads=threads)
    out = {"returns": res.returns[0], "lengths": res.lengths[0]}
    if record:
        alive = res.alive[0][..., None]  # (I, H, 1)
        out.update(obs=np.where(alive, res.obs[0], 0.0).astype(np.float32),
                   actions=np.where(alive, res.actions[0], 0.0).astype(np.float32))
    return out


def evaluate(env_id: str, expert: nn.Module, *, n_ics: int = 20, horizon: int = 1000, seed: int = 0) -> ExpertEval:
    """Deterministic evaluation of ``expert`` over ``n_ics`` seeded initial conditions."""
    if n_ics < 1 or horizon < 1:
        raise ValueError(f"n_ics={n_ics}, horizon={horizon}: both must be >= 1")
    res = run_episodes(env_id, expert, ic_seeds(seed, n_ics, 0), horizon)
    return ExpertEval(res["returns"], res["lengths"], horizon)


# ------------------------------------------------------------------ training (SB3 PPO)
def checkpoints(run_dir: Path) -> list[tuple[int, Path, Path]]:
    """``(env steps, model zip, VecNormalize pkl)`` of every complete checkpoint in ``run_dir``, oldest first."""
    run_dir = Path(run_dir)
    found = []
    for p in run_dir.glob("ppo_*_steps.zip") if run_dir.is_dir() else []:
        m = _CKPT.match(p.name)
        pkl = run_dir / f"ppo_vecnormalize_{m.group(1)}_steps.pkl" if m else None
        if m and pkl.is_file():
            found.append((int(m.group(1)), p, pkl))
    return sorted(found)


def _make_venv(env_id: str, n_envs: int, seed: int):
    from stable_baselines3.common.env_util import make_vec_env

    return make_vec_env(env_id, n_envs=n_envs, seed=seed)


def train(env_id: str, out: Path, *, total_steps: int, seed: int = 1, n_envs: int = 4,
          checkpoint_every: int = 50_000, quiet: bool = False) -> int:
    """Train (or resume) PPO on ``env_id`` to ``total_steps`` env steps, checkpointing into ``out``.

    Resumes from the newest checkpoint in ``out`` (``PPO.load`` + ``VecNormalize.load``, learning
    continued with ``reset_num_timesteps=False``). Wall and CPU seconds accumulate in
    ``out/train_time.json``. Returns the env steps reached.
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
    from stable_baselines3.common.vec_env import VecNormalize
    from tqdm.auto import tqdm

    check_env_id(env_id)
    for name, v, lo in (("total_steps", total_steps, 1), ("n_envs", n_envs, 1), ("checkpoint_every", checkpoint_every, n_envs)):
        if v < lo:
            raise ValueError(f"{name}={v} must be >= {lo}")
    torch.set_num_threads(1)  # the machine is shared; PPO's small nets gain nothing from threads
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpts = checkpoints(out)
    venv = _make_venv(env_id, n_envs, seed)
    if ckpts:
        _, zip_path, pkl_path = ckpts[-1]
        venv = VecNormalize.load(str(pkl_path), venv)
        venv.training = True
        model = PPO.load(str(zip_path), env=venv, device="cpu")
    else:
        venv = VecNormalize(venv, norm_obs=True, norm_reward=True)
        model = PPO("MlpPolicy", venv, seed=seed, verbose=0, device="cpu", **PPO_KWARGS,
                    policy_kwargs=dict(net_arch=dict(pi=list(HIDDEN), vf=list(HIDDEN)), activation_fn=nn.Tanh))
    remaining = total_steps - model.num_timesteps
    if remaining <= 0:
        return model.num_timesteps

    class Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=total_steps, initial=self.model.num_timesteps, desc=f"PPO {env_id}",
                            unit="step", disable=quiet)

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    ckpt_cb = CheckpointCallback(save_freq=max(checkpoint_every // n_envs, 1), save_path=str(out),
                                 name_prefix="ppo", save_vecnormalize=True)
    wall, cpu = time.time(), time.process_time()
    model.learn(total_timesteps=remaining, callback=[ckpt_cb, Progress()], reset_num_timesteps=False)
    times_path = out / "train_time.json"
    times = json.loads(times_path.read_text()) if times_path.is_file() else {"wall_s": 0.0, "cpu_s": 0.0}
    times = {"wall_s": times["wall_s"] + time.time() - wall, "cpu_s": times["cpu_s"] + time.process_time() - cpu}
    atomic_write_bytes(times_path, json.dumps(times).encode())
    return model.num_timesteps


def from_checkpoint(env_id: str, zip_path: Path, pkl_path: Path) -> ExpertMLP:
    """Fold a PPO checkpoint and its ``VecNormalize`` statistics into an :class:`ExpertMLP`."""
    import gymnasium as gym
    import pickle

    from stable_baselines3 import PPO

    model = PPO.load(str(zip_path), device="cpu")
    with open(pkl_path, "rb") as fh:
        vn = pickle.load(fh)  # the VecNormalize object without its venv, as SB3 saves it
    policy = model.policy
    obs_dim, act_dim = policy.observation_space.shape[0], policy.action_space.shape[0]
    linears = [m for m in policy.mlp_extractor.policy_net if isinstance(m, nn.Linear)] + [policy.action_net]
    expert = ExpertMLP(obs_dim, act_dim, tuple(m.out_features for m in linears[:-1]))
    own = [m for m in expert.net if isinstance(m, nn.Linear)]
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


@dataclass(frozen=True)
class Candidate:
    steps: int
    evaluation: ExpertEval


def select(env_id: str, run_dir: Path, *, n_ics: int = 20, horizon: int = 1000, seed: int = 0,
           min_steps: int = 0, quiet: bool = False) -> tuple[list[Candidate], Candidate]:
    """Evaluate every checkpoint of ``run_dir`` (from ``min_steps`` on) and pick the expert.

    The pick is the robust checkpoint (no fall) with the highest mean return; if no checkpoint is
    robust, the one with the fewest falls, then the highest mean return.
    """
    from tqdm.auto import tqdm

    ckpts = [c for c in checkpoints(run_dir) if c[0] >= min_steps]
    if not ckpts:
        raise FileNotFoundError(f"{run_dir}: no PPO checkpoints (ppo_<N>_steps.zip + ppo_vecnormalize_<N>_steps.pkl)")
    cands = []
    for steps, z, p in tqdm(ckpts, desc=f"evaluate {env_id} checkpoints", unit="ckpt", disable=quiet):
        cands.append(Candidate(steps, evaluate(env_id, from_checkpoint(env_id, z, p), n_ics=n_ics, horizon=horizon, seed=seed)))
    return cands, pick(cands)


def pick(cands: list[Candidate]) -> Candidate:
    """Fewest falls first (robust = none), then the highest mean return."""
    return max(cands, key=lambda c: (-c.evaluation.falls, c.evaluation.mean))


def export(env_id: str, run_dir: Path, dest: Path, *, n_ics: int = 20, horizon: int = 1000, seed: int = 0,
           min_steps: int = 0, command: str = "", train_seed: int | None = None, note: str = "",
           training_time: dict[str, float] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Select the best checkpoint of ``run_dir`` and write ``dest`` (state dict) + ``dest.json`` (sidecar)."""
    run_dir, dest = Path(run_dir), Path(dest)
    cands, best = select(env_id, run_dir, n_ics=n_ics, horizon=horizon, seed=seed, min_steps=min_steps, quiet=quiet)
    _, z, p = next(c for c in checkpoints(run_dir) if c[0] == best.steps)
    expert = from_checkpoint(env_id, z, p)
    times_path = run_dir / "train_time.json"
    if training_time is None and times_path.is_file():
        training_time = json.loads(times_path.read_text())
    ev = best.evaluation
    info = {
        "env_id": env_id, "obs_dim": expert.obs_dim, "act_dim": expert.act_dim,
        "architecture": {"hidden": list(expert.hidden), "activation": "tanh",
                         "input": "VecNormalize obs normalization folded in (clip included)",
                         "output": "Gaussian mean clipped to the action bounds"},
        "algorithm": "stable-baselines3 PPO", "recipe": {**PPO_KWARGS, "n_envs": 4, "vecnormalize": "obs+reward"},
        "command": command, "seed": train_seed, "env_steps": best.steps, "training_time": training_time,
        "checkpoint": z.name, "eval": {"n_ics": n_ics, "horizon": horizon, "ic_seed": seed,
                                       "return_mean": ev.mean, "return_sd": ev.sd, "falls": ev.falls,
                                       "returns": [round(float(r), 2) for r in ev.returns]},
        "candidates": [{"steps": c.steps, "return_mean": round(c.evaluation.mean, 1),
                        "return_sd": round(c.evaluation.sd, 1), "falls": c.evaluation.falls} for c in cands],
        "note": note,
    }
    save_expert(expert, info, dest)
    return info


def save_expert(expert: ExpertMLP, info: dict[str, Any], dest: Path) -> None:
    """Write the state dict to ``dest`` and ``info`` to ``dest`` with suffix ``.json``, each atomically."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    torch.save(expert.state_dict(), tmp)
    tmp.replace(dest)
    atomic_write_bytes(dest.with_suffix(".json"), (json.dumps(info, indent=2) + "\n").encode())


def load_expert(env_id: str, path: Path | None = None) -> tuple[ExpertMLP, dict[str, Any]]:
    """Load an exported expert (default: the shipped ``gvaempirics/experts/<env_id>.pt``) and its sidecar.

    Raises ``ValueError`` if the file belongs to another env or is corrupt, ``FileNotFoundError``
    if it or its sidecar is missing.
    """
    path = Path(path) if path is not None else SHIPPED_DIR / f"{env_id}.pt"
    if not path.is_file():
        shipped = sorted(p.stem for p in SHIPPED_DIR.glob("*.pt"))
        raise FileNotFoundError(f"{path}: no such expert file (shipped experts: {', '.join(shipped) or 'none'})")
    side = path.with_suffix(".json")
    if not side.is_file():
        raise FileNotFoundError(f"{side}: expert sidecar missing")
    try:
        info = json.loads(side.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{side} is corrupt ({err})") from None
    if info.get("env_id") != env_id:
        raise ValueError(f"{path} is an expert for {info.get('env_id')!r}, not for env_id={env_id!r}")
    state = load_torch_file(path)
    expert = ExpertMLP(info["obs_dim"], info["act_dim"], tuple(info["architecture"]["hidden"]))
    try:
        expert.load_state_dict(state)
    except (RuntimeError, KeyError, AttributeError) as err:
        raise ValueError(f"{path} does not hold an expert state dict ({err})") from None
    return expert.eval(), info
