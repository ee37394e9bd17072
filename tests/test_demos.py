"""Demonstrations: augmentation, cache round trip, atomic writes, corruption, fresh data, CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from gvaempirics.bc import data as dm
from gvaempirics.bc import experts as ex
from gvaempirics.bc.data import windows
from validation.cli import main

ENV = "HalfCheetah-v5"  # never terminates: full-length trajectories


@pytest.fixture(scope="module")
def expert():
    torch.manual_seed(0)
    e = ex.ExpertMLP(17, 6)
    e.act_low[:], e.act_high[:] = -1.0, 1.0
    return e.eval()


INFO = {"env_id": ENV, "obs_dim": 17, "act_dim": 6, "sha256": "a" * 64}  # as load_expert returns it


@pytest.fixture(scope="module")
def demos(expert):
    return dm.make_demonstrations(ENV, expert, n=4, n_val=2, horizon=12, seed=5, expert_info=INFO)


def test_augmentation_and_actions(demos, expert):
    tr = demos.train
    assert tr.states.shape == (4, 12, 17 + 6) and tr.actions.shape == (4, 12, 6)
    assert (tr.lengths == 12).all() and demos.val.states.shape == (2, 12, 23)
    assert np.all(tr.states[:, 0, 17:] == 0.0)  # u_{-1} = 0
    np.testing.assert_array_equal(tr.states[:, 1:, 17:], tr.actions[:, :-1])  # u_{t-1}
    with torch.no_grad():
        np.testing.assert_allclose(expert(torch.as_tensor(tr.states[..., :17])).numpy(), tr.actions, atol=1e-6)
    # Train and validation come from disjoint seed streams.
    assert not np.allclose(tr.states[:2, 0], demos.val.states[:, 0])
    assert demos.expert_return == pytest.approx(tr.returns.mean())


def test_bc_data_matches_windows(demos):
    data = demos.bc_data(history=3)
    assert data.train_x.shape == (4 * 12, 3, 23) and data.val_y.shape == (2 * 12, 6)
    want = windows(torch.as_tensor(demos.train.states), 3).reshape(-1, 3, 23)
    torch.testing.assert_close(data.train_x, want)


def test_bc_data_keeps_alive_steps_only():
    states = np.arange(2 * 5 * 2, dtype=np.float32).reshape(2, 5, 2)
    actions = -np.arange(2 * 5, dtype=np.float32).reshape(2, 5, 1)
    tr = dm.Trajectories(states, actions, np.array([3, 5]), np.zeros(2))
    d = dm.Demonstrations(tr, tr, {}).bc_data(history=2)
    assert len(d.train_x) == 3 + 5
    got = sorted(float(y) for y in d.train_y[:, 0])
    assert got == sorted([0.0, -1.0, -2.0] + [-5.0, -6.0, -7.0, -8.0, -9.0])  # no padded step


def test_drop_falls_keeps_the_trajectories_that_reach_the_horizon():
    states = np.arange(3 * 5 * 2, dtype=np.float32).reshape(3, 5, 2)
    actions = -np.arange(3 * 5, dtype=np.float32).reshape(3, 5, 1)
    tr = dm.Trajectories(states, actions, np.array([3, 5, 5]), np.array([1.0, 2.0, 3.0]))
    kept = tr.without_falls()
    np.testing.assert_array_equal(kept.returns, [2.0, 3.0])
    np.testing.assert_array_equal(kept.states, states[1:])
    val = dm.Trajectories(states[:1], actions[:1], np.array([3]), np.zeros(1))
    d = dm.Demonstrations(tr, val, {}).bc_data(history=1, drop_falls=True)
    assert sorted(float(y) for y in d.train_y[:, 0]) == sorted(float(a) for a in actions[1:, :, 0].ravel())
    assert len(d.val_y) == 3  # validation stays whole (its one trajectory falls at 3)
    assert len(dm.Demonstrations(tr, val, {}).bc_data(history=1).train_y) == 3 + 5 + 5
    all_fall = dm.Trajectories(states, actions, np.array([3, 4, 2]), np.zeros(3))
    with pytest.raises(
        ValueError, match=r"drop_falls=True leaves no training demonstration: the expert falls in all 3"
    ):
        dm.Demonstrations(all_fall, val, {}).bc_data(history=1, drop_falls=True)


def test_cache_round_trip_and_reuse(tmp_path, expert, monkeypatch):
    path = tmp_path / "d.npz"
    made = dm.load_or_make(path, expert, env_id=ENV, n=3, horizon=8, seed=2, n_val=1, expert_info=INFO)
    monkeypatch.setattr(dm, "collect", lambda *a, **k: pytest.fail("a matching cache must be reused"))
    again = dm.load_or_make(path, expert, env_id=ENV, n=3, horizon=8, seed=2, n_val=1, expert_info=INFO)
    for split in ("train", "val"):
        for k in ("states", "actions", "lengths", "returns"):
            np.testing.assert_array_equal(getattr(getattr(again, split), k), getattr(getattr(made, split), k))
    assert again.meta == made.meta
    with pytest.raises(ValueError, match=r"d\.npz holds other demonstrations: n 3 \(wanted 4\)"):
        dm.load_or_make(path, expert, env_id=ENV, n=4, horizon=8, seed=2, n_val=1, expert_info=INFO)
    # the same settings from another expert file: refused, not silently reused
    other = {**INFO, "sha256": "0" * 64}
    with pytest.raises(ValueError, match=r"expert_sha256 'a{64}' \(wanted '0{64}'\)"):
        dm.load_or_make(path, expert, env_id=ENV, n=3, horizon=8, seed=2, n_val=1, expert_info=other)


def test_cache_with_wrong_shapes_is_refused(tmp_path, demos):
    path = tmp_path / "d.npz"
    bad = dm.Trajectories(demos.train.states[:, :, :5], demos.train.actions, demos.train.lengths, demos.train.returns)
    dm.Demonstrations(bad, demos.val, demos.meta).save(path)
    with pytest.raises(ValueError, match=r"train arrays have inconsistent shapes"):
        dm.Demonstrations.load(path)
    wrong_env = dm.Demonstrations(demos.train, demos.val, demos.meta)
    settings = {k: demos.meta[k] for k in ("env_id", "n", "n_val", "horizon", "seed")}
    info = {"sha256": demos.meta["expert_sha256"], "obs_dim": 11, "act_dim": 3}
    with pytest.raises(ValueError, match=r"needs 14/3"):
        wrong_env.check(settings, info, path=path)


def test_corrupt_cache_names_file(tmp_path, demos):
    path = tmp_path / "d.npz"
    demos.save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"d\.npz is corrupt or truncated"):
        dm.Demonstrations.load(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"d\.npz is corrupt"):
        dm.Demonstrations.load(path)
    with pytest.raises(ValueError, match="nope.npz does not exist"):
        dm.Demonstrations.load(tmp_path / "nope.npz")


def test_interrupted_collection_leaves_no_cache(tmp_path, expert, monkeypatch):
    path = tmp_path / "d.npz"
    real = dm.collect

    def interrupted(*args, **kwargs):
        if kwargs.get("desc") == "val demos":
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(dm, "collect", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dm.load_or_make(path, expert, env_id=ENV, n=2, horizon=5, seed=0, expert_info=INFO)
    assert not path.exists()
    # A kill during the write leaves at most a temporary file (named by the dead writer's pid),
    # which the next save removes; a live writer's temporary file stays.
    stale, live = tmp_path / ".d.npz.999999999.ab.tmp", tmp_path / f".d.npz.{os.getpid()}.cd.tmp"
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    monkeypatch.setattr(dm, "collect", real)
    d = dm.load_or_make(path, expert, env_id=ENV, n=2, horizon=5, seed=0, expert_info=INFO)
    assert dm.Demonstrations.load(path).meta == d.meta and not stale.exists() and live.exists()


def test_fresh_data_rounds(demos, expert):
    draw = dm.fresh_data(demos, expert, history=2)
    r0, r0b, r1 = draw(0), draw(0), draw(1)
    torch.testing.assert_close(r0.train_x, r0b.train_x)  # seeded by (seed, round)
    assert r0.train_x.shape == (4 * 12, 2, 23)
    assert not torch.allclose(r0.train_x, r1.train_x)
    assert not torch.allclose(r0.train_x, demos.bc_data(2).train_x)
    torch.testing.assert_close(r0.val_x, demos.bc_data(2).val_x)
    with pytest.raises(ValueError, match="round=-1"):
        draw(-1)


def test_bad_sizes(expert):
    with pytest.raises(ValueError, match=r"horizon=0 is out of range"):
        dm.make_demonstrations(ENV, expert, n=2, horizon=0, seed=0)


def test_cli_demos(tmp_path, expert, capsys):
    efile = tmp_path / "cheetah.pt"
    ex.save_expert(expert, {"env_id": ENV, "obs_dim": 17, "act_dim": 6, "architecture": {"hidden": [64, 64]}}, efile)
    out = tmp_path / "demos.npz"
    settings = [
        "--env",
        ENV,
        "--n-demos",
        "3",
        "--val-demos",
        "1",
        "--demo-horizon",
        "6",
        "--demo-seed",
        "1",
        "--expert",
        str(efile),
    ]
    assert main(["bc", "demos", "--preset", "tiny", *settings, "--out", str(out), "--quiet", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["trajectories"] for r in doc["rows"]] == [3, 1]
    d = dm.Demonstrations.load(out)
    assert d.train.states.shape == (3, 6, 23) and d.meta["seed"] == 1
    assert main(["bc", "demos", "--env", "Walker2d-v5", "--expert", str(efile), "--out", str(tmp_path / "w.npz")]) == 2
    assert "not for env_id='Walker2d-v5'" in capsys.readouterr().err
    assert not (tmp_path / "w.npz").exists()
    # `gva bc train --demos` consumes the cache (no collection) and checks it against the config
    run = tmp_path / "run"
    train = [
        "bc",
        "train",
        "--preset",
        "tiny",
        *settings,
        "--demos",
        str(out),
        "--steps",
        "2",
        "--eval-every",
        "2",
        "--zoom-windows",
        "0",
        "--zoom-length",
        "2",
        "--H",
        "5",
        "--ics",
        "1",
        "--checkpoint-every",
        "2",
        "--out",
        str(run),
        "--quiet",
    ]
    assert main(train) == 0 and not (run / "demos.npz").exists()
    capsys.readouterr()
    mismatch = [a if a != "3" else "4" for a in train]
    assert main([*mismatch[:-3], "--out", str(tmp_path / "run2"), "--quiet"]) == 2
    assert "holds other demonstrations: n 3 (wanted 4)" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()
