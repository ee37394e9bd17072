"""Benchmark the batched evaluator against the gymnasium loops a user would otherwise write.

Walker2d-v5, the default BC imitator (MLPImitator, ImitatorSpec(d_in=obs+act, d_act, depth=4,
width=256), untrained, reading the observation augmented with the previous action), 20 initial
conditions, H=1000. An untrained policy makes the walker fall, and a fallen episode is frozen by
our evaluator while gymnasium's vector env resets and goes on, so all three are timed in *live
policy-steps per second* (steps where the policy acted on a running episode):

* ours: ``gvaempirics.bc.rollout.rollout`` (one torch call per step for all pairs, MuJoCo on threads),
  repeated until at least ``H * I`` live steps have been timed;
* gymnasium single env: one ``gymnasium.make`` env, one policy call per step, reset on termination;
* ``gymnasium.vector.SyncVectorEnv`` of 20 envs, one batched policy call per step, autoreset.

Run: ``python benchmarks/bench_rollout.py [--H 1000] [--ics 20] [--threads 2]``.
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
    from gvaempirics.bc.imitators import ImitatorSpec, make_imitator
    from gvaempirics.bc.rollout import rollout
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

    ours = rates["ours (rollout)"]
    for name, rate in rates.items():
        print(f"{name:32s} {rate:9.0f} live policy-steps/s   ours/this = {ours / rate:5.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
