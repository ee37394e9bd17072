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
EMA's coordinates after a burn-in. Their variance per group of directions (top 1-2, 3-5, 6-k, ...)
over the predicted one, with a 95% block-bootstrap interval over time blocks.

Verdict (stated before any run, not tuned): with ``FACTOR = 2``, *supports* if the interval of
measured / predicted variance lies inside [1/2, 2], *contradicts* if it lies wholly outside,
*inconclusive* otherwise.

The fit is shared with ``reward-law`` (study 3) through ``<report>/local-model-fit``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from validation.report import Section, Verdict, markdown_table

FACTOR = 2.0  # supports: the variance ratio's 95% interval inside [1/FACTOR, FACTOR]
CONFIDENCE = 0.95
BLOCKS_PER_CHAIN = 4
N_BOOT = 2000

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
FULL = Budget(k=20, chains=8, steps=3000, keep=16, ics=10, H_short=100, H_long=1000)


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


def compare(fit: Fit, *, seed: int) -> dict[str, Any]:
    """Measured / predicted variances per group and per direction, raw and EMA."""
    from gvaempirics.bc.local_model import variance_ratios

    local, cont = fit.local, fit.cont
    groups = groups_for(local.k)
    singles = [(i, i + 1) for i in range(local.k)]
    out: dict[str, Any] = {"groups": groups}
    for name, z, P in (("raw", cont.z, local.raw_cov), ("ema", cont.z_ema, local.ema_cov)):
        pred = np.diag(P)
        kw = dict(burn_in=fit.burn_in, blocks_per_chain=BLOCKS_PER_CHAIN, n_boot=N_BOOT, confidence=CONFIDENCE)
        out[name] = variance_ratios(z, pred, groups, seed=seed, **kw)
        out[f"{name}_single"] = variance_ratios(z, pred, singles, seed=seed, **kw)
        kept = getattr(cont, f"kept_{name}")
        steps = (kept[:, 1:].astype(np.float64) - kept[:, :-1]).reshape(-1, kept.shape[-1])
        out[f"{name}_fraction"] = local.subspace_fraction(steps) if len(steps) else math.nan
    return out


def plot(fit: Fit, cmp: dict[str, Any]):
    """Predicted vs measured variance per direction (log scale), raw and EMA."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    idx = np.arange(1, fit.local.k + 1)
    for ax, name, title in zip(axes, ("raw", "ema"), ("raw iterates", f"EMA, gamma = {fit.local.gamma:.3g}")):
        rows = cmp[f"{name}_single"]
        pred = np.array([r.predicted for r in rows])
        meas = np.array([r.measured for r in rows])
        lo = np.array([r.low for r in rows]) * pred
        hi = np.array([r.high for r in rows]) * pred
        ax.errorbar(idx, meas, yerr=[meas - lo, hi - meas], fmt="o", color="tab:blue", label="measured (95% CI)")
        ax.plot(idx, pred, "s", mfc="none", color="tab:red", label="predicted (linear model)")
        ax.fill_between(idx, pred / FACTOR, pred * FACTOR, color="tab:red", alpha=0.12, label=f"factor {FACTOR:g}")
        ax.set_yscale("log")
        ax.set_xlabel("eigen-direction (by curvature)")
        ax.set_ylabel("stationary variance of the coordinate")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"local model at step {fit.step} of {fit.run.name}")
    fig.tight_layout()
    return fig


def _f(v: float) -> str:
    return f"{v:.3g}" if math.isfinite(v) else "n/a"


def section(fit: Fit, cmp: dict[str, Any], figure: Path) -> Section:
    local = fit.local
    verdicts, rows = [], []
    for name, label in (("raw", "raw iterates"), ("ema", f"EMA (gamma {local.gamma:.3g})")):
        for r in cmp[name]:
            g = f"{r.group[0] + 1}-{r.group[1]}"
            outcome = factor_outcome(r)
            detail = f"measured/predicted variance {_f(r.ratio)} [{_f(r.low)}, {_f(r.high)}]"
            verdicts.append(
                Verdict.of(
                    f"{label}, directions {g}: the local linear model's stationary variance matches the "
                    f"continuation's within a factor {FACTOR:g} (95% CI of the ratio inside "
                    f"[{1 / FACTOR:g}, {FACTOR:g}])",
                    outcome,
                    detail,
                )
            )
            rows.append(
                {
                    "weights": name,
                    "directions": g,
                    "predicted": r.predicted,
                    "measured": r.measured,
                    "ratio": r.ratio,
                    "CI low": r.low,
                    "CI high": r.high,
                    "verdict": outcome,
                }
            )
    cont = fit.cont
    b = fit.budget
    body = (
        f"Run `{fit.run}`, checkpoint step {fit.step} ({local.optimizer}, eta {local.eta:.3g}, "
        f"momentum/beta1 {local.beta:g}, batch {local.batch_size}). Fitted in {fit.fit_seconds:.1f} s: top {local.k} "
        f"eigenvalues of the {'Adam-preconditioned ' if local.optimizer == 'adam' else ''}Hessian "
        f"{', '.join(f'{v:.4g}' for v in local.eigenvalues)}; gradient noise from {local.noise_samples} per-sample "
        f"gradients; spectral radius of the step {local.spectral_radius:.4f}; raw relaxation times "
        f"{', '.join(f'{v:.3g}' for v in local.relaxation_steps)} steps. Continuation: {cont.z.shape[0]} chains x "
        f"{cont.z.shape[1] - 1} steps at constant eta ({cont.seconds:.1f} s), burn-in {fit.burn_in} steps, EMA weight "
        f"{local.gamma:.4g} (the run's at that step) started at the checkpoint; {BLOCKS_PER_CHAIN} time blocks per "
        f"chain, {N_BOOT} block-bootstrap resamples. Budget: k={b.k}, chains={b.chains}, steps={b.steps}.\n\n"
        f"What the subspace holds: of the squared length of one optimizer step (in the preconditioned metric "
        f"where the model's dynamics are isotropic), {cmp['raw_fraction']:.3g} lies in the top-{local.k} "
        f"subspace for the raw iterates and {cmp['ema_fraction']:.3g} for the EMA's steps (consecutive kept "
        f"iterates after the burn-in); the rest moves in the complement, which the model holds fixed.\n\n"
        f"Verdict rule (fixed before running): supports if the {CONFIDENCE:.0%} interval of measured / predicted "
        f"variance lies in [{1 / FACTOR:g}, {FACTOR:g}], contradicts if wholly outside, inconclusive otherwise.\n\n"
        + markdown_table(rows)
    )
    return Section(
        "local-model",
        "A local quadratic model predicts the fluctuations of the iterates",
        body,
        verdicts,
        [figure],
    )


def factor_outcome(r) -> str:
    from gvaempirics.bc.local_model import factor_verdict

    return factor_verdict(r.low, r.high, FACTOR)


def run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Section:
    from validation.report import save_figure

    outdir = Path(outdir)
    fit = shared_fit(outdir, quick=quick, seed=seed, quiet=quiet)
    cmp = compare(fit, seed=seed)
    figure = save_figure(plot(fit, cmp), outdir / "local_model.png")
    return section(fit, cmp, figure)
