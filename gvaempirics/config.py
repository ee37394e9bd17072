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

from gvatheory._checks import check_choice, check_int, check_positive, check_range

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


# ---------------------------------------------------------------- shared fields

STABILIZERS = ("ema", "constant-ema", "polyak", "bema", "posthoc")


@dataclasses.dataclass(frozen=True)
class StabilizerOptions:
    """Fields of every training run that keeps averaged weights beside the raw iterate; built
    into a stabilizer by :func:`gvaempirics.stabilizers.make_stabilizer`. Subclasses may
    redeclare a field to change its default."""

    stabilizer: str = option("ema", "averaged weights evaluated beside the raw ones: power EMA, constant EMA, "
                             "Polyak average, bias-corrected EMA, or post-hoc EMA", choices=STABILIZERS)
    ema_alpha: float = option(0.5, "power EMA: gamma_t = max(t^-alpha, gamma_min)")
    ema_gamma_min: float = option(1e-3, "power EMA floor gamma_min; the constant EMA's gamma; BEMA's EMA floor")
    ema_burn_in: int = option(0, "steps during which the average copies the iterate")
    posthoc_sigma_rels: tuple[float, ...] = option((0.05, 0.1), "posthoc: relative widths of the tracked power-function "
                                                   "EMAs (the first is the one evaluated during training)")
    posthoc_every: int = option(100, "posthoc: updates between snapshots of the tracked EMAs")

    def __post_init__(self):
        check_choice("stabilizer", self.stabilizer, STABILIZERS)
        check_positive("ema_alpha", self.ema_alpha)
        check_range("ema_gamma_min", self.ema_gamma_min, 0.0, 1.0, low_open=True)
        check_int("ema_burn_in", self.ema_burn_in, 0)
        if not self.posthoc_sigma_rels:
            raise ValueError("posthoc_sigma_rels=() is out of range: give at least one relative width")
        for s in self.posthoc_sigma_rels:
            check_range("posthoc_sigma_rels", s, 0.0, 12 ** -0.5, low_open=True)  # 12**-0.5: the uniform average
        check_int("posthoc_every", self.posthoc_every, 1)
