"""Run configurations: one frozen dataclass per experiment, with a help string per field.

The command line is generated from the dataclass (:func:`add_config_arguments`), a config file
(JSON or TOML) may set any field, flags override the file, and everything is checked before any
work starts: unknown keys are rejected with the list of valid ones, and each dataclass's
``__post_init__`` checks ranges through :mod:`gvatheory._checks`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def option(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A dataclass field with a default and a one-line help string (shown by ``--help``)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (use true/false)")


def _arg_type(tp: Any):
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _arg_type(args[0])
    if tp is bool:
        return _parse_bool
    if tp in (int, float, str):
        return tp
    return str


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--config FILE`` and one ``--field-name`` flag per field of ``cls``.

    Flags default to ``None`` so that only the ones given override the file and the defaults.
    Tuple fields take several values.
    """
    parser.add_argument("--config", type=Path, default=None, help="JSON or TOML file setting any of the fields below")
    types = _field_types(cls)
    group = parser.add_argument_group(f"{cls.__name__} fields (override the config file)")
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = types[f.name]
        kwargs: dict[str, Any] = {"default": None, "dest": f"cfg_{f.name}"}
        default = f.default if f.default is not dataclasses.MISSING else None
        kwargs["help"] = f"{f.metadata.get('help', '')} (default: {default})"
        if typing.get_origin(tp) is tuple:
            kwargs["nargs"] = "+"
            kwargs["type"] = _arg_type(typing.get_args(tp)[0])
        else:
            kwargs["type"] = _arg_type(tp)
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        group.add_argument(f"--{f.name.replace('_', '-')}", **kwargs)


def read_config_file(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        return json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {err}") from None


def build_config(cls: type[T], values: dict[str, Any]) -> T:
    """Instantiate ``cls`` from a dict, rejecting unknown keys by name; ranges are checked by ``cls``."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)}: valid keys are {', '.join(names)}")
    types = _field_types(cls)
    clean = {k: (tuple(v) if typing.get_origin(types[k]) is tuple and isinstance(v, list) else v) for k, v in values.items()}
    try:
        return cls(**clean)
    except TypeError as err:
        raise ValueError(f"bad config for {cls.__name__}: {err}") from None


def config_from_args(cls: type[T], args: argparse.Namespace, base: dict[str, Any] | None = None) -> T:
    """Defaults < ``base`` < ``--config`` file < flags."""
    values = dict(base or {})
    if getattr(args, "config", None) is not None:
        values.update(read_config_file(args.config))
    for f in dataclasses.fields(cls):
        given = getattr(args, f"cfg_{f.name}", None)
        if given is not None:
            values[f.name] = given
    return build_config(cls, values)


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))
