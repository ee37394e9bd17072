"""MuJoCo locomotion environments of the behavior-cloning experiments, and their initial conditions.

The paper's Section 3 (Figure 1) trains imitators of MuJoCo experts and measures the rollout
reward :math:`J_H` of every checkpoint from a fixed set of initial conditions. This module names
the five gymnasium v5 environments, reads their MuJoCo model and constants, and draws the
initial conditions: seeded gymnasium resets, so the same set is used for every checkpoint of a
run. The dynamics are deterministic; all randomness is in the initial condition.

The reward terms of each environment are restated in :class:`EnvSpec` (copied from
``gymnasium/envs/mujoco/*_v5.py`` defaults); ``tests/test_envs.py`` checks them against
gymnasium step by step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from gvatheory._checks import check_choice, check_int

from .config import ENV_IDS  # one list of valid ids for the config, experts, demos and the evaluator

# Streams of reset seeds: evaluation (experts and imitators), demonstrations, fresh-data rounds.
STREAM_EVAL, STREAM_TRAIN, STREAM_VAL, STREAM_FRESH = 0, 1, 2, 3


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if it is one of :data:`ENV_IDS`; otherwise a ``ValueError`` listing them."""
    return check_choice("env_id", env_id, ENV_IDS)


@dataclass(frozen=True)
class EnvSpec:
    """Constants of one gymnasium v5 locomotion env (its constructor defaults).

    Reward per step (``dt = timestep * frame_skip``):

    .. math::

        r = \\big(w_f \\, \\Delta x / dt + h \\, 1[\\text{healthy}]\\big)
            - \\big(w_c \\lVert u \\rVert^2 + \\text{contact cost}\\big),

    with ``x`` the root's ``qpos[0]`` (Walker2d, Hopper, HalfCheetah), the torso body's ``xpos``
    (Ant) or the mass centre (Humanoid). The episode terminates when unhealthy.
    """

    env_id: str
    frame_skip: int
    forward_weight: float
    ctrl_weight: float
    healthy_reward: float  # 0 for HalfCheetah, which never terminates
    contact_weight: float = 0.0  # Ant: sum of squares of clipped cfrc_ext; Humanoid: of raw cfrc_ext
    contact_clip: tuple[float, float] = (-np.inf, np.inf)  # Ant: clip of each force; Humanoid: of the cost
    healthy_z: tuple[float, float] = (-np.inf, np.inf)
    healthy_angle: tuple[float, float] = (-np.inf, np.inf)
    healthy_state: tuple[float, float] = (-np.inf, np.inf)  # Hopper: state_vector()[2:]


SPECS: dict[str, EnvSpec] = {
    "Walker2d-v5": EnvSpec("Walker2d-v5", 4, 1.0, 1e-3, 1.0, healthy_z=(0.8, 2.0), healthy_angle=(-1.0, 1.0)),
    "Hopper-v5": EnvSpec(
        "Hopper-v5",
        4,
        1.0,
        1e-3,
        1.0,
        healthy_z=(0.7, np.inf),
        healthy_angle=(-0.2, 0.2),
        healthy_state=(-100.0, 100.0),
    ),
    "HalfCheetah-v5": EnvSpec("HalfCheetah-v5", 5, 1.0, 0.1, 0.0),
    "Ant-v5": EnvSpec("Ant-v5", 5, 1.0, 0.5, 1.0, contact_weight=5e-4, contact_clip=(-1.0, 1.0), healthy_z=(0.2, 1.0)),
    "Humanoid-v5": EnvSpec(
        "Humanoid-v5", 5, 1.25, 0.1, 5.0, contact_weight=5e-7, contact_clip=(-np.inf, 10.0), healthy_z=(1.0, 2.0)
    ),
}


@cache
def _gym_env(env_id: str):
    import gymnasium as gym

    return gym.make(check_env_id(env_id))


def mj_model(env_id: str):
    """The ``mujoco.MjModel`` gymnasium builds for ``env_id`` (shared; do not modify)."""
    return _gym_env(env_id).unwrapped.model


def obs_dim(env_id: str) -> int:
    """Length of gymnasium's observation vector."""
    return int(_gym_env(env_id).observation_space.shape[0])


def act_dim(env_id: str) -> int:
    """Number of actuators (action dimension)."""
    return int(_gym_env(env_id).action_space.shape[0])


def action_bounds(env_id: str) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of the action box: the model's ``actuator_ctrlrange`` in float64.

    gymnasium's ``action_space`` holds the same box rounded to float32; we clip to the exact
    float64 range, which is also the range MuJoCo clamps ``ctrl`` to.
    """
    r = mj_model(env_id).actuator_ctrlrange
    return r[:, 0].copy(), r[:, 1].copy()


def reset_seeds(seed: int, n: int, stream: int = STREAM_EVAL) -> np.ndarray:
    """``n`` reset seeds of one ``stream`` (0 evaluation, 1 demo training, 2 demo validation,
    3 + r fresh-data round r), drawn from ``SeedSequence([seed, stream])`` so that streams never
    overlap; the first ``m`` seeds of a larger ``n`` are the seeds for ``m``."""
    n = check_int("n", n, 1)
    seed, stream = check_int("seed", seed, 0), check_int("stream", stream, 0)
    return np.random.SeedSequence([seed, stream]).generate_state(n, np.uint32).astype(np.int64)


@dataclass(frozen=True)
class InitialConditions:
    """``n`` seeded reset states of one env: ``reset_seeds[i]`` is the seed passed to
    ``env.reset(seed=...)`` that produced ``(qpos[i], qvel[i])``."""

    env_id: str
    reset_seeds: np.ndarray  # (n,) int64
    qpos: np.ndarray  # (n, nq)
    qvel: np.ndarray  # (n, nv)

    @property
    def n(self) -> int:
        return int(self.qpos.shape[0])


def initial_conditions(env_id: str, n: int, seed: int, stream: int = STREAM_EVAL) -> InitialConditions:
    """Draw ``n`` initial conditions from seeded gymnasium resets.

    Parameters
    ----------
    env_id : str
        One of :data:`ENV_IDS`.
    n : int
        Number of initial conditions, ``n >= 1``.
    seed : int
        Root seed; the same ``(env_id, n, seed, stream)`` gives the same states, and the first
        ``m`` states of a larger ``n`` are the states for ``m``.
    stream : int
        Which stream of :func:`reset_seeds` (evaluation by default).
    """
    check_env_id(env_id)
    return initial_conditions_from_seeds(env_id, reset_seeds(seed, n, stream))


def initial_conditions_from_seeds(env_id: str, seeds) -> InitialConditions:
    """The states of ``env.reset(seed=s)`` for each of ``seeds``."""
    check_env_id(env_id)
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    if seeds.size == 0:
        raise ValueError("reset_seeds=[] is out of range: give at least one seed")
    env = _gym_env(env_id)
    qpos, qvel = [], []
    for s in seeds:
        env.reset(seed=int(s))
        qpos.append(env.unwrapped.data.qpos.copy())
        qvel.append(env.unwrapped.data.qvel.copy())
    return InitialConditions(env_id, seeds, np.array(qpos), np.array(qvel))
