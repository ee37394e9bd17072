r"""Study: when does averaging calm GVA? (paper Figure 3, R4; the averaging study)

The paper recommends an EMA of the iterates: it "removes most of" the reward oscillation. This
study asks where that holds and why not elsewhere, with rules fixed in
:mod:`validation.registry` (``ema-calms/...``) before its runs.

**Runs.** The quick preset on Hopper, Walker2d, HalfCheetah and Ant, 5 training seeds each
(:func:`sweep_spec`, committed as ``docs/sweeps/ema-calms-quick.toml``), trained with the post-hoc
EMA, so that one run gives every averaging width: :data:`WIDTHS`, from 1% of the run to the
uniform average of all of it (:func:`gvaempirics.bc.posthoc.posthoc_sweep`, at every zoom iterate).
The same on Walker2d imitating only the demonstrations without a fall (``"filtered"``,
hypothesis 2b). The ``full`` budget adds Walker2d at the paper's size, unfiltered (``"paper"``) and
filtered (``"paper-filtered"``), 5 fresh seeds each (:data:`PAPER_SEEDS`).

**Hypothesis 1 (the window).** Per environment, for each width whose profile the snapshots fit
within 0.1 and whose mean return is not below the raw iterate's by more than 0.1 of the expert's
(a width calm because it falls everywhere does not count): the paired ratio averaged / raw zoom oscillation index over seeds, t on log ratio at
level 1 - 0.05/6 (Bonferroni over the widths). *Supports* if some width's interval lies in
[0, 0.5] (removes at least half), *contradicts* if every width's lies above 0.5.

**Hypothesis 2 (the expert).** (a) The same, on the run's initial conditions that the expert walks
(its rollout from them reaches H). (b) The window rule on runs imitating only the demonstrations
without a fall (``gva bc train --drop-falls``). (c) The window rule on runs imitating the shipped SAC
expert (:data:`SAC_EXPERT`, ``"sac"``), and (a) on those runs: a different expert of the paper's algorithm,
descriptive (no rule compares the tables).

**Hypothesis 3 (the flip-distance law).** At the raw checkpoint opening the zoom window, the flip
rate against distance along minibatch-noise directions (:mod:`gvaempirics.bc.flips`) and its
power law ``min(c r^beta, 1)``; each average's mean per-step movement ``m`` in the same step units
(:attr:`PosthocSweep.movement`) predicts its flip count ``pairs x min(c m^beta, 1)``. Per run,
``(measured + 1) / (predicted + 1)`` summed over the widths; t on log ratio over runs, within a
factor 2. The raw iterate at ``m = 1`` is the curve's own consistency check.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gvatheory.inference import Interval, mean_interval, paired_interval, smallest_effect
from validation.registry import rule
from validation.report import Section, Verdict, markdown_table

from .ema_calms_page import describe_table, dropped, heldout, plot_curves, plot_law

ENVS = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5")
WIDTHS = (0.01, 0.02, 0.05, 0.1, 0.2, 12**-0.5)  # the last: the uniform average (gvaempirics.bc.posthoc)
FIT_LIMIT = 0.1  # widths whose profile fit error exceeds it leave H1's family (as registered)
RETURN_LOSS = 0.1  # x expert: widths whose mean return falls further below the raw's leave it too
LEVEL = 1 - 0.05 / len(WIDTHS)  # Bonferroni over the widths
FLIP = 0.1  # x expert return, as gvaempirics.metrics.flip_rate
EXPERT_ICS_ENVS = ("Hopper-v5", "Walker2d-v5")


SWEEPS = ("quick", "filtered", "sac", "paper", "paper-filtered")  # the tables: docs/sweeps/ema-calms-<name>.toml
SAC_EXPERT = "Walker2d-v5-sac"  # the shipped SAC expert the "sac" table imitates (hypothesis 2c)
# Paper-size seeds: 4-8, not 1-3 (whose raw iterates docs/bc.md reports), and 5 of them, sized from
# the spread seen there before these runs (the registry's "written after seeing").
PAPER_SEEDS = (4, 5, 6, 7, 8)
# Paper-size runs track every width and roll each out at every zoom iterate during training
# (posthoc_zoom="rollout": exact widths, no synthesis), with no snapshot before the last step: their
# checkpoints stay small enough to commit, so a run continues on another machine (synthesis needs
# about 1.3 GB of snapshots a run). The first tracked width is the averaged weights logged throughout.
PAPER_TRACKED = (0.05, *(w for w in WIDTHS if w != 0.05))
PAPER_BASE = {"posthoc_sigma_rels": list(PAPER_TRACKED), "posthoc_zoom": "rollout", "posthoc_every": 100000}


def sweep_spec(name: str, seed: int = 0):
    """One of the study's sweeps (:data:`SWEEPS`), post-hoc EMA tracked in every run: the quick
    preset x :data:`ENVS` x 5 seeds (``"quick"``); the quick preset on Walker2d imitating only
    the demonstrations without a fall, 5 seeds (``"filtered"``); the same imitating the shipped SAC
    expert :data:`SAC_EXPERT`, unfiltered (``"sac"``); Walker2d at the paper's size (``"paper"``),
    and imitating only the demonstrations without a fall (``"paper-filtered"``), :data:`PAPER_SEEDS`."""
    from gvaempirics.sweeps import SweepSpec

    if name not in SWEEPS:
        raise ValueError(f"name={name!r} is out of range: choose one of {', '.join(SWEEPS)}")
    base = {"threads": 1, "stabilizer": "posthoc"}
    if name.endswith("filtered"):
        base = {**base, "drop_falls": True}
    if name == "sac":
        base = {**base, "expert": SAC_EXPERT}
    if name.startswith("paper"):
        base = {**base, **PAPER_BASE}
        seeds, preset, envs = PAPER_SEEDS, "paper", ("Walker2d-v5",)
    else:
        seeds, preset, envs = range(1, 6), "quick", ENVS if name == "quick" else ("Walker2d-v5",)
    return SweepSpec(preset=preset, envs=envs, seeds=tuple(seed + s for s in seeds), interventions=((),), base=base)


# ------------------------------------------------------------------------------ measure
def _flip_counts(returns: np.ndarray, windows: Sequence[np.ndarray], scale: float, ics=None) -> tuple[int, int]:
    """(flips, pairs): consecutive (iterate, IC) pairs of the windows whose return moved by > FLIP x scale."""
    flips = pairs = 0
    for w in windows:
        r = returns[w] if ics is None else returns[w][:, ics]
        d = np.abs(np.diff(r, axis=0)) > FLIP * scale
        flips, pairs = flips + int(d.sum()), pairs + d.size
    return flips, pairs


def expert_walks(cfg) -> np.ndarray:
    """Which of a run's initial conditions the shipped expert walks (its rollout reaches H), rolled
    out as the run rolled it out, with the run's torch threads: the float rounding of a matmul
    differs with the thread count, and the Walker2d expert is on a knife edge on one initial
    condition (it falls with 1 thread, walks with 2)."""
    import torch

    from gvaempirics.bc.envs import initial_conditions
    from gvaempirics.bc.evaluator import rollout
    from gvaempirics.bc.experts import load_expert

    expert, _ = load_expert(cfg.env, cfg.expert)
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        res = rollout(cfg.env, initial_conditions(cfg.env, cfg.ics, cfg.ic_seed), cfg.H, expert, threads=cfg.threads)
    finally:
        torch.set_num_threads(before)
    return np.asarray(res.lengths).reshape(-1) >= cfg.H  # one policy: (ics,)


def measure_run(path: Path, *, quiet: bool = True) -> dict[str, Any]:
    """Everything the rules read of one finished run: post-hoc widths, flip curve and expert ICs
    (each cached in the run directory: ``posthoc.json``, ``flips_step_N.json``). The caches are
    small and committed with the run's other small files (``longruns/``), so a run whose
    checkpoints stayed on the machine that trained it is measured from them alone."""
    from gvaempirics.bc.flips import compute_flip_curve, flips_path, load_flip_curve, save_flip_curve, zoom_checkpoint
    from gvaempirics.bc.posthoc import check_run, load_posthoc, posthoc_sweep, save_posthoc, zoom_steps
    from gvaempirics.rundir import RunDir

    rd = RunDir(path)
    cfg = check_run(rd, checkpoints=False)  # posthoc_sweep and compute_flip_curve need them; the caches do not
    cached = path / "posthoc.json"
    ph = load_posthoc(cached) if cached.is_file() else None
    stale = ph is None or len(ph.sigma_rels) != len(WIDTHS) or not np.allclose(ph.sigma_rels, WIDTHS)
    if stale or ph.movement is None or list(ph.steps) != zoom_steps(cfg):  # a cache of part of the run: redo
        ph = posthoc_sweep(rd, WIDTHS, quiet=quiet)
        save_posthoc(ph, path)
    step = zoom_checkpoint(cfg, rd)
    fp = flips_path(path, step)
    curve = load_flip_curve(fp) if fp.is_file() else None
    if curve is None or not _registered(curve):
        curve = compute_flip_curve(rd, step, quiet=quiet)
        save_flip_curve(curve, path)
    scale = ph.expert_return
    rows = ph.rows()
    law = fit_law(curve)
    walks = expert_walks(cfg)
    moves = [row[np.isfinite(row)] / curve.step_length for row in ph.movement]
    out = dict(
        run=path.name,
        env=cfg.env,
        seed=cfg.seed,
        scale=scale,
        walks=walks,
        law=law,
        curve=curve,
        raw_osc=rows[0]["reward_oscillation"],
        osc=np.array([r["reward_oscillation"] for r in rows[1:]]),
        fit_error=ph.fit_error.max(axis=1),
        movement=np.array([m.mean() for m in moves]),
        moves=moves,
        n_ics=ph.returns.shape[-1],
        raw_mean=rows[0]["mean_return"] / scale,
        mean=np.array([r["mean_return"] for r in rows[1:]]) / scale,
    )
    out["raw_flips"], out["pairs"] = _flip_counts(ph.raw_returns, ph.windows, scale)
    out["flips"] = np.array([_flip_counts(ph.returns[k], ph.windows, scale)[0] for k in range(len(WIDTHS))])
    if walks.sum() >= 2:
        sub = lambda r, key: ph.indices(r[:, walks])[key]  # noqa: E731
        out["raw_osc_walked"] = sub(ph.raw_returns, "reward_oscillation")
        out["osc_walked"] = np.array([sub(ph.returns[k], "reward_oscillation") for k in range(len(WIDTHS))])
        out["raw_mean_walked"] = sub(ph.raw_returns, "mean_return") / scale
        out["mean_walked"] = np.array([sub(ph.returns[k], "mean_return") for k in range(len(WIDTHS))]) / scale
    return out


def _registered(curve) -> bool:
    """A cached curve is used only if it has the registered design (distances, 8 directions, seed 0)."""
    from gvaempirics.bc.flips import DEFAULT_DISTANCES

    d = curve.distances
    return (
        len(d) == len(DEFAULT_DISTANCES)
        and np.allclose(d, DEFAULT_DISTANCES)
        and curve.returns["noise"].shape[0] == 8
        and curve.seed == 0
    )


def fit_law(curve):
    """The registered law: the binomial fit over the curve's distances up to one step (noise directions)."""
    from gvaempirics.bc.flips import fit_power_law

    k, n = curve.flips("noise")
    near = curve.distances <= 1.0 + 1e-9
    return fit_power_law(curve.distances[near], k[near], n[near])


# ------------------------------------------------------------------------------ decide
def _nan(n: int, method: str) -> Interval:
    return Interval(math.nan, math.nan, math.nan, LEVEL, n, method)


def window_intervals(runs: Sequence[dict[str, Any]], *, walked: bool = False) -> tuple[list[Interval], str]:
    """Per width of the family (:func:`family`): the paired ratio interval averaged / raw
    oscillation over runs at :data:`LEVEL`; and a gate (why not)."""
    raw_key, key = ("raw_osc_walked", "osc_walked") if walked else ("raw_osc", "osc")
    runs = [r for r in runs if key in r]
    if not runs:
        return [], "no run to decide on"
    if min(r[raw_key] for r in runs) <= 0:
        return [], "a raw oscillation index is 0 (no log ratio)"
    out = [
        paired_interval([r[key][k] for r in runs], [r[raw_key] for r in runs], scale="ratio", level=LEVEL)
        for k in family(runs, walked=walked)
    ]
    gate = "" if out else f"no width fits within {FIT_LIMIT}, keeps the raw iterate's return and has a positive index"
    return out, gate


def family(runs: Sequence[dict[str, Any]], *, walked: bool = False) -> list[int]:
    """The widths the window rules read (as registered): profile fit error within
    :data:`FIT_LIMIT` in every run, a positive oscillation index in every run, and a mean return
    over runs not below the raw's by more than :data:`RETURN_LOSS` x the expert's."""
    return [k for k in range(len(WIDTHS)) if not left_out(runs, k, walked=walked)]


def left_out(runs: Sequence[dict[str, Any]], k: int, *, walked: bool = False) -> str:
    """Why width ``k`` leaves the window rules' family ("" if it stays in: see :func:`family`)."""
    key, mean, raw_mean = ("osc_walked", "mean_walked", "raw_mean_walked") if walked else ("osc", "mean", "raw_mean")
    if max(r["fit_error"][k] for r in runs) > FIT_LIMIT:
        return f"fit error {max(r['fit_error'][k] for r in runs):.2g}"
    if min(r[key][k] for r in runs) <= 0:
        return "index 0 in a run"
    change = float(np.mean([r[mean][k] - r[raw_mean] for r in runs]))
    return f"return {change:+.2f} x expert" if change < -RETURN_LOSS else ""


MIN_RAW_FLIPS = 10  # a run whose raw iterate flips less often cannot test the law (as registered)


def testable(r: dict[str, Any]) -> bool:
    """Whether a run can test the flip law: enough raw flips, and a fitted law that predicts some."""
    return r["raw_flips"] >= MIN_RAW_FLIPS and r["law"].c > 0


def _law_ratio(r: dict[str, Any], raw: bool = False) -> float:
    law, pairs = r["law"], r["pairs"]
    if raw:
        return (r["raw_flips"] + 1) / (pairs * float(law(1.0)) + 1)
    predicted = sum(r["n_ics"] * float(law(m).sum()) for m in r["moves"])  # the law at each pair's movement
    return (float(r["flips"].sum()) + 1) / (predicted + 1)


def decide_window(key: str, runs: Sequence[dict[str, Any]]) -> Verdict:
    """The window rule ``key`` on the runs of one table that imitate one expert (filtered
    demonstrations, the paper's size)."""
    return _window_verdict(key, runs)


def decide_expert_ics(key: str, runs: Sequence[dict[str, Any]]) -> Verdict:
    """The window rule ``key`` on the initial conditions that the runs' own expert walks."""
    falls = sorted({int(i) for r in runs for i in np.flatnonzero(~r["walks"])})
    gate = ""
    if runs and not falls:
        gate = "the expert falls on none of the run's initial conditions"
    elif runs and all(r["walks"].sum() < 2 for r in runs):
        gate = "the expert walks fewer than 2 of the run's initial conditions"
    extra = f"the expert falls on initial conditions {falls or 'none'}"
    return _window_verdict(key, runs, walked=True, gate=gate, extra=extra)


def decide(runs: Sequence[dict[str, Any]]) -> list[Verdict]:
    """Every verdict of the quick table (see the module docstring)."""
    verdicts = []
    for env in ENVS:
        verdicts.append(_window_verdict(f"ema-calms/window/{env}-quick", [r for r in runs if r["env"] == env]))
    for env in EXPERT_ICS_ENVS:
        verdicts.append(decide_expert_ics(f"ema-calms/expert-ics/{env}-quick", [r for r in runs if r["env"] == env]))
    groups = [("pooled", runs)] + [(env, [r for r in runs if r["env"] == env]) for env in ENVS] + [("raw", runs)]
    for key, chosen in groups:
        used = [r for r in chosen if testable(r)]
        ratios = [_law_ratio(r, raw=key == "raw") for r in used]
        iv = mean_interval(ratios, log=True) if len(ratios) >= 2 else _nan(len(ratios), "t, geometric")
        r_ = rule(f"ema-calms/flip-law/{key}-quick")
        gate = "" if len(used) >= r_.min_n else f"{len(used)} of {len(chosen)} runs can test the law"
        detail = (
            f"geometric mean of (measured + 1) / (predicted + 1) {'raw ' if key == 'raw' else ''}flips over "
            f"{len(used)} of {len(chosen)} runs (the others flip fewer than {MIN_RAW_FLIPS} times raw)"
        )
        verdicts.append(r_.decide(iv, detail, gate=gate))
    return verdicts


def _power(runs: Sequence[dict[str, Any]], *, walked: bool = False) -> str:
    """What the table's budget can decide: the factor by which a width's true ratio must lie from
    an edge of the region for its interval (at the rule's Bonferroni level) to clear that edge with
    80% power, from the median over the family of the sd of the runs' log ratios."""
    raw_key, key = ("raw_osc_walked", "osc_walked") if walked else ("raw_osc", "osc")
    runs = [r for r in runs if key in r]
    if len(runs) < 2 or min(r[raw_key] for r in runs) <= 0:
        return ""
    sds = [float(np.std([math.log(r[key][k] / r[raw_key]) for r in runs], ddof=1)) for k in family(runs, walked=walked)]
    if not sds:
        return ""
    factor = math.exp(smallest_effect(float(np.median(sds)), len(runs), level=LEVEL))
    return f"power: the budget decides a ratio {factor:.3g}x from an edge (80% power, {len(runs)} runs)"


def _window_verdict(
    key: str, runs: Sequence[dict[str, Any]], *, walked: bool = False, gate: str = "", extra: str = ""
) -> Verdict:
    """The window rule ``key`` on ``runs`` (on the walked initial conditions if ``walked``); a
    ``gate`` given here overrides the intervals' own."""
    ints, why = window_intervals(runs, walked=walked)
    gate = gate or why
    if not ints:
        ints = [_nan(len(runs), "paired t, log ratio")]
        gate = gate or "no interval"
    best = min(ints, key=lambda i: i.high if i.finite else math.inf)
    notes = [x for x in (extra, _members(runs, walked=walked), _power(runs, walked=walked)) if x]
    detail = f"{len(ints)} widths in the family; the lowest upper bound {best}" + "".join(f"; {x}" for x in notes)
    return rule(key).decide(ints, detail, gate=gate)


def _members(runs: Sequence[dict[str, Any]], *, walked: bool = False) -> str:
    """The family's widths in the order of the verdict's intervals, and why each other width left it."""
    key = "osc_walked" if walked else "osc"
    runs = [r for r in runs if key in r]
    if not runs:
        return ""
    why = {WIDTHS[k]: left_out(runs, k, walked=walked) for k in range(len(WIDTHS))}
    inside = ", ".join(f"{w:.3g}" for w, y in why.items() if not y) or "none"
    out = "; ".join(f"{w:.3g} ({y})" for w, y in why.items() if y)
    return f"the intervals are of widths {inside}" + (f"; left out: {out}" if out else "")


# ------------------------------------------------------------------------------ present
def table(runs: Sequence[dict[str, Any]], name: str = "quick") -> list[dict[str, Any]]:
    """Per environment: raw oscillation and flip rate, and those of the family's width with the
    lowest upper bound of its ratio (the window rule's own interval, Bonferroni level); the pick
    is descriptive, the rule reads every width of the family. ``name``: the table's (its sweep's)."""
    rows = []
    for env in ENVS:
        mine = [r for r in runs if r["env"] == env]
        if not mine:
            continue
        raw = mean_interval([r["raw_osc"] for r in mine], log=True) if len(mine) >= 2 else None
        ints, _ = window_intervals(mine)
        fam = family(mine) if min(r["raw_osc"] for r in mine) > 0 else []
        row = dict(
            env=env, table=name, runs=len(mine), raw_osc=str(raw), raw_flip=_rate([r["raw_flips"] for r in mine], mine)
        )
        if ints:
            j = min(range(len(ints)), key=lambda i: ints[i].high if ints[i].finite else math.inf)
            k = fam[j]
            row.update(
                width=f"{WIDTHS[k]:.3g}",
                ratio=str(ints[j]),
                flip=_rate([r["flips"][k] for r in mine], mine),
                return_change=float(np.mean([r["mean"][k] - r["raw_mean"] for r in mine])),
                moves=float(np.mean([r["movement"][k] for r in mine])),
            )
        else:
            row.update(width="none", ratio="-", flip=math.nan, return_change=math.nan, moves=math.nan)
        testable_runs = [r for r in mine if testable(r)]
        row["beta"] = float(np.median([r["law"].beta for r in testable_runs])) if testable_runs else math.nan
        rows.append(row)
    return rows


def _rate(counts: Sequence[int], runs: Sequence[dict[str, Any]]) -> float:
    return float(np.sum(counts) / np.sum([r["pairs"] for r in runs]))


def measure_sweep(name: str, outdir: Path, *, seed: int, quiet: bool):
    """Run (or resume) the sweep ``name`` into ``<outdir's parent>/sweep-ema-calms-<name>`` and
    measure its finished runs: ``(sweep outcome, [measure_run of each])``."""
    from gvaempirics.sweeps import run_sweep

    sweep = run_sweep(sweep_spec(name, seed), Path(outdir).parent / f"sweep-ema-calms-{name}", quiet=quiet)
    runs = [
        measure_run(sweep.out / "runs" / r["run"], quiet=quiet) for r in sweep.rows if r.get("status") == "finished"
    ]
    return sweep, runs


def run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Section:
    from validation.report import save_figure

    outdir = Path(outdir)
    sweep, runs = measure_sweep("quick", outdir, seed=seed, quiet=quiet)
    verdicts = decide(runs)
    filtered_sweep, filtered = measure_sweep("filtered", outdir, seed=seed, quiet=quiet)
    verdicts.append(decide_window("ema-calms/filtered-demos/Walker2d-v5-quick", filtered))
    tables = [
        describe_table("quick", sweep, runs, "the quick preset on four environments"),
        describe_table(
            "filtered",
            filtered_sweep,
            filtered,
            f"the same on Walker2d, imitating only the training demonstrations without a fall: "
            f"{dropped(filtered_sweep.out)}. At this size the filter is a weak treatment: these runs are close "
            "to the quick table's Walker2d runs, and their verdict cannot be credited to the filter",
        ),
    ]
    sac_sweep, sac = measure_sweep("sac", outdir, seed=seed, quiet=quiet)
    verdicts.append(decide_window("ema-calms/sac-expert/Walker2d-v5-quick", sac))
    verdicts.append(decide_expert_ics("ema-calms/expert-ics/Walker2d-v5-sac-quick", sac))
    tables.append(
        describe_table(
            "sac",
            sac_sweep,
            sac,
            f"the same on Walker2d, imitating the SAC expert `{SAC_EXPERT}` (one expert, not a better one: on the "
            f"held-out initial conditions of the experts' sidecars it is {heldout(SAC_EXPERT)}, the PPO expert "
            f"{heldout('Walker2d-v5')}). No rule compares this table with the quick one",
        )
    )
    paper = paper_filtered = []
    if not quick:
        paper_sweep, paper = measure_sweep("paper", outdir, seed=seed, quiet=quiet)
        verdicts.append(decide_window("ema-calms/window/Walker2d-v5-paper", paper))
        pf_sweep, paper_filtered = measure_sweep("paper-filtered", outdir, seed=seed, quiet=quiet)
        verdicts.append(decide_window("ema-calms/filtered-demos/Walker2d-v5-paper", paper_filtered))
        tables += [
            describe_table("paper", paper_sweep, paper, "Walker2d at the paper's size"),
            describe_table("paper-filtered", pf_sweep, paper_filtered, f"the same, filtered: {dropped(pf_sweep.out)}"),
        ]
    figures = []
    if runs:
        figures = [
            save_figure(plot_curves(runs, ENVS), outdir / "ema_calms_flip_curves.png"),
            save_figure(plot_law(runs, ENVS), outdir / "ema_calms_flip_law.png"),
        ]
        fig3 = sweep.out / "stabilized.png"
        if fig3.is_file():
            outdir.mkdir(parents=True, exist_ok=True)
            figures.append(Path(shutil.copyfile(fig3, outdir / "ema_calms_rewards.png")))
    if paper:  # descriptive: hypothesis 3 has rules at the quick size only
        figures += [
            save_figure(plot_curves(paper, ("Walker2d-v5",)), outdir / "ema_calms_flip_curves_paper.png"),
            save_figure(plot_law(paper, ("Walker2d-v5",)), outdir / "ema_calms_flip_law_paper.png"),
        ]
        if (paper_sweep.out / "stabilized.png").is_file():
            figures.append(
                Path(shutil.copyfile(paper_sweep.out / "stabilized.png", outdir / "ema_calms_rewards_paper.png"))
            )
    rows = table(runs) + table(filtered, "filtered") + table(sac, "sac") + table(paper, "paper")
    rows += table(paper_filtered, "paper-filtered")
    body = (
        "\n".join(tables)
        + f"\n\nEvery run tracks the post-hoc EMA; the widths {', '.join(f'{w:.3g}' for w in WIDTHS)} "
        "are synthesized at every zoom iterate from its snapshots (the paper-size tables track all six and roll "
        "each out during training). `raw_osc`: geometric mean "
        "zoom oscillation index over seeds with its t interval; `raw_flip`: flip rate between consecutive zoom "
        "iterates, pooled over seeds. `width`: of the widths the window rule reads, the one whose ratio interval "
        "has the lowest upper bound (a descriptive pick: the rule reads them all); `ratio`: its averaged / raw "
        "oscillation ratio with the rule's interval (Bonferroni level); `flip`: its flip rate; `return_change`: "
        "its mean zoom return minus the raw iterate's, over the expert's; `moves`: its per-step movement in "
        "optimizer steps; `beta`: the flip-distance exponent over r <= 1 (minibatch-noise directions, median over "
        "the runs that can test the law).\n\n" + (markdown_table(rows) if rows else "(no finished run)")
    )
    return Section("ema-calms", "When does averaging calm GVA (R4)", body, verdicts, figures)
