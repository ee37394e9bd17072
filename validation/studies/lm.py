"""Study: butterfly effects in greedy generation and their cure by EMA (paper Sec. 4.2, Fig. 4, R5).

Prediction: between neighbouring iterates of constant-learning-rate training the validation
loss barely moves, yet greedy continuations of a fixed prompt set change (argmax flips that the
closed loop carries forward); an EMA of the iterates, or decaying the learning rate, removes
most of those changes, the EMA without decay reaches a validation loss no higher than the
decayed schedule, and it agrees with the teacher no less than the raw iterate. Measured over
seeds on a student of a fixed transformer teacher (so continuations are also scored exactly
against the teacher's), each seed trained twice: constant LR (raw and EMA weights) and
cosine-to-zero LR.

Each verdict is its rule in :mod:`validation.registry` (keys ``lm/...``), decided by
:func:`decide` on the per-seed numbers (:class:`SeedMeasures`): the training seed is the unit,
single quantities get a Student t interval over seeds, raw against EMA (or constant against
cosine, same seed) a paired t interval. At 3-5 seeds no bootstrap covers its level.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from gvatheory.inference import Interval, Region, mean_interval, paired_interval, smallest_effect
from validation.registry import rule
from validation.report import Section, Verdict, markdown_table

SCHEDULES = ("constant", "cosine")
POWER = 0.8  # the power at which the page states the smallest decidable effect
# The full budget's seeds, sized before its runs from the quick budget's stated power: the teacher
# agreement difference needs about 8 seeds, the loss difference about 6 (docs/lm.md).
FULL_SEEDS = 8


@dataclass(frozen=True)
class SeedMeasures:
    """The per-seed numbers the verdicts are decided on: one entry per training seed, same order
    in every field. "EMA" is the run's stabilizer; "decay" the cosine-LR run of the same seed."""

    changed_raw: np.ndarray  # constant LR, raw: fraction of (prompt, consecutive pair) comparisons that change
    changed_ema: np.ndarray  # constant LR, EMA: the same fraction
    changed_decay: np.ndarray  # cosine LR, raw: the same fraction
    fluctuation: np.ndarray  # constant LR, raw: mean |delta val loss| between neighbouring zoom iterates
    decrease: np.ndarray  # constant LR, raw: initial - best validation loss (nats), > 0
    loss_ema: np.ndarray  # constant LR, EMA: final validation loss (nats)
    loss_decay: np.ndarray  # cosine LR, raw: final validation loss (nats)
    task_raw: np.ndarray  # constant LR, raw: final token accuracy against the teacher, in [0, 1]
    task_ema: np.ndarray  # constant LR, EMA: the same accuracy

    def __post_init__(self) -> None:
        n = None
        for f in fields(self):
            a = np.asarray(getattr(self, f.name), dtype=float).reshape(-1)
            if not np.isfinite(a).all():
                raise ValueError(f"{f.name} holds non-finite values: every seed needs a finite measurement")
            if n is not None and len(a) != n:
                raise ValueError(f"{f.name} has {len(a)} seeds, changed_raw has {n}: one entry per seed in every field")
            n = len(a) if n is None else n
            object.__setattr__(self, f.name, a)
        if n == 0:
            raise ValueError("changed_raw is empty: the study needs at least one seed")
        for name in ("changed_raw", "changed_ema", "changed_decay", "task_raw", "task_ema"):
            a = getattr(self, name)
            if ((a < 0) | (a > 1)).any():
                raise ValueError(f"{name}={a.tolist()} is out of range: a fraction must be in [0, 1]")
        if (self.decrease <= 0).any():
            raise ValueError(f"decrease={self.decrease.tolist()} must be positive: the loss never fell below its start")

    @property
    def n(self) -> int:
        return len(self.changed_raw)


@dataclass(frozen=True)
class Measured:
    """One rule's interval, the unit values it was computed from (per-seed values or paired
    differences) and how they read on the page."""

    key: str
    interval: Interval
    units: np.ndarray
    detail: str

    @property
    def sd(self) -> float:
        return float(self.units.std(ddof=1)) if len(self.units) > 1 else math.nan


def _seeds(x: np.ndarray, fmt: str = ".3f") -> str:
    return ", ".join(f"{v:{fmt}}" for v in x)


def measure(m: SeedMeasures) -> list[Measured]:
    """Each ``lm/...`` rule's measured quantity as its registry entry declares it (unit: seeds)."""
    ratio = m.fluctuation / m.decrease
    d_ema, d_dec = m.changed_ema - m.changed_raw, m.changed_decay - m.changed_raw
    d_loss, d_task = m.loss_ema - m.loss_decay, m.task_ema - m.task_raw
    return [
        Measured(
            "lm/continuations-change",
            mean_interval(m.changed_raw),
            m.changed_raw,
            f"raw fraction changed per seed: {_seeds(m.changed_raw)}",
        ),
        Measured(
            "lm/loss-barely-moves",
            mean_interval(ratio),
            ratio,
            f"mean |delta val loss| / loss decrease per seed: {_seeds(ratio, '.1e')} "
            f"(decrease {_seeds(m.decrease)} nats)",
        ),
        Measured(
            "lm/ema-fewer-changes",
            paired_interval(m.changed_ema, m.changed_raw),
            d_ema,
            f"raw {m.changed_raw.mean():.3f}, EMA {m.changed_ema.mean():.3f}; EMA - raw per seed: "
            f"{_seeds(d_ema, '+.3f')}",
        ),
        Measured(
            "lm/decay-fewer-changes",
            paired_interval(m.changed_decay, m.changed_raw),
            d_dec,
            f"constant raw {m.changed_raw.mean():.3f}, cosine raw {m.changed_decay.mean():.3f}; cosine - constant "
            f"per seed: {_seeds(d_dec, '+.3f')}",
        ),
        Measured(
            "lm/ema-loss-no-higher",
            paired_interval(m.loss_ema, m.loss_decay),
            d_loss,
            f"EMA constant {m.loss_ema.mean():.4f}, raw cosine {m.loss_decay.mean():.4f} nats; difference per seed: "
            f"{_seeds(d_loss, '+.4f')}",
        ),
        Measured(
            "lm/ema-agrees-with-teacher",
            paired_interval(m.task_ema, m.task_raw),
            d_task,
            f"token accuracy raw {m.task_raw.mean():.3f}, EMA {m.task_ema.mean():.3f}; EMA - raw per seed: "
            f"{_seeds(d_task, '+.3f')}",
        ),
    ]


def edge_distance(estimate: float, region: Region) -> float:
    """How far ``estimate`` lies from the nearest finite edge of ``region``: the effect that the
    interval has to resolve for the rule to decide."""
    return min(abs(estimate - e) for e in (region.low, region.high) if math.isfinite(e))


def seeds_needed(sd: float, distance: float, *, most: int = 1000) -> int | None:
    """The fewest seeds whose :func:`smallest_effect` at the unit spread ``sd`` is at most
    ``distance``; ``None`` if more than ``most`` (or the spread is unknown)."""
    if not (math.isfinite(sd) and distance > 0):
        return None
    if sd == 0:
        return 2
    return next((n for n in range(2, most + 1) if smallest_effect(sd, n, power=POWER) <= distance), None)


def decide(m: SeedMeasures) -> list[Verdict]:
    """The study's verdicts from its per-seed numbers, each by its registry rule, in registry order;
    each detail ends with the smallest effect the seeds decide (80% power, the observed spread)."""
    out = []
    for q in measure(m):
        effect = smallest_effect(q.sd, q.interval.n, power=POWER)
        power = (
            f"decides an effect of {effect:.3g} from the edge at {POWER:.0%} power (sd {q.sd:.3g}, n {q.interval.n})"
        )
        out.append(rule(q.key).decide(q.interval, f"{q.detail}; {power}"))
    return out


def power_table(m: SeedMeasures) -> str:
    """The page's power statement: per rule, the seeds' spread, the smallest effect they decide at
    80% power, how far the estimate lies from the region's edge, and the seeds that distance needs."""
    rows = []
    for q in measure(m):
        effect = smallest_effect(q.sd, q.interval.n, power=POWER)
        r = rule(q.key)
        dist = edge_distance(q.interval.estimate, r.region)
        need = seeds_needed(q.sd, dist)
        need = None if need is None else max(need, r.min_n)  # the rule decides nothing below its minimum
        rows.append(
            {
                "rule": f"`{q.key}`",
                "seeds": q.interval.n,
                "sd over seeds": q.sd,
                f"smallest decidable effect ({POWER:.0%} power)": effect,
                "estimate's distance to the edge": dist,
                "seeds that distance needs": need if need is not None else "> 1000",
            }
        )
    return markdown_table(rows)


def _train(args: tuple[str, int, str, str, bool]) -> dict:
    from gvaempirics.lm.config import LMConfig, preset
    from gvaempirics.lm.train import train

    name, seed, schedule, out, quiet = args
    return train(LMConfig(**preset(name, seed=seed, schedule=schedule)), Path(out), quiet=quiet)


def run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Section:
    from gvaempirics.lm.config import LMConfig, preset
    from gvaempirics.lm.plots import bifurcations, plot_bifurcations, plot_losses
    from gvaempirics.lm.results import load_result
    from validation.report import save_figure

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    name, n_seeds = ("reproduce", 3) if quick else ("quick", FULL_SEEDS)
    seeds = [seed + 1 + k for k in range(n_seeds)]
    jobs = [(name, s, sched, str(outdir / f"s{s}" / sched), True) for s in seeds for sched in SCHEDULES]
    # one thread per run (the presets' setting), as many runs at once as there are cores
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    if not quiet:
        print(f"[lm] {len(jobs)} runs ({n_seeds} seeds x {len(SCHEDULES)} schedules), {workers} at a time", flush=True)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_train, jobs))
    summaries = {(s, sched): r for (_, s, sched, _, _), r in zip(jobs, results)}
    cfg = LMConfig(**preset(name, seed=seeds[0]))
    stab = cfg.stabilizer

    def per_seed(schedule: str, weights: str, key: str) -> np.ndarray:
        return np.array([summaries[(s, schedule)][weights].get(key, math.nan) for s in seeds], dtype=float)

    val_raw = [load_result(outdir / f"s{s}" / "constant").val["raw"] for s in seeds]
    measures = SeedMeasures(
        changed_raw=per_seed("constant", "raw", "zoom_changed"),
        changed_ema=per_seed("constant", stab, "zoom_changed"),
        changed_decay=per_seed("cosine", "raw", "zoom_changed"),
        fluctuation=per_seed("constant", "raw", "zoom_val_fluctuation"),
        decrease=np.array([v[0] - v.min() for v in val_raw]),
        loss_ema=per_seed("constant", stab, "final_val_loss"),
        loss_decay=per_seed("cosine", "raw", "final_val_loss"),
        task_raw=per_seed("constant", "raw", "final_task"),
        task_ema=per_seed("constant", stab, "final_task"),
    )
    verdicts = decide(measures)

    res, res_dec = load_result(outdir / f"s{seeds[0]}" / "constant"), load_result(outdir / f"s{seeds[0]}" / "cosine")
    loss_path, bif_path = outdir / "lm_loss.png", outdir / "lm_bifurcations.png"
    save_figure(plot_losses(res, decayed=res_dec, title=f"preset {name}, seed {seeds[0]}"), loss_path)
    rows = bifurcations(res)
    save_figure(plot_bifurcations(rows), bif_path)
    n_pairs = sum(len(z) - 1 for z in res.zoom_windows()) * cfg.n_prompts

    def cell(schedule: str, weights: str, key: str) -> str:
        x = per_seed(schedule, weights, key)
        return f"{x.mean():.4g} ± {x.std(ddof=1):.2g}" if np.isfinite(x).all() else "-"

    # teacher agreement sits beside the change fraction: fewer changes are worth little if the
    # continuations that stay put agree less with the teacher
    columns = {
        "final val loss": "final_val_loss",
        "zoom: mean abs. change of val loss": "zoom_val_fluctuation",
        "zoom: fraction changed": "zoom_changed",
        "final token accuracy vs teacher": "final_task",
        f"exact-match length vs teacher, final (of {cfg.H})": "final_exact_match",
        "exact-match length, mean over zoom iterates": "zoom_exact_match",
        "zoom: norm. edit distance": "zoom_edit",
    }
    table = ["| weights | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    for schedule, weights, label in (
        ("constant", "raw", "raw, constant LR"),
        ("constant", stab, "EMA, constant LR"),
        ("cosine", "raw", "raw, cosine LR"),
        ("cosine", stab, "EMA, cosine LR"),
    ):
        table.append(f"| {label} | " + " | ".join(cell(schedule, weights, k) for k in columns.values()) + " |")
    body = "\n".join(
        [
            f"Preset `{name}`{' (a shortened version of the documented `quick` preset)' if quick else ''}, "
            f"seeds {seeds}: {cfg.steps} AdamW steps, a {cfg.n_layer}-layer width-{cfg.n_embd} student of a fixed "
            f"random transformer teacher that reads its last few tokens (the teacher's own validation loss, the "
            f"floor: {summaries[(seeds[0], 'constant')].get('val_floor', float('nan')):.4f}), {cfg.n_prompts} "
            f"prompts, greedy continuations of H = {cfg.H}, zoom windows {list(cfg.zoom_windows)} of "
            f"{cfg.zoom_length} consecutive iterates ({n_pairs} (prompt, consecutive pair) comparisons per run); "
            f"EMA: power schedule alpha = {cfg.alpha}, gamma_min = {cfg.gamma_min}. Decayed: the same run with "
            f"cosine-to-zero LR. Mean ± sd over seeds:",
            "",
            *table,
            "",
            f"Neighbouring iterates whose greedy continuations part ways (raw weights, seed {seeds[0]}): "
            f"{len(rows)} shown in the table figure.",
            "",
            f"Power: with {n_seeds} seeds and the spread they show, each rule decides a true effect (the distance "
            f"of the quantity from its region's edge) of at least the size below with {POWER:.0%} probability "
            "(`gvatheory.inference.smallest_effect`); where the estimate lies closer to the edge than that, the "
            "last column says how many seeds would decide it at the same spread.",
            "",
            power_table(measures),
        ]
    )
    return Section(
        key="lm",
        title="Language model: butterfly effects in greedy generation over seeds (Fig. 4, R5)",
        body=body,
        verdicts=verdicts,
        figures=[loss_path, bif_path],
    )
