"""The reward landscape (paper Figure 1 right): roughness measures on known surfaces, and a tiny
landscape end to end whose centre is the run's own logged iterate, in the run's own step unit."""

import json
import math

import numpy as np
import pytest

from gvaempirics.bc.landscape import compute_landscape, load_landscape, preconditioned_unit, save_landscape
from gvaempirics.bc.plots import plot_landscape
from gvaempirics.bc.roughness import (
    fractal_dimension,
    jump_fraction,
    local_quadratic,
    quadratic_fit,
    roughness,
    total_variation,
    variogram,
)
from validation.cli import main

# ---------------------------------------------------------------- measures on known surfaces


def test_a_plane_is_smooth():
    a = np.linspace(-5, 5, 11)
    z = 3.0 * a[:, None] - 2.0 * a[None, :] + 7.0
    m = roughness(z)
    assert m.quadratic_fit == pytest.approx(0.0, abs=1e-12)
    assert m.tv == pytest.approx(1.0, abs=1e-12)  # every slice monotone
    assert m.jump_fraction == 0.0  # neighbours differ by 3/50 or 2/50 of the range
    assert m.fractal_dimension == pytest.approx(1.0, abs=1e-9) and m.hurst == pytest.approx(1.0, abs=1e-9)
    assert m.range == pytest.approx(50.0)


def test_quadratic_fit_roughness_is_zero_for_every_smooth_quadratic():
    """Bowls, domes, saddles and planes, on square and oblong grids, tilted and shifted: 0, while
    total variation calls the bowl rougher than the plane (2 against 1)."""
    a, b = np.meshgrid(np.linspace(-5, 5, 7), np.linspace(-2, 2, 9), indexing="ij")
    for z in (a**2 + b**2, 3000 - 4 * a**2 - b**2 + 3 * a * b + 7 * a, 0.01 + 1e-4 * (a + 20) ** 2, a * b - a):
        assert quadratic_fit(z) == pytest.approx(0.0, abs=1e-9)
    assert total_variation(a**2 + b**2) > 1.9


def test_local_quadratic_roughness_by_hand():
    """On a 3x3 grid the one patch is the whole grid: the local measure is the whole-grid fit. On
    a 4x3 grid it is the mean of the two patches' fits, each over the whole surface's range."""
    rng = np.random.default_rng(4)
    z = rng.standard_normal((3, 3))
    assert local_quadratic(z) == pytest.approx(quadratic_fit(z), rel=1e-12)
    z = rng.standard_normal((4, 3))
    span = np.ptp(z)
    by_hand = np.mean([quadratic_fit(z[i : i + 3]) * np.ptp(z[i : i + 3]) / span for i in (0, 1)])
    assert local_quadratic(z) == pytest.approx(by_hand, rel=1e-12)
    g = np.linspace(-5, 5, 7)
    a, b = np.meshgrid(g, g, indexing="ij")
    assert local_quadratic(np.tanh(a)) < 1e-12 < 0.1 < local_quadratic(rng.standard_normal((7, 7)))
    with pytest.raises(ValueError, match="3x3 patch"):
        local_quadratic(np.zeros((2, 5)))


def test_quadratic_fit_roughness_by_hand():
    """A single spike of height 1 on a 3 x 3 grid: the fit leaves a residual whose RMS is computed
    here with numpy's own least squares on the same design, and it is positive; white noise and a
    cliff score well above a quadratic plus a tiny ripple."""
    z = np.zeros((3, 3))
    z[1, 1] = 1.0
    a, b = (v.ravel() for v in np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], indexing="ij"))
    design = np.stack([np.ones(9), a, b, a * a, a * b, b * b], axis=1)
    resid = z.ravel() - design @ np.linalg.lstsq(design, z.ravel(), rcond=None)[0]
    assert quadratic_fit(z) == pytest.approx(np.sqrt(np.mean(resid**2))) and quadratic_fit(z) > 0.1
    rng = np.random.default_rng(0)
    grid = np.linspace(-1, 1, 7)
    smooth = grid[:, None] ** 2 + grid[None, :] + 1e-3 * rng.standard_normal((7, 7))
    assert quadratic_fit(smooth) < 0.01
    assert quadratic_fit(rng.standard_normal((7, 7))) > 0.1
    assert quadratic_fit(np.where(grid[:, None] + 0 * grid[None, :] > 0.1, 1.0, 0.0)) > 0.1
    with pytest.raises(ValueError, match="3 points per side"):
        quadratic_fit(np.zeros((2, 5)))


def test_variogram_by_hand():
    z = np.array([[0.0, 1.0, 3.0], [0.0, 1.0, 3.0], [0.0, 1.0, 3.0]])
    # lag 1: rows give differences 1, 2 (three times each), columns give zeros (6 of them)
    assert variogram(z, np.array([1, 2])) == pytest.approx([0.5 * (3 * 1 + 3 * 4) / 12, 0.5 * (3 * 9) / 6])
    assert total_variation(z) == pytest.approx(1.0)  # rows monotone, columns constant (left out)
    assert jump_fraction(z) == pytest.approx(6 / 12)  # the 6 row pairs differ by >= 1/3 of the range


def test_white_noise_is_rough():
    z = np.random.default_rng(0).standard_normal((64, 64))
    m = roughness(z)
    assert m.fractal_dimension > 1.95
    assert m.jump_fraction > 0.5  # P(|N(0, 2)| > 0.1 x range of ~7 sd) is about 0.6
    assert m.tv > 10


def test_brownian_slices_have_dimension_one_and_a_half():
    z = np.cumsum(np.cumsum(np.random.default_rng(1).standard_normal((256, 256)), axis=0), axis=1)  # Brownian sheet
    d, h = fractal_dimension(z)
    assert d == pytest.approx(1.5, abs=0.05) and h == pytest.approx(0.5, abs=0.05)


def test_constant_and_non_finite_surfaces():
    m = roughness(np.full((5, 5), 2.0))
    assert (m.local_quadratic, m.quadratic_fit, m.tv, m.jump_fraction, m.fractal_dimension, m.range) == (
        0.0,
        0.0,
        1.0,
        0.0,
        1.0,
        0.0,
    )
    z = np.zeros((3, 3))
    z[1, 1] = np.inf
    assert all(math.isnan(v) for v in vars(roughness(z)).values())
    with pytest.raises(ValueError, match="shape"):
        roughness(np.zeros(5))
    with pytest.raises(ValueError, match="3 points"):
        fractal_dimension(np.arange(4.0).reshape(2, 2))


# ---------------------------------------------------------------- a tiny landscape end to end


@pytest.fixture(scope="session")
def tiny_run(tiny_bc_run):
    return tiny_bc_run[0]


@pytest.fixture(scope="session")
def tiny_landscape(tiny_run):
    return compute_landscape(tiny_run, 40, extent=2.0, points=3, seed=0, step_unit="plain")


def test_landscape_shapes_and_centre_equal_the_logged_iterate(tiny_run, tiny_landscape, tiny_bc):
    res = tiny_landscape
    assert res.weights == ("raw", "ema") and res.step == 40
    assert list(res.a) == [-2.0, 0.0, 2.0] and list(res.b) == [-2.0, 0.0, 2.0]
    assert res.eta == pytest.approx(tiny_bc["eta"])
    for w in res.weights:
        assert res.returns[w].shape == (3, 3, tiny_bc["ics"]) and res.lengths[w].shape == (3, 3, tiny_bc["ics"])
        assert res.rewards[w].shape == (3, 3) and res.losses[w].shape == (3, 3)
        # same initial conditions, same weights: the run's own logged numbers at this step
        i, j = res.centre
        assert res.rewards[w][i, j] == pytest.approx(res.logged[w]["return"], rel=1e-6)
        assert res.losses[w][i, j] == pytest.approx(res.logged[w]["val_loss"], rel=1e-9)
        assert all(n > 0 for n in res.direction_norms[w])
        assert set(res.measures[w]) == {"reward", "loss"}
    logged = {
        (r["weights"], r["step"]): r["mean"]
        for r in map(json.loads, (tiny_run / "metrics.jsonl").open())
        if r["kind"] == "eval"
    }
    assert res.logged["raw"]["return"] == logged[("raw", 40)]
    # early in training a step along +g goes uphill on the validation loss too
    assert res.losses["raw"][0, 1] < res.losses["raw"][1, 1] < res.losses["raw"][2, 1]


def test_a_step_without_checkpoint_names_the_steps_with_one(tiny_run):
    with pytest.raises(ValueError, match=r"step=10 has no checkpoint .*: steps with one are 30, 40"):
        compute_landscape(tiny_run, 10, points=3)
    with pytest.raises(ValueError, match="points=4"):
        compute_landscape(tiny_run, 40, points=4)


def test_save_load_and_plot(tiny_landscape, tmp_path):
    js, npz = save_landscape(tiny_landscape, tmp_path)
    assert js.name == "landscape_step_40.json" and npz.name == "landscape_step_40.npz"
    back = load_landscape(js)
    for w in tiny_landscape.weights:
        np.testing.assert_array_equal(back.returns[w], tiny_landscape.returns[w])
        np.testing.assert_array_equal(back.losses[w], tiny_landscape.losses[w])
    assert back.measures == tiny_landscape.measures
    assert json.loads(js.read_text())["measures"]["raw"]["reward"]["tv"] == tiny_landscape.measures["raw"]["reward"].tv
    fig = plot_landscape(back)
    assert len(fig.axes) >= 6


def test_the_default_unit_is_the_runs_own_adam_step(tiny_run, tiny_landscape):
    auto = compute_landscape(tiny_run, 40, extent=2.0, points=3, seed=0)  # an Adam run
    assert auto.preconditioned and not tiny_landscape.preconditioned and auto.unit == "Adam steps"
    # an Adam step is about eta per coordinate, much longer than eta times a raw gradient
    assert auto.direction_norms["raw"][0] > 5 * tiny_landscape.direction_norms["raw"][0]
    i, j = auto.centre
    assert auto.rewards["raw"][i, j] == tiny_landscape.rewards["raw"][i, j]
    pre = compute_landscape(tiny_run, 40, extent=2.0, points=3, seed=0, step_unit="preconditioned")
    np.testing.assert_array_equal(pre.returns["raw"], auto.returns["raw"])


def test_step_unit_follows_the_optimizer():
    assert preconditioned_unit("auto", "adam") and preconditioned_unit("auto", "adamw")
    assert not preconditioned_unit("auto", "sgd") and not preconditioned_unit("plain", "adam")
    assert preconditioned_unit("preconditioned", "adam")
    with pytest.raises(ValueError, match="step_unit='preconditioned' is not valid for optimizer='sgd'"):
        preconditioned_unit("preconditioned", "sgd")
    with pytest.raises(ValueError, match="step_unit"):
        preconditioned_unit("adam", "adam")


def test_landscape_command(tiny_run, tmp_path, capsys, refuses):
    png = tmp_path / "l.png"
    argv = ["bc", "landscape", str(tiny_run), "--step", "40", "--points", "3", "--extent", "1"]
    assert main(argv + ["--out", str(png), "--json", "-q"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {(r["weights"], r["surface"]) for r in rows} == {(w, s) for w in ("raw", "ema") for s in ("reward", "loss")}
    assert all(r["quad-fit/range"] >= 0 for r in rows)
    assert json.loads((tiny_run / "landscape_step_40.json").read_text())["preconditioned"]  # auto, on Adam
    assert png.is_file() and (tiny_run / "landscape_step_40.json").is_file()
    refuses(["bc", "landscape", str(tiny_run), "--step", "20"], "steps with one are 30, 40")
    refuses(["bc", "landscape", str(tiny_run), "--points", "4"], "points")
    refuses(["bc", "landscape", str(tiny_run), "--step-unit", "adam"], "step-unit")
