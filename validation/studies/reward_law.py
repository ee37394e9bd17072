"""Study: predicting reward oscillation from the predicted law of the iterates (validation study 3).

Prediction: the local linear-Gaussian model of study 2 (``local-model``, fitted at a late
checkpoint of a behavior-cloning run) gives a Gaussian law for stretches of consecutive raw
iterates and of their EMA in the top-``k`` subspace. Parameter vectors drawn from it,
:math:`\\theta_c + W z` (:meth:`gvaempirics.bc.local_model.LocalModel.sample_windows`;
the complement of the subspace is held at the checkpoint), are rolled out with the batched
evaluator, and their reward spread within a window of consecutive iterates and their flip rate
(:func:`gvaempirics.metrics.flip_rate`: |Delta J_H| > 10% of the expert's return) are the prediction.

Measurement: the same statistics on the real consecutive iterates of study 2's continuation
(same number of windows, same length, same initial conditions), all rolled out in one batched
evaluator call with the predicted ones.

The delta method: the reward's finite-difference slope along each eigen-direction (central
differences of one predicted raw sd) times the predicted covariance, :math:`\\sqrt{g^\\top
\\Sigma g}`, against the sd of the rewards of independent draws from the predicted law, at a
short and at a long horizon. The linear-GVA toy says it holds at short horizons and breaks down
at long ones.

Verdicts (fixed before running; the factor of study 2, ``FACTOR = 2``): a ratio *supports* when
its 95% bootstrap interval lies inside [1/2, 2], *contradicts* when wholly outside, else
*inconclusive*; the breakdown claim is the reverse at the long horizon.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from validation.report import Section, Verdict, markdown_table

from .local_model import CONFIDENCE, FACTOR, N_BOOT, shared_fit

FLIP_THRESHOLD = 0.1  # a flip: |Delta J_H| above 10% of the expert's return
IID_DRAWS = {True: 48, False: 96}  # independent draws from the raw law for the delta method
# Finite-difference steps, in predicted raw sds along each direction: the first is the delta
# method proper (a derivative); the second a secant across the law's own width, for comparison.
FD_STEPS = (0.1, 1.0)


def _spread(R: np.ndarray) -> np.ndarray:
    """Per (window, initial condition) sd over the window's iterates: R (windows, n, I) -> (windows * I,)."""
    return R.std(axis=1, ddof=1).reshape(-1)


def _flips(R: np.ndarray, scale: float) -> np.ndarray:
    """Per (window, initial condition) fraction of consecutive pairs that flip, (windows * I,)."""
    return (np.abs(np.diff(R, axis=1)) > FLIP_THRESHOLD * scale).mean(axis=1).reshape(-1)


def _ratio_ci(meas: np.ndarray, pred: np.ndarray, seed: int) -> tuple[float, float, float]:
    """mean(meas) / mean(pred), with a percentile bootstrap resampling each set's units on its own."""
    rng = np.random.default_rng(seed)
    est = meas.mean() / pred.mean() if pred.mean() > 0 else math.nan
    bm = meas[rng.integers(0, len(meas), (N_BOOT, len(meas)))].mean(1)
    bp = pred[rng.integers(0, len(pred), (N_BOOT, len(pred)))].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = bm / bp
    r = r[np.isfinite(r)]
    if len(r) < N_BOOT // 2 or not math.isfinite(est):
        return est, math.nan, math.nan
    q = (1 - CONFIDENCE) / 2
    return float(est), float(np.quantile(r, q)), float(np.quantile(r, 1 - q))


def _delta_ci(sd_delta: np.ndarray, J: np.ndarray, seed: int) -> tuple[float, float, float]:
    """mean over ICs of the delta-method sd over mean over ICs of the sampled sd (J: draws x ICs),
    bootstrap over initial conditions and draws."""
    rng = np.random.default_rng(seed)
    n, I = J.shape
    est = sd_delta.mean() / J.std(0, ddof=1).mean()
    out = []
    for _ in range(N_BOOT):
        ic = rng.integers(0, I, I)
        dr = rng.integers(0, n, n)
        s = J[np.ix_(dr, ic)].std(0, ddof=1).mean()
        if s > 0:
            out.append(sd_delta[ic].mean() / s)
    q = (1 - CONFIDENCE) / 2
    if not out or not math.isfinite(est):
        return float(est), math.nan, math.nan
    return float(est), float(np.quantile(out, q)), float(np.quantile(out, 1 - q))


def compute(fit, *, seed: int, quick: bool, quiet: bool) -> dict[str, Any]:
    """Roll out real and predicted iterates and the delta-method probes in one batched call."""
    import time

    from gvaempirics.bc.envs import initial_conditions
    from gvaempirics.bc.local_model import load_checkpoint, rollout_vectors

    start = time.perf_counter()
    local, cont, b = fit.local, fit.cont, fit.budget
    ck = load_checkpoint(fit.run, fit.step, threads=1)
    ics = initial_conditions(ck.cfg.env, b.ics, ck.cfg.ic_seed)
    W, n = cont.kept_raw.shape[:2]
    z_raw, z_ema = local.sample_windows(W, n, seed=seed + 11)
    z_iid, _ = local.sample_windows(IID_DRAWS[quick], 1, seed=seed + 12)
    sd = np.sqrt(np.diag(local.raw_cov))
    probes = local.mean + np.concatenate(
        [np.zeros((1, local.k))] + [sgn * f * np.diag(sd) for f in FD_STEPS for sgn in (1, -1)]
    )
    d = local.theta.size
    sets = {
        "real raw": cont.kept_raw.reshape(-1, d),
        "real ema": cont.kept_ema.reshape(-1, d),
        "pred raw": local.parameters_of(z_raw.reshape(-1, local.k)),
        "pred ema": local.parameters_of(z_ema.reshape(-1, local.k)),
        "proj raw": local.parameters_of(cont.z[:, cont.kept_steps].reshape(-1, local.k)),
        "proj ema": local.parameters_of(cont.z_ema[:, cont.kept_steps].reshape(-1, local.k)),
        "iid raw": local.parameters_of(z_iid[:, 0]),
        "probes": local.parameters_of(probes),
    }
    vectors = np.concatenate(list(sets.values()))
    J = rollout_vectors(ck, vectors, ics, [b.H_short, b.H_long], chunk=len(vectors) if quick else 128)
    out: dict[str, Any] = {"H": [b.H_short, b.H_long], "scale": ck.expert_return, "W": W, "n": n}
    for H in (b.H_short, b.H_long):
        i = 0
        parts = {}
        for name, v in sets.items():
            parts[name] = J[H][i : i + len(v)]
            i += len(v)
        out[H] = parts
    out["sd"] = sd
    out["seconds"] = time.perf_counter() - start
    out["policies"] = len(vectors)
    out["iid"] = len(z_iid)
    out["ics"] = ics.n
    return out


def analyse(res: dict[str, Any], local, *, seed: int) -> dict[str, Any]:
    """Spreads, flip rates, ratios and the delta method from the rollouts of :func:`compute`."""
    W, n, scale = res["W"], res["n"], res["scale"]
    k = local.k
    P = local.raw_cov
    stats: dict[str, Any] = {}
    for H in res["H"]:
        p = res[H]
        s: dict[str, Any] = {}
        for w in ("raw", "ema"):
            Rm = p[f"real {w}"].reshape(W, n, -1)
            Rp = p[f"pred {w}"].reshape(W, n, -1)
            sm, sp = _spread(Rm) / scale, _spread(Rp) / scale
            fm, fp = _flips(Rm, scale), _flips(Rp, scale)
            sj = _spread(p[f"proj {w}"].reshape(W, n, -1)) / scale
            s[w] = {
                "spread_projected": float(sj.mean()),
                "spread_measured": float(sm.mean()),
                "spread_predicted": float(sp.mean()),
                "spread_ratio": _ratio_ci(sm, sp, seed),
                "flip_measured": float(fm.mean()),
                "flip_predicted": float(fp.mean()),
                "flip_ratio": _ratio_ci(fm, fp, seed + 1),
                "mean_measured": float(Rm.mean()),
                "mean_predicted": float(Rp.mean()),
            }
        pr = p["probes"]  # (1 + 2k len(FD_STEPS), I)
        J_iid = p["iid raw"]
        for j, f in enumerate(FD_STEPS):
            plus, minus = pr[1 + 2 * j * k : 1 + (2 * j + 1) * k], pr[1 + (2 * j + 1) * k : 1 + (2 * j + 2) * k]
            slopes = (plus - minus) / (2 * f * res["sd"][:, None])  # (k, I)
            sd_delta = np.sqrt(np.maximum(np.einsum("ki,kl,li->i", slopes, P, slopes), 0.0))
            s["delta" if j == 0 else f"secant{j}"] = {
                "h": f,
                "sd_delta": sd_delta,
                "sd_sampled": J_iid.std(0, ddof=1),
                "ratio": _delta_ci(sd_delta, J_iid, seed + 2),
            }
        stats[H] = s
    return stats


def plot(res: dict[str, Any], stats: dict[str, Any]):
    """Left: reward (mean over initial conditions) of real and predicted iterates at the long
    horizon; right: delta-method sd against sampled sd per initial condition, both horizons."""
    import matplotlib.pyplot as plt

    H_short, H_long = res["H"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    p = res[H_long]
    names = ["real raw", "pred raw", "real ema", "pred ema", "iid raw"]
    data = [p[nm].mean(1) for nm in names]
    a1.boxplot(data, showfliers=True)
    a1.set_xticks(
        range(1, len(names) + 1), ["raw\nreal", "raw\npredicted", "EMA\nreal", "EMA\npredicted", "raw\niid law"]
    )
    a1.set_ylabel(f"J_H, H = {H_long} (mean over initial conditions)")
    a1.set_title("rewards of real vs predicted iterates")
    lo, hi = math.inf, 0.0
    for H, color in ((H_short, "tab:green"), (H_long, "tab:purple")):
        d = stats[H]["delta"]
        x, y = d["sd_sampled"], d["sd_delta"]
        a2.scatter(x, y, color=color, label=f"H = {H}")
        pos = np.concatenate([x[x > 0], y[y > 0]])
        if len(pos):
            lo, hi = min(lo, pos.min()), max(hi, pos.max())
    if math.isfinite(lo):
        grid = np.array([lo / 2, hi * 2])
        a2.plot(grid, grid, "k--", lw=0.8, label="equal")
        a2.fill_between(grid, grid / FACTOR, grid * FACTOR, color="grey", alpha=0.15, label=f"factor {FACTOR:g}")
        a2.set_xscale("log")
        a2.set_yscale("log")
    a2.set_xlabel("sd of J_H over draws from the predicted law")
    a2.set_ylabel("delta-method sd (slopes x predicted covariance)")
    a2.set_title("delta method, one dot per initial condition")
    a2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _f(v: float) -> str:
    return f"{v:.3g}" if isinstance(v, float | int) and math.isfinite(v) else "n/a"


def _ci(t: tuple[float, float, float]) -> str:
    return f"{_f(t[0])} [{_f(t[1])}, {_f(t[2])}]"


def section(fit, res: dict[str, Any], stats: dict[str, Any], figure: Path) -> Section:
    from gvaempirics.bc.local_model import factor_verdict

    H_short, H_long = res["H"]
    L = stats[H_long]
    band = f"[{1 / FACTOR:g}, {FACTOR:g}]"
    verdicts = []
    for w, label in (("raw", "raw iterates"), ("ema", "EMA iterates")):
        r = L[w]["spread_ratio"]
        verdicts.append(
            Verdict.of(
                f"{label}: the reward spread (sd of J_H, H={H_long}, within windows of {res['n']} consecutive "
                f"iterates) predicted from the local model's law matches the real one within a factor {FACTOR:g} "
                f"(measured/predicted 95% CI inside {band})",
                factor_verdict(r[1], r[2], FACTOR),
                f"spread/expert return: measured {_f(L[w]['spread_measured'])}, predicted "
                f"{_f(L[w]['spread_predicted'])}; ratio {_ci(r)}",
            )
        )
    r = L["raw"]["flip_ratio"]
    verdicts.append(
        Verdict.of(
            f"raw iterates: the flip rate between consecutive iterates (|Delta J_H| > {FLIP_THRESHOLD:g} x expert "
            f"return, H={H_long}) predicted from the law matches the real one within a factor {FACTOR:g}",
            factor_verdict(r[1], r[2], FACTOR),
            f"flip rate measured {_f(L['raw']['flip_measured'])}, predicted {_f(L['raw']['flip_predicted'])}; "
            f"ratio {_ci(r)} (EMA: measured {_f(L['ema']['flip_measured'])}, predicted {_f(L['ema']['flip_predicted'])})",
        )
    )
    ds = stats[H_short]["delta"]["ratio"]
    verdicts.append(
        Verdict.of(
            f"at a short horizon (H={H_short}) the delta method (slopes x predicted covariance) gives the reward sd "
            f"of the predicted law within a factor {FACTOR:g}",
            factor_verdict(ds[1], ds[2], FACTOR),
            f"delta-method sd / sampled sd {_ci(ds)}",
        )
    )
    dl = L["delta"]["ratio"]
    long_fit = factor_verdict(dl[1], dl[2], FACTOR)
    verdicts.append(
        Verdict.of(
            f"at a long horizon (H={H_long}) the delta method breaks down (the linear-GVA toy's warning): its sd is "
            f"off the sampled sd by more than a factor {FACTOR:g} (95% CI outside {band})",
            {"contradicts": "supports", "supports": "contradicts"}.get(long_fit, "inconclusive"),
            f"delta-method sd / sampled sd {_ci(dl)}",
        )
    )
    rows = []
    for H in (H_short, H_long):
        for w in ("raw", "ema"):
            s = stats[H][w]
            rows.append(
                {
                    "H": H,
                    "weights": w,
                    "mean J real": s["mean_measured"],
                    "mean J pred": s["mean_predicted"],
                    "spread real": s["spread_measured"],
                    "spread pred": s["spread_predicted"],
                    "spread real, complement fixed": s["spread_projected"],
                    "spread ratio": _ci(s["spread_ratio"]),
                    "flips real": s["flip_measured"],
                    "flips pred": s["flip_predicted"],
                }
            )
    drows = [
        {
            "H": H,
            "step h (sds)": stats[H][key]["h"],
            "delta sd (mean over ICs)": float(stats[H][key]["sd_delta"].mean()),
            "sampled sd (mean over ICs)": float(stats[H][key]["sd_sampled"].mean()),
            "ratio": _ci(stats[H][key]["ratio"]),
        }
        for key in ["delta"] + [f"secant{j}" for j in range(1, len(FD_STEPS))]
        for H in (H_short, H_long)
    ]
    local = fit.local
    body = (
        f"Local model of `local-model` (run `{fit.run}`, step {fit.step}, k={local.k}). Real: {res['W']} windows of "
        f"{res['n']} consecutive iterates (one per continuation chain, right after its burn-in), raw and EMA. "
        f"Predicted: as many windows of the linear-Gaussian recursion, each started from its stationary law, as "
        f"theta_c + W z with the complement of the subspace held at the checkpoint; plus {res['iid']} "
        f"independent draws of the raw law and delta-method probes (central differences along each direction "
        f"about the predicted mean, of {FD_STEPS[0]:g} predicted sd: the derivative; and of {FD_STEPS[1]:g} sd: a secant "
        f"across the law's width, shown for comparison, no verdict). {res['policies']} policies x {res['ics']} "
        f"initial conditions in one batched evaluator run to H={H_long} ({res['seconds']:.1f} s); J at H={H_short} is "
        f"the partial sum of the same rollouts. Spreads are sds within windows over the expert's return "
        f"({_f(res['scale'])}); CIs are 95% percentile bootstraps over (window, initial condition) units. "
        "'complement fixed': the real iterates' subspace coordinates with the complement held at the checkpoint, "
        "as the prediction holds it: what the spread would be if only the modelled directions moved.\n\n"
        + markdown_table(rows)
        + "\n\nDelta method:\n\n"
        + markdown_table(drows)
    )
    return Section(
        "reward-law", "Predicting reward oscillation from the predicted law of the iterates", body, verdicts, [figure]
    )


def run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Section:
    from validation.report import save_figure

    outdir = Path(outdir)
    fit = shared_fit(outdir, quick=quick, seed=seed, quiet=quiet)
    res = compute(fit, seed=seed, quick=quick, quiet=quiet)
    stats = analyse(res, fit.local, seed=seed)
    figure = save_figure(plot(res, stats), outdir / "reward_law.png")
    return section(fit, res, stats, figure)
