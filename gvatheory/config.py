"""Frozen dataclass configurations whose fields check themselves.

Every command and every run of the toolkit is configured by one frozen dataclass deriving from
:class:`Config`. Each field is declared with :func:`option`: a default, a one-line help string,
and optionally its ``choices`` or its range. ``Config.__post_init__`` holds every value to those
declarations, whatever its source (keyword, flag or config file):

* types are strict: a string is not a bool, a float is not an int, a bool is not a number; an
  int given for a float field is stored as a float, a list for a tuple field as a tuple;
* numbers must be finite and inside their declared range; strings inside their choices;
* a subclass adds cross-field rules in :meth:`Config.check`.

A violation raises ``ValueError`` naming the field, the value and what is allowed, so a
command-line front end can print it as one line. The command line itself is generated from the
same declarations (``validation.cli._args``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import tomllib

T = TypeVar("T", bound="Config")

_NUMBER_KINDS = {int: "an integer", float: "a real number", str: "a string", bool: "true or false"}
_PLURAL = {int: "integers", float: "real numbers", str: "strings", bool: "booleans"}


def option(
    default: Any,
    help: str,
    *,
    choices: tuple | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    metavar: str | None = None,
    positional: bool = False,
) -> Any:
    """A field with a default, a help line and, optionally, allowed ``choices`` or a range.

    ``low``/``high`` bound numbers (each element of a tuple field); ``low_open``/``high_open``
    exclude the bound itself. ``metavar`` names the value in ``--help`` (default: from the type);
    ``positional`` makes the field a positional argument on the command line.
    """
    meta = {
        "help": help,
        "choices": tuple(choices) if choices else None,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "metavar": metavar,
        "positional": positional,
    }
    return dataclasses.field(default=default, metadata=meta)


def redefault(cls: type, name: str, default: Any, **changes: Any) -> Any:
    """Field ``name`` of the config class ``cls`` with another ``default``: a subclass changes a
    default without restating the help line, choices and range (``changes``: any of those that
    differ, by the keyword names of :func:`option`)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise ValueError(f"name={name!r} is not a field of {cls.__name__}")
    meta = dict(fields[name].metadata)
    unknown = sorted(set(changes) - set(meta))
    if unknown:
        raise ValueError(f"{', '.join(unknown)} are not settings of option(): valid ones are {', '.join(meta)}")
    return dataclasses.field(default=default, metadata={**meta, **changes})


def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a config class (postponed annotations included)."""
    return dict(_field_types(cls))


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    # resolving the annotations is two thirds of checking a config: once per class (sweeps check many)
    return typing.get_type_hints(cls)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, ``(tp, False)`` otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def tuple_element(tp: Any) -> Any | None:
    """The element type of ``tuple[X, ...]``, else ``None``."""
    if typing.get_origin(tp) is tuple:
        return typing.get_args(tp)[0]
    return None


def describe_range(meta: dict[str, Any]) -> str:
    """The allowed values of a field, as ``--help`` and error messages print them."""
    if meta.get("choices"):
        return "one of " + ", ".join(map(str, meta["choices"]))
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return ""
    lo = "(" if meta.get("low_open") or low is None else "["
    hi = ")" if meta.get("high_open") or high is None else "]"
    return f"in {lo}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{hi}"


def _coerce(name: str, value: Any, tp: Any, meta: dict[str, Any]) -> Any:
    """Check one scalar ``value`` against type ``tp`` and the field's choices/range; return it
    converted (int -> float for float fields)."""
    kind = _NUMBER_KINDS.get(tp, getattr(tp, "__name__", str(tp)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name}={repr(value)} is not valid: must be {kind}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(
                f"{name}={repr(value)} is not valid: must be {kind}"
                + (f" {describe_range(meta)}" if describe_range(meta) else "")
            )
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(
                f"{name}={repr(value)} is not valid: must be {kind}"
                + (f" {describe_range(meta)}" if describe_range(meta) else "")
            )
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(
                f"{name}={value!r} is not valid: must be finite"
                + (f" and {describe_range(meta)}" if describe_range(meta) else "")
            )
    elif tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{name}={repr(value)} is not valid: must be {kind}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ValueError(f"{name}={repr(value)} is not valid: choose one of {', '.join(map(str, meta['choices']))}")
    if tp in (int, float):
        low, high = meta.get("low"), meta.get("high")
        bad_low = low is not None and (value <= low if meta.get("low_open") else value < low)
        bad_high = high is not None and (value >= high if meta.get("high_open") else value > high)
        if bad_low or bad_high:
            raise ValueError(f"{name}={value!r} is out of range: must be {describe_range(meta)}")
    return value


def check_field(name: str, value: Any, tp: Any, meta: dict[str, Any]) -> Any:
    """Check ``value`` against the declared type ``tp`` (optional and tuple types included) and
    the field metadata from :func:`option`; return the normalized value."""
    tp, optional = unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name}=None is not valid: a value is required")
    element = tuple_element(tp)
    if element is not None:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}={repr(value)} is not valid: must be a list of {_PLURAL.get(element, element)}")
        return tuple(_coerce(name, v, element, meta) for v in value)
    return _coerce(name, value, tp, meta)


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every configuration: fields declared with :func:`option` are checked on creation."""

    def __post_init__(self) -> None:
        hints = field_types(type(self))
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = check_field(f.name, getattr(self, f.name), hints[f.name], dict(f.metadata))
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Rules between fields; subclasses override it and raise ``ValueError`` naming the fields."""

    def replace(self: T, **changes: Any) -> T:
        """A copy with ``changes`` applied (checked like any new config)."""
        return dataclasses.replace(self, **changes)


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def build_config(cls: type[T], values: dict[str, Any], *, source: str = "config") -> T:
    """Instantiate ``cls`` from a dict; unknown keys are named with the valid ones."""
    if not isinstance(values, dict):
        raise ValueError(f"{source} must be a table of field = value pairs, not {type(values).__name__}")
    names = field_names(cls)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown {source} key(s) {', '.join(map(str, unknown))}: valid keys are {', '.join(names)}")
    return cls(**values)


def read_config_file(path: Path) -> dict[str, Any]:
    """The table of a JSON or TOML config file (``.toml``: TOML, anything else: JSON)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config file {path} is a directory: give a JSON or TOML file")
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        text = path.read_text()
        values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise ValueError(f"config file {path} is not valid {kind}: {str(err).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a table of field = value pairs, not a {type(values).__name__}")
    return values


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))
