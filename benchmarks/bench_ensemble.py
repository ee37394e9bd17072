"""Benchmark an ensemble of K behavior-cloning runs against the same K runs one after the other.

Configuration (quick-like, training-dominated): Hopper-v5, 4x256 ReLU MLP imitator, Adam
eta 3e-4, power EMA, batch 64, 400 steps, 2 expert demonstrations of 1000 steps (shared cache,
collected before timing), evaluations at steps 0, 200, 400 of raw and EMA weights (5 initial
conditions, H=100), one checkpoint at the end, torch threads 1 (the 2 cores are shared with other
jobs; a second torch thread then mostly waits). Members differ in their
seed (1..K). A two-step run of each kind warms up first (imports, MuJoCo models, vmap), untimed.
Both sides produce the same K run directories:

* ours: ``gvaempirics.bc.ensemble.train_ensemble(cfgs, outs)``, one vmapped model;
* baseline: ``gvaempirics.bc.train.train_bc(cfg, out)`` for each member in turn.

Prints the aggregate throughput (member-steps per second, evaluations and setup included) and
the ratio, then where the time goes: the bare training step (minibatch, forward, backward,
optimizer, stabilizer) of both, timed alone, and the rest (setup, evaluations, logs,
checkpoints) as the remainder.

Run from the repository root::

    python -m benchmarks.bench_ensemble [--K 8] [--steps 300] [--width 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def bare_steps(trainer, steps: int) -> float:
    """Seconds per call of ``trainer.train_step`` (after one warm-up step)."""
    trainer.train_step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--K", type=int, default=8, help="members")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--ics", type=int, default=5)
    ap.add_argument("--H", type=int, default=100)
    ap.add_argument("--n-demos", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch and MuJoCo threads")
    ap.add_argument("--bare-steps", type=int, default=50, help="steps of the bare training-step timing")
    args = ap.parse_args(argv)

    from gvaempirics.bc.config import BCConfig
    from gvaempirics.bc.data import load_or_make
    from gvaempirics.bc.ensemble import EnsembleTrainer, train_ensemble
    from gvaempirics.bc.experts import load_expert
    from gvaempirics.bc.train import BCTrainer, train_bc
    from gvaempirics.rundir import RunDir

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench_ensemble_"))
    base = BCConfig(
        env="Hopper-v5",
        n_demos=args.n_demos,
        val_demos=1,
        demo_horizon=1000,
        depth=args.depth,
        width=args.width,
        batch_size=args.batch_size,
        eta=3e-4,
        steps=args.steps,
        eval_every=args.eval_every,
        zoom_windows=(),
        ics=args.ics,
        H=args.H,
        checkpoint_every=args.steps,
        threads=args.threads,
    )
    expert, info = load_expert(base.env, None)
    demos = load_or_make(root / "demos.npz", expert, **base.demo_settings(), expert_info=info)
    cfgs = [base.replace(demos=str(root / "demos.npz"), seed=seed) for seed in range(1, args.K + 1)]
    member_steps = args.K * args.steps
    print(
        f"K={args.K} members of Hopper-v5 BC, MLP {args.depth}x{args.width}, batch {args.batch_size}, "
        f"{args.steps} steps, {len(base.eval_steps())} evaluations ({args.ics} ICs, H={args.H}), "
        f"{len(demos.bc_data(1).train_x)} training pairs; threads={args.threads}, torch {torch.__version__}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )

    warm = [c.replace(steps=2, eval_every=1, checkpoint_every=2, H=5) for c in cfgs[:2]]  # first calls, untimed
    train_ensemble(warm, [root / "warm_ensemble_0", root / "warm_ensemble_1"], quiet=True)
    train_bc(warm[0], root / "warm_single", quiet=True)

    start = time.perf_counter()
    train_ensemble(cfgs, [root / f"ensemble_{k}" for k in range(args.K)], quiet=True)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    for k, cfg in enumerate(cfgs):
        train_bc(cfg, root / f"single_{k}", quiet=True)
    theirs = time.perf_counter() - start

    # the bare training step, without evaluations, logs or checkpoints
    data = demos.bc_data(1)
    unused = [RunDir(root / f"bare_{k}") for k in range(args.K)]
    ensemble = EnsembleTrainer(cfgs, unused, data, rollout=None, quiet=True)
    reference = EnsembleTrainer(cfgs, unused, data, rollout=None, quiet=True, fused=False)
    singles = [BCTrainer(cfg, run, data, rollout=None, quiet=True) for cfg, run in zip(cfgs, unused)]
    step_ours = bare_steps(ensemble, args.bare_steps) / args.K
    step_ref = bare_steps(reference, args.bare_steps) / args.K
    step_theirs = sum(bare_steps(t, args.bare_steps) for t in singles) / args.K

    print(f"{'':<58}{'ensemble':>12}{'sequential':>12}{'ratio':>8}")
    print(
        f"{'wall seconds, K runs (setup, training, evaluations)':<58}{ours:>12.2f}{theirs:>12.2f}{theirs / ours:>8.2f}"
    )
    print(
        f"{'member-steps per second':<58}{member_steps / ours:>12.1f}{member_steps / theirs:>12.1f}"
        f"{theirs / ours:>8.2f}"
    )
    print(
        f"{'bare training step, ms per member-step':<58}{step_ours * 1e3:>12.3f}{step_theirs * 1e3:>12.3f}"
        f"{step_theirs / step_ours:>8.2f}"
    )
    print(
        f"{'  (ensemble with fused=False: torch per-tensor optimizers)':<58}{step_ref * 1e3:>12.3f}"
        f"{step_theirs * 1e3:>12.3f}{step_theirs / step_ref:>8.2f}"
    )
    rest_ours, rest_theirs = ours - member_steps * step_ours, theirs - member_steps * step_theirs
    print(
        f"{'the rest (setup, evaluations, logs, checkpoints), seconds':<58}{rest_ours:>12.2f}{rest_theirs:>12.2f}"
        f"{rest_theirs / rest_ours:>8.2f}"
    )
    print(f"run directories under {root}")


if __name__ == "__main__":
    main()
