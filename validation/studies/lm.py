"""Study: butterfly effects in greedy generation and their cure by EMA (paper Sec. 4.2, Fig. 4, R5).

Prediction: between neighbouring iterates of constant-learning-rate training the validation
loss barely moves, yet greedy continuations of a fixed prompt set change (argmax flips that the
closed loop carries forward); an EMA of the iterates, or decaying the learning rate, removes
most of those changes, and the EMA without decay reaches a validation loss no higher than the
decayed schedule. Measured over seeds on a student of a fixed transformer teacher (so
continuations are also scored exactly against the teacher's), each seed trained twice: constant
LR (raw and EMA weights) and cosine-to-zero LR. Paired differences over seeds get t intervals
(few seeds: a bootstrap would understate the spread).
"""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from validation.report import Section, Verdict

LOSS_MARGIN = 0.005  # nats: a final-loss difference this small is "no higher" (stated before measuring)
SCHEDULES = ("constant", "cosine")


def paired_interval(diff, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences over seeds and its two-sided Student t interval."""
    from scipy import stats

    d = np.asarray(diff, dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, -math.inf, math.inf
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return mean, mean - half, mean + half


def three_way(low: float, high: float, *, below: float) -> str:
    """The outcome of the claim "the quantity is below ``below``" from its interval ``[low, high]``:
    supports if the whole interval is below, contradicts if it is wholly above, else inconclusive."""
    if high <= below:
        return "supports"
    return "contradicts" if low > below else "inconclusive"


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
    name, n_seeds = ("reproduce", 3) if quick else ("quick", 5)
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
        return np.array([summaries[(s, schedule)][weights][key] for s in seeds], dtype=float)

    raw, ema = per_seed("constant", "raw", "zoom_changed"), per_seed("constant", stab, "zoom_changed")
    dec = per_seed("cosine", "raw", "zoom_changed")
    fluct = per_seed("constant", "raw", "zoom_val_fluctuation")
    decrease = np.array(
        [
            (lambda r: float(r.val["raw"][0] - r.val["raw"].min()))(load_result(outdir / f"s{s}" / "constant"))
            for s in seeds
        ]
    )
    loss_ema, loss_dec = per_seed("constant", stab, "final_val_loss"), per_seed("cosine", "raw", "final_val_loss")

    res, res_dec = load_result(outdir / f"s{seeds[0]}" / "constant"), load_result(outdir / f"s{seeds[0]}" / "cosine")
    loss_path, bif_path = outdir / "lm_loss.png", outdir / "lm_bifurcations.png"
    save_figure(plot_losses(res, decayed=res_dec, title=f"preset {name}, seed {seeds[0]}"), loss_path)
    rows = bifurcations(res)
    save_figure(plot_bifurcations(rows), bif_path)

    n_pairs = sum(len(z) - 1 for z in res.zoom_windows()) * cfg.n_prompts
    m_loss, lo_loss, hi_loss = paired_interval(loss_ema - loss_dec)
    m_ema, lo_ema, hi_ema = paired_interval(ema - raw)
    m_dec, lo_dec, hi_dec = paired_interval(dec - raw)
    verdicts = [
        Verdict(
            "constant LR: greedy continuations change between neighbouring iterates while the loss barely "
            "moves (every seed)",
            bool(np.all(raw > 0) and np.all(fluct < 0.01 * decrease)),
            f"fraction of {n_pairs} (prompt, consecutive pair) comparisons that change, per seed: "
            + ", ".join(f"{x:.3f}" for x in raw)
            + "; mean |delta val loss| / loss decrease: "
            + ", ".join(f"{x:.1e}" for x in fluct / decrease),
        ),
        Verdict.of(
            "EMA lowers the fraction of continuations that change between neighbouring iterates "
            "(paired over seeds: EMA - raw < 0)",
            three_way(lo_ema, hi_ema, below=0.0),
            f"raw {raw.mean():.3f} ± {raw.std(ddof=1):.3f}, EMA {ema.mean():.3f} ± {ema.std(ddof=1):.3f} "
            f"(mean ± sd over {n_seeds} seeds); EMA - raw {m_ema:+.3f}, 95% t interval [{lo_ema:+.3f}, {hi_ema:+.3f}]",
        ),
        Verdict.of(
            "learning-rate decay also lowers it at the end of training (cosine raw - constant raw < 0)",
            three_way(lo_dec, hi_dec, below=0.0),
            f"cosine raw {dec.mean():.3f} ± {dec.std(ddof=1):.3f}; difference {m_dec:+.3f}, "
            f"95% t interval [{lo_dec:+.3f}, {hi_dec:+.3f}]",
        ),
        Verdict.of(
            f"the EMA without decay reaches a validation loss no higher than the decayed schedule "
            f"(EMA constant - raw cosine <= {LOSS_MARGIN} nats)",
            three_way(lo_loss, hi_loss, below=LOSS_MARGIN),
            f"EMA constant {loss_ema.mean():.4f} ± {loss_ema.std(ddof=1):.4f}, raw cosine "
            f"{loss_dec.mean():.4f} ± {loss_dec.std(ddof=1):.4f}; difference {m_loss:+.4f}, 95% t interval "
            f"[{lo_loss:+.4f}, {hi_loss:+.4f}]",
        ),
    ]

    def cell(schedule: str, weights: str, key: str) -> str:
        x = per_seed(schedule, weights, key)
        return f"{x.mean():.4g} ± {x.std(ddof=1):.2g}" if np.isfinite(x).all() else "-"

    keys = ("final_val_loss", "zoom_val_fluctuation", "zoom_changed", "zoom_edit", "zoom_exact_match", "final_task")
    table = [
        "| weights | final val loss | zoom: mean abs. change of val loss | zoom: fraction changed | "
        "zoom: norm. edit distance | zoom: exact-match length vs teacher (of H) | final token accuracy vs teacher |",
        "|" + " --- |" * 7,
    ]
    for schedule, weights, label in (
        ("constant", "raw", "raw, constant LR"),
        ("constant", stab, "EMA, constant LR"),
        ("cosine", "raw", "raw, cosine LR"),
        ("cosine", stab, "EMA, cosine LR"),
    ):
        table.append(f"| {label} | " + " | ".join(cell(schedule, weights, k) for k in keys) + " |")
    body = "\n".join(
        [
            f"Preset `{name}`{' (a shortened version of the documented `quick` preset)' if quick else ''}, "
            f"seeds {seeds}: {cfg.steps} AdamW steps, a {cfg.n_layer}-layer width-{cfg.n_embd} student of a fixed "
            f"random transformer teacher that reads its last few tokens (the teacher's own validation loss, the "
            f"floor: {summaries[(seeds[0], 'constant')].get('val_floor', float('nan')):.4f}), {cfg.n_prompts} "
            f"prompts, greedy continuations of H = {cfg.H}, zoom windows {list(cfg.zoom_windows)} of "
            f"{cfg.zoom_length} consecutive iterates; EMA: power schedule alpha = {cfg.alpha}, gamma_min = "
            f"{cfg.gamma_min}. Decayed: the same run with cosine-to-zero LR. Mean ± sd over seeds:",
            "",
            *table,
            "",
            f"Neighbouring iterates whose greedy continuations part ways (raw weights, seed {seeds[0]}): "
            f"{len(rows)} shown in the table figure.",
        ]
    )
    return Section(
        key="lm",
        title="Language model: butterfly effects in greedy generation over seeds (Fig. 4, R5)",
        body=body,
        verdicts=verdicts,
        figures=[loss_path, bif_path],
    )
