"""``gva expert``: train, select and export, and evaluate the experts of the BC experiments.

* ``gva expert train ENV``   PPO (the recipe of ``gvaempirics.experts``), resumed from the newest
  checkpoint in ``--out``; with ``--export PATH`` the best checkpoint is then exported;
* ``gva expert export ENV``  evaluate every checkpoint of ``--run`` and export the best robust one;
* ``gva expert eval ENV``    deterministic returns per initial condition and their mean ± sd.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ._common import add_quiet_argument, emit


def _add_selection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ics", type=int, default=20, help="initial conditions per checkpoint (default 20)")
    p.add_argument("--horizon", type=int, default=1000, help="evaluation horizon H (default 1000)")
    p.add_argument("--min-steps", type=int, default=0, help="only consider checkpoints from this many env steps on")
    p.add_argument("--note", default="", help="note stored in the expert's JSON sidecar")


def register(subparsers) -> None:
    p = subparsers.add_parser("expert", help="train, export and evaluate MuJoCo experts")
    sub = p.add_subparsers(dest="expert_command", metavar="SUBCOMMAND", required=True)

    t = sub.add_parser("train", help="train (or resume) a PPO expert")
    t.add_argument("env", help="gymnasium env id, e.g. Hopper-v5")
    t.add_argument("--steps", type=int, default=1_000_000, help="total env steps to reach (default 1e6)")
    t.add_argument("--seed", type=int, default=1, help="training seed (default 1)")
    t.add_argument("--n-envs", type=int, default=4, help="parallel envs (default 4, the recipe's)")
    t.add_argument("--checkpoint-every", type=int, default=50_000, help="env steps between checkpoints (default 50000)")
    t.add_argument("--out", type=Path, default=None, help="checkpoint directory (default runs/experts/ENV_sSEED)")
    t.add_argument("--export", type=Path, default=None, metavar="PATH", help="after training, export the best checkpoint to PATH")
    _add_selection_arguments(t)
    add_quiet_argument(t)
    t.set_defaults(func=_train)

    x = sub.add_parser("export", help="select the best robust checkpoint of a run and export it")
    x.add_argument("env", help="gymnasium env id")
    x.add_argument("--run", type=Path, required=True, help="checkpoint directory written by `gva expert train`")
    x.add_argument("--to", type=Path, default=None, help="expert file (default gvaempirics/experts/ENV.pt)")
    x.add_argument("--seed", type=int, default=None, help="training seed, recorded in the sidecar")
    _add_selection_arguments(x)
    add_quiet_argument(x)
    x.set_defaults(func=_export)

    e = sub.add_parser("eval", help="deterministic returns of an expert per initial condition")
    e.add_argument("env", help="gymnasium env id")
    e.add_argument("--expert", type=Path, default=None, help="expert file (default: the shipped one)")
    e.add_argument("--ics", type=int, default=20, help="initial conditions (default 20)")
    e.add_argument("--horizon", type=int, default=1000, help="horizon H (default 1000)")
    e.add_argument("--ic-seed", type=int, default=0, help="seed of the initial conditions (default 0)")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=_eval)


def _command() -> str:
    return "gva " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""


def _do_export(args, run: Path, dest: Path, seed: int | None) -> int:
    from gvaempirics.experts import export

    info = export(args.env, run, dest, n_ics=args.ics, horizon=args.horizon, min_steps=args.min_steps,
                  command=_command(), train_seed=seed, note=args.note, quiet=args.quiet)
    ev = info["eval"]
    emit(info["candidates"], as_json=False, title=f"{args.env}: checkpoints of {run}",
         extra={"exported": f"{dest} ({info['checkpoint']})",
                "return": f"{ev['return_mean']:.1f} ± {ev['return_sd']:.1f} over {ev['n_ics']} ICs, H={ev['horizon']}",
                "falls": f"{ev['falls']} of {ev['n_ics']}"})
    return 0


def _train(args: argparse.Namespace) -> int:
    from gvaempirics.experts import train

    out = args.out or Path("runs/experts") / f"{args.env}_s{args.seed}"
    steps = train(args.env, out, total_steps=args.steps, seed=args.seed, n_envs=args.n_envs,
                  checkpoint_every=args.checkpoint_every, quiet=args.quiet)
    print(f"{args.env}: {steps} env steps in {out}")
    return _do_export(args, out, args.export, args.seed) if args.export else 0


def _export(args: argparse.Namespace) -> int:
    from gvaempirics.experts import SHIPPED_DIR, check_env_id

    check_env_id(args.env)
    return _do_export(args, args.run, args.to or SHIPPED_DIR / f"{args.env}.pt", args.seed)


def _eval(args: argparse.Namespace) -> int:
    from gvaempirics.experts import check_env_id, evaluate, load_expert

    check_env_id(args.env)
    expert, _ = load_expert(args.env, args.expert)
    ev = evaluate(args.env, expert, n_ics=args.ics, horizon=args.horizon, seed=args.ic_seed)
    rows = [{"ic": i, "return": float(r), "length": int(n)} for i, (r, n) in enumerate(zip(ev.returns, ev.lengths))]
    emit(rows, as_json=args.json, title=f"{args.env}: deterministic expert returns, H={args.horizon}",
         extra={"return mean": ev.mean, "return sd": ev.sd, "falls": f"{ev.falls} of {len(rows)}"})
    return 0
