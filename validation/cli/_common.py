"""Output helpers shared by the command modules: tables, ``--json`` and ``--plot``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--plot PATH``, as every ``gva theory`` subcommand takes them."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    parser.add_argument(
        "--plot", metavar="PATH", type=Path, default=None, help="also save a figure to PATH (.png/.pdf/.svg)"
    )


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", "-q", action="store_true", help="hide progress bars")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Plain fixed-width table of ``rows`` (dicts sharing keys)."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.rjust(w) for c, w in zip(cols, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def _jsonable(value: Any) -> Any:
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else str(f)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def emit(
    rows: Sequence[dict[str, Any]], *, as_json: bool, title: str | None = None, extra: dict[str, Any] | None = None
) -> None:
    """Print ``rows`` as a table (with ``title`` and ``extra`` lines) or as one JSON document."""
    if as_json:
        print(json.dumps(_jsonable({"title": title, "rows": list(rows), **(extra or {})}), indent=2))
        return
    if title:
        print(title)
    print(format_table(rows))
    for key, value in (extra or {}).items():
        print(f"{key}: {_fmt(value)}")


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= 2 * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def check_work(
    amount: float,
    *,
    what: str,
    unit: str,
    limit: float,
    flag: str,
    rate: float | None = None,
    announce: float,
    quiet: bool = False,
) -> None:
    """Bound the work a command is about to start, before it starts.

    ``amount`` is the work in ``unit`` (``what`` says how it was counted, naming the settings);
    ``rate`` (units per second on one core of the reference machine) turns it into a time where
    that is predictable. More than ``limit`` is refused with a ``ValueError`` (a size nobody means
    by accident: ``flag`` lifts the limit); more than ``announce`` is printed to stderr, with its
    time, unless ``quiet``, so that a long run never starts silently.
    """
    eta = f" (about {_duration(amount / rate)} at {rate:.2g} {unit} per second on one core)" if rate else ""
    if amount > limit:
        raise ValueError(
            f"{what} = {_count(amount)} {unit}{eta} is out of range: must be <= "
            f"{flag.lstrip('-').replace('-', '_')}={_count(limit)}; raise {flag} to run it anyway"
        )
    if amount > announce and not quiet:
        print(f"gva: {what} = {_count(amount)} {unit}{eta}", file=sys.stderr)


def _count(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e7 else f"{x:.3g}"
