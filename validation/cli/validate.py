"""``gva validate STUDY|all``: the studies that hold the theory's predictions against real runs."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gvatheory.config import Config, option

from ._args import add_config_arguments, config_from_args
from ._common import add_quiet_argument


def _studies() -> tuple[str, ...]:
    from validation.reproduce import VALIDATION_STUDIES  # light: a tuple of names

    return VALIDATION_STUDIES


@dataclass(frozen=True)
class ValidateOptions(Config):
    """What ``gva validate`` runs and where it writes."""

    study: str = option("", "a study name, or all (required)", choices=("all",) + _studies(), positional=True)
    budget: str = option(
        "quick",
        "quick: minutes per study on 2 CPU cores; full: the sizes a cluster or a GPU runs",
        choices=("quick", "full"),
    )
    out: str = option("", "output folder (default runs/validate-<study>-<budget>-<time>)", metavar="DIR")
    seed: int = option(0, "root seed of every study", low=0)
    pages: str = option(
        "", "also write one Markdown results page per study (and its figures) into this folder", metavar="DIR"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "validate",
        help="check the theory's predictions against MuJoCo and LM runs, with verdicts",
        description="Run one study (or all) that states a prediction computed by gvatheory, measures "
        "the same quantity in real runs and returns a verdict (supports / contradicts / inconclusive) "
        f"with confidence intervals, figures and a report. Studies: {', '.join(_studies())}.",
    )
    add_config_arguments(p, ValidateOptions)
    add_quiet_argument(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gvaempirics.rundir import check_creatable
    from validation.reproduce import reproduce

    opts = config_from_args(ValidateOptions, args)
    names = list(_studies()) if opts.study == "all" else [opts.study]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(opts.out) if opts.out else Path("runs") / f"validate-{opts.study}-{opts.budget}-{stamp}"
    check_creatable(out, "out", folder=True)
    if opts.pages:
        check_creatable(Path(opts.pages), "pages", folder=True)
    command = f"gva validate {opts.study} --budget {opts.budget}" + (f" --seed {opts.seed}" if opts.seed else "")
    path, sections = reproduce(
        out,
        quick=opts.budget == "quick",
        seed=opts.seed,
        only=names,
        quiet=args.quiet,
        command=command,
        title="validation report",
    )
    if opts.pages:
        from .reproduce import write_pages_of

        write_pages_of(sections, Path(opts.pages), command)
    for s in sections:
        print(f"{s.key}: " + ", ".join(v.outcome for v in s.verdicts))
    print(f"report: {path}")
    return 0  # a contradiction is a result, reported above and in the report
