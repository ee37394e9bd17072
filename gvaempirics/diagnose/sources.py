"""Inputs of ``gva diagnose``: checkpoint folders, user policy factories and rollout functions,
and a plain gymnasium evaluator for any registered environment.

Everything here validates its input and raises a one-line ``ValueError`` naming the thing that
is wrong (the factory, the checkpoint file, the environment id), so that the command can refuse
bad input before any rollout.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..rundir import Checkpoint, load_checked, load_torch_file

SUFFIXES = (".pt", ".pth")
_DIGITS = re.compile(r"\d+")


def _first_line(err: BaseException) -> str:
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


# ------------------------------------------------------------------ checkpoints
def checkpoint_folder(path: Path) -> tuple[Path, Path | None]:
    """``(folder holding the checkpoint files, config.json of a toolkit run or None)``.

    A toolkit run directory (``gva bc train``) keeps its checkpoints in ``checkpoints/`` beside
    ``config.json``; any other folder holds the checkpoint files itself.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"checkpoints={str(path)!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"checkpoints={str(path)!r} is not a directory")
    if (path / "checkpoints").is_dir():
        config = path / "config.json"
        return path / "checkpoints", config if config.is_file() else None
    return path, None


def find_checkpoints(path: Path) -> list[Checkpoint]:
    """The ``*.pt`` / ``*.pth`` files of a checkpoint folder (or of a toolkit run directory's
    ``checkpoints/``), ordered by the integer in their name (the last run of digits:
    ``step_1000.pt`` is step 1000). At least two are needed to compare neighbours."""
    folder, _ = checkpoint_folder(path)
    found: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix not in SUFFIXES or p.name.startswith(".") or not p.is_file():
            continue
        digits = _DIGITS.findall(p.stem)
        if not digits:
            raise ValueError(f"checkpoint {p} has no integer in its name to order it by (e.g. step_1000.pt)")
        step = int(digits[-1])
        if step in found:
            raise ValueError(f"checkpoints {found[step].name} and {p.name} in {folder} share the step number {step}")
        found[step] = p
    if len(found) < 2:
        what = "no checkpoints" if not found else "only one checkpoint"
        raise ValueError(
            f"checkpoints={str(path)!r} holds {what} ({'/'.join('*' + s for s in SUFFIXES)}): at least 2 are needed"
        )
    return [Checkpoint(step, found[step]) for step in sorted(found)]


def load_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from a checkpoint file: the file itself (``torch.save(model.state_dict())``),
    or its ``"model"`` (toolkit runs) or ``"state_dict"`` entry."""
    obj = load_torch_file(path)
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            f"checkpoint {path} is not a state dict (a dict of tensors, or a dict with a 'model' or "
            "'state_dict' entry holding one)"
        )
    return dict(obj)


def average_state_dicts(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Uniform average of the floating-point entries of ``states``; other entries (integer
    counters such as ``num_batches_tracked``) are taken from the newest, the last of ``states``."""
    if not states:
        raise ValueError("states=[] is out of range: give at least one state dict")
    last = states[-1]
    out = {}
    for name, value in last.items():
        if value.is_floating_point():
            out[name] = torch.stack([s[name].to(torch.float64) for s in states]).mean(0).to(value.dtype)
        else:
            out[name] = value.clone()
    return out


# ------------------------------------------------------------------ user code
def import_object(spec: str, what: str) -> Callable:
    """The callable named by ``spec = "module:function"`` (``function`` may be dotted).

    The module is looked up on ``sys.path`` and, failing that, in the current directory (as
    ``python -m`` would), so ``my_policies:make`` works next to ``my_policies.py``.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"{what}={spec!r} is not valid: give module:function")
    module_name, attr = spec.split(":")
    added = os.getcwd() not in sys.path
    if added:
        sys.path.append(os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # ModuleNotFoundError, or anything the module raises on import
        raise ValueError(f"{what}={spec!r} cannot be imported ({_first_line(err)})") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what}={spec!r} cannot be imported: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{what}={spec!r} is not callable (it is a {type(obj).__name__})")
    return obj


def make_policy(
    factory: Callable[..., nn.Module], name: str, *, observation_space, action_space, run_config: dict | None = None
) -> nn.Module:
    """Call the factory with the environment's spaces (and ``run_config=`` when it declares that
    keyword or takes ``**kwargs``); check that it returns an ``nn.Module``."""
    kwargs: dict[str, Any] = {"observation_space": observation_space, "action_space": action_space}
    try:
        params = inspect.signature(factory).parameters.values()
        if any(p.name == "run_config" or p.kind is p.VAR_KEYWORD for p in params):
            kwargs["run_config"] = run_config
    except (TypeError, ValueError):  # builtins without a signature get the two spaces only
        pass
    try:
        module = factory(**kwargs)
    except ValueError as err:
        raise ValueError(f"factory={name!r}: {' '.join(str(err).split())}") from None
    except Exception as err:
        raise ValueError(f"factory={name!r} failed ({_first_line(err)})") from None
    if not isinstance(module, nn.Module):
        raise ValueError(f"factory={name!r} returned a {type(module).__name__}, not a torch nn.Module")
    return module


def load_into(module: nn.Module, state: Mapping[str, Tensor], *, source: str, factory: str) -> None:
    """``module.load_state_dict(state)`` through the toolkit's one fits check, naming both sides."""
    load_checked(module, state, source=source, what=f"the module of factory={factory!r}")


def call_rollout(rollout: Callable, name: str, policy: nn.Module, seeds: np.ndarray) -> np.ndarray:
    """``rollout(policy, seeds)`` checked to return one finite-or-inf real return per seed."""
    try:
        with torch.no_grad():
            out = rollout(policy, seeds)
    except ValueError as err:
        raise ValueError(f"rollout={name!r}: {' '.join(str(err).split())}") from None
    except Exception as err:
        raise ValueError(f"rollout={name!r} failed ({_first_line(err)})") from None
    try:
        returns = np.asarray(out.detach().cpu().numpy() if isinstance(out, Tensor) else out, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"rollout={name!r} returned {type(out).__name__}, not one real return per seed") from None
    if returns.shape != (len(seeds),):
        raise ValueError(
            f"rollout={name!r} returned shape {returns.shape}, expected ({len(seeds)},): one return per seed"
        )
    return returns


# ------------------------------------------------------------------ gymnasium
def make_env(env_id: str):
    """``gymnasium.make(env_id)`` with a one-line error naming ``env_id``."""
    import gymnasium as gym

    try:
        return gym.make(env_id)
    except Exception as err:  # NameNotFound, VersionNotFound, DependencyNotInstalled, ...
        raise ValueError(f"env={env_id!r} cannot be made by gymnasium ({_first_line(err)})") from None


def _check_spaces(env_id: str, observation_space, action_space) -> None:
    from gymnasium import spaces

    if not isinstance(observation_space, (spaces.Box, spaces.Discrete)):
        raise ValueError(
            f"env={env_id!r} has a {type(observation_space).__name__} observation space: only Box and Discrete are supported"
        )
    if not isinstance(action_space, (spaces.Box, spaces.Discrete)):
        raise ValueError(
            f"env={env_id!r} has a {type(action_space).__name__} action space: only Box and Discrete are supported"
        )


def act(policy: Callable[[Tensor], Tensor], obs: np.ndarray, action_space) -> np.ndarray:
    """One deterministic batched policy call: ``obs`` ``(n, *obs_shape)`` -> ``n`` actions.

    Box: the output, reshaped to ``(n, *shape)``, clipped to the bounds. Discrete: the argmax
    when the output has one entry per action, otherwise the output rounded to an action index.
    """
    from gymnasium import spaces

    n = len(obs)
    with torch.no_grad():
        out = policy(torch.as_tensor(obs, dtype=torch.float32))
    a = np.asarray(out.detach().cpu().numpy() if isinstance(out, Tensor) else out, dtype=np.float64)
    if isinstance(action_space, spaces.Discrete):
        k = int(action_space.n)
        if a.shape == (n, k):
            index = a.argmax(axis=-1)
        elif a.size == n:
            index = np.clip(np.rint(a.reshape(n)), 0, k - 1).astype(np.int64)
        else:
            raise ValueError(
                f"policy returned shape {a.shape} for {n} observations: expected ({n}, {k}) scores or ({n},)"
            )
        return index.astype(np.int64) + int(action_space.start)
    shape = tuple(action_space.shape)
    if a.size != n * math.prod(shape):
        raise ValueError(f"policy returned shape {a.shape} for {n} observations: expected {(n, *shape)}")
    return np.clip(a.reshape(n, *shape), action_space.low, action_space.high).astype(action_space.dtype)


class GymRollout:
    """Deterministic returns of a policy on any gymnasium environment, one episode per seed.

    One environment per initial condition, all stepped in lockstep: the policy is called once
    per step on the observations of every episode (ended ones included, so that a policy with
    memory sees a fixed batch), and an episode ends at termination, truncation (the env's own
    time limit) or after ``H`` steps. A policy with a ``reset()`` method is reset before each
    batch of episodes. Callable as ``rollout(policy, seeds) -> returns (n,)``, like a user's.
    """

    def __init__(self, env_id: str, H: int):
        self.env_id, self.H = env_id, H
        first = make_env(env_id)
        self.observation_space, self.action_space = first.observation_space, first.action_space
        _check_spaces(env_id, self.observation_space, self.action_space)
        self.envs = [first]

    def __call__(self, policy: Callable[[Tensor], Tensor], seeds: np.ndarray) -> np.ndarray:
        while len(self.envs) < len(seeds):
            self.envs.append(make_env(self.env_id))
        envs = self.envs[: len(seeds)]
        obs = np.stack([np.asarray(env.reset(seed=int(s))[0], dtype=np.float64) for env, s in zip(envs, seeds)])
        if callable(getattr(policy, "reset", None)):
            policy.reset()
        returns = np.zeros(len(seeds))
        done = np.zeros(len(seeds), dtype=bool)
        for _ in range(self.H):
            action = act(policy, obs, self.action_space)
            for i in np.flatnonzero(~done):
                o, r, terminated, truncated, _ = envs[i].step(action[i])
                obs[i] = o
                returns[i] += float(r)
                done[i] = terminated or truncated
            if done.all():
                break
        return returns

    def close(self) -> None:
        for env in self.envs:
            env.close()
