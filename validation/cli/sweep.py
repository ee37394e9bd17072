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
from ._common import format_table

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
    quiet: bool = option(False, "hide progress bars")

    def check(self) -> None:
        if not self.spec:
            raise ValueError("spec='' is not valid: give a sweep spec file (TOML or JSON)")
        if self.address and self.backend != "ray":
            raise ValueError(f"address={self.address!r} is not valid with backend={self.backend!r}: add --backend ray")
        if self.address and self.address != "auto" and "://" not in self.address:
            if not _HOST_PORT.match(self.address) or not 0 < int(self.address.rpartition(":")[2]) < 65536:
                raise ValueError(f"address={self.address!r} is not valid: give auto or HOST:PORT (e.g. head-node:6379)")
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
        "summary.csv and summary.png (oscillation index per intervention with 95% bootstrap CIs). The whole spec "
        "is checked before anything runs. Rerunning the command skips finished runs and resumes the others. "
        "Exit status 1 if a run failed (see failures.jsonl).",
    )
    add_config_arguments(p, SweepOptions)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    opts = config_from_args(SweepOptions, args)
    from gvaempirics.sweeps import SweepSpec, run_sweep
    from gvaempirics.sweeps.plots import plot_summary
    from validation.report import save_figure

    spec = SweepSpec.from_file(Path(opts.spec))
    out = Path(opts.out) if opts.out else Path("runs/sweeps") / Path(opts.spec).stem
    outcome = run_sweep(spec, out, backend=opts.backend, address=opts.address, workers=opts.workers, quiet=opts.quiet)
    figure = save_figure(plot_summary(outcome.summary, title=f"sweep {Path(opts.spec).name}"), out / "summary.png")
    print(f"{out}: {len(outcome.rows)} runs ({len(outcome.skipped)} already finished, {len(outcome.trained)} run now)")
    print(format_table(_display(outcome.summary)))
    print(f"tables: {out / 'results.csv'}, {out / 'summary.csv'}; figure: {figure}")
    if outcome.failed:
        print(
            f"gva sweep: {len(outcome.failed)} run(s) failed: {', '.join(outcome.failed)} "
            f"(see {out / 'failures.jsonl'}; rerun the command to retry them)",
            file=sys.stderr,
        )
        return 1
    return 0


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
