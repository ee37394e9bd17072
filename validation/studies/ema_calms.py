r"""Study: when does averaging calm GVA? (paper Figure 3, R4; the averaging study)

The paper recommends an EMA of the iterates: it "removes most of" the reward oscillation. This
study asks where that holds and why not elsewhere, with rules fixed in
:mod:`validation.registry` (``ema-calms/...``) before its runs.

**Runs.** The quick preset on Hopper, Walker2d, HalfCheetah and Ant, 5 training seeds each
(:func:`sweep_spec`, committed as ``docs/sweeps/ema-calms-quick.toml``), trained with the post-hoc
EMA, so that one run gives every averaging width: :data:`WIDTHS`, from 1% of the run to the
uniform average of all of it (:func:`gvaempirics.bc.posthoc.posthoc_sweep`, at every zoom iterate).
The ``full`` budget adds Walker2d at the paper's size, 3 seeds.

**Hypothesis 1 (the window).** Per environment, for each width whose profile the snapshots fit
within 0.1 and whose mean return is not below the raw iterate's by more than 0.1 of the expert's
(a width calm because it falls everywhere does not count): the paired ratio averaged / raw zoom oscillation index over seeds, t on log ratio at
level 1 - 0.05/6 (Bonferroni over the widths). *Supports* if some width's interval lies in
[0, 0.5] (removes at least half), *contradicts* if every width's lies above 0.5.

**Hypothesis 2 (the expert).** (a) The same, on the run's initial conditions that the expert walks
(its rollout from them reaches H). (b) filtered demonstrations and (c) a SAC expert are registered
rules whose runs are not part of this study's budget yet (docs page "When does averaging calm GVA").

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

from gvatheory.inference import Interval, mean_interval, paired_interval
from validation.registry import rule
from validation.report import Section, Verdict, markdown_table

ENVS = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5")
WIDTHS = (0.01, 0.02, 0.05, 0.1, 0.2, 12**-0.5)  # the last: the uniform average (gvaempirics.bc.posthoc)
FIT_LIMIT = 0.1  # widths whose profile fit error exceeds it leave H1's family (as registered)
RETURN_LOSS = 0.1  # x expert: widths whose mean return falls further below the raw's leave it too
LEVEL = 1 - 0.05 / len(WIDTHS)  # Bonferroni over the widths
FLIP = 0.1  # x expert return, as gvaempirics.metrics.flip_rate
EXPERT_ICS_ENVS = ("Hopper-v5", "Walker2d-v5")


def sweep_spec(budget: str, seed: int = 0):
    """The study's sweep: quick preset x :data:`ENVS` x 5 seeds (``"quick"``), or Walker2d at the
    paper's size x 3 seeds (``"paper"``); post-hoc EMA tracked in every run."""
    from gvaempirics.sweeps import SweepSpec

    if budget == "paper":
        return SweepSpec(
            preset="paper",
            envs=("Walker2d-v5",),
            seeds=tuple(seed + s for s in (1, 2, 3)),
            interventions=((),),
            base={"threads": 1, "stabilizer": "posthoc"},
        )
    return SweepSpec(
        preset="quick",
        envs=ENVS,
        seeds=tuple(seed + s for s in range(1, 6)),
        interventions=((),),
        base={"threads": 1, "stabilizer": "posthoc"},
    )


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
    """Which of a run's initial conditions the shipped expert walks (its rollout reaches H)."""
    from gvaempirics.bc.envs import initial_conditions
    from gvaempirics.bc.experts import load_expert
    from gvaempirics.bc.rollout import rollout

    expert, _ = load_expert(cfg.env, Path(cfg.expert) if cfg.expert else None)
    res = rollout(cfg.env, initial_conditions(cfg.env, cfg.ics, cfg.ic_seed), cfg.H, expert, threads=cfg.threads)
    return np.asarray(res.lengths).reshape(-1) >= cfg.H  # one policy: (ics,)


def measure_run(path: Path, *, quiet: bool = True) -> dict[str, Any]:
    """Everything the rules read of one finished run: post-hoc widths, flip curve and expert ICs
    (each cached in the run directory: ``posthoc.json``, ``flips_step_N.json``)."""
    from gvaempirics.bc.flips import compute_flip_curve, flips_path, load_flip_curve, save_flip_curve, zoom_checkpoint
    from gvaempirics.bc.posthoc import check_run, load_posthoc, posthoc_sweep, save_posthoc
    from gvaempirics.rundir import RunDir

    rd = RunDir(path)
    cfg = check_run(rd)
    cached = path / "posthoc.json"
    ph = load_posthoc(cached) if cached.is_file() else None
    if ph is None or not np.allclose(ph.sigma_rels, WIDTHS) or ph.movement is None:
        ph = posthoc_sweep(rd, WIDTHS, quiet=quiet)
        save_posthoc(ph, path)
    step = zoom_checkpoint(cfg, rd)
    fp = flips_path(path, step)
    curve = load_flip_curve(fp) if fp.is_file() else None
    if curve is None:
        curve = compute_flip_curve(rd, step, quiet=quiet)
        save_flip_curve(curve, path)
    scale = ph.expert_return
    rows = ph.rows()
    law = curve.fit("noise")
    walks = expert_walks(cfg)
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
        movement=np.nanmean(ph.movement, axis=1) / curve.step_length,
        raw_mean=rows[0]["mean_return"] / scale,
        mean=np.array([r["mean_return"] for r in rows[1:]]) / scale,
    )
    out["raw_flips"], out["pairs"] = _flip_counts(ph.raw_returns, ph.windows, scale)
    out["flips"] = np.array([_flip_counts(ph.returns[k], ph.windows, scale)[0] for k in range(len(WIDTHS))])
    if walks.sum() >= 2:
        sub = lambda r: ph.indices(r[:, walks])["reward_oscillation"]  # noqa: E731
        out["raw_osc_walked"] = sub(ph.raw_returns)
        out["osc_walked"] = np.array([sub(ph.returns[k]) for k in range(len(WIDTHS))])
    return out


# ------------------------------------------------------------------------------ decide
def _nan(n: int, method: str) -> Interval:
    return Interval(math.nan, math.nan, math.nan, LEVEL, n, method)


def window_intervals(runs: Sequence[dict[str, Any]], *, walked: bool = False) -> tuple[list[Interval], str]:
    """Per width in the family (fit error within :data:`FIT_LIMIT` in every run, mean return over
    runs not below the raw's by more than :data:`RETURN_LOSS`): the paired ratio interval
    averaged / raw oscillation over runs at :data:`LEVEL`; and a gate (why not)."""
    raw_key, key = ("raw_osc_walked", "osc_walked") if walked else ("raw_osc", "osc")
    runs = [r for r in runs if key in r]
    if not runs:
        return [], "no run to decide on"
    out = []
    for k in range(len(WIDTHS)):
        if max(r["fit_error"][k] for r in runs) > FIT_LIMIT:
            continue
        if np.mean([r["mean"][k] - r["raw_mean"] for r in runs]) < -RETURN_LOSS:
            continue
        x, y = [r[key][k] for r in runs], [r[raw_key] for r in runs]
        if min(x + y) <= 0:
            out.append(_nan(len(runs), "paired t, log ratio"))
            continue
        out.append(paired_interval(x, y, scale="ratio", level=LEVEL))
    gate = "" if out else f"no width both fits within {FIT_LIMIT} and keeps the raw iterate's return"
    if any(not i.finite for i in out):
        gate = "an oscillation index is 0 (no log ratio)"
    return out, gate


def _law_ratio(r: dict[str, Any], raw: bool = False) -> float:
    law, pairs = r["law"], r["pairs"]
    if raw:
        return (r["raw_flips"] + 1) / (pairs * float(law(1.0)) + 1)
    predicted = sum(pairs * float(law(m)) for m in r["movement"])
    return (float(r["flips"].sum()) + 1) / (predicted + 1)


def decide(runs: Sequence[dict[str, Any]]) -> list[Verdict]:
    """Every verdict of the quick table (see the module docstring)."""
    verdicts = []
    for env in ENVS:
        mine = [r for r in runs if r["env"] == env]
        ints, gate = window_intervals(mine)
        verdicts.append(_window_verdict(f"ema-calms/window/{env}-quick", ints, gate, len(mine)))
    for env in EXPERT_ICS_ENVS:
        mine = [r for r in runs if r["env"] == env]
        falls = sorted({int(i) for r in mine for i in np.flatnonzero(~r["walks"])})
        ints, gate = window_intervals(mine, walked=True)
        if mine and not falls:
            gate = "the expert falls on none of the run's initial conditions"
        elif mine and all(r["walks"].sum() < 2 for r in mine):
            gate = "the expert walks fewer than 2 of the run's initial conditions"
        extra = f"the expert falls on initial conditions {falls or 'none'}"
        verdicts.append(_window_verdict(f"ema-calms/expert-ics/{env}-quick", ints, gate, len(mine), extra))
    for key, chosen in [("pooled", runs)] + [(env, [r for r in runs if r["env"] == env]) for env in ENVS]:
        ratios = [_law_ratio(r) for r in chosen]
        iv = mean_interval(ratios, log=True) if len(ratios) >= 2 else _nan(len(ratios), "t, geometric")
        detail = f"geometric mean of (measured + 1) / (predicted + 1) flips over {len(ratios)} runs"
        verdicts.append(rule(f"ema-calms/flip-law/{key}-quick").decide(iv, detail))
    ratios = [_law_ratio(r, raw=True) for r in runs]
    iv = mean_interval(ratios, log=True) if len(ratios) >= 2 else _nan(len(ratios), "t, geometric")
    verdicts.append(rule("ema-calms/flip-law/raw-quick").decide(iv, f"raw iterate, {len(ratios)} runs"))
    return verdicts


def _window_verdict(key: str, ints: list[Interval], gate: str, n: int, extra: str = "") -> Verdict:
    if not ints:
        ints = [_nan(n, "paired t, log ratio")]
        gate = gate or "no interval"
    best = min(ints, key=lambda i: i.high if i.finite else math.inf)
    detail = f"{len(ints)} widths in the family; the lowest upper bound {best}" + (f"; {extra}" if extra else "")
    return rule(key).decide(ints, detail, gate=gate)


# ------------------------------------------------------------------------------ present
def table(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per environment: raw and best-width oscillation and flip rate (geometric means, t intervals
    over seeds); the best width is descriptive (the rule uses the whole family)."""
    rows = []
    for env in ENVS:
        mine = [r for r in runs if r["env"] == env]
        if not mine:
            continue
        raw = mean_interval([r["raw_osc"] for r in mine], log=True) if len(mine) >= 2 else None
        ratios = [np.exp(np.mean(np.log([r["osc"][k] / r["raw_osc"] for r in mine]))) for k in range(len(WIDTHS))]
        k = int(np.nanargmin(ratios))
        best = mean_interval([r["osc"][k] for r in mine], log=True) if len(mine) >= 2 else None
        rows.append(
            dict(
                env=env,
                runs=len(mine),
                raw_osc=str(raw),
                raw_flip=float(np.mean([r["raw_flips"] / r["pairs"] for r in mine])),
                best_width=f"{WIDTHS[k]:.3g}",
                best_osc=str(best),
                best_flip=float(np.mean([r["flips"][k] / r["pairs"] for r in mine])),
                ratio=float(ratios[k]),
                beta=float(np.nanmean([r["law"].beta for r in mine])),
                moves=float(np.mean([r["movement"][k] for r in mine])),
            )
        )
    return rows


def plot_curves(runs: Sequence[dict[str, Any]]):
    """Flip rate against distance per environment: each run's noise curve, the pooled noise and
    random curves, and where the averages' per-step movements fall."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ENVS), figsize=(4 * len(ENVS), 3.6), sharey=True, constrained_layout=True)
    for ax, env in zip(np.atleast_1d(axes), ENVS):
        mine = [r for r in runs if r["env"] == env]
        for r in mine:
            ax.plot(r["curve"].distances, r["curve"].rate("noise"), "-", color="tab:red", lw=0.6, alpha=0.5)
        if mine:
            d = mine[0]["curve"].distances
            for kind, style in (("noise", "o-"), ("random", "s--")):
                k = sum(r["curve"].flips(kind)[0] for r in mine)
                n = sum(r["curve"].flips(kind)[1] for r in mine)
                ax.plot(d, k / n, style, color="tab:red" if kind == "noise" else "0.4", label=f"{kind}, pooled")
            for m in np.mean([r["movement"] for r in mine], axis=0):
                ax.axvline(m, color="tab:orange", lw=0.6, ls=":")
        ax.axvline(1.0, color="k", lw=0.8, ls=":")
        ax.set(xscale="log", yscale="symlog", title=env, xlabel="distance r (optimizer steps)")
        ax.set_yscale("symlog", linthresh=1e-2)
    np.atleast_1d(axes)[0].set_ylabel("flip rate (|dJ| > 0.1 J*)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    return fig


def plot_law(runs: Sequence[dict[str, Any]]):
    """Measured against predicted flip rate, one dot per (run, width), crosses for the raw iterate."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.6), constrained_layout=True)
    floor = 1e-3
    for env, color in zip(ENVS, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        mine = [r for r in runs if r["env"] == env]
        if not mine:
            continue
        x = [max(float(r["law"](m)), floor) for r in mine for m in r["movement"]]
        y = [max(f / r["pairs"], floor) for r in mine for f in r["flips"]]
        ax.scatter(x, y, s=12, color=color, label=env)
        ax.scatter(
            [max(float(r["law"](1.0)), floor) for r in mine],
            [max(r["raw_flips"] / r["pairs"], floor) for r in mine],
            marker="x",
            color=color,
        )
    t = np.geomspace(floor, 1, 10)
    ax.plot(t, t, "k--", lw=0.8)
    ax.fill_between(t, t / 2, t * 2, color="0.85", label="within a factor 2")
    ax.set(xscale="log", yscale="log", xlabel="predicted flip rate, min(c m^beta, 1)", ylabel="measured flip rate")
    ax.set_title(f"averages (dots) and raw (crosses); below {floor:g} drawn at {floor:g}", fontsize=8)
    ax.legend(fontsize=7)
    return fig


def run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Section:
    from gvaempirics.sweeps import run_sweep
    from validation.report import save_figure

    outdir = Path(outdir)
    sweep = run_sweep(sweep_spec("quick", seed), outdir.parent / "sweep-ema-calms-quick", quiet=quiet)
    runs = [
        measure_run(sweep.out / "runs" / r["run"], quiet=quiet) for r in sweep.rows if r.get("status") == "finished"
    ]
    verdicts = decide(runs)
    figures = []
    if runs:
        figures = [
            save_figure(plot_curves(runs), outdir / "ema_calms_flip_curves.png"),
            save_figure(plot_law(runs), outdir / "ema_calms_flip_law.png"),
        ]
        fig3 = sweep.out / "stabilized.png"
        if fig3.is_file():
            outdir.mkdir(parents=True, exist_ok=True)
            figures.append(Path(shutil.copyfile(fig3, outdir / "ema_calms_rewards.png")))
    rows = table(runs)
    body = (
        f"{len(runs)} finished runs of `{sweep.out}` (quick preset, post-hoc EMA tracked; widths "
        f"{', '.join(f'{w:.3g}' for w in WIDTHS)} synthesized at every zoom iterate). `raw_osc` and `best_osc`: "
        "geometric mean zoom oscillation index over seeds with its t interval; `best_width` is the width with the "
        "lowest geometric mean ratio (descriptive: the window rules use every width, Bonferroni-corrected); "
        "`raw_flip`, `best_flip`: flip rate between consecutive zoom iterates; `beta`: the flip-distance exponent "
        "(minibatch-noise directions, mean over runs); `moves`: the best width's per-step movement in optimizer "
        "steps.\n\n" + (markdown_table(rows) if rows else "(no finished run)")
    )
    return Section("ema-calms", "When does averaging calm GVA (R4)", body, verdicts, figures)
