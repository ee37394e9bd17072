"""``gva bc train | eval | plot``: behavior cloning with stabilizers, and its GVA figures."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from ._common import add_quiet_argument, emit, save_figure


def register_training(sub) -> None:
    from gvaempirics.config import add_config_arguments  # light: no torch
    from gvaempirics.bc_config import PRESETS, BCConfig

    t = sub.add_parser(
        "train", help="train an imitator with raw and stabilized weights evaluated side by side",
        description="Train a BC imitator from expert demonstrations; evaluate raw and stabilized weights every "
        "eval_every steps and at every step of the zoom windows. Settings: preset < --config file < flags. "
        "An existing --out run directory is resumed (its config must match).",
    )
    t.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="named configuration (default quick)")
    t.add_argument("--out", type=Path, default=None, help="run directory (default runs/bc/ENV__PRESET__SEED__TIME)")
    add_quiet_argument(t)
    add_config_arguments(t, BCConfig)
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="GVA indices of a run directory (raw vs stabilized)")
    e.add_argument("run", type=Path, help="run directory")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=_eval)

    p = sub.add_parser("plot", help="Figure-1-style plot of a run directory")
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument("--out", type=Path, default=None, help="image path (default RUN/figure1.png)")
    p.set_defaults(func=_plot)


def _train(args: argparse.Namespace) -> int:
    from gvaempirics.bc_config import PRESETS, BCConfig
    from gvaempirics.config import config_from_args

    cfg = config_from_args(BCConfig, args, base=PRESETS[args.preset])  # validated before any work
    from gvaempirics.bc import train_bc

    out = args.out or Path("runs/bc") / f"{cfg.env}__{args.preset}__{cfg.seed}__{datetime.now():%Y%m%d-%H%M%S}"
    summary = train_bc(cfg, out, resume=True, quiet=args.quiet)
    _print_summary(summary, out, as_json=False)
    return 0


def _print_summary(summary: dict, run: Path, *, as_json: bool) -> None:
    rows = [{"weights": w, **summary[w]} for w in summary if isinstance(summary[w], dict)]
    emit(rows, as_json=as_json, title=f"{run}: expert return {summary.get('expert_return', float('nan')):.1f}")


def _eval(args: argparse.Namespace) -> int:
    from gvaempirics.bc import summarize
    from gvaempirics.rundir import RunDir

    run = RunDir(args.run)
    run.read_config()  # names a missing run directory
    _print_summary(summarize(run), args.run, as_json=args.json)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from gvaempirics.bc import load_result
    from gvaempirics.bc_plots import plot_figure1

    res = load_result(args.run)
    if len(res.eval_steps) < 2:
        raise ValueError(f"{args.run} has fewer than 2 evaluated iterates: nothing to plot yet")
    out = args.out or Path(args.run) / "figure1.png"
    save_figure(plot_figure1(res), out)
    print(out)
    return 0
