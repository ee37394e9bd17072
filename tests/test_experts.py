"""Experts: PPO train/resume smoke, folding of the normalization, selection, export, loading, eval CLI."""

from __future__ import annotations

import json
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch

from gvaempirics import experts as ex
from gvaempirics.envs import ENV_IDS
from validation.cli import main

ENV = "Hopper-v5"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny PPO run: 2 envs, checkpoints every 512 env steps, trained to 1024 then resumed to 2048."""
    out = tmp_path_factory.mktemp("ppo")
    assert ex.train(ENV, out, total_steps=1024, seed=3, n_envs=2, checkpoint_every=512, quiet=True) == 1024
    before = [c[0] for c in ex.checkpoints(out)]
    with open(out / "ppo_vecnormalize_1024_steps.pkl", "rb") as fh:
        count_1024 = pickle.load(fh).obs_rms.count
    assert ex.train(ENV, out, total_steps=2048, seed=3, n_envs=2, checkpoint_every=512, quiet=True) == 2048
    return out, before, count_1024


def test_train_checkpoints_and_resume(run_dir):
    out, before, count_1024 = run_dir
    assert before == [512, 1024]
    assert [c[0] for c in ex.checkpoints(out)] == [512, 1024, 1536, 2048]
    # The resumed run continued from the 1024-step statistics: its count includes them, plus 1024
    # steps and the 2 reset observations of the resumed start (a fresh run would count ~1026).
    with open(out / "ppo_vecnormalize_2048_steps.pkl", "rb") as fh:
        assert pickle.load(fh).obs_rms.count == pytest.approx(count_1024 + 1024 + 2)
    times = json.loads((out / "train_time.json").read_text())
    assert times["wall_s"] > 0 and times["cpu_s"] > 0
    # Already at the target: nothing more is trained.
    assert ex.train(ENV, out, total_steps=2048, seed=3, n_envs=2, checkpoint_every=512, quiet=True) == 2048


def _sb3_actions(zip_path, pkl_path, obs):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    model = PPO.load(str(zip_path), device="cpu")
    vn = VecNormalize.load(str(pkl_path), DummyVecEnv([lambda: gym.make(ENV)]))
    return model.predict(vn.normalize_obs(obs), deterministic=True)[0], model


def test_folded_expert_equals_sb3_predict(run_dir, tmp_path):
    out = run_dir[0]
    steps, z, p = ex.checkpoints(out)[-1]
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(200, 11)) * 20  # large enough that the observation clip is active
    want, model = _sb3_actions(z, p, obs)
    got = ex.from_checkpoint(ENV, z, p)(torch.as_tensor(obs, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    # Scale the action head so the action clip to [-1, 1] binds, and compare again.
    with torch.no_grad():
        model.policy.action_net.weight.mul_(1000.0)
    model.save(tmp_path / "big.zip")
    want, _ = _sb3_actions(tmp_path / "big.zip", p, obs)
    assert (np.abs(want) == 1.0).mean() > 0.2
    got = ex.from_checkpoint(ENV, tmp_path / "big.zip", p)(torch.as_tensor(obs, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_run_episodes_equals_single_env_loop(run_dir):
    steps, z, p = ex.checkpoints(run_dir[0])[-1]
    expert = ex.from_checkpoint(ENV, z, p)
    seeds = ex.ic_seeds(0, 3, 0)
    res = ex.run_episodes(ENV, expert, seeds, 60, record=True)
    for i, s in enumerate(seeds):  # plain reference loop, one env, one observation at a time
        env = gym.make(ENV)
        obs, _ = env.reset(seed=s)
        total, n = 0.0, 0
        for t in range(60):
            act = expert(torch.as_tensor(obs, dtype=torch.float32)[None])[0].detach().numpy().astype(np.float64)
            # float32 matmuls of a batch and of one row may differ in the last bit
            np.testing.assert_allclose(res["obs"][i, t], obs.astype(np.float32), rtol=1e-5, atol=1e-6)
            obs, r, term, _, _ = env.step(act)
            total, n = total + r, n + 1
            if term:
                break
        assert res["lengths"][i] == n
        assert res["returns"][i] == pytest.approx(total, rel=1e-5)


def _cand(steps, returns, lengths, horizon=10):
    return ex.Candidate(steps, ex.ExpertEval(np.array(returns, float), np.array(lengths), horizon))


def test_pick_prefers_robust_then_return():
    robust = _cand(1, [5.0, 5.0], [10, 10])
    better_but_falls = _cand(2, [50.0, 50.0], [10, 4])
    best_robust = _cand(3, [6.0, 6.0], [10, 10])
    assert ex.pick([robust, better_but_falls, best_robust]).steps == 3
    assert ex.pick([better_but_falls, _cand(4, [90.0, 90.0], [3, 3])]).steps == 2  # fewest falls
    assert better_but_falls.evaluation.falls == 1 and robust.evaluation.sd == 0.0


def test_export_load_and_eval_cli(run_dir, tmp_path, capsys):
    dest = tmp_path / "Hopper.pt"
    info = ex.export(ENV, run_dir[0], dest, n_ics=2, horizon=15, min_steps=1024, command="test",
                     train_seed=3, quiet=True)
    assert [c["steps"] for c in info["candidates"]] == [1024, 1536, 2048]
    assert info["env_steps"] in (1024, 1536, 2048) and info["obs_dim"] == 11 and info["act_dim"] == 3
    assert info["training_time"]["wall_s"] > 0
    expert, loaded = ex.load_expert(ENV, dest)
    assert loaded == json.loads(dest.with_suffix(".json").read_text())
    steps, z, p = next(c for c in ex.checkpoints(run_dir[0]) if c[0] == info["env_steps"])
    x = torch.randn(7, 11)
    torch.testing.assert_close(expert(x), ex.from_checkpoint(ENV, z, p)(x))
    direct = ex.evaluate(ENV, expert, n_ics=2, horizon=15)
    assert info["eval"]["return_mean"] == pytest.approx(direct.mean)

    assert main(["expert", "eval", ENV, "--expert", str(dest), "--ics", "2", "--horizon", "15", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["return"] for r in doc["rows"]] == pytest.approx(list(direct.returns))
    assert doc["return mean"] == pytest.approx(direct.mean)


def test_bad_expert_files(tmp_path, capsys):
    expert = ex.ExpertMLP(11, 3)
    dest = tmp_path / "e.pt"
    ex.save_expert(expert, {"env_id": ENV, "obs_dim": 11, "act_dim": 3, "architecture": {"hidden": [64, 64]}}, dest)
    ex.load_expert(ENV, dest)
    with pytest.raises(ValueError, match=r"e\.pt is an expert for 'Hopper-v5', not for env_id='Walker2d-v5'"):
        ex.load_expert("Walker2d-v5", dest)
    dest.write_bytes(dest.read_bytes()[:200])  # truncated
    with pytest.raises(ValueError, match=r"e\.pt is corrupt or truncated"):
        ex.load_expert(ENV, dest)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ex.load_expert(ENV, tmp_path / "missing.pt")
    assert main(["expert", "eval", "Hopper-v9", "--horizon", "2"]) == 2
    err = capsys.readouterr().err
    assert "Hopper-v9" in err and all(e in err for e in ENV_IDS) and ex.check_env_id("Hopper-v5") == "Hopper-v5"
    with pytest.raises(ValueError, match="n_ics=0"):
        ex.evaluate(ENV, expert, n_ics=0)
