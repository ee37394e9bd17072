"""Command lines generated from configuration dataclasses (:mod:`gvatheory.config`).

One flag per field (``--field-name``, underscores as dashes), plus ``--config FILE``. Flags
default to "not given", so the precedence is: class defaults < a preset (``base``) < the config
file < the flags. Every value, from whichever source, is then checked by the dataclass itself.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from gvatheory.config import build_config, describe_range, field_types, read_config_file, tuple_element, unwrap_optional

T = TypeVar("T")

_METAVARS = {int: "N", float: "X", str: "TEXT", bool: "BOOL"}


def parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean: use true or false")


def _scalar_type(tp: Any):
    if tp is bool:
        return parse_bool
    return tp if tp in (int, float, str) else str


def _show_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return " ".join(map(str, value)) if value else "none"
    if isinstance(value, str) and not value:
        return "''"
    return str(value)


def config_dest(name: str) -> str:
    return f"cfg_{name}"


def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type, *, title: str | None = None, skip: tuple[str, ...] = ()
) -> None:
    """Add ``--config FILE`` and one flag per field of ``cls`` (except ``skip``)."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON or TOML file setting any of the fields below (flags override it)",
    )
    hints = field_types(cls)
    group = parser.add_argument_group(title or "settings")
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        meta = dict(f.metadata)
        tp, _ = unwrap_optional(hints[f.name])
        element = tuple_element(tp)
        scalar = element if element is not None else tp
        allowed = describe_range(meta)
        help_text = f"{meta.get('help', '')} (default {_show_default(f.default)}{'; ' + allowed if allowed and not meta.get('choices') else ''})"
        kwargs: dict[str, Any] = {
            "default": None,
            "dest": config_dest(f.name),
            "help": help_text,
            "type": _scalar_type(scalar),
        }
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        kwargs["metavar"] = meta.get("metavar") or (
            "{" + ",".join(map(str, meta["choices"])) + "}" if meta.get("choices") else _METAVARS.get(scalar, "VALUE")
        )
        if element is not None:
            kwargs["nargs"] = "+"
        elif scalar is bool:  # `--flag` alone means true; `--flag false` is accepted too
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        if meta.get("positional"):
            kwargs.pop("dest")
            kwargs["help"] = meta.get("help", "")
            kwargs["metavar"] = meta.get("metavar") or f.name.upper()
            kwargs["nargs"] = "?" if element is None else "*"  # may come from --config instead
            parser.add_argument(config_dest(f.name), **kwargs)
        else:
            group.add_argument(f"--{f.name.replace('_', '-')}", **kwargs)


def config_values(cls: type, args: argparse.Namespace, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The field values ``base`` < ``--config`` file < flags, not yet checked."""
    values = dict(base or {})
    if getattr(args, "config", None) is not None:
        values.update(read_config_file(args.config))
    for f in dataclasses.fields(cls):
        given = getattr(args, config_dest(f.name), None)
        if given is not None:
            values[f.name] = given
    return values


def config_from_args(cls: type[T], args: argparse.Namespace, base: dict[str, Any] | None = None) -> T:
    """Build and check ``cls`` from defaults < ``base`` < ``--config`` file < flags."""
    source = f"config file {args.config}" if getattr(args, "config", None) is not None else "config"
    return build_config(cls, config_values(cls, args, base), source=source)
