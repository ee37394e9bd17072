"""Study: the noise floor scales with eta and gamma (paper Sec. 4.3, the first half of Prop. 4.1).

Prediction (SGD + EMA on a quadratic, :func:`gvatheory.averaging.noise_floor`, from the moment
engine's stationary covariance): at a constant step size the raw iterate's excess loss grows
like ``eta`` (slope 1 on log-log), the EMA's like ``gamma`` for ``gamma`` well below
``eta h`` (slope 1), and the EMA/raw ratio is the engine's stationary ratio,
``~ gamma / (gamma + eta h)``, for one effective curvature ``h``.

Measurement (:func:`gvaempirics.noise_floor.measure_noise_floor`), in behavior cloning on Hopper
(plain SGD without momentum, and Adam) and in a small language model (Adam): one warm-up run
per setting (the toolkit's own training, decayed to zero), then from its weights, for each
``eta`` and seed, a burn-in and a window at that constant ``eta``, tracking several constant-gamma
EMAs at once. Excess validation losses are window means over the *window average of iterates*,
evaluated once: the run's best estimate of its stationary mean, whose own (small) excess the
engine predicts exactly and the predictions account for. Nothing is rolled out.

Fits and verdicts: the slopes are least-squares fits of log excess (mean over seeds) on log eta
(raw) and on log gamma with one intercept per eta (EMA, points with gamma <= eta h / 3);
confidence intervals are 95% bootstrap intervals over seeds (three or more) or over the fit's
residuals (fewer). The predicted slopes are the same fits applied to the engine's values at the
same points. ``h`` is fitted once per setting on the EMA/raw ratio at the largest gamma; the
ratio verdict is on all the other (eta, gamma) points. A verdict supports when the interval holds
the prediction, is inconclusive when it is too wide (slope: half-width > 0.5; ratio factor:
upper/lower > 4), and contradicts otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from validation.report import Section, Verdict, markdown_table

SLOPE_WIDE = 0.5  # a slope CI half-width above this is too wide to decide
RATIO_WIDE = 4.0  # a ratio-factor CI with upper/lower above this is too wide to decide
N_BOOT = 2000


@dataclass(frozen=True)
class Setting:
    """One empirical setting of the study: its grid and windows."""

    key: str
    label: str
    kind: str  # "bc" or "lm"
    optimizer: str
    etas: tuple[float, ...]
    gammas: tuple[float, ...]
    seeds: int
    burn: int
    window: int
    warm_steps: int
    warm_eta: float
    eval_every: int = 20


def settings(quick: bool) -> list[Setting]:
    """The three settings at the quick or the full budget."""
    bc = dict(kind="bc", eval_every=20)
    lm = dict(key="lm-adam", label="LM (teacher corpus), Adam", kind="lm", optimizer="adam", warm_eta=1e-2)
    sgd = dict(key="bc-sgd", label="BC Hopper, SGD", optimizer="sgd", warm_eta=0.05, **bc)
    adam = dict(key="bc-adam", label="BC Hopper, Adam", optimizer="adam", warm_eta=3e-3, **bc)
    if quick:
        g = (3e-3, 1e-2, 3e-2, 1e-1)
        short = dict(gammas=g, seeds=3, burn=2500, window=3000, warm_steps=4000)
        return [
            Setting(etas=(0.01, 0.03, 0.1), **sgd, **short),
            Setting(etas=(3e-4, 1e-3, 3e-3), **adam, **short),
            Setting(etas=(3e-4, 1e-3, 3e-3), gammas=g, seeds=1, burn=800, window=1600, warm_steps=2000, **lm),
        ]
    g = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    long = dict(gammas=g, seeds=5, burn=10000, window=20000, warm_steps=40000)
    return [
        Setting(etas=(0.003, 0.01, 0.03, 0.06, 0.1), **sgd, **long),
        Setting(etas=(1e-4, 3e-4, 1e-3, 2e-3, 3e-3), **adam, **long),
        Setting(etas=(1e-4, 3e-4, 1e-3, 3e-3), gammas=g, seeds=3, burn=5000, window=10000, warm_steps=20000, **lm),
    ]


# ---------------------------------------------------------------- the two empirical settings


def _bc_base(setting: Setting, seed: int):
    from gvaempirics.bc.config import PRESETS, BCConfig

    return BCConfig(
        **{
            **PRESETS["tiny"],
            "n_demos": 10,
            "demo_horizon": 200,
            "val_demos": 2,
            "width": 32,
            "depth": 2,
            "batch_size": 8,
            "optimizer": setting.optimizer,
            "momentum": 0.9,  # the warm-up only; the windows use plain SGD
            "eta": setting.warm_eta,
            "schedule": "cosine",
            "steps": setting.warm_steps,
            "eval_every": setting.warm_steps,
            "zoom_windows": (),
            "checkpoint_every": setting.warm_steps,
            "ics": 1,
            "H": 20,
            "threads": 1,
            "seed": seed,
        }
    )


def _bc_windows(setting: Setting, root: Path, seed: int, quiet: bool):
    """Warm up once (``gva bc train`` code path), then one window per (eta, seed)."""
    from gvaempirics.bc.data import Demonstrations
    from gvaempirics.bc.train import BCTrainer, bc_loss, train_bc
    from gvaempirics.noise_floor import measure_noise_floor
    from gvaempirics.rundir import RunDir

    base = _bc_base(setting, seed)
    warm = root / "warmup"
    train_bc(base, warm, quiet=quiet)
    data = Demonstrations.load(warm / "demos.npz").bc_data(base.history)
    weights = RunDir(warm).load_latest()["model"]

    def one(eta: float, s: int):
        cfg = dataclasses.replace(base, eta=eta, momentum=0.0, schedule="constant", warmup=0, seed=1000 * seed + s)
        # the window's trainer writes nothing: its run directory only names it in error messages
        trainer = BCTrainer(cfg, RunDir(root / "windows"), data, rollout=None, quiet=True)
        trainer.model.load_state_dict(weights)
        return measure_noise_floor(
            trainer,
            lambda m: bc_loss(m, data.val_x, data.val_y),
            gammas=setting.gammas,
            burn=setting.burn,
            window=setting.window,
            eval_every=setting.eval_every,
            quiet=quiet,
        )

    return one


def _lm_base(setting: Setting, seed: int):
    from gvaempirics.lm.config import LMConfig, preset

    return LMConfig(
        **preset(
            "tiny",
            corpus_size=20000,
            eval_windows=64,
            batch_size=16,
            optimizer=setting.optimizer,
            eta=setting.warm_eta,
            schedule="cosine",
            warmup=50,
            steps=setting.warm_steps,
            eval_every=setting.warm_steps,
            zoom_windows=(),
            checkpoint_every=setting.warm_steps,
            seed=seed + 1,
        )
    )


def _lm_windows(setting: Setting, root: Path, seed: int, quiet: bool):
    """Warm up once (``gva lm train`` code path), then one window per (eta, seed)."""
    import torch

    from gvaempirics.lm.train import LMTrainer, make_corpus, train
    from gvaempirics.noise_floor import measure_noise_floor
    from gvaempirics.rundir import RunDir

    base = _lm_base(setting, seed)
    warm = root / "warmup"
    train(base, warm, quiet=quiet)
    corpus = make_corpus(base, quiet=True)
    weights = RunDir(warm).load_latest()["model"]

    @torch.no_grad()
    def val_loss(model, windows) -> float:
        was = model.training
        model.eval()
        _, loss = model(windows[:, :-1], windows[:, 1:])  # (N, T) inputs and targets
        model.train(was)
        return float(loss)

    def one(eta: float, s: int):
        # no weight decay or clipping in the windows: the quadratic model has neither
        cfg = dataclasses.replace(
            base, eta=eta, schedule="constant", warmup=0, weight_decay=0.0, grad_clip=0.0, seed=1000 * seed + s
        )
        trainer = LMTrainer(cfg, RunDir(root / "windows"), corpus, quiet=True)
        trainer.model.load_state_dict(weights)
        windows = trainer.eval_inputs.windows
        return measure_noise_floor(
            trainer,
            lambda m: val_loss(m, windows),
            gammas=setting.gammas,
            burn=setting.burn,
            window=setting.window,
            eval_every=setting.eval_every,
            quiet=quiet,
        )

    return one


def measure(setting: Setting, outdir: Path, *, seed: int, quiet: bool) -> list[list]:
    """``windows[s][e]``: the :class:`~gvaempirics.noise_floor.FloorWindow` of seed ``s`` and eta
    ``e``, under ``outdir/<key>-<digest of the setting and seed>/``: the warm-up run directory and
    one JSON file per window, written when done and read back on a rerun."""
    import hashlib
    import json

    import torch

    from gvaempirics.noise_floor import FloorWindow
    from gvaempirics.rundir import atomic_write_json

    torch.set_num_threads(1)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    # keyed on everything that makes a window: the setting and the study seed
    root = outdir / f"{setting.key}-{hashlib.sha256(repr((setting, seed)).encode()).hexdigest()[:10]}"
    one = None
    out = []
    for s in range(setting.seeds):
        row = []
        for eta in setting.etas:
            path = root / "windows" / f"eta{eta:g}_seed{s}.json"
            if path.is_file():
                row.append(FloorWindow.from_json(json.loads(path.read_text())))
                continue
            if one is None:
                one = (_bc_windows if setting.kind == "bc" else _lm_windows)(setting, root, seed, quiet)
            fw = one(eta, s)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, fw.to_json())
            row.append(fw)
        out.append(row)
    return out


# ---------------------------------------------------------------- predictions and fits


def predict(h: float, etas, gammas, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Engine prediction, up to the noise scale, of the measured excesses over the window mean:
    raw ``(n_eta,)`` and EMA ``(n_eta, n_gamma)``, for curvature ``h`` (unit noise)."""
    from gvatheory.noise_floor import noise_floor

    raw, ema = [], []
    for eta in etas:
        r, e = noise_floor([h], eta, gammas, window=window).over_reference()
        raw.append(r)
        ema.append(e)
    return np.array(raw), np.array(ema)


def fit_curvature(etas, gammas, ratio_top: np.ndarray, window: int) -> float:
    """The curvature ``h`` whose predicted EMA/raw ratio at the largest gamma best matches
    ``ratio_top`` (one value per eta) in log."""
    from scipy.optimize import minimize_scalar

    etas = np.asarray(etas)
    ok = np.isfinite(ratio_top) & (ratio_top > 0)
    if not ok.any():
        return float("nan")
    top = [max(gammas)]

    def loss(log_h: float) -> float:
        raw, ema = predict(math.exp(log_h), etas[ok], top, window)
        return float(np.sum((np.log(ema[:, 0] / raw) - np.log(ratio_top[ok])) ** 2))

    hi = math.log(1.9 / etas.max())
    res = minimize_scalar(loss, bounds=(hi - math.log(1e5), hi), method="bounded")
    return float(math.exp(res.x))


def _ols_slope(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """Least-squares slope of ``y`` on ``x`` with one intercept per group."""
    xd, yd = x.astype(float).copy(), y.astype(float).copy()
    for g in np.unique(groups):
        m = groups == g
        xd[m] -= xd[m].mean()
        yd[m] -= yd[m].mean()
    den = float(xd @ xd)
    return float(xd @ yd / den) if den > 0 else float("nan")


def slope_ci(x, ys: np.ndarray, groups, rng: np.random.Generator, n_boot: int = N_BOOT) -> tuple[float, float, float]:
    """Slope of log(mean over seeds of ``ys`` (S, n)) on ``x`` (one intercept per group), with a
    95% bootstrap interval over seeds (S >= 3) or over the residuals (S < 3). Points whose mean is
    not positive are left out."""
    x, ys, groups = np.asarray(x, float), np.atleast_2d(np.asarray(ys, float)), np.asarray(groups)

    def fit(mean: np.ndarray) -> float:
        ok = mean > 0
        return _ols_slope(x[ok], np.log(mean[ok]), groups[ok]) if ok.sum() >= 2 else float("nan")

    mean = ys.mean(axis=0)
    slope = fit(mean)
    S = ys.shape[0]
    boot = np.empty(n_boot)
    if S >= 3:
        for b in range(n_boot):
            boot[b] = fit(ys[rng.integers(0, S, S)].mean(axis=0))
    else:
        ok = mean > 0
        xo, yo, go = x[ok], np.log(mean[ok]), groups[ok]
        if len(xo) < 3:
            return slope, float("nan"), float("nan")
        # fitted values and residuals of the grouped fit, residuals inflated for the fitted parameters
        xd, yd = xo.copy(), yo.copy()
        for g in np.unique(go):
            m = go == g
            xd[m] -= xd[m].mean()
            yd[m] -= yd[m].mean()
        resid = yd - slope * xd
        dof = len(xo) - len(np.unique(go)) - 1
        if dof < 1:
            return slope, float("nan"), float("nan")
        resid *= math.sqrt(len(xo) / dof)
        for b in range(n_boot):
            boot[b] = _ols_slope(xo, yo - resid + rng.choice(resid, len(resid)), go)
    boot = boot[np.isfinite(boot)]
    if boot.size < n_boot // 2:
        return slope, float("nan"), float("nan")
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return slope, float(lo), float(hi)


def factor_ci(z_by_seed: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT) -> tuple[float, float, float]:
    """Geometric-mean factor ``exp(mean z)`` of log-ratios ``z`` (S, n), with a 95% bootstrap
    interval over seeds (S >= 3) or over the points (S < 3)."""
    z = np.atleast_2d(z_by_seed)
    S = z.shape[0]
    with warnings.catch_warnings():  # a point with no finite value in any seed is left out
        warnings.simplefilter("ignore", RuntimeWarning)
        zm = np.nanmean(z, axis=0)
    ok = np.isfinite(zm)
    if ok.sum() < 2:
        return float("nan"), float("nan"), float("nan")
    if S >= 3:
        boot = np.array([np.nanmean(z[rng.integers(0, S, S)][:, ok]) for _ in range(n_boot)])
    else:
        pts = zm[ok]
        boot = np.array([pts[rng.integers(0, len(pts), len(pts))].mean() for _ in range(n_boot)])
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(math.exp(zm[ok].mean())), float(math.exp(lo)), float(math.exp(hi))


def slope_outcome(pred: float, lo: float, hi: float) -> str:
    """supports / contradicts / inconclusive for a predicted slope and a measured interval."""
    if not all(map(math.isfinite, (pred, lo, hi))) or (hi - lo) / 2 > SLOPE_WIDE:
        return "inconclusive"
    return "supports" if lo <= pred <= hi else "contradicts"


def factor_outcome(lo: float, hi: float) -> str:
    """supports / contradicts / inconclusive for an interval of measured/predicted factors."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi / lo > RATIO_WIDE:
        return "inconclusive"
    return "supports" if lo <= 1.0 <= hi else "contradicts"


@dataclass
class Analysis:
    """Measured and predicted noise floors of one setting, with fitted slopes and verdict numbers."""

    setting: Setting
    raw: np.ndarray  # (S, n_eta) excess of the raw iterate over the window mean
    ema: np.ndarray  # (S, n_eta, n_gamma)
    msd: np.ndarray  # (S, n_eta)
    drift: np.ndarray  # (S, n_eta)
    trend: np.ndarray  # (S, n_eta) slope of the raw loss per step over the window
    h: float
    scale: float
    pred_raw: np.ndarray  # (n_eta,) scaled
    pred_ema: np.ndarray  # (n_eta, n_gamma) scaled
    raw_slope: tuple[float, float, float]
    raw_slope_pred: float
    ema_slope: tuple[float, float, float]
    ema_slope_pred: float
    ema_points: int
    ratio_factor: tuple[float, float, float]
    ratio_by_gamma: list[float]
    ratio_by_gamma_lag: list[float]


def _geo_by_column(z: np.ndarray) -> list[float]:
    """Geometric mean of exp(z) down each column, ignoring non-finite entries (nan if none)."""
    out = []
    for col in z.T:
        col = col[np.isfinite(col)]
        out.append(float(np.exp(col.mean())) if col.size else float("nan"))
    return out


def analyze(setting: Setting, windows: list[list], *, seed: int) -> Analysis:
    """Fit the curvature, predict every measured point, and fit the slopes with their intervals."""
    rng = np.random.default_rng(seed)
    etas, gammas = np.array(setting.etas), np.array(setting.gammas)
    raw = np.array([[w.excess_raw for w in row] for row in windows])
    ema = np.array([[w.excess_ema for w in row] for row in windows])
    msd = np.array([[w.msd for w in row] for row in windows])
    drift = np.array([[w.drift for w in row] for row in windows])
    trend = np.array([[w.trend for w in row] for row in windows])
    W = setting.window
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_top = ema[:, :, -1].mean(0) / raw.mean(0)
    h = fit_curvature(etas, gammas, ratio_top, W)
    if math.isfinite(h):
        p_raw, p_ema = predict(h, etas, gammas, W)
    else:  # no usable ratio to fit: every prediction is undefined, every verdict inconclusive
        p_raw, p_ema = np.full(len(etas), np.nan), np.full((len(etas), len(gammas)), np.nan)
    m_raw = raw.mean(0)
    ok = m_raw > 0
    scale = float(np.exp(np.mean(np.log(m_raw[ok] / p_raw[ok])))) if ok.any() else float("nan")
    p_raw, p_ema = scale * p_raw, scale * np.asarray(p_ema)

    # raw excess vs eta
    zeros = np.zeros(len(etas), int)
    raw_slope = slope_ci(np.log(etas), raw, zeros, rng)
    raw_slope_pred = _ols_slope(np.log(etas), np.log(p_raw), zeros)

    # EMA excess vs gamma, where gamma <= eta h / 3, one intercept per eta
    # (and where the model's EMA excess stays above the window mean's, so it has a logarithm)
    e_idx, g_idx = np.nonzero((gammas[None, :] <= etas[:, None] * h / 3.0) & (p_ema > 0))
    keep = np.isin(e_idx, [e for e in np.unique(e_idx) if np.sum(e_idx == e) >= 2])
    e_idx, g_idx = e_idx[keep], g_idx[keep]
    if len(e_idx) >= 3:
        ema_slope = slope_ci(np.log(gammas[g_idx]), ema[:, e_idx, g_idx], e_idx, rng)
        ema_slope_pred = _ols_slope(np.log(gammas[g_idx]), np.log(p_ema[e_idx, g_idx]), e_idx)
    else:
        ema_slope, ema_slope_pred = (float("nan"),) * 3, float("nan")

    # EMA/raw ratio at every gamma but the fitted largest one
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log((ema[:, :, :-1] / raw[:, :, None]) / (p_ema[None, :, :-1] / p_raw[None, :, None]))
    z = np.where(np.isfinite(z), z, np.nan).reshape(raw.shape[0], -1)
    ratio_factor = factor_ci(z, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        zg = np.log((ema.mean(0) / raw.mean(0)[:, None]) / (p_ema / p_raw[:, None]))
    by_gamma = _geo_by_column(zg)
    # first-order lag: an EMA trails the mean iterate by (1 - gamma)/gamma steps, so on a loss that
    # falls at the window's rate (trend < 0) it pays -trend * (1 - gamma)/gamma on top of its noise
    lag = -trend.mean(0)[:, None] * (1 - gammas[None, :]) / gammas[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        zl = np.log(((ema.mean(0) - lag) / raw.mean(0)[:, None]) / (p_ema / p_raw[:, None]))
    by_gamma_lag = _geo_by_column(zl)
    return Analysis(
        setting, raw, ema, msd, drift, trend, h, scale, p_raw, p_ema, raw_slope, raw_slope_pred, ema_slope,
        ema_slope_pred, int(len(e_idx)), ratio_factor, by_gamma, by_gamma_lag,
    )  # fmt: skip


# ---------------------------------------------------------------- report


def _two_se(x: np.ndarray) -> np.ndarray:
    """Two standard errors over seeds (axis 0); zero with one seed."""
    S = x.shape[0]
    return 2 * x.std(0, ddof=1) / math.sqrt(S) if S > 1 else np.zeros(x.shape[1:])


def plot(analyses: list[Analysis]):
    """Log-log excess loss vs eta (raw) and vs gamma (EMAs), measured (mean ± 2 SE over seeds)
    and predicted (engine at the fitted curvature, scaled to the raw points)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(2, len(analyses), figsize=(4.2 * len(analyses), 7.0), squeeze=False)
    for j, a in enumerate(analyses):
        st = a.setting
        etas, gammas = np.array(st.etas), np.array(st.gammas)
        ax = axes[0, j]
        m = a.raw.mean(0)
        ax.errorbar(etas, np.where(m > 0, m, np.nan), yerr=_two_se(a.raw), fmt="ko", ms=4, label="raw, measured")
        fine = np.geomspace(etas.min(), etas.max(), 30)
        if math.isfinite(a.h):
            pr, _ = predict(a.h, fine, gammas[:1], st.window)
            ax.loglog(fine, a.scale * pr, "k-", label=f"quadratic model (h = {a.h:.3g})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on a short decade
        ax.set_xlabel("eta")
        ax.set_ylabel("excess validation loss (raw)")
        lo, hi = a.raw_slope[1], a.raw_slope[2]
        ax.set_title(
            f"{st.label}\nslope {a.raw_slope[0]:.2f} [{lo:.2f}, {hi:.2f}], model {a.raw_slope_pred:.2f}", fontsize=9
        )
        ax.legend(fontsize=7)
        ax = axes[1, j]
        fine_g = np.geomspace(gammas.min(), gammas.max(), 30)
        for e, eta in enumerate(etas):
            me = a.ema[:, e].mean(0)
            (line,) = ax.plot([], [])
            c = line.get_color()
            ax.errorbar(gammas, np.where(me > 0, me, np.nan), yerr=_two_se(a.ema[:, e]), fmt="o", color=c, ms=4,
                        label=f"eta = {eta:g}")  # fmt: skip
            if math.isfinite(a.h):
                _, pe = predict(a.h, [eta], fine_g, st.window)
                ax.plot(fine_g, a.scale * pe[0], "-", color=c, lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("gamma")
        ax.set_ylabel("excess validation loss (EMA)")
        lo, hi = a.ema_slope[1], a.ema_slope[2]
        ax.set_title(f"slope (gamma <= eta h/3) {a.ema_slope[0]:.2f} [{lo:.2f}, {hi:.2f}], model {a.ema_slope_pred:.2f}",
                     fontsize=9)  # fmt: skip
        ax.legend(fontsize=7)
    fig.suptitle("Noise floor at constant eta: points measured, lines the quadratic model", fontsize=10)
    fig.tight_layout()
    return fig


def _verdicts(a: Analysis) -> list[Verdict]:
    st = a.setting
    out = []
    s, lo, hi = a.raw_slope
    level = ""
    if st.optimizer == "sgd":
        lvl = a.raw.mean(0) / (a.msd.mean(0) / (4 * np.array(st.etas)))
        level = "; measured raw excess / (msd / 4 eta), the model's parameter-free level: " + ", ".join(
            f"{x:.2f}" for x in lvl
        )
    out.append(
        Verdict.of(
            f"{st.label}: the raw iterate's excess loss grows like eta (log-log slope of the quadratic model)",
            slope_outcome(a.raw_slope_pred, lo, hi),
            f"slope {s:.3f}, 95% CI [{lo:.3f}, {hi:.3f}]; model {a.raw_slope_pred:.3f} (h = {a.h:.3g}); "
            f"eta {list(st.etas)}, {a.raw.shape[0]} seed(s){level}",
        )
    )
    s, lo, hi = a.ema_slope
    out.append(
        Verdict.of(
            f"{st.label}: the EMA's excess loss grows like gamma for gamma well below eta h (log-log slope)",
            slope_outcome(a.ema_slope_pred, lo, hi) if a.ema_points >= 3 else "inconclusive",
            (
                f"slope {s:.3f}, 95% CI [{lo:.3f}, {hi:.3f}]; model {a.ema_slope_pred:.3f}; "
                f"{a.ema_points} (eta, gamma) points with gamma <= eta h/3"
                if a.ema_points >= 3
                else f"only {a.ema_points} (eta, gamma) points with gamma <= eta h/3 = {max(st.etas) * a.h / 3:.3g}: "
                "no slope to fit"
            ),
        )
    )
    f, lo, hi = a.ratio_factor
    out.append(
        Verdict.of(
            f"{st.label}: the EMA/raw excess ratio is the stationary ratio of the quadratic model at one fitted curvature",
            factor_outcome(lo, hi),
            f"measured/predicted ratio, geometric mean over the (eta, gamma < {max(st.gammas):g}) points: {f:.3f}, "
            f"95% CI [{lo:.3f}, {hi:.3f}]; by gamma "
            + ", ".join(f"{g:g}: {x:.2f}" for g, x in zip(st.gammas[:-1], a.ratio_by_gamma[:-1]))
            + f"; h = {a.h:.3g} fitted at gamma = {max(st.gammas):g}; after a first-order correction for the EMA's "
            "lag behind the falling loss: "
            + ", ".join(f"{g:g}: {x:.2f}" for g, x in zip(st.gammas[:-1], a.ratio_by_gamma_lag[:-1])),
        )
    )
    return out


def _table(a: Analysis) -> str:
    st = a.setting
    rows = []
    for e, eta in enumerate(st.etas):
        row = {
            "setting": st.key,
            "eta": float(eta),
            "raw excess": float(a.raw[:, e].mean()),
            "model": float(a.pred_raw[e]),
            "msd": float(a.msd[:, e].mean()),
            "drift": float(a.drift[:, e].mean()),
            "trend/step": float(a.trend[:, e].mean()),
        }
        for g, gamma in enumerate(st.gammas):
            row[f"EMA/raw g={gamma:g}"] = float(a.ema[:, e, g].mean() / a.raw[:, e].mean())
            row[f"model g={gamma:g}"] = float(a.pred_ema[e, g] / a.pred_raw[e])
        rows.append(row)
    return markdown_table(rows)


def run(outdir: Path, *, quick: bool, seed: int, quiet: bool) -> Section:
    from validation.report import save_figure

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    analyses = []
    for st in settings(quick):
        if not quiet:
            print(f"[noise-floor] {st.label}: eta {list(st.etas)} x {st.seeds} seed(s)", flush=True)
        analyses.append(analyze(st, measure(st, outdir, seed=seed, quiet=quiet), seed=seed))
    fig_path = save_figure(plot(analyses), outdir / "noise_floor.png")
    verdicts = [v for a in analyses for v in _verdicts(a)]
    body = "\n\n".join(
        [
            "Excess validation loss at constant eta, over the window average of iterates (the run's estimate of its "
            "stationary mean), for the raw iterate and constant-gamma EMAs; predictions from the stationary covariance "
            "of SGD + EMA on a one-dimensional quadratic (`gvatheory.averaging.noise_floor`), with the curvature h "
            "fitted on the EMA/raw ratio at the largest gamma and the noise scale on the raw points (neither enters "
            "the slopes). drift: mean raw loss of the window's second half minus its first (0 at stationarity). "
            "See docs/studies/noise_floor.md.",
            "\n\n".join(
                f"{a.setting.label}: burn-in {a.setting.burn}, window {a.setting.window} steps, gammas "
                f"{list(a.setting.gammas)}, h = {a.h:.4g}, noise scale {a.scale:.3g}.\n\n" + _table(a)
                for a in analyses
            ),
        ]
    )
    return Section(
        key="noise-floor",
        title="Noise floor scales with eta and gamma (Sec. 4.3, Prop. 4.1)",
        body=body,
        verdicts=verdicts,
        figures=[fig_path],
        command=f"gva reproduce {'--quick ' if quick else ''}--only noise-floor",
    )
