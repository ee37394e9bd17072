"""Benchmark the batched evaluator against the gymnasium loops a user would otherwise write.

Walker2d-v5, the default BC imitator (MLPImitator, ImitatorSpec(d_in=obs+act, d_act, depth=4,
width=256), untrained, reading the observation augmented with the previous action), 20 initial
conditions, H=1000. An untrained policy makes the walker fall, and a fallen episode is frozen by
our evaluator while gymnasium's vector env resets and goes on, so all three are timed in *live
policy-steps per second* (steps where the policy acted on a running episode):

* ours: ``gvaempirics.bc.evaluator.rollout`` (one torch call per step for all pairs, MuJoCo on threads),
  repeated until at least ``H * I`` live steps have been timed;
* gymnasium single env: one ``gymnasium.make`` env, one policy call per step, reset on termination;
* ``gymnasium.vector.SyncVectorEnv`` of 20 envs, one batched policy call per step, autoreset;
* MuJoCo's own threaded ``mujoco.rollout`` (``Rollout(nthread=threads)``, its thread pool kept
  alive), called once per control step between policy calls with the live envs' states, the
  observations, rewards and falls computed by the same numpy code as ours. It is not exact:
  the solver's warm start is not carried from one call to the next, so its trajectories leave
  gymnasium's (by 1e-17 after one step, 5e-13 after 300); this is why the evaluator does not use it;
* the ceiling: ``mj_step`` alone (``frame_skip`` substeps per env step) on the same 20 envs over
  ``threads`` threads, no policy, no observations.

Run: ``python benchmarks/bench_evaluator.py [--H 1000] [--ics 20] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--H", type=int, default=1000)
    ap.add_argument("--ics", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import gymnasium as gym

    from gvaempirics.bc.envs import act_dim, action_bounds, initial_conditions, obs_dim
    from gvaempirics.bc.evaluator import rollout
    from gvaempirics.bc.imitators import ImitatorSpec, make_imitator
    from gvaempirics.bc.train import AugmentedPolicy

    torch.set_num_threads(1)
    env_id, H, I = "Walker2d-v5", args.H, args.ics
    torch.manual_seed(0)
    net = make_imitator(ImitatorSpec(d_in=obs_dim(env_id) + act_dim(env_id), d_act=act_dim(env_id))).eval()
    target = H * I
    low, high = action_bounds(env_id)

    def policy():  # the closed-loop imitator of the BC experiments: input [obs_t, u_{t-1}], u_{-1} = 0
        return AugmentedPolicy(net, 1, low, high)

    print(
        f"{env_id}, default MLP imitator (depth 4, width 256), {I} ICs, H={H}, threads={args.threads}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )

    rates = {}
    steps, t0, seed = 0, time.perf_counter(), 0
    while steps < target:
        res = rollout(env_id, initial_conditions(env_id, I, seed), H, policy(), threads=args.threads)
        steps += int(res.lengths.sum())
        seed += 1
    rates["ours (rollout)"] = steps / (time.perf_counter() - t0)

    env = gym.make(env_id)
    pol = policy()
    obs, _ = env.reset(seed=0)
    t0 = time.perf_counter()
    for k in range(target):
        act = pol(torch.as_tensor(obs, dtype=torch.float32)[None]).numpy()[0]
        obs, _, term, trunc, _ = env.step(act)
        if term or trunc:
            obs, _ = env.reset(seed=k + 1)
            pol = policy()
    rates["gymnasium single env"] = target / (time.perf_counter() - t0)

    venv = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(I)])
    pol = policy()
    obs, _ = venv.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(H):  # autoreset: every env is live at every step
        act = pol(torch.as_tensor(obs, dtype=torch.float32)).numpy()
        obs, _, _, _, _ = venv.step(act)
    rates[f"gymnasium SyncVectorEnv({I})"] = target / (time.perf_counter() - t0)

    rates[f"mujoco.rollout, {args.threads} threads"] = _mujoco_rollout(env_id, I, H, policy, target, args.threads)
    rates[f"ceiling: mj_step alone, {args.threads} threads"] = _mj_step_ceiling(env_id, I, target, args.threads)

    ours = rates["ours (rollout)"]
    for name, rate in rates.items():
        print(f"{name:40s} {rate:9.0f} live policy-steps/s   ours/this = {ours / rate:5.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def _mujoco_rollout(env_id: str, I: int, H: int, policy, target: int, threads: int) -> float:
    """Closed loop on ``mujoco.rollout``: one call per control step for the live envs."""
    import mujoco
    import numpy as np
    from mujoco import rollout as mj_rollout

    from gvaempirics.bc.envs import SPECS, action_bounds, initial_conditions
    from gvaempirics.bc.evaluator import _Batch

    low, high = action_bounds(env_id)
    fs = SPECS[env_id].frame_skip
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    steps, seed, t0 = 0, 0, time.perf_counter()
    with mj_rollout.Rollout(nthread=threads) as pool:
        while steps < target:
            ics = initial_conditions(env_id, I, seed)
            feats = _Batch(env_id, ics.qpos, ics.qvel, 1)  # observations and rewards, as ours computes them
            m, nq = feats.m, feats.m.nq
            scratch = [mujoco.MjData(m) for _ in range(threads)]
            state = np.empty((I, mujoco.mj_stateSize(m, spec)))
            for k, d in enumerate(feats.datas):
                mujoco.mj_getState(m, d, state[k], spec)
            pol, obs, active = policy(), feats.obs(), np.ones(I, bool)
            for _ in range(H):
                act = np.clip(pol(torch.as_tensor(obs, dtype=torch.float32)[None]).numpy()[0], low, high)
                live = np.flatnonzero(active)
                x_before = feats.x()
                out, _ = pool.rollout(m, scratch, state[live], np.repeat(act[live, None], fs, axis=1), nstep=fs)
                state[live] = out[:, -1]
                feats.qpos[live], feats.qvel[live] = state[live, 1 : 1 + nq], state[live, 1 + nq : 1 + nq + m.nv]
                _, term = feats.reward(x_before, act)
                obs = np.where(active[:, None], feats.obs(), obs)
                steps += len(live)
                active &= ~term
                if not active.any():
                    break
            feats.close()
            seed += 1
    return steps / (time.perf_counter() - t0)


def _mj_step_ceiling(env_id: str, I: int, target: int, threads: int) -> float:
    """``mj_step`` alone on ``I`` envs split over ``threads`` threads (a persistent pool), zero controls."""
    from concurrent.futures import ThreadPoolExecutor

    import mujoco
    import numpy as np

    from gvaempirics.bc.envs import SPECS, initial_conditions, mj_model

    m, fs = mj_model(env_id), SPECS[env_id].frame_skip
    ics = initial_conditions(env_id, I, 0)
    datas = [mujoco.MjData(m) for _ in range(I)]
    for k, d in enumerate(datas):
        d.qpos[:], d.qvel[:] = ics.qpos[k], ics.qvel[k]
        mujoco.mj_forward(m, d)
    chunks = np.array_split(np.arange(I), threads)

    def step(idx) -> None:
        for k in idx:
            mujoco.mj_step(m, datas[k], nstep=fs)

    with ThreadPoolExecutor(threads) as pool:
        t0 = time.perf_counter()
        for _ in range(-(-target // I)):
            list(pool.map(step, chunks))
        return -(-target // I) * I / (time.perf_counter() - t0)


if __name__ == "__main__":
    main()
