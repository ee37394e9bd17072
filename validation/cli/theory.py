"""``gva theory ...``: the toy systems of ``gvatheory``, exactly and by Monte Carlo.

One module per subcommand, named like it (``theory_averaging``, ``theory_cliff``,
``theory_prop41``, ``theory_prop31``, ``theory_linear_gva``). Each declares its settings as one
frozen :class:`gvatheory.config.Config` dataclass, from which its flags and ``--config FILE`` are
generated, and exposes ``register(subparsers)``; at module level they import only argparse and
the light configuration helpers, so ``gva theory --help`` needs neither numba nor torch.
"""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS = (
    "validation.cli.theory_averaging",  # averaging
    "validation.cli.theory_cliff",  # cliff
    "validation.cli.theory_prop41",  # prop41
    "validation.cli.theory_prop31",  # prop31
    "validation.cli.theory_linear_gva",  # linear-gva
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "theory",
        help="exact and Monte Carlo toy systems (no torch needed)",
        description="Exact and Monte Carlo toy systems for GVA. Every subcommand prints a table, takes its "
        "settings as flags or from --config FILE (JSON or TOML), and takes --json, --plot PATH and --quiet.",
    )
    sub = parser.add_subparsers(dest="theory_command", metavar="SYSTEM", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)


def add_command(
    subparsers: argparse._SubParsersAction, name: str, cls: type, run, *, description: str | None = None
) -> argparse.ArgumentParser:
    """A ``gva theory NAME`` subcommand: flags generated from the dataclass ``cls`` (its docstring's
    first line is the help), then ``--json``, ``--plot PATH`` and ``--quiet``. ``run(cfg, args)``
    gets the checked ``cls`` instance (defaults < ``--config`` file < flags) and the output flags."""
    from ._args import add_config_arguments
    from ._common import add_output_arguments, add_quiet_argument

    def func(args: argparse.Namespace) -> int:
        from ._args import config_from_args

        return run(config_from_args(cls, args), args)

    doc = (cls.__doc__ or "").strip()
    p = subparsers.add_parser(name, help=doc.splitlines()[0], description=description or doc)
    add_config_arguments(p, cls)
    add_output_arguments(p)
    add_quiet_argument(p)
    p.set_defaults(func=func)
    return p
