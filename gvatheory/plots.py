"""Figures of the toy systems: each function takes a result object of :mod:`gvatheory` and draws it.

Compute modules never import matplotlib; a figure can be redrawn from a saved result without
running anything again. Every function returns the matplotlib ``Figure`` (save it with
``fig.savefig``; the ``gva`` command uses ``validation.report.save_figure``).

=========================  =================================================  ==============================
function                   draws                                              result object
=========================  =================================================  ==============================
``plot_averaging``         variance of the iterate and its EMAs along t       ``averaging.AveragingComparison``
``plot_gap_curves``        cliff gaps against eta and gamma, both thresholds  ``prop41.GapCurves``
``plot_prop41_as_written`` the text's constants and counterexamples           ``prop41.Prop41AsWritten``
``plot_prop41_precise``    gaps against the precise conditions                ``prop41.Prop41Precise``
``plot_prop31``            worst-case reward gap against H delta              ``prop31.Prop31Table``
``plot_linear_gva``        sd of J_H across chains, raw vs EMA                ``linear_gva.GVAExperiment``
=========================  =================================================  ==============================
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

from .averaging import variance_estimate
from .prop41 import MEDIAN_CHI2_1, gamma_at_text_boundary, precise_ema_margin, precise_sgd_margin

if TYPE_CHECKING:
    from .averaging import AveragingComparison
    from .linear_gva import GVAExperiment
    from .prop31 import GrowthFit, Prop31Table
    from .prop41 import GapCurves, Prop41AsWritten, Prop41Precise

__all__ = [
    "plot_averaging",
    "plot_gap_curves",
    "plot_prop41_as_written",
    "plot_prop41_precise",
    "plot_prop31",
    "plot_linear_gva",
]


def plot_averaging(comparison: AveragingComparison):
    """Variance along t (mean over coordinates) of the iterate and each average: exact lines,
    Monte Carlo points with 2-SE bars, stationary levels dashed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    var_exact = np.array([law.var.mean(axis=1) for law in comparison.exact])  # (n_times, 1+m)
    est = variance_estimate(comparison.samples.path, axis=0)
    d = comparison.model.dim
    mc = est.mean.mean(axis=2)
    se = np.sqrt((est.se**2).sum(axis=2)) / d
    t = comparison.times
    for c, label in enumerate(comparison.labels):
        (line,) = ax.plot(t[1:], var_exact[1:, c], label=f"{label} exact")
        ax.errorbar(
            t[1:],
            mc[1:, c],
            yerr=2 * se[1:, c],
            fmt="o",
            ms=3,
            color=line.get_color(),
            label=f"{label} Monte Carlo ± 2 SE",
        )
        if comparison.stationary is not None:
            ax.axhline(comparison.stationary.var[c].mean(), color=line.get_color(), ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel("variance per coordinate")
    ax.set_title(f"SGD + averaging: {comparison.samples.final.shape[0]} chains, {comparison.model.noise} noise")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_gap_curves(curves: GapCurves):
    """Two panels with the text's thresholds (dotted) and the precise ones (shaded regions)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.loglog(curves.eta, curves.theta_vs_eta, label=r"SGD $\theta_T$")
    a.loglog(curves.eta, curves.ema_vs_eta, label=rf"EMA $\bar\theta_T$ ($\gamma$={curves.gamma0:g})")
    a.axhline(curves.C / 2, color="gray", lw=0.8, ls="--", label="C/2")
    a.axvline(curves.c1 * curves.eps, color="k", ls=":", label=rf"text: $\eta=c_1\varepsilon$ ($c_1$={curves.c1:g})")
    on = precise_sgd_margin(eta=curves.eta, sigma=curves.sigma, eps=curves.eps, T=curves.T) >= 1
    if np.any(on):
        a.axvspan(curves.eta[on].min(), curves.eta.max(), color="C0", alpha=0.1, label="precise: gap >= C/2 promised")
    a.set(xlabel=r"step size $\eta$", ylabel=r"$E[J^\star - J]$", title="gap vs step size")
    a.legend(fontsize=7)
    b.loglog(curves.gamma, curves.theta_vs_gamma, label=rf"SGD $\theta_T$ ($\eta$={curves.eta0:g})")
    b.loglog(curves.gamma, curves.ema_vs_gamma, label=r"EMA $\bar\theta_T$")
    b.loglog(
        curves.gamma,
        (curves.d + 1) * curves.sigma**2 * curves.gamma,
        color="C1",
        ls="--",
        lw=0.8,
        label=r"$(d+1)\sigma^2\gamma$",
    )
    g_text = gamma_at_text_boundary(curves.c2 * curves.eps, curves.C)
    if np.isfinite(g_text):
        b.axvline(
            float(g_text),
            color="k",
            ls=":",
            label=rf"text: $\gamma\log(C/\gamma)=c_2\varepsilon$ ($c_2$={curves.c2:g})",
        )
    on = precise_ema_margin(gamma=curves.gamma, sigma=curves.sigma, eps=curves.eps, C=curves.C, d=curves.d) <= 1
    if np.any(on):
        b.axvspan(
            curves.gamma.min(),
            curves.gamma[on].max(),
            color="C1",
            alpha=0.1,
            label=r"precise: gap <= $(d+1)\sigma^2\gamma$ promised",
        )
    b.set(xlabel=r"EMA weight $\gamma$", ylabel=r"$E[J^\star - J]$", title="gap vs EMA weight")
    b.legend(fontsize=7)
    when = "stationary" if curves.T is None else f"T={curves.T}"
    fig.suptitle(
        rf"cliff: $\varepsilon$={curves.eps:g}, C={curves.C:g}, $\sigma$={curves.sigma:g}, d={curves.d}, "
        rf"{when}"
    )
    fig.tight_layout()
    return fig


def plot_prop41_as_written(result: Prop41AsWritten):
    """Left: the K an O(gamma) bound would need along the text's EMA boundary; right: c1 needed vs sigma."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for c2, ratio in zip(result.c2_values, result.ema_ratio):
        axes[0].loglog(result.ema_eps, ratio, "o-", ms=3, label=f"$c_2$={c2:g}")
    axes[0].set(
        xlabel=r"cliff radius $\varepsilon$",
        ylabel=r"$E[J^\star-J(\bar\theta)]\,/\,\gamma$ at $\gamma\log(C/\gamma)=c_2\varepsilon$",
        title="text's EMA claim: no constant K works",
    )
    axes[0].invert_xaxis()
    axes[0].legend(fontsize=8)
    finite = np.isfinite(result.c1_needed)
    s = np.asarray(result.sigma)
    axes[1].loglog(s[finite], np.asarray(result.c1_needed)[finite], "o-", label="smallest $c_1$ on the grid")
    # eta > eps / (sigma sqrt(m_1)) implies sigma^2 eta / (2 - eta) >= eps^2 / m_1 for eta <= 1.
    axes[1].loglog(
        s, 1.0 / (s * math.sqrt(MEDIAN_CHI2_1)), "k--", lw=1, label=r"sufficient: $c_1 = 1/(\sigma\sqrt{m_1})$"
    )
    axes[1].set(
        xlabel=r"noise scale $\sigma$",
        ylabel=r"$c_1$ needed for $\eta>c_1\varepsilon \Rightarrow$ gap $\geq C/2$",
        title="text's SGD claim: $c_1$ scales like $1/\\sigma$",
    )
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_prop41_precise(result: Prop41Precise, *, max_points: int = 20000, seed: int = 0):
    """Scatter of the normalized gaps against the normalized conditions, with the claimed regions."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    rng = np.random.default_rng(seed)
    panels = [
        (
            result.sgd_x,
            result.sgd_y,
            1.0,
            0.5,
            "SGD iterate",
            r"$\sigma^2\eta\,/\,(c_1\varepsilon^2)$",
            r"$E[J^\star-J(\theta_T)]\,/\,C$",
        ),
        (
            result.ema_x,
            result.ema_y,
            1.0,
            1.0,
            "EMA iterate",
            r"$\sigma^2\gamma\,(2d+3\log_+\frac{C}{\sigma^2\gamma})\,/\,\varepsilon^2$",
            r"$E[J^\star-J(\bar\theta_T)]\,/\,((d+1)\sigma^2\gamma)$",
        ),
    ]
    for ax, (x, y, xc, yc, title, xl, yl) in zip(axes, panels):
        ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
        idx = np.flatnonzero(ok)
        if idx.size > max_points:
            idx = rng.choice(idx, max_points, replace=False)
        ax.scatter(x[idx], y[idx], s=3, alpha=0.3, color="C0", rasterized=True)
        ax.axvline(xc, color="k", lw=1)
        ax.axhline(yc, color="C3", lw=1)
        ax.set(xscale="log", yscale="log", xlabel=xl, ylabel=yl, title=title)
    axes[0].axvspan(1.0, axes[0].get_xlim()[1], color="C2", alpha=0.08, label="claim: gap >= C/2")
    axes[1].axvspan(axes[1].get_xlim()[0], 1.0, color="C2", alpha=0.08, label="claim: gap <= (d+1) sigma^2 gamma")
    for ax in axes:
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"Precise Prop. 4.1 on {result.n_points} exact grid points")
    fig.tight_layout()
    return fig


def plot_prop31(table: Prop31Table, *, fit: GrowthFit | None = None, ax=None):
    """Gap against :math:`H\\delta` (log scale), one colour per ``delta``: the worst-case gap
    (dots), its certified upper bound (dotted), the ceiling :math:`J_H(\\pi^\\star)` (dashed) and,
    with ``fit``, the fitted :math:`e^{c + \\kappa H\\delta}\\delta^\\lambda` (thin solid)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.5))
    for j, d in enumerate(table.delta):
        Hd = table.H * d
        (line,) = ax.semilogy(Hd, table.gap[:, j], "o-", ms=4, label=f"delta={d:g}")
        color = line.get_color()
        ax.semilogy(Hd, table.upper[:, j], ":", color=color, lw=1.5)
        ax.semilogy(Hd, table.ceiling, "--", color=color, lw=0.8)
        if fit is not None and fit.used[:, j].any():
            x = Hd[fit.used[:, j]]
            ax.semilogy(x, np.exp(fit.intercept + fit.kappa * x + fit.lam * np.log(d)), "-", color="k", lw=0.8)
    title = "Prop. 3.1: worst-case gap (dots), upper bound (dotted), ceiling (dashed)"
    if fit is not None:
        title += f"\nfit (black): kappa = {fit.kappa:.3f} +- {fit.kappa_se:.3f}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("H * delta")
    ax.set_ylabel("J_H(pi*) - J_H(pi* + Delta)")
    ax.legend(fontsize=7)
    return ax.figure


def plot_linear_gva(experiment: GVAExperiment):
    """Left: sd of J_H vs H (MC with 2 SE bars, predictions dashed). Right: J_H (largest H)
    and loss_bc along training, median and 10-90% band over chains, raw vs EMA."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    for which, pred, color in (("raw", experiment.pred_raw, "C3"), ("ema", experiment.pred_ema, "C0")):
        sd, se = experiment.final_sd(which)
        ax.errorbar(experiment.H, sd, yerr=2 * se, fmt="o-", color=color, capsize=3, label=f"{which}: Monte Carlo")
        ax.plot(experiment.H, pred.sd, "--", color=color, label=f"{which}: delta method")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(experiment.H, [str(h) for h in experiment.H], minor=False)
    ax.set_xticks([], minor=True)
    ax.set_xlabel("horizon H")
    ax.set_ylabel("sd of J_H across SGD chains")
    ax.legend(fontsize=7)
    steps = experiment.run.steps
    panels = (
        (f"J_H, H={experiment.H[-1]}", experiment.J_raw[..., -1], experiment.J_ema[..., -1]),
        ("loss_bc", experiment.loss_raw, experiment.loss_ema),
    )
    for ax, (name, raw, ema) in zip(axes[1:], panels):
        for label, arr, color in (("raw", raw, "C3"), ("ema", ema, "C0")):
            lo, mid, hi = np.nanquantile(np.where(np.isfinite(arr), arr, np.nan), [0.1, 0.5, 0.9], axis=0)
            ax.plot(steps, mid, color=color, label=label)
            ax.fill_between(steps, lo, hi, color=color, alpha=0.25)
        ax.set_yscale("log" if ax is axes[1] else "linear")
        ax.set_xlabel("SGD step")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    axes[1].set_title("median and 10-90% band over chains")
    fig.tight_layout()
    return fig
