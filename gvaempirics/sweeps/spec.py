"""The sweep specification: a base configuration crossed with interventions, seeds and envs.

A spec file (TOML or JSON) holds ``preset`` and a ``[base]`` table of
:class:`~gvaempirics.bc.config.BCConfig` overrides (the base configuration), and the grid:
``interventions`` (a list of composed lists of names from
:data:`~gvaempirics.bc.interventions.INTERVENTIONS`; ``[]`` is the base itself), ``seeds`` and
``envs``. :class:`SweepSpec` checks all of it on creation, every run's configuration included,
so that a spec that exists can run to the end.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gvatheory.config import Config, build_config, option, read_config_file

from ..bc.config import ENV_IDS, PRESETS, BCConfig
from ..bc.interventions import INTERVENTIONS, apply_interventions

BASE_LABEL = "base"


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its id (also its directory name), place in the grid and configuration
    (``config.demos`` is set later, to the sweep's shared demonstration cache)."""

    run_id: str
    env: str
    interventions: tuple[str, ...]
    seed: int
    config: BCConfig

    @property
    def label(self) -> str:
        """``width-1024+lr-cosine``, or ``base`` for the base configuration."""
        return label(self.interventions)


def label(interventions: tuple[str, ...]) -> str:
    return "+".join(interventions) or BASE_LABEL


@dataclass(frozen=True)
class SweepSpec(Config):
    """A grid of behavior-cloning runs: (base + interventions) x seeds x envs."""

    preset: str = option("quick", "named base configuration", choices=tuple(PRESETS))
    base: dict[str, Any] = dataclasses.field(
        default_factory=dict, metadata={"help": "BCConfig fields overriding the preset (the base configuration)"}
    )
    interventions: tuple[tuple[str, ...], ...] = option(
        ((),), "grid of composed interventions; [] is the base configuration itself"
    )
    seeds: tuple[int, ...] = option((1,), "training seeds of every configuration", low=0)
    envs: tuple[str, ...] = option((), "environments (empty: the base configuration's env)", choices=ENV_IDS)

    @classmethod
    def from_file(cls, path: Path) -> SweepSpec:
        """Read and check a TOML or JSON spec; every problem is one ``ValueError`` naming the file."""
        values = read_config_file(Path(path))
        try:
            return build_config(cls, values, source=f"sweep spec {path}")
        except ValueError as err:
            text = str(err)
            raise ValueError(text if str(path) in text else f"sweep spec {path}: {text}") from None

    def check(self) -> None:
        super().check()
        if not isinstance(self.base, dict):
            raise ValueError(f"base={self.base!r} is not valid: must be a table of BCConfig fields")
        grid = []
        for entry in self.interventions:
            if isinstance(entry, str) or not isinstance(entry, (list, tuple)):
                raise ValueError(
                    f"interventions entry {entry!r} is not valid: must be a list of names ([] for the base)"
                )
            if not all(isinstance(name, str) for name in entry):
                raise ValueError(f"interventions entry {list(entry)!r} is not valid: names must be strings")
            if len(set(entry)) != len(entry):
                raise ValueError(f"interventions entry {list(entry)!r} names an intervention twice")
            if frozenset(entry) in {frozenset(g) for g in grid}:
                raise ValueError(f"interventions entry {list(entry)!r} is listed twice (in some order)")
            grid.append(tuple(entry))
        if not grid:
            raise ValueError("interventions=[] is not valid: give at least one entry ([[]] runs the base alone)")
        object.__setattr__(self, "interventions", tuple(grid))
        for name, values in (("seeds", self.seeds), ("envs", self.envs)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name}={list(values)} is not valid: a value is listed twice")
        if not self.seeds:
            raise ValueError("seeds=[] is not valid: give at least one seed")
        self.runs()  # every run's configuration, checked now

    def base_values(self) -> dict[str, Any]:
        """The base configuration's field values (preset < ``[base]``)."""
        return {**PRESETS[self.preset], **self.base}

    def base_config(self, env: str | None = None, seed: int | None = None) -> BCConfig:
        values = self.base_values()
        values.update({"env": env} if env else {}, **({"seed": seed} if seed is not None else {}))
        return build_config(BCConfig, values, source="[base]")

    def env_ids(self) -> tuple[str, ...]:
        return self.envs or (self.base_config().env,)

    def runs(self) -> list[SweepRun]:
        """Every run, in grid order (env, then interventions, then seed), with its checked config."""
        out = []
        for env in self.env_ids():
            for names in self.interventions:
                values = apply_interventions({**self.base_values(), "env": env}, list(names))
                for name in names:
                    taken = sorted({"env", "seed"} & set(INTERVENTIONS[name].changes))
                    if taken:
                        raise ValueError(f"intervention {name!r} sets {taken[0]}, which the sweep's {taken[0]}s set")
                for seed in self.seeds:
                    run_id = f"{env}__{label(names)}__s{seed}"
                    try:
                        cfg = BCConfig(**{**values, "seed": seed})
                    except ValueError as err:
                        raise ValueError(f"run {run_id}: {err}") from None
                    out.append(SweepRun(run_id, env, names, seed, cfg))
        return out

    def varying_fields(self) -> list[str]:
        """The config fields in which some run differs from the base of its env and seed."""
        changed: set[str] = set()
        bases: dict[tuple[str, int], BCConfig] = {}
        for run in self.runs():
            base = bases.setdefault((run.env, run.seed), self.base_config(run.env, run.seed))
            changed |= {f for f in BCConfig.__dataclass_fields__ if getattr(run.config, f) != getattr(base, f)}
        return [f for f in BCConfig.__dataclass_fields__ if f in changed]
