"""``gva diagnose``: GVA diagnostics for anyone's checkpoints.

Rolls out every checkpoint of a folder (any torch policy, built by a user factory) on any
gymnasium environment, or through a user rollout function, from the same seeded initial
conditions; prints the oscillation index and flip rate with bootstrap CIs, how many initial
conditions rank neighbouring checkpoints, and what averaging the last k checkpoints' weights
scores; writes ``diagnosis.json`` and ``diagnosis.png``. See ``docs/diagnose.md``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from gvatheory.config import Config, option, to_dict

from ._args import add_config_arguments, config_from_args
from ._common import add_quiet_argument, emit


@dataclass(frozen=True)
class DiagnoseConfig(Config):
    """What to diagnose, on which initial conditions, and where the results go."""

    checkpoints: str = option(
        "",
        "folder of checkpoints (*.pt/*.pth state dicts, ordered by the integer in the name) or a `gva bc train` run",
        positional=True,
    )
    factory: str = option(
        "",
        "policy factory module:function(observation_space=, action_space=) -> nn.Module "
        "(default for a BC run: gvaempirics.diagnose:bc_imitator)",
        metavar="MODULE:FUNCTION",
    )
    env: str = option("", "gymnasium environment id (default for a BC run: its env)", metavar="ENV_ID")
    rollout: str = option(
        "", "instead of --env: module:function(policy, seeds) -> one return per seed", metavar="MODULE:FUNCTION"
    )
    ics: int = option(20, "initial conditions (same set for every checkpoint)", low=2, high=10**4)
    H: int = option(1000, "rollout horizon H (at most H steps per episode)", low=1, high=10**6)
    seed: int = option(0, "seed of the initial conditions (SeedSequence([seed, 0])) and the bootstrap", low=0)
    average: tuple[int, ...] = option(
        (2, 4, 8), "evaluate the uniform average of the last k checkpoints' weights, for each k", low=2, metavar="K"
    )
    scale: float = option(0.0, "scale of oscillation index and flip rate (0: the range of all returns)", low=0)
    flip_threshold: float = option(0.1, "a flip is a return change above threshold x scale", low=0, low_open=True)
    n_boot: int = option(2000, "bootstrap resamples of the initial conditions", low=100, high=10**6)
    threads: int = option(1, "torch threads", low=1)
    out: str = option("", "folder for diagnosis.json and diagnosis.png (default runs/diagnose/NAME__DIGEST)")
    json: bool = option(False, "print JSON instead of a table")

    def check(self) -> None:
        super().check()
        if not self.checkpoints:
            raise ValueError("checkpoints='' is not valid: give a folder of checkpoints")
        if self.env and self.rollout:
            raise ValueError(f"env={self.env!r} and rollout={self.rollout!r}: give one of them, not both")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "diagnose",
        help="GVA diagnostics for any checkpoints: swings, ICs needed, averaged checkpoints",
        description="Roll out every checkpoint of a folder (any torch policy: --factory module:function builds "
        "its nn.Module) on a gymnasium env (--env) or through a rollout function (--rollout) from the same seeded "
        "initial conditions; report the oscillation index and flip rate with bootstrap CIs, how many initial "
        "conditions rank neighbouring checkpoints, and what the average of the last k checkpoints' weights scores. "
        "Writes OUT/diagnosis.json and OUT/diagnosis.png. See docs/diagnose.md.",
    )
    add_quiet_argument(p)
    add_config_arguments(p, DiagnoseConfig)
    p.set_defaults(func=_diagnose)


def _rows(d) -> list[dict]:
    rows = []
    for i, (name, step) in enumerate(zip(d.names, d.steps)):
        rows.append(
            {
                "checkpoint": name,
                "step": int(step),
                "mean": float(d.mean[i]),
                "ci_low": float(d.mean_ci[i, 0]),
                "ci_high": float(d.mean_ci[i, 1]),
                "ics_needed_vs_prev": float(d.ics_needed[i - 1]) if i else "",
            }
        )
    for a in d.averages:
        rows.append(
            {
                "checkpoint": f"average of last {a.k}",
                "step": int(d.steps[-1]),
                "mean": a.mean.estimate,
                "ci_low": a.mean.low,
                "ci_high": a.mean.high,
                "ics_needed_vs_prev": "",
            }
        )
    return rows


def _best(d) -> str:
    """The best checkpoint by mean return, and the ICs needed to rank it above the runner-up."""
    import numpy as np

    from gvaempirics.diagnose import ics_needed

    best, runner = np.argsort(d.mean)[::-1][:2]
    n = ics_needed(d.returns[[runner, best]])[2][0]
    return (
        f"{d.names[best]} (mean {d.mean[best]:.6g}; ahead of {d.names[runner]} ({d.mean[runner]:.6g}), "
        f"which takes {n:.3g} ICs to resolve)"
    )


def _diagnose(args: argparse.Namespace) -> int:
    cfg = config_from_args(DiagnoseConfig, args)  # checked before any work
    from gvaempirics.rundir import atomic_write_bytes, check_creatable, default_run_dir

    name = Path(cfg.checkpoints).resolve().name or "checkpoints"
    what = {k: v for k, v in to_dict(cfg).items() if k not in ("out", "json", "threads")}  # what the numbers depend on
    out = Path(cfg.out) if cfg.out else default_run_dir("diagnose", name, what)
    check_creatable(out, "out", folder=True)
    import torch

    from gvaempirics.diagnose import diagnose, plot_diagnosis
    from validation.report import save_figure

    torch.set_num_threads(cfg.threads)
    d = diagnose(
        cfg.checkpoints,
        factory=cfg.factory or None,
        env=cfg.env or None,
        rollout=cfg.rollout or None,
        ics=cfg.ics,
        H=cfg.H,
        seed=cfg.seed,
        average=cfg.average,
        scale=cfg.scale or None,
        flip_threshold=cfg.flip_threshold,
        n_boot=cfg.n_boot,
        quiet=args.quiet or cfg.json,
    )
    json_path = atomic_write_bytes(out / "diagnosis.json", d.to_json().encode())
    fig_path = save_figure(plot_diagnosis(d), out / "diagnosis.png")
    skipped = [k for k in d.settings["average"] if k > len(d.names)]
    level = f"{d.confidence:.0%} CI"
    extra = {
        "initial conditions": f"{d.n_ic} (reset seeds from SeedSequence([{cfg.seed}, 0]))",
        "scale": f"{d.scale:.6g} ({'range of all returns' if d.scale_source == 'range' else 'given'})",
        f"oscillation index [{level}]": str(d.oscillation),
        f"flip rate [{level}] (|change| > {d.flip_threshold:g} x scale)": str(d.flip_rate),
        "ICs needed to rank neighbours (median)": f"{d.ics_needed_median:.3g}",
        f"pairs resolved with {d.n_ic} ICs": f"{d.resolvable_fraction:.0%}",
        "best checkpoint": _best(d),
    }
    for a in d.averages:
        extra[f"average of last {a.k} minus last [{level}]"] = str(a.gain)
    if skipped:
        extra["averages skipped"] = f"k = {', '.join(map(str, skipped))} (only {len(d.names)} checkpoints)"
    extra["written"] = f"{json_path}, {fig_path}"
    source = cfg.env or d.settings["env"] or cfg.rollout
    if cfg.json:  # the document written to diagnosis.json
        print(d.to_json(), end="")
        return 0
    emit(_rows(d), as_json=False, title=f"{cfg.checkpoints}: {len(d.names)} checkpoints on {source}", extra=extra)
    return 0
