"""``gva bc``: behavior-cloning experiments (paper Section 3, Figure 1).

* ``gva bc demos``  collect and cache the expert demonstrations of a configuration, once;
* ``gva bc train``  train an imitator with raw and stabilized weights evaluated side by side
  (``--demos PATH`` reuses a cache);
* ``gva bc eval RUN`` / ``gva bc plot RUN``  GVA indices and the Figure-1 plot of a run directory.

Every command is generated from a frozen dataclass; a preset, a ``--config`` file and flags
combine as preset < file < flags, and everything is checked before any work starts.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from gvatheory.config import Config, option

from ._args import add_config_arguments, config_from_args
from ._common import add_quiet_argument, emit


@dataclass(frozen=True)
class RunInput(Config):
    """A behavior-cloning run directory to read."""

    run: str = option("", "run directory written by `gva bc train`", positional=True)
    json: bool = option(False, "print JSON instead of a table")

    def check(self) -> None:
        if not self.run:
            raise ValueError("run='' is not valid: give a run directory")


@dataclass(frozen=True)
class PlotInput(RunInput):
    """A run directory to plot, and where the figure goes."""

    out: str = option("", "image path (.png/.pdf/.svg; default RUN/figure1.png)")


def _preset_argument(p: argparse.ArgumentParser) -> None:
    from gvaempirics.bc.config import PRESETS

    p.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="named configuration (default quick)")


def register(subparsers) -> None:
    from gvaempirics.bc.config import BCConfig, DemoOptions

    p = subparsers.add_parser("bc", help="behavior cloning: demonstrations, training with stabilizers, GVA figures")
    sub = p.add_subparsers(dest="bc_command", metavar="SUBCOMMAND", required=True)

    d = sub.add_parser(
        "demos",
        help="collect and cache the expert demonstrations of a configuration",
        description="Collect the training and validation demonstrations that `gva bc train` with the "
        "same preset and demonstration settings needs, into one cache file; pass it to `gva bc train "
        "--demos PATH` so that several runs share one collection. Settings: preset < --config < flags.",
    )
    _preset_argument(d)
    d.add_argument(
        "--out", type=Path, default=None, metavar="PATH", help="cache file (default runs/demos/ENV__nN_hH_sSEED.npz)"
    )
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config_arguments(d, DemoOptions)
    add_quiet_argument(d)
    d.set_defaults(func=_demos)

    t = sub.add_parser(
        "train",
        help="train an imitator with raw and stabilized weights evaluated side by side",
        description="Train a BC imitator from expert demonstrations; evaluate raw and stabilized weights every "
        "eval_every steps and at every step of the zoom windows. Settings: preset < --config file < flags. "
        "Rerunning a command continues its run directory; one with other settings gets its own.",
    )
    _preset_argument(t)
    t.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="run directory (default runs/bc/ENV__PRESET__sSEED__DIGEST: one per configuration)",
    )
    add_quiet_argument(t)
    add_config_arguments(t, BCConfig)
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="GVA indices of a run directory (raw vs stabilized)")
    add_config_arguments(e, RunInput)
    e.set_defaults(func=_eval)

    pl = sub.add_parser("plot", help="Figure-1-style plot of a run directory")
    add_config_arguments(pl, PlotInput)
    pl.set_defaults(func=_plot)


def _demos(args: argparse.Namespace) -> int:
    from gvaempirics.bc.config import PRESETS, DemoOptions
    from gvaempirics.bc.data import load_or_make
    from gvaempirics.bc.experts import load_expert
    from gvaempirics.rundir import check_creatable

    names = DemoOptions.__dataclass_fields__
    opts = config_from_args(DemoOptions, args, base={k: v for k, v in PRESETS[args.preset].items() if k in names})
    out = args.out or Path("runs/demos") / f"{opts.env}__n{opts.n_demos}_h{opts.demo_horizon}_s{opts.demo_seed}.npz"
    check_creatable(out, "out")
    expert, info = load_expert(opts.env, Path(opts.expert) if opts.expert else None)
    s = opts.demo_settings()
    demos = load_or_make(out, expert, **s, expert_info=info, quiet=args.quiet)
    rows = [
        {
            "split": name,
            "trajectories": len(tr.lengths),
            "alive steps": int(tr.lengths.sum()),
            "return mean": float(tr.returns.mean()),
            "return sd": float(tr.returns.std()),
            "falls": int((tr.lengths < s["horizon"]).sum()),
        }
        for name, tr in (("train", demos.train), ("val", demos.val))
    ]
    emit(
        rows,
        as_json=args.json,
        title=f"{opts.env}: demonstrations in {out}",
        extra={
            "states": f"{demos.train.states.shape} (obs + previous action)",
            "actions": str(demos.train.actions.shape),
        },
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from gvaempirics.bc.config import PRESETS, BCConfig
    from gvaempirics.rundir import default_run_dir
    from gvatheory.config import to_dict

    cfg = config_from_args(BCConfig, args, base=PRESETS[args.preset])  # checked before any work
    from gvaempirics.bc.train import train_bc

    out = args.out or default_run_dir("bc", f"{cfg.env}__{args.preset}__s{cfg.seed}", to_dict(cfg))
    summary = train_bc(cfg, out, quiet=args.quiet)
    _print_summary(summary, out, as_json=False)
    return 0


def _print_summary(summary: dict, run: Path, *, as_json: bool) -> None:
    rows = [{"weights": w, **summary[w]} for w in summary if isinstance(summary[w], dict)]
    emit(rows, as_json=as_json, title=f"{run}: expert return {summary.get('expert_return', float('nan')):.1f}")


def _eval(args: argparse.Namespace) -> int:
    from gvaempirics.bc.results import summarize
    from gvaempirics.rundir import RunDir

    inp = config_from_args(RunInput, args)
    run = RunDir(Path(inp.run))
    run.read_config()  # names a missing run directory
    _print_summary(summarize(run), run.path, as_json=inp.json)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from gvaempirics.bc.plots import plot_figure1
    from gvaempirics.bc.results import load_result
    from gvaempirics.rundir import check_creatable
    from validation.report import save_figure

    inp = config_from_args(PlotInput, args)
    out = check_creatable(Path(inp.out) if inp.out else Path(inp.run) / "figure1.png", "out")
    res = load_result(Path(inp.run))
    if len(res.eval_steps) < 2:
        raise ValueError(f"{inp.run} has fewer than 2 evaluated iterates: nothing to plot yet")
    print(save_figure(plot_figure1(res), out))
    return 0
