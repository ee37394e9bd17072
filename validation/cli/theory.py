"""``gva theory ...``: the toy systems of ``gvatheory``, exactly and by Monte Carlo.

Each subcommand module below exposes ``register(subparsers)``; they import only argparse at
module level.
"""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS = (
    "validation.cli.theory_averaging",  # averaging
    "validation.cli.theory_cliff",      # cliff, prop41
    "validation.cli.theory_linear",     # prop31, linear-gva
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "theory",
        help="exact and Monte Carlo toy systems (no torch needed)",
        description="Exact and Monte Carlo toy systems for GVA. Every subcommand prints a table and "
        "takes --json and --plot PATH.",
    )
    sub = parser.add_subparsers(dest="theory_command", metavar="SYSTEM", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
