"""Post-hoc EMA widths rolled out during training (``posthoc_zoom="rollout"``): the same numbers as
the synthesis from snapshots of the same run, a stateless movement, exact resume, the checkpoint
the flip curve needs kept, and the refusals."""

import numpy as np
import pytest
import torch

from gvaempirics.bc.config import BCConfig
from gvaempirics.bc.posthoc import logged_sweep, posthoc_sweep
from gvaempirics.rundir import RunDir
from gvaempirics.stabilizers import EMA, Polyak
from gvatheory.schedules import PowerEMA
from gvatheory.stabilizers import PowerFunctionEMA

TRACKED = (0.05, 0.1, 0.2)


def _cfg(tiny_bc, zoom: str) -> BCConfig:
    return BCConfig(
        **{**tiny_bc, "stabilizer": "posthoc", "posthoc_sigma_rels": TRACKED, "posthoc_every": 10, "posthoc_zoom": zoom}
    )


@pytest.fixture(scope="module")
def twins(tmp_path_factory, tiny_bc):
    """The same tiny run trained twice: zoom snapshots, and every tracked width rolled out."""
    from gvaempirics.bc.train import train_bc

    root = tmp_path_factory.mktemp("bc_rollout")
    for zoom in ("snapshot", "rollout"):
        train_bc(_cfg(tiny_bc, zoom), root / zoom, quiet=True)
    return root / "snapshot", root / "rollout"


def test_logged_widths_equal_the_synthesis_of_the_same_run(twins):
    snap, roll = twins
    widths = [0.2, 0.05]  # any order of tracked widths
    a = posthoc_sweep(snap, widths, threads=1)
    b = posthoc_sweep(roll, widths)
    assert list(b.steps) == list(a.steps) == [30, 31, 32, 33, 34]
    assert [list(w) for w in b.windows] == [list(w) for w in a.windows]
    np.testing.assert_array_equal(b.sigma_rels, widths)
    np.testing.assert_array_equal(b.raw_returns, a.raw_returns)  # training did not change
    np.testing.assert_allclose(b.returns, a.returns, rtol=1e-4)
    np.testing.assert_array_equal(b.lengths, a.lengths)
    assert np.all(b.fit_error == 0)
    assert np.isnan(b.movement[:, 0]).all() and np.all(b.movement[:, 1:] > 0)
    np.testing.assert_allclose(b.movement[:, 1:], a.movement[:, 1:], rtol=1e-3)
    for ra, rb in zip(a.rows(), b.rows()):
        assert rb["reward_oscillation"] == pytest.approx(ra["reward_oscillation"], rel=1e-3, abs=1e-9)


def test_rollout_run_keeps_no_zoom_snapshot_and_logs_every_width(twins):
    from gvaempirics.rundir import load_torch_file

    _, roll = twins
    counts = {s["count"] for s in load_torch_file(RunDir(roll).checkpoints()[-1].path)["stabilizer"]["snapshots"]}
    assert counts == {10, 20, 30, 40, 41}  # the schedule and the end only
    recs = list(RunDir(roll).metrics("widths"))
    assert [r["step"] for r in recs] == [30, 31, 32, 33, 34]
    evals = {r["step"]: r for r in RunDir(roll).metrics("eval") if r["weights"] == "posthoc"}
    for r in recs:  # the first tracked width is the run's averaged weights
        assert r["sigma_rels"] == list(TRACKED) and len(r["returns"]) == len(TRACKED) == len(r["movement"])
        assert r["returns"][0] == evals[r["step"]]["returns"]


def test_a_killed_rollout_run_resumes_to_the_same_log(twins, tiny_bc, tmp_path):
    from gvaempirics.bc.train import train_bc

    _, roll = twins
    out = tmp_path / "run"
    train_bc(_cfg(tiny_bc, "rollout"), out, quiet=True, stop_at=32)  # killed inside the zoom window
    train_bc(_cfg(tiny_bc, "rollout"), out, quiet=True)
    assert (out / "metrics.jsonl").read_bytes() == (roll / "metrics.jsonl").read_bytes()


def test_the_checkpoint_opening_the_first_zoom_window_is_kept(tmp_path):
    run = RunDir(tmp_path / "r")
    for step in range(10, 60, 10):
        run.save_checkpoint(step, {"x": step}, keep=2, pin=25)
    assert [c.step for c in run.checkpoints()] == [20, 40, 50]
    for step in range(60, 80, 10):
        run.save_checkpoint(step, {"x": step}, keep=2)
    assert [c.step for c in run.checkpoints()] == [60, 70]


@pytest.mark.parametrize(
    "make",
    [
        lambda m: EMA(m, PowerFunctionEMA(0.1)),
        lambda m: EMA(m, PowerEMA(0.5, gamma_min=0.2)),
        lambda m: Polyak(m),
        lambda m: EMA(m, 0.3, every=2),
    ],
)
def test_last_movement_is_the_distance_between_consecutive_averages(make):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    ema = make(model)
    ema.update()
    assert np.isnan(ema.last_movement())  # the first update copies the iterate
    checked = 0
    for _ in range(7):
        before = torch.cat([v.reshape(-1) for v in ema.averaged_parameters().values()]).double()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update()
        after = torch.cat([v.reshape(-1) for v in ema.averaged_parameters().values()]).double()
        got, want = ema.last_movement(), float((after - before).norm())
        if ema.schedule(ema.count - 1) >= 1:  # a copy of the iterate: not recoverable from it
            assert np.isnan(got)
        else:
            assert got == pytest.approx(want, rel=1e-5, abs=1e-7)
            checked += 1
    assert checked >= 3


def test_refusals(twins):
    snap, roll = twins
    with pytest.raises(ValueError, match="sigma_rels=0.02 is out of range for run=.*tracked widths 0.05, 0.1, 0.2"):
        logged_sweep(roll, [0.05, 0.02])
    with pytest.raises(ValueError, match="iterates='snapshots' is out of range"):
        posthoc_sweep(roll, [0.05], iterates="snapshots")
    with pytest.raises(ValueError, match="posthoc_zoom"):
        BCConfig(posthoc_zoom="later")


def test_command_reads_a_rollout_run_without_its_checkpoints(twins, tmp_path, capsys):
    import shutil

    from gvaempirics.bc.posthoc import load_posthoc
    from validation.cli import main

    _, roll = twins
    copy = tmp_path / "run"
    shutil.copytree(roll, copy, ignore=shutil.ignore_patterns("checkpoints", "demos.npz"))
    assert main(["bc", "posthoc", str(copy), "--sigma-rels", "0.05", "0.2", "--out", str(tmp_path / "o")]) == 0
    res = load_posthoc(tmp_path / "o")
    assert list(res.sigma_rels) == [0.05, 0.2] and np.all(res.fit_error == 0)
    assert "post-hoc EMA at 5 zoom iterates" in capsys.readouterr().out
