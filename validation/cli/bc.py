"""``gva bc``: behavior-cloning experiments (paper Section 3, Figure 1).

* ``gva bc demos``  collect and cache the expert demonstrations of a configuration, once;
* ``gva bc train``  train an imitator with raw and stabilized weights evaluated side by side
  (``--demos PATH`` reuses a cache; ``--intervention NAME`` applies a named change, repeatable);
* ``gva bc eval RUN`` / ``gva bc plot RUN``  GVA indices and the Figure-1 plot of a run directory;
* ``gva bc interventions``  the registry of named interventions (paper Figures 2 and 3);
* ``gva bc landscape RUN --step N``  reward and loss landscape around a checkpoint (Figure 1 right);
* ``gva bc posthoc RUN``  rollout reward of post-hoc EMAs against their width, for runs trained with
  ``--stabilizer posthoc``;
* ``gva bc flips RUN``  flip rate against distance in weight space around a checkpoint, and its power law.

Every command is generated from a frozen dataclass; a preset, its interventions, a ``--config``
file and flags combine as preset < interventions < file < flags, and everything is checked before
any work starts.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from gvaempirics.bc.interventions import GROUPS
from gvatheory.config import Config, option

from ._args import add_config_arguments, config_from_args
from ._common import add_quiet_argument, emit, format_table


@dataclass(frozen=True)
class RunInput(Config):
    """A behavior-cloning run directory to read."""

    run: str = option("", "run directory written by `gva bc train`", positional=True)
    json: bool = option(False, "print JSON instead of a table")

    def check(self) -> None:
        if not self.run:
            raise ValueError("run='' is not valid: give a run directory")


@dataclass(frozen=True)
class PlotInput(RunInput):
    """A run directory to plot, and where the figure goes."""

    out: str = option("", "image path (.png/.pdf/.svg; default RUN/figure1.png)")


@dataclass(frozen=True)
class InterventionList(Config):
    """Which interventions to list."""

    group: str = option("", "list only this group", choices=("",) + GROUPS, metavar="{" + ",".join(GROUPS) + "}")
    json: bool = option(False, "print JSON instead of a table")


@dataclass(frozen=True)
class LandscapeInput(RunInput):
    """A checkpoint of a run directory and the grid of its reward landscape."""

    step: int = option(-1, "checkpointed step (-1: the newest checkpoint)", low=-1)
    extent: float = option(
        5.0, "the grid spans [-extent, extent] optimizer steps along each gradient", low=0.0, low_open=True
    )
    points: int = option(
        11, "grid points along each direction (odd, so that the centre is the checkpoint)", low=3, high=1001
    )
    seed: int = option(0, "seed of the two minibatch gradients", low=0)
    step_unit: str = option(
        "auto",
        "the grid's unit: auto = the run's own optimizer step (Adam: eta g / (sqrt(v_hat) + eps); SGD: eta g), "
        "plain = eta g, preconditioned = the Adam step (Adam/AdamW runs)",
        choices=("auto", "plain", "preconditioned"),  # gvaempirics.bc.landscape.STEP_UNITS, without importing torch
    )
    threads: int = option(0, "torch and MuJoCo threads (0: the run's own)", low=0)
    out: str = option("", "image path (.png/.pdf/.svg; default RUN/landscape_step_N.png)")

    def check(self) -> None:
        super().check()
        if self.points % 2 == 0:
            raise ValueError(f"points={self.points} is not valid: must be odd, so that the centre is the checkpoint")


@dataclass(frozen=True)
class PosthocInput(RunInput):
    """A run trained with ``--stabilizer posthoc``, the EMA widths to synthesize, and where the results go."""

    sigma_rels: tuple[float, ...] = option(
        (0.01, 0.02, 0.05, 0.1, 0.2), "relative EMA widths to synthesize", low=0.0, high=12**-0.5, low_open=True
    )  # gvaempirics.bc.posthoc.DEFAULT_SIGMA_RELS; 12**-0.5: the uniform average
    iterates: str = option(
        "zoom",
        "synthesize at every zoom iterate, or at every snapshot time (runs trained without zoom snapshots)",
        choices=("zoom", "snapshots"),
    )
    threads: int = option(0, "torch and MuJoCo threads (0: the run's own)", low=0)
    out: str = option("", "folder for posthoc.json and posthoc.png (default RUN)")

    def check(self) -> None:
        super().check()
        if not self.sigma_rels:
            raise ValueError("sigma_rels=() is not valid: give at least one relative width")


@dataclass(frozen=True)
class FlipsInput(RunInput):
    """A checkpoint of a run directory and the points of its flip-distance curve."""

    step: int = option(-1, "checkpointed step (-1: the newest at or before the first zoom window)", low=-1)
    distances: tuple[float, ...] = option(
        (1e-4, 3.16e-4, 1e-3, 3.16e-3, 0.01, 0.0316, 0.1, 0.316, 1.0, 3.16, 10.0),
        "distances in optimizer steps (the length of the step that produced the checkpoint)",
        low=0.0,
        low_open=True,
    )  # gvaempirics.bc.flips.DEFAULT_DISTANCES, rounded, without importing torch
    directions: int = option(8, "directions of each kind (minibatch noise, random)", low=1, high=10_000)
    seed: int = option(0, "seed of the directions", low=0)
    threads: int = option(0, "torch and MuJoCo threads (0: the run's own)", low=0)
    out: str = option("", "folder for flips_step_N.json and .png (default RUN)")

    def check(self) -> None:
        super().check()
        if len(self.distances) < 2:
            raise ValueError(f"distances={list(self.distances)} is not valid: give at least 2 distances")


def _preset_argument(p: argparse.ArgumentParser) -> None:
    from gvaempirics.bc.config import PRESETS

    p.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="named configuration (default quick)")


def register(subparsers) -> None:
    from gvaempirics.bc.config import BCConfig, DemoOptions

    p = subparsers.add_parser("bc", help="behavior cloning: demonstrations, training with stabilizers, GVA figures")
    sub = p.add_subparsers(dest="bc_command", metavar="SUBCOMMAND", required=True)

    d = sub.add_parser(
        "demos",
        help="collect and cache the expert demonstrations of a configuration",
        description="Collect the training and validation demonstrations that `gva bc train` with the "
        "same preset and demonstration settings needs, into one cache file; pass it to `gva bc train "
        "--demos PATH` so that several runs share one collection. Settings: preset < --config < flags.",
    )
    _preset_argument(d)
    d.add_argument(
        "--out", type=Path, default=None, metavar="PATH", help="cache file (default runs/demos/ENV__nN_hH_sSEED.npz)"
    )
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config_arguments(d, DemoOptions)
    add_quiet_argument(d)
    d.set_defaults(func=_demos)

    t = sub.add_parser(
        "train",
        help="train an imitator with raw and stabilized weights evaluated side by side",
        description="Train a BC imitator from expert demonstrations; evaluate raw and stabilized weights every "
        "eval_every steps and at every step of the zoom windows. Settings: preset < --config file < flags. "
        "Rerunning a command continues its run directory; one with other settings gets its own.",
    )
    _preset_argument(t)
    t.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="run directory (default runs/bc/ENV__PRESET__sSEED__DIGEST: one per configuration)",
    )
    t.add_argument(
        "--intervention",
        action="append",
        default=[],
        metavar="NAME",
        help="apply a named intervention to the preset (repeatable, composed in order; "
        "`gva bc interventions` lists them); the config file and flags still override it",
    )
    add_quiet_argument(t)
    add_config_arguments(t, BCConfig)
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="GVA indices of a run directory (raw vs stabilized)")
    add_config_arguments(e, RunInput)
    e.set_defaults(func=_eval)

    pl = sub.add_parser("plot", help="Figure-1-style plot of a run directory")
    add_config_arguments(pl, PlotInput)
    pl.set_defaults(func=_plot)

    iv = sub.add_parser(
        "interventions",
        help="list the named interventions (paper Figures 2 and 3)",
        description="The registry of named changes to a base configuration that `gva bc train --intervention "
        "NAME` applies: grouped, with the fields each sets and why the paper tried it.",
    )
    add_config_arguments(iv, InterventionList)
    iv.set_defaults(func=_interventions)

    la = sub.add_parser(
        "landscape",
        help="reward and loss landscape around a checkpoint (Figure 1 right)",
        description="Roll out the imitator on a grid theta + a d1 + b d2 around a checkpoint (d1, d2: the run's "
        "optimizer steps along two minibatch gradients, in --step-unit; raw and stabilized weights), evaluate the "
        "validation loss there, measure the roughness of both surfaces, save RUN/landscape_step_N.{json,npz} and a "
        "figure.",
    )
    add_config_arguments(la, LandscapeInput)
    add_quiet_argument(la)
    la.set_defaults(func=_landscape)

    ph = sub.add_parser(
        "posthoc",
        help="rollout reward of post-hoc EMAs against their width (runs trained with --stabilizer posthoc)",
        description="Synthesize the power-function EMA of each --sigma-rels width from the run's snapshots at every "
        "zoom iterate, roll it out from the run's initial conditions, and report mean return, its sd over the "
        "iterates, oscillation index and flip rate per width beside the raw iterate's; save posthoc.json and "
        "posthoc.png into the run directory (or --out).",
    )
    add_config_arguments(ph, PosthocInput)
    add_quiet_argument(ph)
    ph.set_defaults(func=_posthoc)

    fl = sub.add_parser(
        "flips",
        help="flip rate against distance in weight space around a checkpoint, and its power law",
        description="Roll out the imitator at theta + r s u around a checkpoint (s: the length of the optimizer step "
        "that produced it; u: unit minibatch-noise and random directions; r: --distances), all points in one batched "
        "evaluator call; report the fraction of (direction, initial condition) whose return moved by more than 0.1 x "
        "the expert's, its mean |delta J|, and the binomial maximum-likelihood power law min(c r^beta, 1); save "
        "flips_step_N.json and a figure into the run directory (or --out).",
    )
    add_config_arguments(fl, FlipsInput)
    add_quiet_argument(fl)
    fl.set_defaults(func=_flips)


def _demos(args: argparse.Namespace) -> int:
    from gvaempirics.bc.config import PRESETS, DemoOptions
    from gvaempirics.bc.data import load_or_make
    from gvaempirics.bc.experts import load_expert
    from gvaempirics.rundir import check_creatable

    names = DemoOptions.__dataclass_fields__
    opts = config_from_args(DemoOptions, args, base={k: v for k, v in PRESETS[args.preset].items() if k in names})
    out = args.out or Path("runs/demos") / f"{opts.env}__n{opts.n_demos}_h{opts.demo_horizon}_s{opts.demo_seed}.npz"
    check_creatable(out, "out")
    expert, info = load_expert(opts.env, opts.expert)
    s = opts.demo_settings()
    demos = load_or_make(out, expert, **s, expert_info=info, quiet=args.quiet)
    rows = [
        {
            "split": name,
            "trajectories": len(tr.lengths),
            "alive steps": int(tr.lengths.sum()),
            "return mean": float(tr.returns.mean()),
            "return sd": float(tr.returns.std()),
            "falls": int((tr.lengths < s["horizon"]).sum()),
        }
        for name, tr in (("train", demos.train), ("val", demos.val))
    ]
    emit(
        rows,
        as_json=args.json,
        title=f"{opts.env}: demonstrations in {out}",
        extra={
            "states": f"{demos.train.states.shape} (obs + previous action)",
            "actions": str(demos.train.actions.shape),
        },
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from gvaempirics.bc.config import PRESETS, BCConfig
    from gvaempirics.bc.interventions import apply_interventions
    from gvaempirics.rundir import default_run_dir
    from gvatheory.config import to_dict

    base = apply_interventions(PRESETS[args.preset], args.intervention)
    cfg = config_from_args(BCConfig, args, base=base)  # checked before any work
    from gvaempirics.bc.train import train_bc

    label = "+".join([args.preset, *args.intervention])
    out = args.out or default_run_dir("bc", f"{cfg.env}__{label}__s{cfg.seed}", to_dict(cfg))
    summary = train_bc(cfg, out, quiet=args.quiet)
    # once trained: a refused or failed command changes nothing (an interrupted one records it on its rerun)
    _record_interventions(Path(out), to_dict(cfg), args.preset, args.intervention)
    _print_summary(summary, out, as_json=False)
    return 0


def _record_interventions(out: Path, config: dict, preset: str, names: list[str]) -> None:
    """``interventions.json`` beside ``config.json``: the preset and the interventions this
    configuration was made from (written only into a run directory holding this configuration)."""
    from gvaempirics.bc.config import defaults as bc_defaults
    from gvaempirics.rundir import RunDir, atomic_write_json

    run = RunDir(out)
    if run.exists() and run.read_config(bc_defaults()) == config:
        atomic_write_json(run.path / "interventions.json", {"preset": preset, "interventions": list(names)})


def _print_summary(summary: dict, run: Path, *, as_json: bool) -> None:
    rows = [{"weights": w, **summary[w]} for w in summary if isinstance(summary[w], dict)]
    emit(rows, as_json=as_json, title=f"{run}: expert return {summary.get('expert_return', float('nan')):.1f}")


def _eval(args: argparse.Namespace) -> int:
    from gvaempirics.bc.results import summarize
    from gvaempirics.rundir import RunDir

    inp = config_from_args(RunInput, args)
    run = RunDir(Path(inp.run))
    run.read_config()  # names a missing run directory
    _print_summary(summarize(run), run.path, as_json=inp.json)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from gvaempirics.bc.plots import plot_figure1
    from gvaempirics.bc.results import load_result
    from gvaempirics.rundir import check_creatable
    from validation.report import save_figure

    inp = config_from_args(PlotInput, args)
    out = check_creatable(Path(inp.out) if inp.out else Path(inp.run) / "figure1.png", "out")
    res = load_result(Path(inp.run))
    if len(res.eval_steps) < 2:
        raise ValueError(f"{inp.run} has fewer than 2 evaluated iterates: nothing to plot yet")
    print(save_figure(plot_figure1(res), out))
    return 0


def _interventions(args: argparse.Namespace) -> int:
    from gvaempirics.bc.interventions import INTERVENTIONS

    inp = config_from_args(InterventionList, args)
    chosen = [iv for iv in INTERVENTIONS.values() if not inp.group or iv.group == inp.group]
    if inp.json:
        emit(
            [{"name": iv.name, "group": iv.group, "changes": iv.changes, "doc": iv.doc} for iv in chosen], as_json=True
        )
        return 0
    for group in GROUPS:
        rows = [{"name": iv.name, "changes": iv.describe(), "doc": iv.doc} for iv in chosen if iv.group == group]
        if rows:
            print(f"{group}:")
            print(format_table(rows, columns=("name", "changes", "doc")))
            print()
    print(f"{len(chosen)} interventions; apply with `gva bc train --intervention NAME` (repeatable)")
    return 0


def _landscape(args: argparse.Namespace) -> int:
    from gvaempirics.bc.landscape import compute_landscape, save_landscape
    from gvaempirics.bc.plots import plot_landscape
    from gvaempirics.rundir import RunDir, check_creatable
    from validation.report import save_figure

    inp = config_from_args(LandscapeInput, args)
    run = RunDir(Path(inp.run))
    run.read_config()  # names a missing run directory
    check_creatable(run.path, "run", folder=True)  # the results go into it: refuse before the work
    if inp.out:
        check_creatable(Path(inp.out), "out")
    res = compute_landscape(
        run,
        inp.step,
        extent=inp.extent,
        points=inp.points,
        seed=inp.seed,
        step_unit=inp.step_unit,
        threads=inp.threads,
        quiet=args.quiet,
    )
    paths = save_landscape(res, run.path)
    figure = save_figure(plot_landscape(res), Path(inp.out) if inp.out else run.path / f"landscape_step_{res.step}.png")
    summary = res.summary()
    rows = [
        {
            "weights": w,
            "surface": kind,
            "centre": summary["centre"][w]["return" if kind == "reward" else "val_loss"],
            "logged": res.logged.get(w, {}).get("return" if kind == "reward" else "val_loss", float("nan")),
            "range": m.range,
            "quad-fit/range": m.quadratic_fit,
            "TV/range": m.tv,
            "jumps>10%": m.jump_fraction,
            "fractal D": m.fractal_dimension,
        }
        for w, ms in res.measures.items()
        for kind, m in ms.items()
    ]
    emit(
        rows,
        as_json=inp.json,
        title=f"{run.path}: landscape at step {res.step}, {len(res.a)}x{len(res.b)} grid over "
        f"[{res.a[0]:g}, {res.a[-1]:g}] {res.unit} (eta={res.eta:.3g})",
        extra={
            "direction norms (raw)": " ".join(f"{x:.3g}" for x in res.direction_norms["raw"]),
            "seconds": res.seconds,
            "saved": " ".join(str(p) for p in (*paths, figure)),
        },
    )
    return 0


def _posthoc(args: argparse.Namespace) -> int:
    from gvaempirics.bc.plots import plot_posthoc
    from gvaempirics.bc.posthoc import check_run, posthoc_sweep, save_posthoc
    from gvaempirics.rundir import check_creatable
    from validation.report import save_figure

    inp = config_from_args(PosthocInput, args)
    check_run(Path(inp.run))  # before the output folder is checked or anything written
    out = check_creatable(Path(inp.out) if inp.out else Path(inp.run), "out", folder=True)
    res = posthoc_sweep(Path(inp.run), inp.sigma_rels, iterates=inp.iterates, threads=inp.threads, quiet=args.quiet)
    paths = (save_posthoc(res, out), save_figure(plot_posthoc(res), out / "posthoc.png"))
    emit(
        res.rows(),
        as_json=inp.json,
        title=f"{inp.run}: post-hoc EMA at {len(res.steps)} {res.iterates} iterates (steps {res.steps[0]}-"
        f"{res.steps[-1]}), expert return {res.expert_return:.1f}",
        extra={"saved": " ".join(str(p) for p in paths)},
    )
    return 0


def _flips(args: argparse.Namespace) -> int:
    from gvaempirics.bc.flips import compute_flip_curve, flips_path, save_flip_curve
    from gvaempirics.bc.plots import plot_flips
    from gvaempirics.rundir import RunDir, check_creatable
    from validation.report import save_figure

    inp = config_from_args(FlipsInput, args)
    run = RunDir(Path(inp.run))
    run.read_config()  # names a missing run directory
    out = check_creatable(Path(inp.out) if inp.out else run.path, "out", folder=True)
    curve = compute_flip_curve(
        run,
        None if inp.step == -1 else inp.step,
        distances=inp.distances,
        n_directions=inp.directions,
        seed=inp.seed,
        threads=inp.threads,
        quiet=args.quiet,
    )
    paths = (
        save_flip_curve(curve, out),
        save_figure(plot_flips(curve), flips_path(out, curve.step).with_suffix(".png")),
    )
    rows = [
        {"kind": k, "r (steps)": float(r), "flip rate": float(f), "mean |dJ|/J*": float(m)}
        for k in curve.returns
        for r, f, m in zip(curve.distances, curve.rate(k), curve.mean_abs_change(k))
    ]
    fits = {k: curve.fit(k) for k in curve.returns}
    emit(
        rows,
        as_json=inp.json,
        title=f"{run.path}: flip rate against distance at step {curve.step} (step length {curve.step_length:.3g})",
        extra={
            **{f"fit ({k})": f"min({f.c:.3g} r^{f.beta:.3g}, 1)" for k, f in fits.items()},
            "seconds": curve.seconds,
            "saved": " ".join(str(p) for p in paths),
        },
    )
    return 0
