"""``gva reproduce``: the main job, every study end to end, with a Markdown report."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from ._common import add_quiet_argument, add_seed_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    from validation.reproduce import SECTIONS  # light: a dict of names

    p = subparsers.add_parser(
        "reproduce",
        help="run every study and write a report (Markdown + PNG) under runs/",
        description="Run the studies that check GVA theory numerically and against empirical runs, "
        f"and write runs/<name>/report.md. Sections: {', '.join(SECTIONS)}.",
    )
    p.add_argument("--quick", action="store_true", help="small configurations that finish in minutes on 2 CPU cores")
    p.add_argument("--only", nargs="+", metavar="SECTION", help="run only these sections")
    p.add_argument("--skip", nargs="+", metavar="SECTION", help="skip these sections")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/reproduce-<quick|full>-<time>)")
    add_seed_argument(p)
    add_quiet_argument(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from validation.reproduce import reproduce, select_sections

    select_sections(args.only, args.skip)  # fail fast, before creating folders
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / f"reproduce-{'quick' if args.quick else 'full'}-{stamp}"
    path, sections = reproduce(out, quick=args.quick, seed=args.seed, only=args.only, skip=args.skip, quiet=args.quiet)
    failed = [s.key for s in sections if not s.passed]
    print(f"report: {path}")
    if failed:
        print(f"sections with failed verdicts: {', '.join(failed)}")
        return 1
    return 0
