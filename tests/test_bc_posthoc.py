"""Post-hoc EMA sweep of a BC run (``gvaempirics.bc.posthoc``, ``gva bc posthoc``): the synthesis at
the zoom iterates against the logged EMA and a plain reference, the fit error against quadrature,
and the command's output and refusals."""

import json
import shutil

import numpy as np
import pytest
import torch

from gvaempirics.bc.config import BCConfig
from gvaempirics.bc.posthoc import DEFAULT_SIGMA_RELS, load_posthoc, posthoc_sweep
from gvaempirics.bc.results import load_result, summarize
from gvaempirics.rundir import RunDir, atomic_torch_save, atomic_write_json, load_torch_file
from gvatheory.config import to_dict
from gvatheory.stabilizers import posthoc_coefficients, sigma_rel_to_exponent
from validation.cli import main

TRACKED = (0.05, 0.1)


@pytest.fixture(scope="module")
def posthoc_run(tmp_path_factory, tiny_bc):
    """A tiny BC run with the post-hoc stabilizer: snapshots every 10 updates, zoom window 30-34."""
    from gvaempirics.bc.train import train_bc

    cfg = BCConfig(**{**tiny_bc, "stabilizer": "posthoc", "posthoc_sigma_rels": TRACKED, "posthoc_every": 10})
    out = tmp_path_factory.mktemp("bc_posthoc") / "run"
    train_bc(cfg, out, quiet=True)
    return out, cfg


@pytest.fixture(scope="module")
def sweep(posthoc_run):
    return posthoc_sweep(posthoc_run[0], [0.05, 0.2], threads=1)


def _snapshots(run):
    return load_torch_file(RunDir(run).checkpoints()[-1].path)["stabilizer"]["snapshots"]


def test_every_zoom_iterate_is_snapshotted(posthoc_run):
    run, cfg = posthoc_run
    counts = sorted({s["count"] for s in _snapshots(run)})
    # theta_0 is update 1: every 10 updates, zoom steps 30-34 (counts 31-35), the end (step 40)
    assert counts == [10, 20, 30, 31, 32, 33, 34, 35, 40, 41]


def test_tracked_width_reproduces_the_logged_ema_and_raw_is_the_logged_raw(posthoc_run, sweep):
    run, cfg = posthoc_run
    res = load_result(run)
    assert list(sweep.steps) == [30, 31, 32, 33, 34] and sweep.iterates == "zoom"
    at = np.searchsorted(res.eval_steps, sweep.steps)
    # synthesizing the tracked width from the snapshots gives back the EMA evaluated in training
    np.testing.assert_allclose(sweep.returns[0], res.returns["posthoc"][at], rtol=1e-4)
    np.testing.assert_array_equal(sweep.raw_returns, res.returns["raw"][at])
    assert np.all(sweep.fit_error[0] < 1e-6) and np.all(sweep.fit_error[1] > 1e-3)
    # the indices are the run summary's zoom indices (same windows, same scale)
    summary = summarize(RunDir(run))
    rows = sweep.rows()
    assert [r["sigma_rel"] for r in rows] == [None, 0.05, 0.2]
    for key in ("mean_return", "reward_oscillation", "reward_spread", "flip_rate"):
        assert rows[0][key] == pytest.approx(summary["raw"][f"zoom_{key}"], rel=1e-12)
        assert rows[1][key] == pytest.approx(summary["posthoc"][f"zoom_{key}"], rel=1e-4, abs=1e-9)
    assert rows[0]["return_sd"] == pytest.approx(np.std(sweep.raw_returns.mean(1), ddof=1))


def test_untracked_width_equals_a_plain_reference_synthesis_and_rollout(posthoc_run, sweep):
    """Width 0.2 at step 32 (count 33): the snapshots up to count 33 combined by the least-squares
    weights in a plain float64 loop, rolled out on their own."""
    from gvaempirics.bc.envs import initial_conditions
    from gvaempirics.bc.imitators import make_imitator
    from gvaempirics.bc.train import imitator_rollout

    run, cfg = posthoc_run
    used = [s for s in _snapshots(run) if s["count"] <= 33]
    x = posthoc_coefficients([s["count"] for s in used], [s["sigma_rel"] for s in used], 33, 0.2)
    ref = {}
    for name in used[0]["params"]:
        acc = np.zeros(used[0]["params"][name].shape)
        for w, s in zip(x, used):
            acc += w * s["params"][name].double().numpy()
        ref[name] = torch.tensor(acc, dtype=torch.float32)
    state = load_torch_file(RunDir(run).checkpoints()[-1].path)
    d_in, d_act = state["model"]["in_mean"].numel(), state["model"]["net.2.bias"].numel()  # depth 2: net.2 is the head
    model = make_imitator(cfg.imitator_spec(d_in, d_act))
    model.load_state_dict(state["model"])
    returns, _ = imitator_rollout(cfg, initial_conditions(cfg.env, cfg.ics, cfg.ic_seed))(model, [ref])
    np.testing.assert_allclose(sweep.returns[1][2], returns[0], rtol=1e-4)


def test_movement_is_the_distance_between_consecutive_averages(posthoc_run, sweep):
    """Width 0.2 between steps 32 and 33: the plainly synthesized weights' Euclidean distance;
    NaN at the window's first iterate; saved and loaded with the sweep."""
    from gvaempirics.bc.posthoc import save_posthoc
    from gvaempirics.stabilizers import PostHocEMA

    run, cfg = posthoc_run
    state = load_torch_file(RunDir(run).checkpoints()[-1].path)
    d_in, d_act = state["model"]["in_mean"].numel(), state["model"]["net.2.bias"].numel()
    from gvaempirics.bc.imitators import make_imitator

    model = make_imitator(cfg.imitator_spec(d_in, d_act))
    ema = PostHocEMA(model, TRACKED, snapshot_every=10)
    ema.load_state_dict(state["stabilizer"])
    a, b = (ema.averaged_parameters(0.2, count=c, max_residual=None) for c in (33, 34))
    by_hand = float(sum(((b[k].double() - a[k].double()) ** 2).sum() for k in a)) ** 0.5
    assert sweep.movement.shape == (2, 5) and np.isnan(sweep.movement[:, 0]).all()
    assert sweep.movement[1, 3] == pytest.approx(by_hand, rel=1e-5)
    assert np.all(sweep.movement[:, 1:] > 0)
    np.testing.assert_array_equal(load_posthoc(save_posthoc(sweep, run.parent / "m")).movement, sweep.movement)


def test_fit_error_matches_quadrature_of_the_profiles(posthoc_run, sweep):
    """The closed-form L2 fit error against the profiles p(tau) = (g+1) tau^g / n^(g+1) on a fine grid."""
    run, _ = posthoc_run
    used = [s for s in _snapshots(run) if s["count"] <= 33]
    counts = np.array([s["count"] for s in used], dtype=float)
    sigmas = np.array([s["sigma_rel"] for s in used])
    x = posthoc_coefficients(counts, sigmas, 33, 0.2)
    tau = np.linspace(0.0, 33.0, 400_001)

    def profile(n, sigma):
        g = float(sigma_rel_to_exponent(sigma))
        return np.where(tau <= n, (g + 1) * (tau / n) ** g / n, 0.0)

    fitted = sum(w * profile(n, s) for w, n, s in zip(x, counts, sigmas))
    target = profile(33, 0.2)
    err = np.sqrt(np.trapezoid((fitted - target) ** 2, tau) / np.trapezoid(target**2, tau))
    assert sweep.fit_error[1][2] == pytest.approx(err, rel=1e-3)


def test_runs_without_zoom_snapshots_use_the_snapshot_times(posthoc_run, tmp_path):
    run, _ = posthoc_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    ckpt = RunDir(old).checkpoints()[-1].path
    state = load_torch_file(ckpt)
    state["stabilizer"]["snapshots"] = [s for s in state["stabilizer"]["snapshots"] if s["count"] % 10 == 0]
    state["stabilizer"]["snapshots"] += [s for s in _snapshots(run) if s["count"] == 41]
    atomic_torch_save(state, ckpt)
    with pytest.raises(ValueError, match="iterates='snapshots'"):
        posthoc_sweep(old, [0.1], threads=1)
    res = posthoc_sweep(old, [0.1], iterates="snapshots", threads=1)
    assert list(res.steps) == [9, 19, 29, 39, 40] and res.raw_returns is None  # steps 9, 19, ... not evaluated
    assert [r["weights"] for r in res.rows()] == ["posthoc"] and res.fit_error.max() < 1e-6


def test_command_writes_json_and_figure(posthoc_run, tmp_path, capsys):
    run, _ = posthoc_run
    out = tmp_path / "out"
    assert (
        main(["bc", "posthoc", str(run), "--sigma-rels", "0.05", "0.2", "--threads", "1", "--out", str(out), "--json"])
        == 0
    )
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["sigma_rel"] for r in rows] == [None, 0.05, 0.2]
    saved = load_posthoc(out)
    assert [r["mean_return"] for r in saved.rows()] == pytest.approx([r["mean_return"] for r in rows], rel=1e-12)
    assert saved.returns.shape == (2, 5, 3) and (out / "posthoc.png").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == ["posthoc.json", "posthoc.png"]


def test_command_default_widths_are_the_library_defaults():
    from validation.cli.bc import PosthocInput

    assert PosthocInput(run="r").sigma_rels == DEFAULT_SIGMA_RELS


def test_refusals(posthoc_run, tiny_bc, tmp_path, refuses):
    run, cfg = posthoc_run
    lm = tmp_path / "lm"
    atomic_write_json(lm / "config.json", {"corpus": "cycle", "stabilizer": "posthoc"})
    ema = tmp_path / "ema"
    atomic_write_json(ema / "config.json", to_dict(BCConfig(**tiny_bc)))
    fresh = tmp_path / "fresh"
    atomic_write_json(fresh / "config.json", to_dict(cfg))
    cases = [
        (["bc", "posthoc", "missing"], "run=missing is not a run directory"),
        (["bc", "posthoc", str(lm)], "is not a behavior-cloning run"),
        (["bc", "posthoc", str(ema)], "stabilizer='ema'; post-hoc synthesis needs"),
        (["bc", "posthoc", str(fresh)], "has no checkpoint yet"),
        (["bc", "posthoc", str(run), "--sigma-rels", "0.5"], "sigma_rels=0.5 is out of range"),
        (["bc", "posthoc", str(run), "--sigma-rels", "0"], "sigma_rels=0"),
        (["bc", "posthoc", str(run), "--sigma-rels", "nan"], "sigma_rels=nan"),
        (["bc", "posthoc", str(run), "--iterates", "every"], "iterates"),
        (["bc", "posthoc", str(run), "--out", "/dev/null/x"], "out=/dev/null/x"),
    ]
    for argv, message in cases:
        refuses(argv, message)
    with pytest.raises(ValueError, match="sigma_rels=0.5 is out of range"):
        posthoc_sweep(run, [0.05, 0.5])
    with pytest.raises(ValueError, match="sigma_rels=\\[\\]"):
        posthoc_sweep(run, [])
