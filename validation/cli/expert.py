"""``gva expert``: train, select and export, and evaluate the experts of the BC experiments.

* ``gva expert train ENV``   PPO or SAC (``--algo``; the recipes of ``gvaempirics.bc.expert_runs``)
  into a run directory (default ``runs/experts/ENV__ALGO__sSEED``; rerunning the same command
  continues it); with
  ``--export PATH`` the best checkpoint is then exported;
* ``gva expert export ENV --run DIR``  evaluate every checkpoint of a run, export the best robust one,
  and report it on held-out initial conditions;
* ``gva expert eval ENV``    deterministic returns per initial condition and their mean ± sd.

Each subcommand is generated from a frozen dataclass below (flags, ``--config FILE``, checks), and
everything (values, the env id, the run directory and its manifest, output paths) is checked
before anything is created.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from gvaempirics.bc.config import ENV_IDS  # light: no torch
from gvatheory.config import Config, option

from ._args import add_config_arguments, config_from_args
from ._common import add_quiet_argument, emit


@dataclass(frozen=True)
class ExpertEnv(Config):
    """The environment every expert subcommand is about (the ENV argument)."""

    env: str = option("", "gymnasium MuJoCo environment id", choices=ENV_IDS, positional=True, metavar="ENV")


@dataclass(frozen=True)
class ExpertSelection(ExpertEnv):
    """How checkpoints are evaluated and the expert is chosen (``export``, ``train --export``)."""

    ics: int = option(20, "initial conditions each checkpoint is evaluated from", low=1)
    H: int = option(1000, "evaluation horizon H", low=1)
    ic_seed: int = option(0, "seed of the evaluation initial conditions", low=0)
    min_steps: int = option(0, "only consider checkpoints from this many env steps on", low=0)
    heldout_ics: int = option(
        100, "initial conditions the chosen checkpoint is reported on, none used to select it (0: none)", low=0
    )
    heldout_seed: int = option(777, "seed of the held-out initial conditions (must differ from --ic-seed)", low=0)
    note: str = option("", "note stored in the expert's JSON sidecar")

    def check(self) -> None:
        if self.heldout_ics and self.heldout_seed == self.ic_seed:
            raise ValueError(
                f"heldout_seed={self.heldout_seed} is out of range: it must differ from ic_seed={self.ic_seed}"
            )


@dataclass(frozen=True)
class _TrainOptions(ExpertEnv):
    algo: str = option("ppo", "training algorithm (stable-baselines3)", choices=("ppo", "sac"))
    steps: int = option(1_000_000, "total env steps to reach", low=1)
    seed: int = option(1, "training seed", low=0)
    n_envs: int | None = option(None, "parallel envs; none: the recipe's (ppo 4, sac 1)", low=1)
    checkpoint_every: int = option(50_000, "env steps between checkpoints (at least n_envs)", low=1)
    out: str = option(
        "", "run directory; empty: runs/experts/ENV__ALGO__sSEED. An existing one is continued", metavar="DIR"
    )
    export: str = option(
        "", "after training, export the best checkpoint to this expert file (.pt); empty: no export", metavar="PATH"
    )
    trust_run: bool = option(
        False,
        "continue a run whose manifest.json this user's key did not sign (copied from elsewhere, or from before "
        "signatures): its SB3 pickles are loaded, and run any code they hold; only for a run directory whose every "
        "file you trust",
    )


@dataclass(frozen=True)
class ExpertTrainConfig(ExpertSelection, _TrainOptions):
    """``gva expert train``: PPO or SAC with the recipes of :mod:`gvaempirics.bc.expert_runs`, then
    optionally the selection and export of ``gva expert export``."""

    def check(self) -> None:
        super().check()
        if self.checkpoint_every < self.envs:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} is out of range: must be >= n_envs={self.envs}")

    @property
    def envs(self) -> int:
        """``n_envs``, or the recipe's when it is not given."""
        return self.n_envs if self.n_envs is not None else (4 if self.algo == "ppo" else 1)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs/experts") / f"{self.env}__{self.algo}__s{self.seed}"


@dataclass(frozen=True)
class _ExportOptions(ExpertEnv):
    run: str = option("", "run directory written by `gva expert train` (required)", metavar="DIR")
    out: str = option("", "expert file to write; empty: the shipped gvaempirics/bc/shipped/ENV.pt", metavar="PATH")
    seed: int | None = option(
        None, "training seed recorded in the sidecar, checked against the run's manifest; none: the manifest's", low=0
    )


@dataclass(frozen=True)
class ExpertExportConfig(ExpertSelection, _ExportOptions):
    """``gva expert export``: select the best robust checkpoint of a run and export it."""

    def check(self) -> None:
        super().check()
        if not self.run:
            raise ValueError("run='' is not valid: give the run directory written by `gva expert train` (--run DIR)")


@dataclass(frozen=True)
class ExpertEvalConfig(ExpertEnv):
    """``gva expert eval``: deterministic returns of an expert per initial condition."""

    expert: str = option(
        "",
        "expert file (.pt), or the name of a shipped expert (Walker2d-v5-sac); empty: the one shipped for ENV",
        metavar="PATH",
    )
    ics: int = option(20, "initial conditions", low=1)
    H: int = option(1000, "horizon H", low=1)
    ic_seed: int = option(0, "seed of the initial conditions", low=0)
    json: bool = option(False, "print JSON instead of a table")


def register(subparsers) -> None:
    p = subparsers.add_parser("expert", help="train, export and evaluate MuJoCo experts")
    sub = p.add_subparsers(dest="expert_command", metavar="SUBCOMMAND", required=True)

    t = sub.add_parser(
        "train",
        help="train (or continue) a PPO or SAC expert",
        description="Train PPO or SAC with the recipes of gvaempirics.bc.expert_runs into a run directory; an "
        "existing one (same env, algorithm, seed and n_envs) is continued from its newest checkpoint. SB3 checkpoints "
        "are pickles, so they are loaded only from a run whose manifest.json is signed with this user's key "
        "(kept outside run directories: $GVA_KEY_FILE, else ~/.config/gva/run-key) and lists their SHA-256; "
        "--trust-run vouches for a run without that signature.",
    )
    add_quiet_argument(t)
    add_config_arguments(t, ExpertTrainConfig)
    t.set_defaults(func=_train)

    x = sub.add_parser(
        "export",
        help="select the best robust checkpoint of a run and export it",
        description="Evaluate every checkpoint of a run directory written by `gva expert train` and "
        "export the best robust one as a state dict + JSON sidecar. Export reads the plain-tensor policy "
        "files (expert_<N>_steps.pt) and the JSON manifest only, never SB3's pickles; a checkpoint file not "
        "listed with its SHA-256 in the run's manifest.json is refused.",
    )
    add_quiet_argument(x)
    add_config_arguments(x, ExpertExportConfig)
    x.set_defaults(func=_export)

    e = sub.add_parser("eval", help="deterministic returns of an expert per initial condition")
    add_config_arguments(e, ExpertEvalConfig)
    e.set_defaults(func=_eval)


def _relative(path: str | Path, run: Path) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(run))


def command_line(subcommand: str, cfg: ExpertSelection, run: Path) -> str:
    """The ``gva expert`` command that reproduces ``cfg`` when typed inside the run directory
    ``run``: every path relative to it (never an absolute path of this machine), every value that
    differs from its default spelled out, no ``--config`` file."""
    parts = ["gva", "expert", subcommand, cfg.env]
    paths = {"run": ".", "out": "."} if subcommand == "export" else {"out": "."}
    if subcommand == "export":
        paths["out"] = _relative(cfg.out, run) if cfg.out else ""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in ("env", "trust_run"):  # the trust given to one run is no part of the recipe
            continue
        if f.name in paths:
            value = paths[f.name]
        elif f.name == "export" and value:
            value = _relative(value, run)
        if value == f.default or value in ("", None):
            continue
        parts += [f"--{f.name.replace('_', '-')}", str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _do_export(cfg: ExpertSelection, run: Path, dest: Path, command: str, seed: int | None, quiet: bool) -> int:
    from gvaempirics.bc.experts import export

    info = export(
        cfg.env,
        run,
        dest,
        ics=cfg.ics,
        H=cfg.H,
        ic_seed=cfg.ic_seed,
        min_steps=cfg.min_steps,
        command=command,
        train_seed=seed,
        note=cfg.note,
        heldout_ics=cfg.heldout_ics,
        heldout_seed=cfg.heldout_seed,
        quiet=quiet,
    )
    ev, ho = info["eval"], info["heldout"]
    held = (
        {
            "held-out return": f"{ho['return_mean']:.1f} ± {ho['return_sd']:.1f} over {ho['n_ics']} ICs "
            f"(seed {ho['ic_seed']}), {ho['falls']} falls: the expert's figure"
        }
        if ho
        else {}
    )
    emit(
        info["candidates"],
        as_json=False,
        title=f"{cfg.env}: checkpoints of {run}",
        extra={
            "exported": f"{dest} ({info['checkpoint']})",
            "return": f"{ev['return_mean']:.1f} ± {ev['return_sd']:.1f} over the {ev['n_ics']} selection ICs, "
            f"H={ev['horizon']} (biased upward by the selection)",
            "falls": f"{ev['falls']} of {ev['n_ics']}",
            "forward distance": f"{ev['distance_mean']:.1f} m (mean over the ICs)",
            **held,
        },
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    cfg = config_from_args(ExpertTrainConfig, args)
    from gvaempirics.bc.expert_runs import check_train_run, train
    from gvaempirics.rundir import check_creatable

    run = cfg.run_dir
    check_train_run(  # before anything is created
        cfg.env, run, seed=cfg.seed, n_envs=cfg.envs, trust=cfg.trust_run, algorithm=cfg.algo
    )
    if cfg.export:
        check_creatable(Path(cfg.export), "export")
    steps = train(
        cfg.env,
        run,
        steps=cfg.steps,
        seed=cfg.seed,
        n_envs=cfg.envs,
        checkpoint_every=cfg.checkpoint_every,
        quiet=args.quiet,
        trust=cfg.trust_run,
        algorithm=cfg.algo,
    )
    print(f"{cfg.env}: {steps} env steps in {run}")
    if not cfg.export:
        return 0
    return _do_export(cfg, run, Path(cfg.export), command_line("train", cfg, run), cfg.seed, args.quiet)


def _export(args: argparse.Namespace) -> int:
    cfg = config_from_args(ExpertExportConfig, args)
    from gvaempirics.bc.expert_runs import verified_checkpoints
    from gvaempirics.bc.experts import SHIPPED_DIR
    from gvaempirics.rundir import check_creatable

    run = Path(cfg.run)
    dest = check_creatable(Path(cfg.out) if cfg.out else SHIPPED_DIR / f"{cfg.env}.pt", "out")
    verified_checkpoints(cfg.env, run, min_steps=cfg.min_steps)  # before any evaluation
    return _do_export(cfg, run, dest, command_line("export", cfg, run), cfg.seed, args.quiet)


def _eval(args: argparse.Namespace) -> int:
    cfg = config_from_args(ExpertEvalConfig, args)
    from gvaempirics.bc.experts import evaluate, load_expert

    expert, _ = load_expert(cfg.env, cfg.expert)
    ev = evaluate(cfg.env, expert, ics=cfg.ics, H=cfg.H, ic_seed=cfg.ic_seed)
    rows = [
        {"ic": i, "return": float(r), "length": int(n), "distance": float(x)}
        for i, (r, n, x) in enumerate(zip(ev.returns, ev.lengths, ev.distances))
    ]
    emit(
        rows,
        as_json=cfg.json,
        title=f"{cfg.env}: deterministic expert returns and forward distance (m), H={cfg.H}",
        extra={
            "return mean": ev.mean,
            "return sd": ev.sd,
            "falls": f"{ev.falls} of {len(rows)}",
            "distance mean": ev.distance,
        },
    )
    return 0
