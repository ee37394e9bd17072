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
import warnings

# Command groups, in the order --help lists them.
GROUPS = ("theory", "reproduce", "validate", "expert", "bc", "lm", "diagnose", "sweep")
# The groups that simulate MuJoCo models (only they import mujoco, so `gva theory` starts without it).
MUJOCO_GROUPS = ("reproduce", "validate", "expert", "bc", "diagnose", "sweep")


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


def _library_noise(command: str) -> None:
    """Keep libraries' notes about themselves off stderr, where they would precede the one-line
    error: torch's remark on a pickle protocol (a file it then refuses anyway) and MuJoCo's
    deprecation notes on gymnasium's model files (``settotalmass``). MuJoCo's other warnings,
    which report unstable simulations, still reach stderr."""
    warnings.filterwarnings("ignore", message=r"Detected pickle protocol", category=UserWarning)
    if command not in MUJOCO_GROUPS:
        return
    try:
        import mujoco
    except ImportError:
        return

    def forward(message: str) -> None:
        if "deprecated" not in message:
            print(f"WARNING: {message}", file=sys.stderr)

    mujoco.set_mju_user_warning(forward)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else [str(a) for a in argv])
    except SystemExit as exit:  # --help, or a usage error already printed as one line
        return int(exit.code or 0)
    with warnings.catch_warnings():
        _library_noise(args.command)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
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
