"""``gva sweep SPEC``: a grid of behavior-cloning runs (base x interventions x seeds x envs) on a
local process pool or a Ray cluster, resumable, ending in a results table and a summary per
intervention (``docs/sweeps.md``)."""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from gvatheory.config import Config, option

from ._args import add_config_arguments, config_from_args
from ._common import check_work, format_table

BACKENDS = ("local", "ray")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


@dataclass(frozen=True)
class SweepOptions(Config):
    """Where a sweep runs and where it writes; what it runs is in the spec file."""

    spec: str = option("", "sweep spec file (TOML or JSON; see docs/sweeps.md)", positional=True, metavar="SPEC")
    out: str = option("", "sweep directory (default runs/sweeps/<spec file stem>); a rerun resumes it", metavar="DIR")
    backend: str = option("local", "where runs execute: local worker processes or Ray tasks", choices=BACKENDS)
    address: str = option(
        "", "with --backend ray: the cluster, auto or HOST:PORT (default: start a local Ray runtime)", metavar="A"
    )
    workers: int = option(
        0, "parallel runs on this machine (default cpu_count // threads; with ray: the local runtime's size)", low=0
    )
    ensemble: int = option(
        8,
        "train runs that differ only in seed, optimizer or stabilizer settings as one vmapped ensemble of up to "
        "this many members (1: every run alone; members' numbers are their single runs')",
        low=1,
    )
    quiet: bool = option(False, "hide progress bars")
    figures_only: bool = option(
        False, "run nothing: redraw the tables' summary and the figures from the runs already in the sweep directory"
    )
    seed: int = option(
        -1,
        "training seed of the run drawn per grid entry in rewards.png and stabilized.png (-1: the spec's first)",
        low=-1,
    )
    max_runs: int = option(
        10_000, "refuse a spec of more runs than this (envs x interventions x seeds), before checking them", low=1
    )

    def check(self) -> None:
        if not self.spec:
            raise ValueError("spec='' is not valid: give a sweep spec file (TOML or JSON)")
        if self.address and self.backend != "ray":
            raise ValueError(f"address={self.address!r} is not valid with backend={self.backend!r}: add --backend ray")
        if self.address and self.address != "auto" and "://" not in self.address:
            if not _HOST_PORT.match(self.address) or not 0 < int(self.address.rpartition(":")[2]) < 65536:
                raise ValueError(f"address={self.address!r} is not valid: give auto or HOST:PORT (e.g. head-node:6379)")
        if self.figures_only and (self.address or self.workers or self.backend != "local"):
            raise ValueError("figures_only=True runs nothing: drop --backend, --address and --workers")
        if self.address and self.workers:
            raise ValueError(
                f"workers={self.workers} is not valid with address={self.address!r}: a cluster's size is set by "
                "`ray start --num-cpus` on its nodes"
            )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="a grid of behavior-cloning runs over interventions, seeds and envs, local or on Ray",
        description="Run every run of a sweep spec (base configuration x interventions x seeds x envs) into one "
        "sweep directory: runs/<env>__<interventions>__s<seed> per run, results.csv/.parquet (one row per run), "
        "summary.csv and summary.md (one row per grid entry), and three figures: summary.png (oscillation index per "
        "intervention with 95% bootstrap CIs), rewards.png (paper Figure 2: raw reward per initial condition and "
        "validation loss against the step, one seed per entry) and stabilized.png (paper Figure 3: raw against "
        "EMA reward). The whole spec is checked before anything runs. Rerunning the command skips finished runs "
        "and resumes the others; --figures-only redraws the tables' summary and the figures without running "
        "anything. Exit status 1 if a run failed (see failures.jsonl).",
    )
    add_config_arguments(p, SweepOptions)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    opts = config_from_args(SweepOptions, args)
    from gvaempirics.sweeps import SweepSpec, run_sweep
    from gvaempirics.sweeps.run import read_sweep
    from gvaempirics.sweeps.spec import grid_size
    from gvatheory.config import read_config_file

    check_work(  # before the runs are checked: a grid of 1e5 runs takes minutes just for that
        grid_size(read_config_file(Path(opts.spec))),
        what=f"the grid of sweep spec {opts.spec} (envs x interventions x seeds)",
        unit="runs",
        limit=opts.max_runs,
        flag="--max-runs",
        announce=1000,
        quiet=opts.quiet,
    )
    spec = SweepSpec.from_file(Path(opts.spec))
    if opts.seed >= 0 and opts.seed not in spec.seeds:
        raise ValueError(f"seed={opts.seed} is not valid: the spec's seeds are {', '.join(map(str, spec.seeds))}")
    out = Path(opts.out) if opts.out else Path("runs/sweeps") / Path(opts.spec).stem
    if opts.figures_only:
        outcome = read_sweep(spec, out)
        print(f"{out}: {len(outcome.rows)} runs ({len(outcome.skipped)} finished; nothing run)")
    else:
        outcome = run_sweep(
            spec,
            out,
            backend=opts.backend,
            address=opts.address,
            workers=opts.workers,
            ensemble=opts.ensemble,
            quiet=opts.quiet,
        )
        print(
            f"{out}: {len(outcome.rows)} runs ({len(outcome.skipped)} already finished, {len(outcome.trained)} run now)"
        )
    table = _display(outcome.summary)
    figures = write_figures(
        out, outcome, seed=opts.seed if opts.seed >= 0 else spec.seeds[0], name=Path(opts.spec).name
    )
    print(format_table(table))
    print(f"tables: {out / 'results.csv'}, {out / 'summary.csv'}, {out / 'summary.md'}")
    print(f"figures: {', '.join(str(f) for f in figures)}")
    if outcome.failed:
        print(
            f"gva sweep: {len(outcome.failed)} run(s) failed: {', '.join(outcome.failed)} "
            f"(see {out / 'failures.jsonl'}; rerun the command to retry them)",
            file=sys.stderr,
        )
        return 1
    return 0


FIGURES = ("summary.png", "rewards.png", "stabilized.png")


def write_figures(out: Path, outcome, *, seed: int, name: str = "") -> list[Path]:
    """``summary.md`` (the printed summary as a Markdown table) and the three figures of a sweep:
    ``summary.png`` (:func:`~gvaempirics.sweeps.plots.plot_summary`), ``rewards.png`` (paper
    Figure 2, :func:`~gvaempirics.sweeps.plots.plot_rewards`) and ``stabilized.png`` (paper Figure
    3, :func:`~gvaempirics.sweeps.plots.plot_stabilized`), the last two for the runs of ``seed``."""
    from gvaempirics.rundir import atomic_write_bytes
    from gvaempirics.sweeps.plots import entry_runs, plot_rewards, plot_stabilized, plot_summary
    from validation.report import markdown_table, save_figure

    out = Path(out)
    entries = entry_runs(out, outcome.rows, seed=seed)
    suffix = f" {name}" if name else ""
    atomic_write_bytes(out / "summary.md", (markdown_table(_display(outcome.summary)) + "\n").encode())
    summary, rewards, stabilized = (out / f for f in FIGURES)
    return [
        save_figure(plot_summary(outcome.summary, title=f"sweep{suffix}"), summary),
        save_figure(
            plot_rewards(entries, title=f"sweep{suffix}: raw reward and validation loss, seed {seed}"), rewards
        ),
        save_figure(
            plot_stabilized(entries, title=f"sweep{suffix}: raw against stabilized reward, seed {seed}"), stabilized
        ),
    ]


def _display(summary) -> list[dict]:
    """The printed summary: three significant digits, intervals in brackets (summary.csv has every digit)."""

    def g(x: float) -> str:
        return "-" if math.isnan(x) else f"{x:.3g}"

    level = f"{summary.confidence:.0%}"
    return [
        {
            "interventions": s.interventions,
            "finished": f"{s.finished}/{s.runs}",
            f"osc mean [{level} CI]": f"{g(s.mean.estimate)} [{g(s.mean.low)}, {g(s.mean.high)}]",
            f"osc IQM [{level} CI]": f"{g(s.iqm.estimate)} [{g(s.iqm.low)}, {g(s.iqm.high)}]",
            "stab osc mean": g(s.stab_mean),
            "P(osc < base)": g(s.p_lower),
        }
        for s in summary.stats
    ]
