"""Benchmark a flip-distance curve (``gva bc flips``): every (direction, distance, initial condition)
in one batched evaluator call, against the same points rolled out one weight at a time.

Both paths are ``gvaempirics.bc.flips.compute_flip_curve`` on the same run and checkpoint
(``batched=True`` and ``batched=False``: the same directions, the same rollouts, one policy per
evaluator call in the second); their returns must agree (checked here to 1e-4), so the ratio is
the cost of calling the evaluator once per weight. Give a run directory of ``gva bc train`` (the
averaging study's quick runs: ``runs/sweeps/ema-calms-quick/runs/Walker2d-v5__base__s1``), or
none to train the tiny preset's run first.

Run: ``python benchmarks/bench_flips.py [RUN] [--directions 2] [--distances 3] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", default="")
    ap.add_argument("--directions", type=int, default=2, help="directions of each kind")
    ap.add_argument("--distances", type=int, default=3, help="distances from 1e-2 to 10 steps")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from gvaempirics.bc.flips import compute_flip_curve

    run = Path(args.run) if args.run else None
    if run is None:
        from gvaempirics.bc.config import PRESETS, BCConfig
        from gvaempirics.bc.train import train_bc

        run = Path(tempfile.mkdtemp()) / "tiny"
        train_bc(BCConfig(**{**PRESETS["tiny"], "threads": args.threads}), run, quiet=True)
    kw = dict(
        distances=np.geomspace(1e-2, 10.0, args.distances), n_directions=args.directions, seed=0, threads=args.threads
    )
    timed = {}
    for batched in (True, False):
        t = time.perf_counter()
        curve = compute_flip_curve(run, batched=batched, **kw)
        timed[batched] = (time.perf_counter() - t, curve)
    (ours, a), (base, b) = timed[True], timed[False]
    for k in a.returns:
        np.testing.assert_allclose(a.returns[k], b.returns[k], rtol=1e-4, atol=1e-6)
    points = 1 + sum(r.shape[0] * r.shape[1] for r in a.returns.values())
    print(f"run {run}, step {a.step}: {points} weights x {len(a.centre)} initial conditions, H={a.H}")
    print(f"ours (one batched call):      {ours:8.2f} s")
    print(f"baseline (one weight a call): {base:8.2f} s")
    print(f"ratio baseline / ours:        {base / ours:8.2f} x")


if __name__ == "__main__":
    main()
