"""``gva reproduce``: the main job, every study end to end, with a Markdown report."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gvatheory.config import Config, option

from ._args import add_config_arguments, config_from_args
from ._common import add_quiet_argument


@dataclass(frozen=True)
class ReproduceOptions(Config):
    """What ``gva reproduce`` runs and where it writes."""

    quick: bool = option(False, "small configurations that finish in minutes on 2 CPU cores")
    only: tuple[str, ...] = option((), "run only these sections", metavar="SECTION")
    skip: tuple[str, ...] = option((), "skip these sections", metavar="SECTION")
    out: str = option("", "output folder (default runs/reproduce-<quick|full>-<time>)")
    seed: int = option(0, "root seed of every study", low=0)
    pages: str = option(
        "", "also write one Markdown results page per section (and its figures) into this folder", metavar="DIR"
    )

    def check(self) -> None:
        from validation.reproduce import select_sections

        select_sections(list(self.only), list(self.skip))


def register(subparsers: argparse._SubParsersAction) -> None:
    from validation.reproduce import OPT_IN_SECTIONS, SECTIONS  # light: dicts of names

    p = subparsers.add_parser(
        "reproduce",
        help="run every study and write a report (Markdown + PNG) under runs/",
        description="Run the studies that check GVA theory numerically and against empirical runs, "
        f"and write runs/<name>/report.md. Sections: {', '.join(SECTIONS)}; "
        f"opt-in (run only when named in --only): {', '.join(OPT_IN_SECTIONS)}.",
    )
    add_config_arguments(p, ReproduceOptions)
    add_quiet_argument(p)
    p.set_defaults(func=_run)


def write_pages_of(sections, pages: Path, command: str) -> None:
    """The documentation's results pages (one per section) from a report just written."""
    from validation.report import write_pages

    write_pages(
        sections,
        pages,
        preamble=f"Generated from the report of `{command}` on {datetime.now():%Y-%m-%d} (seed as in the command "
        "below). Training runs are chaotic: exact numbers differ across machines; the verdicts and the spreads over "
        "seeds are what carry over.",
    )


def _run(args: argparse.Namespace) -> int:
    from gvaempirics.rundir import check_creatable
    from validation.reproduce import reproduce

    opts = config_from_args(ReproduceOptions, args)  # fails fast, before creating folders
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(opts.out) if opts.out else Path("runs") / f"reproduce-{'quick' if opts.quick else 'full'}-{stamp}"
    check_creatable(out, "out", folder=True)
    if opts.pages:
        check_creatable(Path(opts.pages), "pages", folder=True)
    path, sections = reproduce(
        out,
        quick=opts.quick,
        seed=opts.seed,
        only=list(opts.only) or None,
        skip=list(opts.skip) or None,
        quiet=args.quiet,
    )
    if opts.pages:
        write_pages_of(sections, Path(opts.pages), f"gva reproduce{' --quick' if opts.quick else ''}")
    # a contradicted or inconclusive verdict is a result, not a failure: the job ran, exit 0
    failed = [s.key for s in sections if s.contradicted]
    unsure = [s.key for s in sections if not s.contradicted and not s.passed]
    print(f"report: {path}")
    if unsure:
        print(f"sections with inconclusive verdicts: {', '.join(unsure)}")
    if failed:
        print(f"sections with verdicts that contradict the prediction: {', '.join(failed)}")
    return 0
