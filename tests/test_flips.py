"""Flip rate against distance (``gvaempirics.bc.flips``, ``gva bc flips``): the power-law fit on
binomial data with a known law, the run's step unit by hand, the directions by hand, and the
batched curve against the one-weight-at-a-time reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gvaempirics.bc.flips import (
    KINDS,
    FlipCurve,
    compute_flip_curve,
    directions,
    fit_power_law,
    load_flip_curve,
    save_flip_curve,
    zoom_checkpoint,
)
from gvaempirics.bc.run import last_step, minibatch_gradient, open_run
from gvaempirics.rundir import RunDir
from validation.cli import main


def test_fit_recovers_a_known_power_law_within_its_standard_error():
    """Binomial counts drawn from min(c r^beta, 1) at 11 half-decades, 400 trials each: over 40
    seeded draws the fitted exponent's mean is within 3 standard errors of the truth."""
    r = 10.0 ** np.arange(-4, 1.01, 0.5)
    c, beta = 0.2, 0.6
    p = np.minimum(c * r**beta, 1.0)
    rng = np.random.default_rng(7)
    betas, cs = [], []
    for _ in range(40):
        law = fit_power_law(r, rng.binomial(400, p), np.full(len(r), 400))
        betas.append(law.beta)
        cs.append(np.log(law.c))
    for est, truth in ((betas, beta), (cs, np.log(c))):
        se = np.std(est, ddof=1) / np.sqrt(len(est))
        assert abs(np.mean(est) - truth) < 3 * se + 1e-3, (np.mean(est), truth, se)
    assert np.std(betas, ddof=1) < 0.05  # and it is not a wild estimate


def test_fit_with_no_flip_predicts_none_and_bad_input_is_refused():
    law = fit_power_law([0.1, 1.0, 10.0], [0, 0, 0], [10, 10, 10])
    assert law.c == 0.0 and law(5.0) == 0.0
    assert fit_power_law([1.0, 10.0], [0, 0], [5, 5])(np.array([1.0, 2.0])).tolist() == [0.0, 0.0]
    for bad in (([0.0, 1.0], [0, 1], [2, 2]), ([1.0, 2.0], [3, 1], [2, 2]), ([1.0], [0], [1])):
        with pytest.raises(ValueError):
            fit_power_law(*bad)


def test_flip_counts_by_hand():
    """Two directions, two distances, three ICs, expert return 100: a flip is a move over 10."""
    centre = np.array([50.0, 50.0, 50.0])
    noise = np.array([[[50, 61, 55], [90, 50, 39]], [[52, 50, 50], [60.5, 70, 50]]], dtype=float)
    curve = FlipCurve("r", 5, np.array([0.1, 1.0]), {"noise": noise, "random": noise}, centre, 1.0, 100.0, 60, 0)
    k, n = curve.flips("noise")
    assert k.tolist() == [1, 4] and n.tolist() == [6, 6]
    np.testing.assert_allclose(
        curve.mean_abs_change("noise"), [(0 + 11 + 5 + 2 + 0 + 0) / 600, (40 + 0 + 11 + 10.5 + 20 + 0) / 600]
    )


@pytest.fixture(scope="module")
def stepwise_run(tmp_path_factory, tiny_bc):
    """The tiny BC run checkpointed every step (the newest two are kept: steps 13 and 14)."""
    from gvaempirics.bc.config import BCConfig
    from gvaempirics.bc.train import train_bc

    out = tmp_path_factory.mktemp("flips") / "run"
    train_bc(
        BCConfig(**{**tiny_bc, "steps": 14, "checkpoint_every": 1, "zoom_windows": (10,), "zoom_length": 3}),
        out,
        quiet=True,
    )
    return out


def test_last_step_is_the_update_between_consecutive_checkpoints(stepwise_run):
    opened = open_run(stepwise_run, 14)
    before = open_run(stepwise_run, 13).raw_parameters()
    step = last_step(opened)
    for k, v in opened.raw_parameters().items():
        torch.testing.assert_close(step[k], v - before[k], rtol=1e-4, atol=1e-7)


def test_directions_by_hand(stepwise_run):
    """Unit norm; the noise direction is the Adam-preconditioned g_B - g of the seeded minibatch."""
    opened = open_run(stepwise_run, 14)
    cfg, model, data = opened.cfg, opened.model, opened.data
    noise = directions(opened, "noise", 2, seed=3)
    rand = directions(opened, "random", 2, seed=3)
    np.testing.assert_allclose(noise.norm(dim=1).numpy(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(rand.norm(dim=1).numpy(), 1.0, rtol=1e-5)
    theta = opened.raw_parameters()
    opt = opened.state["optimizer"]["state"]
    names = [n for n, _ in model.named_parameters()]
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(len(data.train_x), (cfg.batch_size,), generator=gen)
    g_b = minibatch_gradient(model, theta, data.train_x[idx], data.train_y[idx], 4)
    g = minibatch_gradient(model, theta, data.train_x, data.train_y, 3)
    parts = []
    by_shape = {tuple(st["exp_avg_sq"].shape): st for st in opt.values()}  # the tiny net's shapes are distinct
    assert len(by_shape) == len(names)
    for n in names:
        st = by_shape[tuple(theta[n].shape)]
        v_hat = st["exp_avg_sq"] / (1 - 0.999 ** float(st["step"]))
        parts.append(((g_b[n] - g[n]) / (v_hat.sqrt() + 1e-8)).reshape(-1))
    want = torch.cat(parts)
    np.testing.assert_allclose(noise[0].numpy(), (want / want.norm()).numpy(), rtol=1e-4, atol=1e-6)


def test_batched_curve_equals_the_reference_and_its_centre_is_the_logged_iterate(tiny_bc_run, tmp_path):
    from gvaempirics.bc.results import load_result

    run = tiny_bc_run[0]
    kw = dict(distances=[1e-3, 0.1, 10.0], n_directions=2, seed=1, threads=1)
    curve = compute_flip_curve(run, **kw)
    ref = compute_flip_curve(run, batched=False, **kw)
    assert curve.step == zoom_checkpoint(open_run(run).cfg, RunDir(run)) == 30
    for k in KINDS:
        assert curve.returns[k].shape == (2, 3, 3)
        np.testing.assert_allclose(curve.returns[k], ref.returns[k], rtol=1e-4)
    res = load_result(run)
    np.testing.assert_allclose(curve.centre, res.returns["raw"][list(res.eval_steps).index(30)], rtol=1e-4)
    path = save_flip_curve(curve, tmp_path)
    back = load_flip_curve(path)
    np.testing.assert_array_equal(back.returns["noise"], curve.returns["noise"])
    assert json.loads(path.read_text())["curves"]["noise"]["flip_rate"] == curve.rate("noise").tolist()


def test_flips_command_writes_curve_and_figure_and_refuses_bad_input(tiny_bc_run, tmp_path, capsys, refuses):
    run = tiny_bc_run[0]
    out = tmp_path / "out"
    argv = ["bc", "flips", str(run), "--distances", "0.01", "1", "--directions", "1", "--out", str(out)]
    assert main(argv) == 0
    assert (out / "flips_step_30.json").is_file() and (out / "flips_step_30.png").is_file()
    assert "fit" in capsys.readouterr().out
    refuses(["bc", "flips", str(run), "--directions", "0"], "directions=0")
    refuses(["bc", "flips", str(run), "--distances", "0", "1"], "distances")
    refuses(["bc", "flips", str(run), "--step", "7"], "step=7")
    refuses(["bc", "flips", str(tmp_path / "nowhere")], "nowhere")
