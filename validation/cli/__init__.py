"""The ``gva`` command.

Each command group lives in its own light module (listed in :data:`GROUPS`) exposing
``register(subparsers)``; every command's flags are generated from a frozen dataclass
(:mod:`validation.cli._args`). Heavy packages are imported inside the handlers only, so
``gva theory ...`` works without torch. A usage error or a ``ValueError`` raised anywhere becomes
one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command groups, in the order --help lists them.
GROUPS = ("theory", "reproduce", "validate", "expert", "bc", "lm", "diagnose", "sweep")


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line naming the flag (``--help`` has the rest), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message.splitlines()[0]} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gva",
        description="Gradient variance amplification toolkit: theory, empirics and their validation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in GROUPS:
        importlib.import_module(f"validation.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else [str(a) for a in argv])
    except SystemExit as exit:  # --help, or a usage error already printed as one line
        return int(exit.code or 0)
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError) as err:
        # one line, whatever a library put in the message
        text = " ".join(str(err).split()) or type(err).__name__
        print(f"gva: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gva: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
