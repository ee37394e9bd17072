"""The sweep specification: a base configuration crossed with interventions, seeds and envs.

A spec file (TOML or JSON) holds ``preset`` and a ``[base]`` table of
:class:`~gvaempirics.bc.config.BCConfig` overrides (the base configuration), and the grid:
``interventions`` (a list of composed lists of names from
:data:`~gvaempirics.bc.interventions.INTERVENTIONS`; ``[]`` is the base itself), ``seeds`` and
``envs``. :class:`SweepSpec` checks all of it on creation, every run's configuration included
(runs differ from their grid entry's only in the seed, so one configuration per entry and env
checks them all), so that a spec that exists can run to the end.
"""

from __future__ import annotations

import dataclasses
import math
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
            apply_interventions({}, list(entry))  # names known, none twice, no conflict: the one rule
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
        for env in self.env_ids():  # every run's configuration, checked now
            for names in self.interventions:
                self._entry_config(env, names, self.seeds[0])

    def _entry_config(self, env: str, names: tuple[str, ...], seed: int) -> BCConfig:
        """The checked configuration of one run; errors name the run."""
        values = apply_interventions({**self.base_values(), "env": env}, list(names))
        for name in names:
            taken = sorted({"env", "seed"} & set(INTERVENTIONS[name].changes))
            if taken:
                raise ValueError(f"intervention {name!r} sets {taken[0]}, which the sweep's {taken[0]}s set")
        try:
            return BCConfig(**{**values, "seed": seed})
        except ValueError as err:
            raise ValueError(f"run {env}__{label(names)}__s{seed}: {err}") from None

    def size(self) -> int:
        """The number of runs of the grid."""
        return len(self.env_ids()) * len(self.interventions) * len(self.seeds)

    def base_values(self) -> dict[str, Any]:
        """The base configuration's field values (preset < ``[base]``)."""
        return {**PRESETS[self.preset], **self.base}

    def base_config(self, env: str | None = None, seed: int | None = None) -> BCConfig:
        values = self.base_values()
        values.update({"env": env} if env else {}, **({"seed": seed} if seed is not None else {}))
        return build_config(BCConfig, values, source="[base]")

    def env_ids(self) -> tuple[str, ...]:
        return self.envs or (self.base_config().env,)

    def runs(self, *, progress: bool = False) -> list[SweepRun]:
        """Every run, in grid order (env, then interventions, then seed), with its checked config;
        built once per spec (``progress``: a bar while a large grid is built)."""
        cached = self.__dict__.get("_runs")
        if cached is None:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.size(), desc="sweep runs", unit="run", disable=not progress or self.size() < 2000)
            cached = []
            for env in self.env_ids():
                for names in self.interventions:
                    for seed in self.seeds:
                        cfg = self._entry_config(env, names, seed)
                        cached.append(SweepRun(f"{env}__{label(names)}__s{seed}", env, names, seed, cfg))
                        bar.update(1)
            bar.close()
            object.__setattr__(self, "_runs", cached)  # frozen: the grid never changes
        return list(cached)

    def varying_fields(self) -> list[str]:
        """The config fields in which some run differs from the base of its env and seed."""
        # seeds change the seed field only, in a run and in its base alike: the first seed's runs say it all
        changed: set[str] = set()
        for env in self.env_ids():
            base = self.base_config(env, self.seeds[0])
            for names in self.interventions:
                cfg = self._entry_config(env, names, self.seeds[0])
                changed |= {f for f in BCConfig.__dataclass_fields__ if getattr(cfg, f) != getattr(base, f)}
        return [f for f in BCConfig.__dataclass_fields__ if f in changed]


def grid_size(values: dict[str, Any]) -> int:
    """The number of runs a spec's raw ``values`` ask for, before anything is checked (0 where
    the grid's lists are malformed: the spec's own check names them), so that a grid nobody
    means (a typo in ``seeds``) is refused before its runs are built."""
    sizes = []
    for key, default in (("envs", ()), ("interventions", ((),)), ("seeds", (1,))):
        value = values.get(key, default)
        if not isinstance(value, (list, tuple)):
            return 0
        sizes.append(max(len(value), 1) if key == "envs" else len(value))
    return math.prod(sizes)
