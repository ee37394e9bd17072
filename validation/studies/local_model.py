"""Study: a local quadratic model predicts the fluctuations of the iterates (validation study 2).

Prediction: the toy systems of :mod:`gvatheory` model late training as a linear recursion with
additive Gaussian gradient noise. Fitted at a late checkpoint of a behavior-cloning run
(:mod:`gvaempirics.bc.local_model`: the top-``k`` eigenpairs of the Adam-preconditioned Hessian
of the training BC loss by ``eigsh``, the minibatch gradient-noise covariance projected on them
from per-sample gradients, the optimizer's momentum and frozen second moments), the moment
engine (:func:`gvatheory.moments.stationary_cov`) predicts the stationary covariance of the raw
iterates and of their EMA in that subspace.

Measurement: training continued from the checkpoint at constant learning rate with the same
optimizer, in independent chains (fresh minibatch seeds); the iterates' and a constant-gamma
EMA's coordinates after a burn-in. The chains are the independent units: each gives its variance
per group of directions (top 1-2, 3-5, 6-10) over the predicted one, and the interval is Student t
over chains on the log ratios (a geometric mean, :func:`gvatheory.inference.mean_interval`).

Verdicts: the rules ``local-model/{raw,ema}-{1-2,3-5,6-10}`` of :mod:`validation.registry`
(*supports* if the 95% interval lies in [1/2, 2], *contradicts* if wholly outside, at least 3
chains). The factor 2 was in this study's code before its first run (2026-12-01); the unit (chains)
and the t interval were declared in the registry on 2026-12-03, after the first results, which had
bootstrapped time blocks within chains as if independent (:data:`EARLIER` keeps what they gave).
Group 11-20 (the full budget's ``k = 20``) was registered before its first run.

Stationarity is shown beside the verdicts, not used by them (:func:`stationarity`: added after the
full budget's EMA rules came out "contradicts"; no stationarity gate was registered, so the
verdicts stand as measured).

The fit is shared with ``reward-law`` (study 3) through ``<report>/local-model-fit``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gvatheory.inference import Interval, smallest_effect
from validation.registry import RULES, rule
from validation.report import Section, Verdict, markdown_table

# The first results (2026-12-01, before the registry), kept on the page: same ratios, with a
# percentile bootstrap over 4 time blocks per chain that counted blocks of one chain as independent.
EARLIER = (
    "raw 1-2, 3-5, 6-10: 0.964 [0.875, 1.06], 1.01 [0.93, 1.09], 1.12 [1.04, 1.20]; EMA: 1.12 [0.87, 1.36], "
    "1.55 [1.15, 1.86], 1.14 [0.954, 1.27]; all six supported"
)

# The study's own small run (quick budget): Hopper, 5 demonstrations, a 2 x 64 MLP, Adam, 3000 steps.
QUICK_RUN: dict[str, Any] = dict(
    env="Hopper-v5",
    n_demos=5,
    val_demos=1,
    demo_horizon=1000,
    depth=2,
    width=64,
    steps=3000,
    eval_every=3000,
    checkpoint_every=3000,
    ics=5,
    H=500,
    batch_size=64,
    eta=1e-3,
    threads=1,
)


@dataclass(frozen=True)
class Budget:
    """Sizes of one budget: eigen-directions ``k``, continuation ``chains`` x ``steps`` (the first
    ``burn_in`` dropped: at most half), ``keep`` consecutive iterates per chain kept whole for
    the rollouts of ``reward-law``, its ``ics`` and horizons ``H_short`` < ``H_long``."""

    k: int
    chains: int
    steps: int
    keep: int
    ics: int
    H_short: int
    H_long: int


QUICK = Budget(k=10, chains=6, steps=900, keep=12, ics=5, H_short=50, H_long=500)
# The full budget: 11 chains, sized before its runs from the quick page's stated power (the EMA
# directions 3-5 ratio needs about 11 chains to decide at 80% power).
FULL = Budget(k=20, chains=11, steps=3000, keep=16, ics=10, H_short=100, H_long=1000)


def groups_for(k: int) -> list[tuple[int, int]]:
    """Direction groups (0-based, half-open): 1-2, 3-5, 6-10, 11-20, ... up to ``k``."""
    edges = [e for e in (0, 2, 5, 10, 20, 50, 100) if e < k] + [k]
    return list(zip(edges[:-1], edges[1:]))


def burn_in_for(gamma: float, relaxation: np.ndarray, steps: int) -> int:
    """Steps dropped before measuring: 6 EMA time constants (the EMA starts at the checkpoint) and
    10 relaxation times of the slowest raw direction, at most half the continuation."""
    slowest = float(np.max(relaxation)) if np.all(np.isfinite(relaxation)) else math.inf
    want = max(6.0 / gamma, 10.0 * slowest)
    return int(min(math.ceil(want), steps // 2))


def fit_folder(outdir: Path) -> Path:
    """The folder shared by ``local-model`` and ``reward-law``: ``<report>/local-model-fit``."""
    return Path(outdir).parent / "local-model-fit"


def _label(quick: bool, seed: int) -> str:
    return f"{'quick' if quick else 'full'}_s{seed}"


def ensure_run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Path:
    """Train (or reuse) the study's run: :data:`QUICK_RUN` at the quick budget, the ``quick``
    preset otherwise; returns its run directory."""
    from gvaempirics.bc.config import PRESETS, BCConfig
    from gvaempirics.bc.train import train_bc

    values = QUICK_RUN if quick else {**PRESETS["quick"], "threads": 2}
    cfg = BCConfig(**{**values, "seed": seed + 1})
    out = fit_folder(outdir) / f"run_{_label(quick, seed)}"
    train_bc(cfg, out, quiet=quiet)
    return out


@dataclass
class Fit:
    """A fitted local model, its continuation and where they came from."""

    run: Path
    step: int
    local: Any  # LocalModel
    cont: Any  # Continuation
    burn_in: int
    budget: Budget
    fit_seconds: float
    expert_return: float


def fit_and_continue(run: Path, step: int, budget: Budget, *, seed: int, quiet: bool, cache: Path | None = None) -> Fit:
    """Fit the local model at checkpoint ``step`` of BC run ``run`` and continue training from
    it; with ``cache`` (a folder), reuse what an earlier call with the same arguments saved there."""
    import time

    from gvaempirics.bc.local_model import Continuation, LocalModel, continue_bc, fit_bc, load_checkpoint
    from gvaempirics.rundir import atomic_write, atomic_write_json

    ck = load_checkpoint(run, step, threads=1)
    key = {"run": str(Path(run).resolve()), "step": ck.step, "budget": asdict(budget), "seed": seed, "version": 1}
    if cache is not None and (cache / "fit.json").is_file():
        meta = json.loads((cache / "fit.json").read_text())
        if meta["key"] == key:
            local = LocalModel.load(cache / "local_model.npz")
            with np.load(cache / "continuation.npz") as z:
                cont = Continuation(
                    **{f: z[f] for f in ("z", "z_ema", "kept_steps", "kept_raw", "kept_ema")},
                    gamma=local.gamma,
                    seconds=float(z["seconds"]),
                )
            return Fit(Path(run), ck.step, local, cont, meta["burn_in"], budget, meta["fit_seconds"], ck.expert_return)
    start = time.perf_counter()
    local = fit_bc(ck, k=budget.k, seed=seed)
    fit_seconds = time.perf_counter() - start
    burn_in = burn_in_for(local.gamma, local.relaxation_steps, budget.steps)
    keep = range(burn_in, min(burn_in + budget.keep, budget.steps + 1))
    cont = continue_bc(ck, local, steps=budget.steps, chains=budget.chains, seed=seed + 1, keep=keep, quiet=quiet)
    if cache is not None:
        local.save(cache / "local_model.npz")
        arrays = {f: getattr(cont, f) for f in ("z", "z_ema", "kept_steps", "kept_raw", "kept_ema")}
        atomic_write(cache / "continuation.npz", lambda fh: np.savez(fh, seconds=cont.seconds, **arrays))
        atomic_write_json(cache / "fit.json", {"key": key, "burn_in": burn_in, "fit_seconds": fit_seconds})
    return Fit(Path(run), ck.step, local, cont, burn_in, budget, fit_seconds, ck.expert_return)


def shared_fit(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Fit:
    """The fit both studies read: the study's run, its last checkpoint, the budget's sizes."""
    run = ensure_run(outdir, quick=quick, seed=seed, quiet=quiet)
    cache = fit_folder(outdir) / f"fit_{_label(quick, seed)}"
    return fit_and_continue(run, -1, QUICK if quick else FULL, seed=seed, quiet=quiet, cache=cache)


def rule_key(weights: str, group: tuple[int, int]) -> str:
    """The registry key of a group's verdict: ``local-model/raw-1-2`` for raw directions 1-2."""
    return f"local-model/{weights}-{group[0] + 1}-{group[1]}"


def resolved_factor(log_units) -> float:
    """A budget's power as a factor: ``exp(smallest_effect(sd, n))`` over ``n`` units' log ratios,
    how far (as a factor) a true ratio must lie from a region's edge for the t interval over these
    units to fall on one side of it with 80% power. Infinite below 2 units."""
    a = np.asarray(log_units, dtype=float)
    if len(a) < 2:
        return math.inf
    return math.exp(smallest_effect(float(a.std(ddof=1)), len(a)))


def compare(z: np.ndarray, z_ema: np.ndarray, local, *, burn_in: int) -> dict[str, Any]:
    """Measured / predicted variances per group (:func:`groups_for`) and per direction, raw and EMA,
    one ratio per chain (``z``, ``z_ema``: (chains, T, k) coordinates of the continuation). Without
    a stationary law (an unstable model) there is no prediction and the lists are empty."""
    from gvaempirics.bc.local_model import variance_ratios

    groups = groups_for(local.k)
    singles = [(i, i + 1) for i in range(local.k)]
    out: dict[str, Any] = {"groups": groups, "chains": len(z)}
    for name, zz in (("raw", z), ("ema", z_ema)):
        if not local.stable:
            out[name] = out[f"{name}_single"] = []
            continue
        pred = np.diag(local.raw_cov if name == "raw" else local.ema_cov)
        out[name] = variance_ratios(zz, pred, groups, burn_in=burn_in)
        out[f"{name}_single"] = variance_ratios(zz, pred, singles, burn_in=burn_in)
    return out


def subspace_fractions(fit: Fit) -> dict[str, float]:
    """Share of one optimizer step's squared length inside the subspace, raw and EMA (consecutive
    kept iterates after the burn-in)."""
    out = {}
    for name in ("raw", "ema"):
        kept = getattr(fit.cont, f"kept_{name}")
        steps = (kept[:, 1:].astype(np.float64) - kept[:, :-1]).reshape(-1, kept.shape[-1])
        out[name] = fit.local.subspace_fraction(steps) if len(steps) else math.nan
    return out


def stationarity(cmp: dict[str, Any], z: np.ndarray, z_ema: np.ndarray, local, *, burn_in: int) -> list[dict]:
    """A diagnostic, not a verdict: is what the chains measure a stationary fluctuation? Per group,
    raw and EMA, over the predicted variance: the spread across chains, averaged over the first
    and over the last quarter of the measured steps (a stationary law keeps it level; slow motion
    that differs between chains makes it grow), and the geometric-mean ratio after removing each
    chain's own mean and linear trend (what is left once slow motion is taken out; it also removes
    part of a stationary EMA's fluctuation, more the larger its time constant is beside the
    window). The spread across chains cannot see motion that all chains share."""
    from gvaempirics.bc.local_model import variance_ratios

    if not local.stable:
        return []
    rows = []
    for name, zz in (("raw", z), ("ema", z_ema)):
        pred = np.diag(local.raw_cov if name == "raw" else local.ema_cov)
        tail = np.asarray(zz, dtype=float)[:, burn_in:]
        t = np.arange(tail.shape[1]) - (tail.shape[1] - 1) / 2
        slope = np.einsum("t,ctk->ck", t, tail) / (t @ t)
        resid = tail - tail.mean(axis=1, keepdims=True) - slope[:, None, :] * t[None, :, None]
        detrended = variance_ratios(resid, pred, cmp["groups"], burn_in=0)
        quarter = max(tail.shape[1] // 4, 1)
        spread = tail.var(axis=0, ddof=1)  # (T, k): across chains, at each step
        first, last = spread[:quarter].mean(axis=0), spread[-quarter:].mean(axis=0)
        for (lo, hi), d in zip(cmp["groups"], detrended):
            p = float(pred[lo:hi].sum())
            rows.append(
                {
                    "weights": name,
                    "directions": f"{lo + 1}-{hi}",
                    "spread across chains, first quarter / predicted": float(first[lo:hi].sum()) / p,
                    "spread across chains, last quarter / predicted": float(last[lo:hi].sum()) / p,
                    "ratio after removing each chain's trend": d.ratio,
                }
            )
    return rows


def decide_groups(cmp: dict[str, Any], local) -> tuple[list[Verdict], list[dict]]:
    """Each group's verdict by its registry rule, and the table rows; a group with no registered
    rule gets a row and no verdict."""
    gate = (
        "" if local.stable else f"the fitted model has no stationary law (spectral radius {local.spectral_radius:.4f})"
    )
    verdicts, rows = [], []
    for name in ("raw", "ema"):
        for i, g in enumerate(cmp["groups"]):
            r = cmp[name][i] if cmp[name] else None
            interval = r.interval if r else Interval(math.nan, math.nan, math.nan)
            power = resolved_factor(np.log(r.per_chain)) if r else math.inf
            key = rule_key(name, g)
            outcome = "no registered rule: not decided"
            if key in RULES:
                detail = (
                    f"variance measured {_f(r.measured if r else math.nan)}, predicted "
                    f"{_f(r.predicted if r else math.nan)} (geometric mean over chains); at {cmp['chains']} chains "
                    f"the budget decides a ratio a factor {_f(power)} from an edge"
                )
                verdicts.append(rule(key).decide(interval, detail, gate=gate))
                outcome = verdicts[-1].outcome
            rows.append(
                {
                    "weights": name,
                    "directions": f"{g[0] + 1}-{g[1]}",
                    "predicted": r.predicted if r else math.nan,
                    "measured (g.m.)": r.measured if r else math.nan,
                    "ratio [95% CI]": str(interval),
                    "chains": interval.n,
                    "sd log ratio": float(np.log(r.per_chain).std(ddof=1)) if r and interval.n > 1 else math.nan,
                    "decides at (x)": power,
                    "verdict": outcome,
                }
            )
    return verdicts, rows


def plot(fit: Fit, cmp: dict[str, Any]):
    """Predicted vs measured variance per direction (log scale), raw and EMA."""
    import matplotlib.pyplot as plt

    band = rule("local-model/raw-1-2").region
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    idx = np.arange(1, fit.local.k + 1)
    for ax, name, title in zip(axes, ("raw", "ema"), ("raw iterates", f"EMA, gamma = {fit.local.gamma:.3g}")):
        rows = cmp[f"{name}_single"]
        if not rows:
            continue
        pred = np.array([r.predicted for r in rows])
        meas = np.array([r.measured for r in rows])
        lo = np.array([r.low for r in rows]) * pred
        hi = np.array([r.high for r in rows]) * pred
        ax.errorbar(
            idx, meas, yerr=[meas - lo, hi - meas], fmt="o", color="tab:blue", label="measured (95% CI over chains)"
        )
        ax.plot(idx, pred, "s", mfc="none", color="tab:red", label="predicted (linear model)")
        ax.fill_between(idx, pred * band.low, pred * band.high, color="tab:red", alpha=0.12, label="registered region")
        ax.set_yscale("log")
        ax.set_xlabel("eigen-direction (by curvature)")
        ax.set_ylabel("stationary variance of the coordinate")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"local model at step {fit.step} of {fit.run.name}")
    fig.tight_layout()
    return fig


def _raw_radius(local) -> float:
    """The raw iterates' spectral radius (the slowest ``(z, n)`` block), from the relaxation times."""
    slowest = float(np.max(local.relaxation_steps))
    return math.exp(-1.0 / slowest) if math.isfinite(slowest) else math.inf


def _f(v: float) -> str:
    return f"{v:.3g}" if math.isfinite(v) else "n/a"


def section(fit: Fit, cmp: dict[str, Any], fractions: dict[str, float], drift: list[dict], figure: Path) -> Section:
    local, cont, b = fit.local, fit.cont, fit.budget
    verdicts, rows = decide_groups(cmp, local)
    powers = [row["decides at (x)"] for row in rows if row["verdict"] in ("supports", "contradicts", "inconclusive")]
    body = (
        f"Run `{fit.run}`, checkpoint step {fit.step} ({local.optimizer}, eta {local.eta:.3g}, "
        f"momentum/beta1 {local.beta:g}, batch {local.batch_size}). Fitted in {fit.fit_seconds:.1f} s: top {local.k} "
        f"eigenvalues of the {'Adam-preconditioned ' if local.optimizer == 'adam' else ''}Hessian "
        f"{', '.join(f'{v:.4g}' for v in local.eigenvalues)}; gradient noise from {local.noise_samples} per-sample "
        f"gradients; spectral radius of the recursion {local.spectral_radius:.4f} (of its raw part "
        f"{_raw_radius(local):.4f}; the EMA's is 1 - gamma); raw relaxation times "
        f"{', '.join(f'{v:.3g}' for v in local.relaxation_steps)} steps. Continuation: {cont.z.shape[0]} chains x "
        f"{cont.z.shape[1] - 1} steps at constant eta ({cont.seconds:.1f} s), burn-in {fit.burn_in} steps, EMA weight "
        f"{local.gamma:.4g} (the run's at that step) started at the checkpoint. Budget: k={b.k}, chains={b.chains}, "
        f"steps={b.steps}.\n\n"
        f"What the subspace holds: of the squared length of one optimizer step (in the preconditioned metric "
        f"where the model's dynamics are isotropic), {fractions['raw']:.3g} lies in the top-{local.k} "
        f"subspace for the raw iterates and {fractions['ema']:.3g} for the EMA's steps (consecutive kept "
        f"iterates after the burn-in); the rest moves in the complement, which the model holds fixed.\n\n"
        f"Unit and interval: each continuation chain (its own minibatch seed) is one unit. Its measured variance "
        f"of a group is the mean square deviation of its coordinates after the burn-in from the mean of all "
        f"chains, summed over the group, over the predicted one; the ratio is the geometric mean over chains, "
        f"with a Student t interval on the chains' log ratios. The rule of each verdict is printed beside it.\n\n"
        f"Power: 'decides at' is exp(smallest_effect(sd of the chains' log ratios, chains)), the factor by which a "
        f"true ratio must lie inside the region from its nearer edge to be supported, or outside it to be "
        f"contradicted, with 80% power; at this budget ({cmp['chains']} chains) the groups decide a factor "
        f"{_f(min(powers, default=math.inf))} to {_f(max(powers, default=math.inf))}.\n\n"
        f"Earlier outcomes (quick budget, the study's own small run): the first results (2026-12-01) "
        f"bootstrapped time blocks within chains as if they were independent, before the registry (2026-12-03) "
        f"fixed the unit; they gave {EARLIER}.\n\n"
        + markdown_table(rows)
        + "\n\nStationarity (a diagnostic beside the verdicts, added after the full budget's EMA rules came out "
        "'contradicts'; it gates nothing): the spread of each group across chains over the first quarter of "
        "the measured steps and over the last, and the ratio once each chain's own mean and linear trend are removed, all over the "
        "predicted variance. A stationary fluctuation keeps the spread level and loses a little to detrending; "
        "slow motion the model leaves out (of the subspace's centre as the complement moves, of the second "
        "moments, or from nonlinearity: this does not tell them apart) shows as a per-chain offset or trend, "
        "which detrending takes out.\n\n" + (markdown_table(drift) if drift else "No stationary law, so no diagnostic.")
    )
    return Section(
        "local-model",
        "A local quadratic model predicts the fluctuations of the iterates",
        body,
        verdicts,
        [figure],
    )


def run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Section:
    from validation.report import save_figure

    outdir = Path(outdir)
    fit = shared_fit(outdir, quick=quick, seed=seed, quiet=quiet)
    cmp = compare(fit.cont.z, fit.cont.z_ema, fit.local, burn_in=fit.burn_in)
    figure = save_figure(plot(fit, cmp), outdir / "local_model.png")
    drift = stationarity(cmp, fit.cont.z, fit.cont.z_ema, fit.local, burn_in=fit.burn_in)
    return section(fit, cmp, subspace_fractions(fit), drift, figure)
