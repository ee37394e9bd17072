"""``diagnose``: roll out every checkpoint of a folder, and uniform averages of the last ones,
from the same seeded initial conditions; then :func:`~gvaempirics.diagnose.result.analyze`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gvatheory._checks import check_int

from ..bc.envs import reset_seeds
from .bc import bc_imitator, is_bc_config
from .result import Diagnosis, analyze, check_options
from .sources import (
    GymRollout,
    average_state_dicts,
    call_rollout,
    checkpoint_folder,
    find_checkpoints,
    import_object,
    load_into,
    load_state_dict,
    make_policy,
)

Factory = Callable[..., nn.Module]
Rollout = Callable[[nn.Module, np.ndarray], Any]


def _name(obj: str | Callable) -> str:
    return obj if isinstance(obj, str) else f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', obj)}"


def _run_config(path: Path) -> dict | None:
    _, config = checkpoint_folder(path)
    if config is None:
        return None
    try:
        return json.loads(config.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config} is corrupt: {err}") from None


def diagnose(
    checkpoints: str | Path,
    *,
    factory: str | Factory | None = None,
    env: str | None = None,
    rollout: str | Rollout | None = None,
    ics: int = 20,
    H: int = 1000,
    seed: int = 0,
    average: Sequence[int] = (2, 4, 8),
    scale: float | None = None,
    flip_threshold: float = 0.1,
    confidence: float = 0.95,
    n_boot: int = 2000,
    quiet: bool = True,
) -> Diagnosis:
    """Diagnose GVA in a sequence of checkpoints of any torch policy.

    Parameters
    ----------
    checkpoints : path
        A folder of state dicts (``*.pt`` / ``*.pth``, ordered by the integer in the file name),
        or a ``gva bc train`` run directory (its ``checkpoints/``, ``"model"`` entries).
    factory : ``"module:function"`` or callable
        Called as ``factory(observation_space=..., action_space=...)`` (plus ``run_config=`` the
        run directory's config when it declares that keyword) and returns an ``nn.Module`` that
        loads the checkpoints' state dicts. Default for a BC run directory: :func:`bc_imitator`.
    env : str
        Any registered gymnasium id; the policy acts deterministically, ``policy(obs) -> action``
        on a float32 batch ``(n_ic, *obs_shape)``. Default for a BC run directory: its env.
    rollout : ``"module:function"`` or callable
        Instead of ``env``: ``rollout(policy, seeds) -> returns (n_ic,)``; the factory then gets
        ``None`` for both spaces, and ``H`` is unused.
    ics, H, seed
        Initial conditions: reset seeds ``SeedSequence([seed, 0]).generate_state(ics)``, the
        same for every checkpoint; at most ``H`` steps per episode.
    average : ints >= 2
        Evaluate the uniform average of the last ``k`` checkpoints' weights for each ``k``
        (``k`` above the number of checkpoints is skipped).
    scale, flip_threshold, confidence, n_boot
        See :func:`~gvaempirics.diagnose.result.analyze`; ``seed`` also seeds the bootstrap.

    Notes
    -----
    Everything is checked before the first rollout: the checkpoints are found, the environment
    is made (or the rollout function imported), the factory is imported and called, and the
    first checkpoint is loaded into its module. Bad input raises a one-line ``ValueError``.
    """
    ics, H, seed = check_int("ics", ics, 2), check_int("H", H, 1), check_int("seed", seed, 0)
    ks = sorted({check_int("average", k, 2) for k in average})
    check_options(scale=scale, flip_threshold=flip_threshold, confidence=confidence, n_boot=n_boot)
    ckpts = find_checkpoints(Path(checkpoints))
    run_config = _run_config(Path(checkpoints))
    bc_run = run_config is not None and is_bc_config(run_config)
    if env is None and rollout is None and bc_run:
        env = run_config["env"]
    if (env is None) == (rollout is None):
        raise ValueError("env and rollout: give exactly one (a gymnasium id, or module:function)")
    if factory is None:
        if not bc_run:
            raise ValueError("factory is required (module:function returning the policy's nn.Module)")
        factory = bc_imitator
    factory_name = _name(factory)

    gym_rollout = GymRollout(env, H) if env is not None else None
    try:
        if gym_rollout is None:
            rollout_fn = import_object(rollout, "rollout") if isinstance(rollout, str) else rollout
            rollout_name, spaces = _name(rollout), (None, None)
        else:
            rollout_fn, rollout_name = gym_rollout, f"env {env}"
            spaces = (gym_rollout.observation_space, gym_rollout.action_space)
        make = import_object(factory, "factory") if isinstance(factory, str) else factory
        module = make_policy(
            make, factory_name, observation_space=spaces[0], action_space=spaces[1], run_config=run_config
        )
        module.eval()
        first = load_state_dict(ckpts[0].path)
        load_into(module, first, source=str(ckpts[0].path), factory=factory_name)

        seeds = reset_seeds(seed, ics)
        from tqdm.auto import tqdm

        def evaluate(state: dict, source: str) -> np.ndarray:
            load_into(module, state, source=source, factory=factory_name)
            if gym_rollout is None:
                return call_rollout(rollout_fn, rollout_name, module, seeds)
            try:
                return gym_rollout(module, seeds)
            except ValueError as err:
                raise ValueError(f"factory={factory_name!r}: {err}") from None

        keep = max(ks, default=0)
        recent: list[dict] = []
        returns = []
        for i, c in enumerate(tqdm(ckpts, desc="diagnose checkpoints", unit="ckpt", disable=quiet)):
            state = first if i == 0 else load_state_dict(c.path)
            returns.append(evaluate(state, str(c.path)))
            recent = (recent + [state])[-keep:] if keep else []
        averaged = {
            k: evaluate(average_state_dicts(recent[-k:]), f"average of the last {k}")
            for k in tqdm(ks, desc="diagnose averages", unit="avg", disable=quiet)
            if k <= len(ckpts)
        }
    finally:
        if gym_rollout is not None:
            gym_rollout.close()

    settings = {
        "checkpoints": str(checkpoints),
        "factory": factory_name,
        "env": env,
        "rollout": None if rollout is None else _name(rollout),
        "ics": ics,
        "H": H if env is not None else None,
        "seed": seed,
        "average": ks,
        "torch": torch.__version__,
    }
    return analyze(
        np.stack(returns),
        averaged=averaged,
        names=[c.path.name for c in ckpts],
        steps=[c.step for c in ckpts],
        seeds=seeds,
        scale=scale,
        flip_threshold=flip_threshold,
        confidence=confidence,
        n_boot=n_boot,
        seed=seed,
        settings=settings,
    )
