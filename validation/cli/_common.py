"""Output helpers shared by the command modules: tables, ``--json`` and ``--plot``."""

from __future__ import annotations

import argparse
import json
import math
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
