"""Behavior cloning end to end on a tiny Hopper configuration, including kill-and-resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gvaempirics.bc.config import PRESETS, BCConfig
from gvaempirics.bc.data import windows
from gvaempirics.bc.results import load_result, summarize
from gvaempirics.bc.train import AugmentedPolicy, bc_loss, train_bc, train_loss_probe
from gvatheory.config import build_config
from validation.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_windows_pad_with_first_state():
    s = torch.arange(6.0).reshape(1, 3, 2)  # states (0,1), (2,3), (4,5)
    w = windows(s, 2)
    assert w.shape == (1, 3, 2, 2)
    torch.testing.assert_close(w[0, 0], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    torch.testing.assert_close(w[0, 2], torch.tensor([[2.0, 3.0], [4.0, 5.0]]))


def test_train_loss_probe_keeps_small_sets_whole_and_spaces_large_ones_evenly():
    x, y = torch.arange(10.0)[:, None], torch.arange(10.0)[:, None] * 2
    assert train_loss_probe(x, y, cap=10)[0] is x
    px, py = train_loss_probe(x, y, cap=4)
    assert px[:, 0].tolist() == [0.0, 3.0, 6.0, 9.0] and torch.equal(py, 2 * px)  # pairs stay pairs
    # on a large set the probe's loss estimates the exact one
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200_000, 3, generator=g), torch.randn(200_000, 2, generator=g)
    model = torch.nn.Linear(3, 2)
    exact, probe = bc_loss(model, x, y), bc_loss(model, *train_loss_probe(x, y))
    assert abs(probe - exact) < 0.02 * exact


def test_augmented_policy_feeds_previous_clipped_action_and_window():
    seen = []

    def batched(x):  # x: (P, I, W, d_in)
        seen.append(x.clone())
        return torch.full((*x.shape[:2], 1), 5.0)  # clipped to 1

    pol = AugmentedPolicy(batched, history=2, low=np.array([-1.0]), high=np.array([1.0]))
    a0 = pol(torch.zeros(1, 1, 2))
    pol(torch.ones(1, 1, 2))
    assert float(a0) == 1.0
    torch.testing.assert_close(seen[0][0, 0], torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))  # u_0 = 0, padded
    torch.testing.assert_close(seen[1][0, 0], torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))  # (s_1, u_0=clip(5))


def test_tiny_run_logs_every_scheduled_iterate(tiny_bc_run, tiny_bc):
    out, summary = tiny_bc_run
    cfg = BCConfig(**tiny_bc)
    res = load_result(out)
    assert list(res.eval_steps) == cfg.eval_steps()
    assert set(res.returns) == {"raw", "ema"} and res.returns["raw"].shape == (len(cfg.eval_steps()), cfg.ics)
    assert list(res.train_steps) == list(range(1, cfg.steps + 1))
    # the EMA starts as a copy of theta_0: the same rollouts at step 0, up to float32 rounding of
    # the batched matmul over two checkpoint rows
    np.testing.assert_allclose(res.returns["raw"][0], res.returns["ema"][0], rtol=1e-6)
    assert res.expert_return > 0 and summary["raw"]["final_falls"] >= 0
    assert summarize(out) == {k: v for k, v in summary.items() if not k.endswith("_last_session")}
    assert json.loads((out / "config.json").read_text())["steps"] == cfg.steps


def test_kill_and_resume_gives_the_same_log(tiny_bc_run, tmp_path, tiny_bc):
    """SIGKILL a run after its second checkpoint, resume it, and compare with the uninterrupted run."""
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "validation", "bc", "train", "--preset", "tiny", "--out", str(out), "--quiet"]
    for key, value in tiny_bc.items():
        if key in PRESETS["tiny"] and PRESETS["tiny"][key] == value:
            continue
        flag = "--" + key.replace("_", "-")
        args += [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / "checkpoints").glob("step_*.pt"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(args[3:]) == 0  # resume in-process
    full, _ = tiny_bc_run
    assert (out / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()


def test_nan_loss_stops_with_message_and_stays_resumable(tmp_path, tiny_bc):
    cfg = BCConfig(**{**tiny_bc, "eta": 1e30, "optimizer": "sgd", "momentum": 0.0, "steps": 20, "zoom_windows": ()})
    with pytest.raises(ValueError, match=r"loss became (nan|inf) at step \d+ .* no checkpoint yet"):
        train_bc(cfg, tmp_path / "nan", quiet=True)
    assert (tmp_path / "nan" / "config.json").is_file()
    # the failed start never reached a checkpoint: the corrected command reuses the same directory
    fixed = cfg.replace(eta=1e-3, steps=10, eval_every=5, checkpoint_every=10)
    assert train_bc(fixed, tmp_path / "nan", quiet=True)["steps_done"] == 10
    # a run with a checkpoint is not silently replaced by another configuration
    with pytest.raises(ValueError, match="cannot resume .* differs in eta"):
        train_bc(fixed.replace(eta=2e-3), tmp_path / "nan", quiet=True)


def test_bad_config_rejected_before_work(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown config key.*widht"):
        build_config(BCConfig, {"widht": 3})
    assert main(["bc", "train", "--preset", "tiny", "--eta", "-1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eta=-1.0 is out of range" in err[0]
    assert not (tmp_path / "x").exists()


def test_plot_and_eval_commands(tiny_bc_run, tmp_path, capsys):
    out, _ = tiny_bc_run
    assert main(["bc", "plot", str(out), "--out", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert capsys.readouterr().out.strip() == str(tmp_path / "f.png")
    assert main(["bc", "eval", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["weights"] for r in rows] == ["raw", "ema"]


def test_transformer_imitator_runs_in_closed_loop(tmp_path, tiny_bc):
    cfg = BCConfig(
        **{
            **tiny_bc,
            "policy": "transformer",
            "history": 3,
            "depth": 1,
            "width": 16,
            "steps": 10,
            "eval_every": 5,
            "zoom_windows": (),
            "checkpoint_every": 10,
        }
    )
    summary = train_bc(cfg, tmp_path / "tr", quiet=True)
    res = load_result(tmp_path / "tr")
    assert list(res.eval_steps) == [0, 5, 10] and np.all(res.lengths["raw"] >= 1)
    assert summary["steps_done"] == 10


def test_posthoc_stabilizer_is_evaluated_and_snapshots_the_last_iterate(tmp_path, tiny_bc):
    from gvaempirics.rundir import RunDir, load_torch_file

    cfg = BCConfig(
        **{
            **tiny_bc,
            "stabilizer": "posthoc",
            "posthoc_every": 4,
            "steps": 10,
            "eval_every": 5,
            "zoom_windows": (),
            "checkpoint_every": 10,
        }
    )
    train_bc(cfg, tmp_path / "ph", quiet=True)
    res = load_result(tmp_path / "ph")
    assert res.weights == ("raw", "posthoc") and res.returns["posthoc"].shape == (3, cfg.ics)
    state = load_torch_file(RunDir(tmp_path / "ph").checkpoints()[-1].path)["stabilizer"]
    # theta_0 is update 1: snapshots every 4 updates, and at update 11 (step 10) when training ends
    assert sorted({s["count"] for s in state["snapshots"]}) == [4, 8, 11]
