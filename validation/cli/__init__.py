"""The ``gva`` command.

Each command group lives in its own light module (``theory``, ``reproduce``, ``expert``, ``bc``,
``lm``) exposing ``register(subparsers)``; heavy packages are imported inside the handlers only,
so ``gva theory ...`` works without torch. A ``ValueError`` (or a missing file) raised anywhere
becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command groups, in the order --help lists them.
GROUPS = ("theory", "reproduce", "expert", "bc", "lm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gva",
        description="Gradient variance amplification toolkit: theory, empirics and their validation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in GROUPS:
        importlib.import_module(f"validation.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"gva: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gva: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
