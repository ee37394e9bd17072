"""``gva bc``: behavior-cloning experiments (paper Section 3, Figure 1).

* ``gva bc demos ENV``  collect and cache expert demonstrations (train/validation split).
* ``gva bc train | eval | plot``  train with stabilizers, GVA indices, Figure-1 plot (``bc_train``).

Quick configuration: ``gva bc demos Hopper-v5 --n 50 --horizon 200 --out runs/demos/Hopper-v5_quick.npz``;
paper configuration (N = H = 1000): ``gva bc demos Walker2d-v5 --n 1000 --horizon 1000 --out runs/demos/Walker2d-v5.npz``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_quiet_argument, add_seed_argument, emit


def register(subparsers) -> None:
    from .bc_train import register_training

    p = subparsers.add_parser("bc", help="behavior cloning: demonstrations, training with stabilizers, GVA figures")
    sub = p.add_subparsers(dest="bc_command", metavar="SUBCOMMAND", required=True)
    register_demos(sub)
    register_training(sub)


def register_demos(sub) -> None:
    d = sub.add_parser("demos", help="collect and cache expert demonstrations")
    d.add_argument("env", help="gymnasium env id, e.g. Walker2d-v5")
    d.add_argument("--n", type=int, default=1000, help="training trajectories N (default 1000, the paper's)")
    d.add_argument("--n-val", type=int, default=None, help="validation trajectories (default max(1, N // 10))")
    d.add_argument("--horizon", type=int, default=1000, help="trajectory horizon H (default 1000, the paper's)")
    d.add_argument("--expert", type=Path, default=None, help="expert file (default: the shipped one)")
    d.add_argument("--out", type=Path, default=None, help="cache file (default runs/demos/ENV_nN_hH_sSEED.npz)")
    d.add_argument("--json", action="store_true", help="print JSON")
    add_seed_argument(d)
    add_quiet_argument(d)
    d.set_defaults(func=_demos)


def _demos(args: argparse.Namespace) -> int:
    from gvaempirics.demos import load_or_make
    from gvaempirics.experts import check_env_id, load_expert

    check_env_id(args.env)
    expert, info = load_expert(args.env, args.expert)
    out = args.out or Path("runs/demos") / f"{args.env}_n{args.n}_h{args.horizon}_s{args.seed}.npz"
    demos = load_or_make(out, args.env, expert, n=args.n, horizon=args.horizon, seed=args.seed,
                         n_val=args.n_val, expert_info=info, quiet=args.quiet)
    rows = [{"split": s, "trajectories": len(t.lengths), "alive steps": int(t.lengths.sum()),
             "return mean": float(t.returns.mean()), "return sd": float(t.returns.std()),
             "falls": int((t.lengths < args.horizon).sum())} for s, t in (("train", demos.train), ("val", demos.val))]
    emit(rows, as_json=args.json, title=f"{args.env}: demonstrations in {out}",
         extra={"states": f"{demos.train.states.shape} (obs + previous action)", "actions": str(demos.train.actions.shape)})
    return 0
