r"""Study: the noise floor scales with eta and gamma (paper Sec. 4.3, the first half of Prop. 4.1).

Prediction, stated before any window is fitted: at each warm start the top Hessian eigenvalues
:math:`\lambda_i` of the training loss (preconditioned for Adam) and the minibatch noise variance
:math:`s_i` along each eigenvector are measured (:func:`gvaempirics.noise_floor.measure_spectrum`);
the stationary excess of the raw iterate and of each EMA, over the window mean, is the moment
engine's, summed over the modes (:func:`gvatheory.noise_floor.spectrum_noise_floor`; heavy-ball
momentum for Adam). No parameter is fitted: slopes and EMA/raw ratios depend on the curvatures and
on the relative noise of the modes, not on its overall scale. With a spread of curvatures the
EMA's excess falls more slowly than gamma (modes with :math:`\eta\lambda_i < \gamma` are not
averaged), and the window-mean reference removes the modes slower than the window, so the
curvature enters both slopes.

Measurement (:func:`gvaempirics.noise_floor.run_replicate`), in behavior cloning on Hopper (plain
SGD, and Adam) and in a small language model (Adam): per replicate, a warm-up run with its own
training seed and data (demonstrations; validation windows), the spectrum at its end, then per
``eta`` a burn-in and a window at that constant ``eta`` with several constant-gamma EMAs. Excess
losses are window means over the window average of iterates (the reference).

Verdicts (rules ``noise-floor/<setting>/{raw-slope,ema-slope,ema-ratio}`` of
:mod:`validation.registry`), the unit being the replicate (own warm-up, own seed):

* raw slope: least-squares slope of log raw excess on log eta, measured minus predicted, per seed;
* EMA slope: slope of log EMA excess on log gamma with one intercept per eta over every
  ``(eta, gamma)`` point whose predicted excess is positive, measured minus predicted, per seed;
* ratio: geometric mean over every ``(eta, gamma)`` point of measured / predicted EMA/raw ratio;

t intervals over seeds (:func:`gvatheory.inference.mean_interval`, geometric for the ratio).
Gates (inconclusive, with the reason): a window not stationary (:data:`DRIFT_LIMIT`), a measured
excess that is not positive where a logarithm is needed, or a step size at which the quadratic
model has no stationary law.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gvaempirics.noise_floor import FloorSetting
from gvatheory.inference import Interval, mean_interval, smallest_effect
from validation.registry import rule
from validation.report import Section, Verdict, markdown_table

# A window whose raw loss moves between its halves by more than this fraction of its raw excess is
# not at stationarity. The mean over seeds at each eta is compared, so that seed noise in one
# window's drift does not trip it alone. Fixed on 2026-12-03 before the runs of this version, but
# after the 2026-12-01 page had shown |drift| / raw excess at the quick sizes (0.19 to 9.2): the
# registry's "written after seeing" for these rules says so.
DRIFT_LIMIT = 0.25
WORKERS = 2  # replicates run in parallel processes (each single-threaded)
SETTINGS = ("bc-sgd", "bc-adam", "lm-adam")


def settings(quick: bool) -> list[FloorSetting]:
    """The three settings at the quick or the full budget."""
    sgd = dict(key="bc-sgd", label="BC Hopper, SGD", kind="bc", optimizer="sgd", warm_eta=0.05)
    adam = dict(key="bc-adam", label="BC Hopper, Adam", kind="bc", optimizer="adam", warm_eta=3e-3)
    lm = dict(key="lm-adam", label="LM (teacher corpus), Adam", kind="lm", optimizer="adam", warm_eta=1e-2)
    lm_spec = dict(modes=32, spectrum_samples=128)  # fewer: the LM cost's Hessian-vector products are the dearest
    if quick:
        g = (3e-3, 1e-2, 3e-2, 1e-1)
        short = dict(gammas=g, seeds=3, burn=2500, window=3000, warm_steps=4000)
        return [
            FloorSetting(etas=(0.01, 0.03, 0.1), **sgd, **short),
            FloorSetting(etas=(3e-4, 1e-3, 3e-3), **adam, **short),
            FloorSetting(etas=(3e-4, 1e-3, 3e-3), gammas=g, seeds=3, burn=800, window=1600, warm_steps=2000,
                         **lm, **lm_spec),
        ]  # fmt: skip
    g = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    long = dict(gammas=g, seeds=5, burn=10000, window=20000, warm_steps=40000)
    return [
        FloorSetting(etas=(0.003, 0.01, 0.03, 0.06, 0.1), **sgd, **long),
        FloorSetting(etas=(1e-4, 3e-4, 1e-3, 2e-3, 3e-3), **adam, **long),
        FloorSetting(etas=(1e-4, 3e-4, 1e-3, 3e-3), gammas=g, seeds=5, burn=5000, window=10000, warm_steps=20000,
                     **lm, **lm_spec),
    ]  # fmt: skip


# ---------------------------------------------------------------- measure


def _replicate_job(args):
    from gvaempirics.noise_floor import run_replicate

    st, root, seed, r = args
    return run_replicate(st, root, seed=seed, replicate=r, quiet=True)


def measure(sts: list[FloorSetting], outdir: Path, *, seed: int, quiet: bool, workers: int = WORKERS) -> list[list]:
    """``replicates[i][r]``: replicate ``r`` of setting ``sts[i]``, under
    ``outdir/<key>-<digest of the setting and seed>/replicate<r>/`` (read back on a rerun), run
    ``workers`` at a time in separate processes."""
    import hashlib

    jobs = []
    for st in sts:
        root = Path(outdir) / f"{st.key}-{hashlib.sha256(repr((st, seed)).encode()).hexdigest()[:10]}"
        jobs += [(st, root / f"replicate{r}", seed, r) for r in range(st.seeds)]
    if workers <= 1:
        done = [_replicate_job(j) for j in jobs]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # the LM's replicates take longest: submitted first, so the workers finish together
        order = sorted(range(len(jobs)), key=lambda i: jobs[i][0].kind != "lm")
        done = [None] * len(jobs)
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_replicate_job, jobs[i]): i for i in order}
            for fut in as_completed(futures):
                i = futures[fut]
                done[i] = fut.result()
                if not quiet:
                    print(f"[noise-floor] {jobs[i][0].key} replicate {jobs[i][3]} done", flush=True)
    out, i = [], 0
    for st in sts:
        out.append(done[i : i + st.seeds])
        i += st.seeds
    return out


# ---------------------------------------------------------------- predict


def predict(spectrum, etas, gammas, window: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Predicted excesses over the window mean: raw ``(n_eta,)`` and EMA ``(n_eta, n_gamma)``
    from one replicate's measured spectrum, and why not (``""`` if defined; NaN entries then)."""
    from gvatheory.noise_floor import spectrum_noise_floor

    raw, ema, why = np.full(len(etas), np.nan), np.full((len(etas), len(gammas)), np.nan), ""
    for e, eta in enumerate(etas):
        try:
            sf = spectrum_noise_floor(
                spectrum.curvatures, spectrum.noise, eta, gammas, beta=spectrum.beta, c=spectrum.c, window=window
            )
        except ValueError as err:  # a step at which the model has no stationary law
            why = why or f"no stationary law of the model at eta={eta:g} ({err})"
            continue
        raw[e], ema[e] = sf.over_reference()
    return raw, ema, why


# ---------------------------------------------------------------- decide


@dataclass
class Floors:
    """Measured and predicted noise floors of one setting, one row per seed (replicate).

    ``raw``, ``pred_raw``, ``drift``: (S, n_eta); ``ema``, ``pred_ema``: (S, n_eta, n_gamma).
    ``unstable``: why the model has no prediction somewhere (``""``: it has one everywhere)."""

    key: str
    label: str
    etas: np.ndarray
    gammas: np.ndarray
    raw: np.ndarray
    ema: np.ndarray
    drift: np.ndarray
    pred_raw: np.ndarray
    pred_ema: np.ndarray
    unstable: str = ""


def floors_of(st: FloorSetting, replicates: list) -> Floors:
    """The :class:`Floors` of a setting's replicates: each seed's prediction from its own spectrum."""
    preds = [predict(r.spectrum, st.etas, st.gammas, st.window) for r in replicates]
    return Floors(
        st.key,
        st.label,
        np.array(st.etas),
        np.array(st.gammas),
        raw=np.array([[w.excess_raw for w in r.windows] for r in replicates]),
        ema=np.array([[w.excess_ema for w in r.windows] for r in replicates]),
        drift=np.array([[w.drift for w in r.windows] for r in replicates]),
        pred_raw=np.array([p[0] for p in preds]),
        pred_ema=np.array([p[1] for p in preds]),
        unstable=next((p[2] for p in preds if p[2]), ""),
    )


def _slope(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """Least-squares slope of ``y`` on ``x`` with one intercept per group."""
    xd, yd = x.astype(float).copy(), y.astype(float).copy()
    for g in np.unique(groups):
        m = groups == g
        xd[m] -= xd[m].mean()
        yd[m] -= yd[m].mean()
    den = float(xd @ xd)
    return float(xd @ yd / den) if den > 0 else math.nan


@dataclass
class Units:
    """Per-seed unit values of the three verdicts, the gate of each, and the numbers behind them."""

    raw_diff: np.ndarray  # (S,) measured - predicted raw slope
    raw_pred: np.ndarray  # (S,) predicted raw slope
    ema_diff: np.ndarray
    ema_pred: np.ndarray
    ratio: np.ndarray  # (S,) geometric mean of measured / predicted EMA/raw
    drift_rel: np.ndarray  # (n_eta,) |mean drift| / mean raw excess
    gates: dict[str, str]  # verdict name -> reason it cannot decide ("" when it can)


def units(f: Floors) -> Units:
    """Per-seed slopes and ratios, and the gates (module docstring)."""
    S = f.raw.shape[0]
    le, lg = np.log(f.etas), np.log(f.gammas)
    with np.errstate(divide="ignore", invalid="ignore"):
        drift_rel = np.abs(f.drift.mean(0)) / f.raw.mean(0)
    bad = [f"{x:.3g} at eta={e:g}" for e, x in zip(f.etas, drift_rel) if not x <= DRIFT_LIMIT]
    stationary = f"not stationary: |drift| / raw excess = {', '.join(bad)} (limit {DRIFT_LIMIT:g})" if bad else ""
    common = "; ".join(r for r in (stationary, f"the model: {f.unstable}" if f.unstable else "") if r)
    # the EMA points: where every seed's predicted excess over the reference is positive
    e_idx, g_idx = np.nonzero(np.all(f.pred_ema > 0, axis=0))
    groups = np.zeros(len(f.etas), int)

    def positive(name: str, values: np.ndarray) -> str:
        return "" if np.all(values > 0) else f"measured {name} excess not positive at some point: no logarithm"

    with np.errstate(divide="ignore", invalid="ignore"):
        raw_m = np.array([_slope(le, np.log(f.raw[s]), groups) for s in range(S)])
        raw_p = np.array([_slope(le, np.log(f.pred_raw[s]), groups) for s in range(S)])
        ema_m = np.array([_slope(lg[g_idx], np.log(f.ema[s, e_idx, g_idx]), e_idx) for s in range(S)])
        ema_p = np.array([_slope(lg[g_idx], np.log(f.pred_ema[s, e_idx, g_idx]), e_idx) for s in range(S)])
        z = np.log(f.ema[:, e_idx, g_idx] / f.raw[:, e_idx]) - np.log(
            f.pred_ema[:, e_idx, g_idx] / f.pred_raw[:, e_idx]
        )
    ratio = np.exp(z.mean(axis=1)) if len(e_idx) else np.full(S, np.nan)
    few = "" if len(e_idx) >= 2 else f"only {len(e_idx)} (eta, gamma) points with a positive predicted EMA excess"
    both = np.concatenate([f.raw.ravel(), f.ema[:, e_idx, g_idx].ravel()])
    reasons = {  # every reason that applies is said, not only the first
        "raw-slope": (common, positive("raw", f.raw)),
        "ema-slope": (common, few, positive("EMA", f.ema[:, e_idx, g_idx])),
        "ema-ratio": (common, few, positive("raw or EMA", both)),
    }
    gates = {name: "; ".join(r for r in why if r) for name, why in reasons.items()}
    return Units(raw_m - raw_p, raw_p, ema_m - ema_p, ema_p, ratio, drift_rel, gates)


def _interval(values: np.ndarray, *, log: bool) -> Interval:
    """t interval over the seeds whose unit value is defined (positive too, on the log scale)."""
    v = values[np.isfinite(values) & (values > 0)] if log else values[np.isfinite(values)]
    return mean_interval(v, log=log)


def decide(f: Floors) -> list[Verdict]:
    """The three verdicts of a setting, each by its registered rule, with the power of its budget."""
    u = units(f)
    out = []
    for name, values, pred, what in (
        ("raw-slope", u.raw_diff, u.raw_pred, "raw slope"),
        ("ema-slope", u.ema_diff, u.ema_pred, "EMA slope"),
    ):
        iv = _interval(values, log=False)
        sd = float(np.std(values[np.isfinite(values)], ddof=1)) if iv.n > 1 else math.nan
        detail = (
            f"measured - predicted {what} per seed: {', '.join(f'{v:+.3f}' for v in values)}; predicted "
            f"{', '.join(f'{p:.3f}' for p in pred)}; smallest difference this budget resolves from an edge "
            f"(80% power): {smallest_effect(sd, iv.n):.3g}"
        )
        out.append(rule(f"noise-floor/{f.key}/{name}").decide(iv, detail, gate=u.gates[name]))
    iv = _interval(u.ratio, log=True)
    ok = u.ratio[np.isfinite(u.ratio) & (u.ratio > 0)]
    sd = float(np.std(np.log(ok), ddof=1)) if len(ok) > 1 else math.nan
    detail = (
        f"measured / predicted EMA/raw ratio per seed: {', '.join(f'{v:.3f}' for v in u.ratio)}; smallest factor "
        f"this budget resolves from an edge (80% power): {math.exp(smallest_effect(sd, iv.n)):.3g}"
    )
    out.append(rule(f"noise-floor/{f.key}/ema-ratio").decide(iv, detail, gate=u.gates["ema-ratio"]))
    return out


# ---------------------------------------------------------------- present


def _two_se(x: np.ndarray) -> np.ndarray:
    """Two standard errors over seeds (axis 0); zero with one seed."""
    S = x.shape[0]
    return 2 * x.std(0, ddof=1) / math.sqrt(S) if S > 1 else np.zeros(x.shape[1:])


def plot(floors: list[Floors]):
    """Log-log excess loss vs eta (raw) and vs gamma (EMAs): measured (mean ± 2 SE over seeds)
    and predicted from each seed's spectrum (mean over seeds), no parameter fitted."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(2, len(floors), figsize=(4.2 * len(floors), 7.0), squeeze=False)
    for j, f in enumerate(floors):
        ax = axes[0, j]
        m = f.raw.mean(0)
        ax.errorbar(f.etas, np.where(m > 0, m, np.nan), yerr=_two_se(f.raw), fmt="ko", ms=4, label="measured")
        ax.plot(f.etas, f.pred_raw.mean(0), "k-", label="model (measured spectrum)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on a short decade
        ax.set_xlabel("eta")
        ax.set_ylabel("raw excess validation loss")
        ax.set_title(f.label, fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[1, j]
        for e, eta in enumerate(f.etas):
            me = f.ema[:, e].mean(0)
            (line,) = ax.plot(f.gammas, f.pred_ema[:, e].mean(0), "-", lw=1)
            ax.errorbar(f.gammas, np.where(me > 0, me, np.nan), yerr=_two_se(f.ema[:, e]), fmt="o", ms=4,
                        color=line.get_color(), label=f"eta = {eta:g}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("gamma")
        ax.set_ylabel("EMA excess validation loss")
        ax.legend(fontsize=7)
    fig.suptitle("Noise floor at constant eta: points measured, lines the model of the measured spectrum", fontsize=10)
    fig.tight_layout()
    return fig


def _table(f: Floors) -> str:
    u = units(f)
    rows = []
    for e, eta in enumerate(f.etas):
        row = {
            "eta": float(eta),
            "raw excess": float(f.raw[:, e].mean()),
            "model": float(f.pred_raw[:, e].mean()),
            "drift": float(f.drift[:, e].mean()),
            "abs drift / raw": float(u.drift_rel[e]),
        }
        for g, gamma in enumerate(f.gammas):
            row[f"EMA/raw g={gamma:g}"] = float(f.ema[:, e, g].mean() / f.raw[:, e].mean())
            row[f"model g={gamma:g}"] = float(np.mean(f.pred_ema[:, e, g] / f.pred_raw[:, e]))
        rows.append(row)
    return markdown_table(rows)


def lag_corrected(f: Floors, window: int) -> np.ndarray:
    """The model's EMA/raw ratio plus the first-order lag of each EMA behind the measured drift,
    ``(n_eta, n_gamma)``: a loss moving at ``s = 2 drift / window`` per step raises the excess of an
    EMA that trails the iterate by ``(1 - gamma) / gamma`` steps by ``-s (1 - gamma) / gamma``
    (relative to the raw excess, whose trend cancels against the window mean to first order).
    Descriptive only: nothing is fitted, and no verdict reads it."""
    model = np.mean(f.pred_ema / f.pred_raw[:, :, None], axis=0)
    slope = 2.0 * f.drift.mean(axis=0) / window  # (n_eta,) loss change per step
    lag = (1.0 - f.gammas) / f.gammas
    return model - slope[:, None] * lag[None, :] / f.raw.mean(axis=0)[:, None]


def _lag_table(f: Floors, window: int) -> str:
    corrected = lag_corrected(f, window)
    rows = []
    for e, eta in enumerate(f.etas):
        row: dict[str, float] = {"eta": float(eta)}
        for g, gamma in enumerate(f.gammas):
            row[f"EMA/raw g={gamma:g}"] = float(f.ema[:, e, g].mean() / f.raw[:, e].mean())
            row[f"model + lag g={gamma:g}"] = float(corrected[e, g])
        rows.append(row)
    return markdown_table(rows)


def _spectra(st: FloorSetting, replicates: list) -> str:
    sp = [r.spectrum for r in replicates]
    return (
        f"top {st.modes} modes from {sp[0].samples} training samples, per seed: largest curvature "
        + ", ".join(f"{s.curvatures[0]:.3g}" for s in sp)
        + "; smallest kept "
        + ", ".join(f"{s.curvatures[-1]:.3g}" for s in sp)
        + "; share of the gradient-noise trace they hold "
        + ", ".join(f"{s.captured:.2f}" for s in sp)
        + f"; momentum beta {sp[0].beta:g}, c {sp[0].c:g}"
    )


def run(outdir: Path, *, quick: bool, seed: int, quiet: bool, workers: int = WORKERS) -> Section:
    from validation.report import save_figure

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    sts = settings(quick)
    if not quiet:
        for st in sts:
            print(f"[noise-floor] {st.label}: eta {list(st.etas)} x {st.seeds} replicate(s)", flush=True)
    replicates = measure(sts, outdir, seed=seed, quiet=quiet, workers=workers)
    floors = [floors_of(st, reps) for st, reps in zip(sts, replicates)]
    fig_path = save_figure(plot(floors), outdir / "noise_floor.png")
    verdicts = [v for f in floors for v in decide(f)]
    intro = (
        "Excess validation loss at constant eta over the window average of iterates, for the raw iterate and "
        "constant-gamma EMAs. Prediction, from each replicate's own warm start before its windows ran: the top "
        "Hessian eigenvalues of the training loss (preconditioned for Adam) and the minibatch gradient noise "
        "along each, through the moment engine's stationary law mode by mode "
        "(`gvatheory.noise_floor.spectrum_noise_floor`, heavy-ball momentum for Adam); nothing is fitted. The "
        "curvatures enter both slopes: modes with eta lambda < gamma are not averaged by the EMA, and the window "
        "mean absorbs modes slower than the window. The noise's overall scale enters neither the slopes nor the "
        "ratios, only the level (column `model`). Unit: the replicate (own warm-up, training seed and data); "
        f"intervals are t over replicates. Gate: |drift| (mean raw loss of the window's second half minus its "
        f"first, mean over seeds) above {DRIFT_LIMIT:g} of the raw excess at any eta makes the setting's verdicts "
        "inconclusive. See docs/studies/noise_floor.md."
    )
    parts = [intro]
    for st, f, reps in zip(sts, floors, replicates):
        parts.append(
            f"{st.label}: warm-up {st.warm_steps}, burn-in {st.burn}, window {st.window} steps, gammas "
            f"{list(st.gammas)}, {st.seeds} replicates; spectrum: {_spectra(st, reps)}.\n\n"
            + _table(f)
            + "\n\nThe same EMA/raw ratios beside the model plus each EMA's first-order lag behind the measured "
            "drift (`lag_corrected`: the model's ratio minus 2 drift (1 - gamma) / (gamma window raw excess); "
            "descriptive, added after the full budget's run, read by no verdict):\n\n" + _lag_table(f, st.window)
        )
    return Section(
        key="noise-floor",
        title="Noise floor scales with eta and gamma (Sec. 4.3, Prop. 4.1)",
        body="\n\n".join(parts),
        verdicts=verdicts,
        figures=[fig_path],
        command=f"gva validate noise-floor --budget {'quick' if quick else 'full'}",
    )
