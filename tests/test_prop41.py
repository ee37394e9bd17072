"""Prop. 4.1 on the cliff problem: the text's counterexamples and the precise version, from exact gaps."""

import numpy as np
import pytest

from gvatheory.cliff import sgd_expectation
from gvatheory.plots import plot_gap_curves, plot_prop41_as_written, plot_prop41_precise
from gvatheory.prop41 import (
    C1_STATIONARY,
    default_grid,
    gamma_at_text_boundary,
    gap_curves,
    precise_sgd_margin,
    prop41_as_written,
    prop41_precise,
)
from validation.cli import main


def test_text_boundary_root():
    y = np.array([1e-6, 1e-3, 0.2])
    g = gamma_at_text_boundary(y, 1.0)
    np.testing.assert_allclose(g * np.log(1.0 / g), y, rtol=1e-10)
    assert np.all(g < np.exp(-1))
    assert np.isnan(gamma_at_text_boundary(1.0, 1.0))


def test_precise_version_holds_on_grid():
    # Computes the exact gaps at every grid point and checks the precise inequalities there.
    grid = default_grid(quick=True)
    res = prop41_precise(grid)
    assert res.n_points == grid.size
    assert all(res.holds.values()), (res.holds, res.loss_theta, res.loss_ema, res.sgd_gap, res.ema_gap)
    # Not vacuous: both conditions are active on a sizeable part of the grid, and the SGD
    # constant is within a factor 2 of where the grid first sees a failure.
    assert res.sgd_active > 0.1 * res.n_points and res.ema_active > 0.1 * res.n_points
    assert C1_STATIONARY / 2 <= res.c1_empirical <= C1_STATIONARY
    # Elementwise restatement of the two implications.
    ok_sgd = res.sgd_x >= 1
    assert np.all(res.sgd_y[ok_sgd] >= 0.5)
    assert np.all(res.ema_y[res.ema_x <= 1] <= 1.0)


@pytest.mark.slow
def test_precise_version_holds_on_full_grid():
    res = prop41_precise(default_grid(quick=False))
    assert all(res.holds.values()), (res.holds, res.loss_theta, res.loss_ema, res.sgd_gap, res.ema_gap)
    assert not any(prop41_as_written(default_grid(quick=False)).findings.values())


def test_precise_sgd_part_holds_from_any_start():
    # (P2) claims any theta_0: an offset mean only pushes the iterate further off the cliff.
    p = default_grid(quick=True).points()
    for T in (10, 1000):
        for offset0 in (0.05, 0.5, 5.0):
            for d in (1, 3):
                res = sgd_expectation(
                    eta=p["eta"], gamma=p["gamma"], sigma=p["sigma"], eps=p["eps"], C=p["C"], T=T, offset0=offset0, d=d
                )
                on = precise_sgd_margin(eta=p["eta"], sigma=p["sigma"], eps=p["eps"], T=T) >= 1
                assert on.sum() > 100 and np.all(res.theta.gap[on] >= 0.5 * p["C"][on])


def test_precise_conditions_are_not_sufficient_when_dropped():
    # Outside the precise conditions the promises can fail: the grid contains such points.
    res = prop41_precise(default_grid(quick=True))
    assert np.any(res.sgd_y[res.sgd_x < 1] < 0.5)
    assert np.any(res.ema_y[res.ema_x > 1] > 1.0)


def test_text_as_written_has_counterexamples():
    text = prop41_as_written(default_grid(quick=True))
    found = text.findings
    assert not found["sgd_gap"] and not found["ema_gap"] and not found["loss_ema"] and not found["loss_theta"]
    # The c1 that works on the grid scales like 1/sigma (one value per decade of sigma).
    c1s = np.asarray(text.c1_needed) * np.asarray(text.sigma)
    assert np.all(np.isfinite(c1s)) and c1s.max() <= 1.5 * c1s.min()
    # Per sigma, E loss(theta)/eta stays in [sigma^2/4, sigma^2/2]: Theta(eta) up to sigma^2.
    for s, (lo, hi) in zip(text.sigma, text.loss_theta_ratio):
        assert s**2 / 4 - 1e-12 <= lo and hi <= s**2 / 2 + 1e-12
    # Every EMA family row grows without bound as eps shrinks.
    assert np.all(np.diff(np.log(text.ema_ratio), axis=1) > 0)


def test_figures_draw():
    grid = default_grid(quick=True)
    curves = gap_curves(eps=0.1, C=1.0, sigma=1.0, eta0=0.1, gamma0=1e-3)
    for plot, result in (
        (plot_gap_curves, curves),
        (plot_prop41_as_written, prop41_as_written(grid)),
        (plot_prop41_precise, prop41_precise(grid)),
    ):
        fig = plot(result)
        assert len(fig.axes) >= 2


def test_cli_prop41(capsys, tmp_path):
    assert main(["theory", "prop41", "--quick", "--plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "precise version holds on the grid: yes" in out
    assert "text: gap(ema) = O(gamma) for some c2: no" in out
    for name in ("p.png", "p_text.png", "p_precise.png"):
        assert (tmp_path / name).stat().st_size > 0
