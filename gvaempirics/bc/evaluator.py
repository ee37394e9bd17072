"""Batched closed-loop evaluator: the rollout reward :math:`J_H` of many policies from many initial conditions.

GVA (Block et al. 2024, Section 3 and Figure 1) shows up as large swings of

.. math::

    J_H(\\pi) = \\sum_{t=0}^{H-1} r(s_t, \\pi(s_t)), \\qquad s_{t+1} = f(s_t, \\pi(s_t)),

between neighbouring training iterates, so every checkpoint of a run is rolled out from the
same initial conditions. :func:`rollout` steps all ``(policy, initial condition)`` pairs in
lockstep: one batched torch call per step for all pairs, MuJoCo stepping on a thread pool
(``mj_step`` releases the GIL), observations and rewards computed vectorised in numpy.
:func:`rollout_reference` is the plain gymnasium loop the tests compare it against.

Conventions (identical in both paths):

* the policy's action is clipped to the action box ``actuator_ctrlrange`` before the env sees
  it; gymnasium v5 does not clip (MuJoCo clamps ``ctrl`` internally but the control cost reads
  the unclipped action), so we clip once, up front, and both paths receive the clipped action;
* after termination the episode is frozen: its state, observation and reward (0) no longer
  change; the terminating step's reward counts (gymnasium semantics);
* ``lengths`` counts the steps taken, the terminating one included (``H`` when none);
* recorded actions are 0 after termination, and once every episode has ended the loop stops
  (the policy is not called again).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from gvatheory._checks import check_int

from .envs import SPECS, InitialConditions, action_bounds, check_env_id, mj_model

Policy = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class RolloutResult:
    """Outcome of rolling out ``P`` policies from ``I`` initial conditions for ``H`` steps.

    ``returns`` (P, I) float64, ``lengths`` (P, I) int64 and ``distances`` (P, I) float64 (forward
    progress: the displacement of the root's x coordinate ``qpos[0]``, gymnasium's
    ``info["x_position"]``, over the episode; it tells locomotion from standing still) always; with
    ``record=True`` also
    ``obs`` (P, I, H, obs_dim) float64 (what the policy saw, before its float32 cast),
    ``actions`` (P, I, H, act_dim) float64 (clipped), ``rewards`` (P, I, H) and ``alive``
    (P, I, H) bool (True where the step was taken).
    """

    returns: np.ndarray
    lengths: np.ndarray
    distances: np.ndarray
    obs: np.ndarray | None = None
    actions: np.ndarray | None = None
    rewards: np.ndarray | None = None
    alive: np.ndarray | None = None


def _check(env_id: str, ics: InitialConditions, horizon: int, n_policies: int, threads: int) -> None:
    check_env_id(env_id)
    if ics.env_id != env_id:
        raise ValueError(f"ics.env_id={ics.env_id!r} does not match env_id={env_id!r}")
    check_int("horizon", horizon, 1)
    check_int("n_policies", n_policies, 1)
    check_int("threads", threads, 1)


def _act(policy: Policy, obs: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """One batched policy call: obs (P, I, d) float64 -> clipped actions (P, I, a) float64."""
    with torch.no_grad():
        out = policy(torch.as_tensor(obs, dtype=torch.float32))
    act = np.asarray(out.detach().cpu().numpy(), dtype=np.float64)
    if act.shape != obs.shape[:2] + low.shape:
        raise ValueError(f"policy returned actions of shape {act.shape}, expected {obs.shape[:2] + low.shape}")
    return np.clip(act, low, high)


_MIN_PER_THREAD = 4  # live envs per thread below which stepping inline is faster
_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` stepping threads, kept alive across rollouts (each
    evaluation of a training run would otherwise pay for starting threads)."""
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="gva-mj")
    return _POOLS[workers]


os.register_at_fork(after_in_child=_POOLS.clear)  # a forked child has none of the parent's threads

# Spare MjData per env id, reused across rollouts: allocating one costs as much as a stretch of stepping.
_SPARE: dict[str, list] = {}
_SPARE_LOCK = threading.Lock()


def _take_datas(env_id: str, m, n: int) -> list:
    import mujoco

    with _SPARE_LOCK:
        spare = _SPARE.setdefault(env_id, [])
        taken = [spare.pop() for _ in range(min(n, len(spare)))]
    return taken + [mujoco.MjData(m) for _ in range(n - len(taken))]


class _Batch:
    """``n`` MjData of one env, stepped on a thread pool; features gathered into arrays."""

    def __init__(self, env_id: str, qpos: np.ndarray, qvel: np.ndarray, threads: int):
        import mujoco

        self.mj = mujoco
        self.env_id, self.spec = env_id, SPECS[env_id]
        self.m = m = mj_model(env_id)
        self.n = n = qpos.shape[0]
        self.dt = m.opt.timestep * self.spec.frame_skip
        self.kind = env_id.split("-")[0]
        self.datas = _take_datas(env_id, m, n)
        self.qpos, self.qvel = np.empty((n, m.nq)), np.empty((n, m.nv))
        self.extra = {}  # fields beyond qpos/qvel that obs or reward read
        if self.kind == "Ant":
            self.extra = {"cfrc_ext": (m.nbody, 6), "xpos": (m.nbody, 3)}
        elif self.kind == "Humanoid":
            self.extra = {
                "cinert": (m.nbody, 10),
                "cvel": (m.nbody, 6),
                "qfrc_actuator": (m.nv,),
                "cfrc_ext": (m.nbody, 6),
                "xipos": (m.nbody, 3),
            }
        self.bufs = {k: np.empty((n,) + s) for k, s in self.extra.items()}
        self.threads = threads
        for k, d in enumerate(self.datas):  # same calls as gymnasium's reset + set_state
            mujoco.mj_resetData(m, d)
            d.qpos[:] = qpos[k]
            d.qvel[:] = qvel[k]
            mujoco.mj_forward(m, d)
            self._gather(k, d)

    def close(self) -> None:
        """Hand the MjData back for the next rollout (each is reset before it is used again)."""
        with _SPARE_LOCK:
            _SPARE[self.env_id].extend(self.datas)
        self.datas = []

    def _gather(self, k: int, d) -> None:
        self.qpos[k] = d.qpos
        self.qvel[k] = d.qvel
        for name, buf in self.bufs.items():
            buf[k] = getattr(d, name)

    def _step_chunk(self, idx: np.ndarray, act: np.ndarray) -> None:
        mj, m, fs, rne = self.mj, self.m, self.spec.frame_skip, bool(self.extra)
        for k in idx:
            d = self.datas[k]
            d.ctrl[:] = act[k]
            mj.mj_step(m, d, nstep=fs)
            if rne:  # cfrc_ext is only computed here, as in gymnasium's do_simulation
                mj.mj_rnePostConstraint(m, d)
            self._gather(k, d)

    def step(self, act: np.ndarray, active: np.ndarray) -> None:
        """Step the envs where ``active`` (n,) is True with actions ``act`` (n, a).

        The live envs are split evenly over the threads at every step (episodes end unevenly, so
        fixed chunks would leave a thread idle), the calling thread steps one share itself, and a
        handful of envs is stepped inline: dispatching costs more than it saves there."""
        live = np.flatnonzero(active)
        k = min(self.threads, len(live) // _MIN_PER_THREAD)
        if k <= 1:
            self._step_chunk(live, act)
            return
        own, *rest = np.array_split(live, k)
        futures = [_pool(k - 1).submit(self._step_chunk, c, act) for c in rest]
        self._step_chunk(own, act)
        for f in futures:
            f.result()

    def x(self) -> np.ndarray:
        """Forward coordinate used by the forward reward, (n,)."""
        if self.kind == "Ant":
            return self.bufs["xpos"][:, 1, 0].copy()  # main body 1 (torso)
        if self.kind == "Humanoid":
            mass = self.m.body_mass
            return np.einsum("b,nb->n", mass, self.bufs["xipos"][:, :, 0]) / mass.sum()
        return self.qpos[:, 0].copy()

    def obs(self) -> np.ndarray:
        """gymnasium v5's observation, (n, obs_dim)."""
        n = self.n
        if self.kind in ("Walker2d", "Hopper"):
            return np.concatenate([self.qpos[:, 1:], np.clip(self.qvel, -10, 10)], axis=1)
        if self.kind == "HalfCheetah":
            return np.concatenate([self.qpos[:, 1:], self.qvel], axis=1)
        b = self.bufs
        if self.kind == "Ant":
            lo, hi = self.spec.contact_clip
            return np.concatenate(
                [self.qpos[:, 2:], self.qvel, np.clip(b["cfrc_ext"][:, 1:], lo, hi).reshape(n, -1)], axis=1
            )
        return np.concatenate(
            [
                self.qpos[:, 2:],
                self.qvel,
                b["cinert"][:, 1:].reshape(n, -1),
                b["cvel"][:, 1:].reshape(n, -1),
                b["qfrc_actuator"][:, 6:],
                b["cfrc_ext"][:, 1:].reshape(n, -1),
            ],
            axis=1,
        )

    def healthy(self) -> np.ndarray:
        s, z, q = self.spec, self.qpos, self.qvel
        if self.kind == "HalfCheetah":
            return np.ones(self.n, bool)
        if self.kind == "Ant":
            finite = np.isfinite(z).all(1) & np.isfinite(q).all(1)
            return finite & (s.healthy_z[0] <= z[:, 2]) & (z[:, 2] <= s.healthy_z[1])
        if self.kind == "Humanoid":
            return (s.healthy_z[0] < z[:, 2]) & (z[:, 2] < s.healthy_z[1])
        ok = (s.healthy_z[0] < z[:, 1]) & (z[:, 1] < s.healthy_z[1])
        ok &= (s.healthy_angle[0] < z[:, 2]) & (z[:, 2] < s.healthy_angle[1])
        if self.kind == "Hopper":
            state = np.concatenate([z, q], axis=1)[:, 2:]
            ok &= np.all((s.healthy_state[0] < state) & (state < s.healthy_state[1]), axis=1)
        return ok

    def reward(self, x_before: np.ndarray, act: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reward and termination of the step just taken, each (n,); same operation order as gymnasium."""
        s = self.spec
        forward = s.forward_weight * ((self.x() - x_before) / self.dt)
        ctrl = s.ctrl_weight * np.sum(np.square(act), axis=1)
        if self.kind == "HalfCheetah":
            return forward - ctrl, np.zeros(self.n, bool)
        healthy = self.healthy()
        costs = ctrl
        if self.kind == "Ant":
            f = np.clip(self.bufs["cfrc_ext"], *s.contact_clip)
            costs = ctrl + s.contact_weight * np.sum(np.square(f).reshape(self.n, -1), axis=1)
        elif self.kind == "Humanoid":
            c = s.contact_weight * np.sum(np.square(self.bufs["cfrc_ext"]).reshape(self.n, -1), axis=1)
            costs = ctrl + np.clip(c, *s.contact_clip)
        return (forward + healthy * s.healthy_reward) - costs, ~healthy


def rollout(
    env_id: str,
    ics: InitialConditions,
    horizon: int,
    policy: Policy,
    n_policies: int = 1,
    *,
    record: bool = False,
    threads: int = 2,
    quiet: bool = True,
) -> RolloutResult:
    """Roll out ``n_policies`` batched policies from every initial condition for ``horizon`` steps.

    Parameters
    ----------
    env_id : str
        One of :data:`gvaempirics.bc.envs.ENV_IDS`; must match ``ics.env_id``.
    ics : InitialConditions
        ``I = ics.n`` start states (:func:`gvaempirics.bc.envs.initial_conditions`).
    horizon : int
        ``H >= 1`` steps.
    policy : callable
        Maps observations ``(n_policies, I, obs_dim)`` float32 to actions
        ``(n_policies, I, act_dim)``. Called exactly once per step, in order, so it may keep
        state (previous action, a history window). Terminated episodes keep receiving their
        frozen last observation; their actions are ignored.
    n_policies : int
        ``P >= 1``; every policy starts from every initial condition.
    record : bool
        Also return per-step observations, actions, rewards and the alive mask.
    threads : int
        MuJoCo stepping threads; results do not depend on it.
    quiet : bool
        ``False`` shows a tqdm bar over steps.
    """
    _check(env_id, ics, horizon, n_policies, threads)
    P, I, H = n_policies, ics.n, horizon
    low, high = action_bounds(env_id)
    batch = _Batch(env_id, np.tile(ics.qpos, (P, 1)), np.tile(ics.qvel, (P, 1)), threads)
    n = P * I
    obs = batch.obs()
    x_start = batch.qpos[:, 0].copy()
    active = np.ones(n, bool)
    returns, lengths = np.zeros(n), np.zeros(n, np.int64)
    rec = None
    if record:
        rec = (np.zeros((n, H, obs.shape[1])), np.zeros((n, H, low.size)), np.zeros((n, H)), np.zeros((n, H), bool))
    from tqdm.auto import tqdm

    try:
        for t in tqdm(range(H), disable=quiet, desc=f"rollout {env_id}", unit="step"):
            act = _act(policy, obs.reshape(P, I, -1), low, high).reshape(n, -1)
            x_before = batch.x()
            batch.step(act, active)
            new_obs = batch.obs()
            r, term = batch.reward(x_before, act)
            r = np.where(active, r, 0.0)
            if rec is not None:
                rec[0][:, t], rec[1][:, t], rec[2][:, t], rec[3][:, t] = obs, act * active[:, None], r, active
            returns += r
            lengths += active
            obs = np.where(active[:, None], new_obs, obs)
            active &= ~term
            if not active.any():
                if rec is not None:  # the frozen observation is what a policy would keep seeing
                    rec[0][:, t + 1 :] = obs[:, None]
                break
        distances = batch.qpos[:, 0] - x_start  # frozen episodes keep their last position
    finally:
        batch.close()
    shape = (P, I)
    out = returns.reshape(shape), lengths.reshape(shape), distances.reshape(shape)
    if rec is None:
        return RolloutResult(*out)
    return RolloutResult(*out, *(a.reshape(shape + a.shape[1:]) for a in rec))


def rollout_reference(
    env_id: str,
    ics: InitialConditions,
    horizon: int,
    policy: Policy,
    n_policies: int = 1,
    *,
    record: bool = False,
    threads: int = 2,
    quiet: bool = True,
) -> RolloutResult:
    """Plain gymnasium loop with the semantics of :func:`rollout` (``threads`` is ignored).

    One ``gymnasium.make(env_id)`` env per (policy, initial condition), reset with the
    condition's seed, stepped one by one with the clipped action.
    """
    import gymnasium as gym

    _check(env_id, ics, horizon, n_policies, threads)
    P, I, H = n_policies, ics.n, horizon
    low, high = action_bounds(env_id)
    envs, obs, x_start = [], [], []
    for _ in range(P):
        for i in range(I):
            env = gym.make(env_id)  # TimeLimit only flags truncation, which we ignore
            o, info = env.reset(seed=int(ics.reset_seeds[i]))
            x_start.append(info["x_position"])
            if not (
                np.array_equal(env.unwrapped.data.qpos, ics.qpos[i])
                and np.array_equal(env.unwrapped.data.qvel, ics.qvel[i])
            ):
                raise ValueError(f"initial condition {i} is not the reset state of seed {ics.reset_seeds[i]}")
            envs.append(env)
            obs.append(o)
    n = P * I
    obs = np.array(obs, dtype=np.float64)
    active = np.ones(n, bool)
    returns, lengths, x_end = np.zeros(n), np.zeros(n, np.int64), np.array(x_start, dtype=float)
    rec = (np.zeros((n, H, obs.shape[1])), np.zeros((n, H, low.size)), np.zeros((n, H)), np.zeros((n, H), bool))
    for t in range(H):
        act = _act(policy, obs.reshape(P, I, -1), low, high).reshape(n, -1)
        rec[0][:, t], rec[1][:, t], rec[3][:, t] = obs, act * active[:, None], active
        for k in np.flatnonzero(active):
            o, r, term, _, info = envs[k].step(act[k])
            obs[k], x_end[k] = o, info["x_position"]
            returns[k] += r
            rec[2][k, t] = r
            lengths[k] += 1
            active[k] = not term
        if not active.any():
            rec[0][:, t + 1 :] = obs[:, None]
            break
    for env in envs:
        env.close()
    shape = (P, I)
    out = returns.reshape(shape), lengths.reshape(shape), (x_end - np.array(x_start)).reshape(shape)
    if not record:
        return RolloutResult(*out)
    return RolloutResult(*out, *(a.reshape(shape + a.shape[1:]) for a in rec))


def stacked_policy(module: nn.Module, params_list: Sequence[dict[str, Tensor]]) -> Policy:
    """Evaluate many checkpoints of one module in one call.

    ``params_list[p]`` maps parameter/buffer names to tensors (a ``state_dict``, possibly
    partial: missing names use the module's own). The returned policy maps
    ``(P, I, d_in) -> (P, I, d_out)`` with ``P = len(params_list)``, row ``p`` computed with
    checkpoint ``p``: ``torch.func.vmap`` over ``functional_call`` with stacked tensors, or a
    loop over checkpoints for modules that vmap cannot batch.
    """
    check_int("len(params_list)", len(params_list), 1)
    keys = list(params_list[0])
    if any(list(p) != keys for p in params_list):
        raise ValueError("params_list entries must all have the same names")
    stacked = {k: torch.stack([p[k].detach() for p in params_list]) for k in keys}
    call = torch.func.functional_call

    def looped(x: Tensor) -> Tensor:
        return torch.stack([call(module, params_list[p], (x[p],)) for p in range(len(params_list))])

    vmapped = torch.func.vmap(lambda params, x: call(module, params, (x,)))
    use_vmap = True

    def policy(x: Tensor) -> Tensor:  # (P, I, d_in) -> (P, I, d_out)
        nonlocal use_vmap
        if x.shape[0] != len(params_list):
            raise ValueError(f"policy input has {x.shape[0]} policies, expected {len(params_list)}")
        if use_vmap:
            try:
                return vmapped(stacked, x)
            except (RuntimeError, NotImplementedError):  # e.g. data-dependent control flow
                use_vmap = False
        return looped(x)

    return policy


def run_episodes(
    env_id: str,
    policy: Callable[[torch.Tensor], torch.Tensor],
    ics: InitialConditions,
    horizon: int,
    *,
    record: bool = False,
    threads: int = 2,
) -> dict[str, np.ndarray]:
    """Roll one deterministic policy from each initial condition (experts: evaluation, demonstrations).

    An episode stops at termination or at ``horizon``. Returns ``returns (I,)``, ``lengths (I,)``,
    ``distances (I,)`` (forward progress) and with ``record`` ``obs (I, H, obs_dim)`` and ``actions (I, H, act_dim)`` (float32, zero
    after termination).
    """
    res = rollout(env_id, ics, horizon, lambda obs: policy(obs[0])[None], record=record, threads=threads)
    out = {"returns": res.returns[0], "lengths": res.lengths[0], "distances": res.distances[0]}
    if record:
        alive = res.alive[0][..., None]  # (I, H, 1)
        out.update(
            obs=np.where(alive, res.obs[0], 0.0).astype(np.float32),
            actions=np.where(alive, res.actions[0], 0.0).astype(np.float32),
        )
    return out
