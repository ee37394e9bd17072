"""Experts: PPO train/resume smoke, the signed run manifest (pickles are loaded only from runs this
user's toolkit wrote; export loads none), folding of the normalization, selection, export,
loading, the three ``gva expert`` commands and their refusals of bad input."""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from gvaempirics.bc import expert_runs as ppo
from gvaempirics.bc import experts as ex
from gvaempirics.bc.envs import ENV_IDS, initial_conditions_from_seeds, reset_seeds
from gvaempirics.bc.evaluator import run_episodes
from gvaempirics.rundir import sha256_file
from validation.cli import main

ENV = "Hopper-v5"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny PPO run: 2 envs, checkpoints every 512 env steps, trained to 1024 then resumed to 2048."""
    out = tmp_path_factory.mktemp("ppo") / "run"
    assert ppo.train(ENV, out, steps=1024, seed=3, n_envs=2, checkpoint_every=512, quiet=True) == 1024
    before = [c[0] for c in ppo.checkpoints(out)]
    with open(out / "ppo_vecnormalize_1024_steps.pkl", "rb") as fh:
        count_1024 = pickle.load(fh).obs_rms.count
    assert ppo.train(ENV, out, steps=2048, seed=3, n_envs=2, checkpoint_every=512, quiet=True) == 2048
    return out, before, count_1024


def _tree(*roots: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for r in roots for p in r.rglob("*"))


def test_train_checkpoints_and_resume(run_dir):
    out, before, count_1024 = run_dir
    assert before == [512, 1024]
    assert [c[0] for c in ppo.checkpoints(out)] == [512, 1024, 1536, 2048]
    # The resumed run continued from the 1024-step statistics: its count includes them, plus 1024
    # steps and the 2 reset observations of the resumed start (a fresh run would count ~1026).
    with open(out / "ppo_vecnormalize_2048_steps.pkl", "rb") as fh:
        assert pickle.load(fh).obs_rms.count == pytest.approx(count_1024 + 1024 + 2)
    times = json.loads((out / "train_time.json").read_text())
    assert times["wall_s"] > 0 and times["cpu_s"] > 0
    # Already at the target: nothing more is trained.
    assert ppo.train(ENV, out, steps=2048, seed=3, n_envs=2, checkpoint_every=512, quiet=True) == 2048


def test_manifest_lists_every_checkpoint_file_with_its_digest(run_dir):
    out = run_dir[0]
    manifest = ppo.read_manifest(out)
    assert (manifest["env_id"], manifest["obs_dim"], manifest["act_dim"], manifest["seed"], manifest["n_envs"]) == (
        ENV,
        11,
        3,
        3,
        2,
    )
    files = sorted(p.name for p in [*out.glob("ppo_*"), *out.glob("expert_*")])
    assert sorted(manifest["files"]) == files and len(files) == 12  # zip, pkl and policy file per checkpoint
    for name in files:
        assert manifest["files"][name] == sha256_file(out / name)
    assert not list(out.glob(".*.tmp"))
    assert manifest["signature"].startswith("hmac-sha256:")


def _sb3(zip_path, pkl_path):
    """SB3's own loaders, on files this test module wrote itself."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    return PPO.load(str(zip_path), device="cpu"), VecNormalize.load(str(pkl_path), DummyVecEnv([lambda: gym.make(ENV)]))


def _policy_file(run, steps):
    return ex.run_expert(ppo.read_manifest(run), ppo.expert_path(run, steps))


def test_folded_expert_equals_sb3_predict(run_dir):
    out = run_dir[0]
    steps, z, p = ppo.checkpoints(out)[-1]
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(200, 11)) * 20  # large enough that the observation clip is active
    model, vn = _sb3(z, p)
    want = model.predict(vn.normalize_obs(obs), deterministic=True)[0]
    x = torch.as_tensor(obs, dtype=torch.float32)
    np.testing.assert_allclose(ex.fold(ENV, model.policy, vn)(x).detach().numpy(), want, atol=1e-5)
    # The policy file training wrote beside the checkpoint holds the same expert, bit for bit.
    torch.testing.assert_close(_policy_file(out, steps)(x), ex.fold(ENV, model.policy, vn)(x), rtol=0, atol=0)
    # Scale the action head so the action clip to [-1, 1] binds, and compare again.
    with torch.no_grad():
        model.policy.action_net.weight.mul_(1000.0)
    want = model.predict(vn.normalize_obs(obs), deterministic=True)[0]
    assert (np.abs(want) == 1.0).mean() > 0.2
    np.testing.assert_allclose(ex.fold(ENV, model.policy, vn)(x).detach().numpy(), want, atol=1e-5)


def test_run_episodes_equals_single_env_loop(run_dir):
    expert = _policy_file(run_dir[0], ppo.checkpoints(run_dir[0])[-1][0])
    seeds = [int(s) for s in reset_seeds(0, 3, 0)]
    res = run_episodes(ENV, expert, initial_conditions_from_seeds(ENV, seeds), 60, record=True)
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
    return ex.Candidate(
        steps, ex.ExpertEval(np.array(returns, float), np.array(lengths), horizon, np.zeros(len(returns)))
    )


def test_pick_prefers_robust_then_return():
    robust = _cand(1, [5.0, 5.0], [10, 10])
    better_but_falls = _cand(2, [50.0, 50.0], [10, 4])
    best_robust = _cand(3, [6.0, 6.0], [10, 10])
    assert ex.pick([robust, better_but_falls, best_robust]).steps == 3
    assert ex.pick([better_but_falls, _cand(4, [90.0, 90.0], [3, 3])]).steps == 2  # fewest falls
    assert better_but_falls.evaluation.falls == 1 and robust.evaluation.sd == 0.0


def test_export_load_and_eval_cli(run_dir, tmp_path, capsys):
    run = run_dir[0]
    dest = tmp_path / "experts" / "Hopper.pt"
    assert (
        main(
            [
                "expert",
                "export",
                ENV,
                "--run",
                run,
                "--out",
                dest,
                "--ics",
                2,
                "--H",
                15,
                "--min-steps",
                1024,
                "--heldout-ics",
                3,
                "--quiet",
            ]
        )
        == 0
    )
    assert "held-out return" in capsys.readouterr().out
    info = json.loads(dest.with_suffix(".json").read_text())
    assert [c["steps"] for c in info["candidates"]] == [1024, 1536, 2048]
    assert info["env_steps"] in (1024, 1536, 2048) and info["obs_dim"] == 11 and info["act_dim"] == 3
    assert info["training_time"]["wall_s"] > 0 and info["seed"] == 3 and info["recipe"]["n_envs"] == 2
    assert info["checkpoint"] == f"expert_{info['env_steps']}_steps.pt"
    assert info["checkpoint_sha256"] == ppo.read_manifest(run)["files"][info["checkpoint"]]
    # The command, as typed inside the run directory: no absolute path of this machine.
    rel = os.path.relpath(dest, run)
    assert rel.startswith("..") and info["command"] == (
        f"gva expert export {ENV} --run . --out {rel} --ics 2 --H 15 --min-steps 1024 --heldout-ics 3"
    )
    assert str(tmp_path) not in json.dumps(info)
    expert, loaded = ex.load_expert(ENV, dest)
    assert loaded == {**info, "file": str(dest), "sha256": sha256_file(dest)}
    x = torch.randn(7, 11)
    torch.testing.assert_close(expert(x), _policy_file(run, info["env_steps"])(x), rtol=0, atol=0)
    direct = ex.evaluate(ENV, expert, ics=2, H=15)
    assert info["eval"]["return_mean"] == pytest.approx(direct.mean)
    # The held-out report: the chosen expert on initial conditions of another seed, as `gva expert eval` gives it.
    held = ex.evaluate(ENV, expert, ics=3, H=15, ic_seed=ex.HELDOUT_SEED)
    assert info["heldout"]["ic_seed"] == ex.HELDOUT_SEED and info["heldout"]["n_ics"] == 3
    assert info["heldout"]["return_mean"] == pytest.approx(held.mean) and info["heldout"]["falls"] == held.falls
    assert held.mean != pytest.approx(direct.mean)  # other initial conditions indeed

    assert main(["expert", "eval", ENV, "--expert", dest, "--ics", 2, "--H", 15, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["return"] for r in doc["rows"]] == pytest.approx(list(direct.returns))
    assert doc["return mean"] == pytest.approx(direct.mean)


def test_train_command_default_run_dir_continues_and_exports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [
        "expert",
        "train",
        ENV,
        "--steps",
        512,
        "--n-envs",
        2,
        "--checkpoint-every",
        512,
        "--ics",
        2,
        "--H",
        10,
        "--export",
        "e.pt",
        "--quiet",
    ]
    assert main(argv) == 0
    run = tmp_path / "runs" / "experts" / f"{ENV}__ppo__s1"
    assert [c[0] for c in ppo.checkpoints(run)] == [512, 1024]  # PPO finishes its rollout of n_steps * n_envs
    info = json.loads((tmp_path / "e.json").read_text())
    assert info["command"] == (
        f"gva expert train {ENV} --steps 512 --n-envs 2 --checkpoint-every 512 --out . "
        "--export ../../../e.pt --ics 2 --H 10"
    )
    capsys.readouterr()
    assert main(argv[:-3] + ["--quiet"]) == 0  # the same command again: continues the run (already there)
    assert f"1024 env steps in {Path('runs/experts') / f'{ENV}__ppo__s1'}" in capsys.readouterr().out
    # Another seed into the same directory is refused, naming the field, before anything is loaded.
    assert main(["expert", "train", ENV, "--steps", 2048, "--n-envs", 2, "--seed", 5, "--out", run]) == 2
    assert "seed=1, not seed=5" in capsys.readouterr().err


class _Marker:
    """Unpickling this creates a file: stands for arbitrary code in a crafted pickle."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def run_copy(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir[0], copy)
    return copy


def _refused(argv, capsys, *names: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(n in err[0] for n in names), err
    return err[0]


@pytest.mark.parametrize("how", ["replace", "new pair"])
def test_crafted_pickle_is_never_unpickled(run_copy, tmp_path, capsys, how):
    marker = tmp_path / "pwned"
    crafted = pickle.dumps(_Marker(marker))
    if how == "replace":  # a crafted pkl in place of a real checkpoint's
        target = run_copy / "ppo_vecnormalize_2048_steps.pkl"
        message = "does not match the SHA-256 recorded"
    else:  # a crafted pkl beside a genuine PPO zip, under a newer step count
        shutil.copy(run_copy / "ppo_2048_steps.zip", run_copy / "ppo_4096_steps.zip")
        target = run_copy / "ppo_vecnormalize_4096_steps.pkl"
        message = "is not listed in"
    target.write_bytes(crafted)
    named = target.name if how == "replace" else "ppo_4096_steps.zip"  # the first unlisted file
    dest = tmp_path / "x.pt"
    _refused(["expert", "export", ENV, "--run", run_copy, "--out", dest, "--ics", 1, "--H", 5], capsys, named, message)
    with pytest.raises(ValueError, match=message):
        ex.export(ENV, run_copy, dest, ics=1, H=5, quiet=True)
    with pytest.raises(ValueError, match=message):  # resume
        ppo.train(ENV, run_copy, steps=5000, seed=3, n_envs=2, checkpoint_every=512, quiet=True)
    _refused(
        ["expert", "train", ENV, "--out", run_copy, "--seed", 3, "--n-envs", 2, "--steps", 5000], capsys, named, message
    )
    assert not marker.exists() and not dest.exists() and not dest.with_suffix(".json").exists()
    assert [c[0] for c in ppo.checkpoints(run_copy)][-1] == (2048 if how == "replace" else 4096)  # nothing trained


def _forge(run: Path, payload: str, marker: Path) -> None:
    """What someone who can write the run directory can do: plant code in the newest checkpoint (a
    crafted field of the SB3 zip's ``data``, or a ``__reduce__`` pickle in place of the
    VecNormalize ``.pkl``) and rewrite the manifest's digests to match."""
    crafted = pickle.dumps(_Marker(marker))
    if payload == "zip field":
        z = run / "ppo_2048_steps.zip"
        with zipfile.ZipFile(z) as zf:
            entries = {name: zf.read(name) for name in zf.namelist()}
        data = json.loads(entries["data"])
        data["lr_schedule"][":serialized:"] = base64.b64encode(crafted).decode()  # SB3 unpickles this on load
        entries["data"] = json.dumps(data).encode()
        with zipfile.ZipFile(z, "w") as zf:
            for name, blob in entries.items():
                zf.writestr(name, blob)
        target = z
    else:
        target = run / "ppo_vecnormalize_2048_steps.pkl"
        target.write_bytes(crafted)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"][target.name] = sha256_file(target)
    (run / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("payload", ["zip field", "pkl"])
@pytest.mark.parametrize("signed_by", ["nobody", "another key"])
def test_forged_run_directory_runs_no_code(run_copy, tmp_path, capsys, monkeypatch, payload, signed_by):
    """Digests that match prove nothing: export loads no pickle at all, and resume loads them only
    under a manifest signed with this user's key, which a forged copy does not carry."""
    marker = tmp_path / "pwned"
    _forge(run_copy, payload, marker)
    if signed_by == "another key":  # the forger signs with a key of their own
        from gvaempirics import signing

        monkeypatch.setenv(signing.KEY_ENV, str(tmp_path / "forger-key"))
        doc = signing.sign(json.loads((run_copy / "manifest.json").read_text()))
        (run_copy / "manifest.json").write_text(json.dumps(doc))
        monkeypatch.undo()
    dest = tmp_path / "x.pt"
    assert main(["expert", "export", ENV, "--run", run_copy, "--out", dest, "--ics", 1, "--H", 5, "--quiet"]) == 0
    capsys.readouterr()
    assert dest.is_file() and not marker.exists()  # exported from the plain-tensor policy files
    err = _refused(
        ["expert", "train", ENV, "--out", run_copy, "--seed", 3, "--n-envs", 2, "--steps", 5000],
        capsys,
        "manifest.json",
        "is not signed",
    )
    assert "--trust-run" in err
    with pytest.raises(ValueError, match="is not signed"):
        ppo.train(ENV, run_copy, steps=5000, seed=3, n_envs=2, checkpoint_every=512, quiet=True)
    assert not marker.exists()
    assert [c[0] for c in ppo.checkpoints(run_copy)][-1] == 2048  # nothing trained


def test_trust_run_continues_an_unsigned_run_and_writes_its_policy_files(run_copy, tmp_path, capsys):
    """A run from before policy files and signatures: export refuses it, resume needs --trust-run,
    which gives every checkpoint its policy file (the same expert as the one training wrote) and
    signs the manifest, after which it is an ordinary run."""
    want = {n: _policy_file(run_copy, n) for n, _, _ in ppo.checkpoints(run_copy)}
    manifest = json.loads((run_copy / "manifest.json").read_text())
    for n in want:
        ppo.expert_path(run_copy, n).unlink()
        del manifest["files"][ppo.expert_path(run_copy, n).name]
    del manifest["signature"]
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    _refused(["expert", "export", ENV, "--run", run_copy, "--out", tmp_path / "x.pt"], capsys, "no policy files")
    args = ["expert", "train", ENV, "--out", run_copy, "--seed", 3, "--n-envs", 2, "--steps", 2048, "--quiet"]
    _refused(args, capsys, "is not signed")
    assert main([*args, "--trust-run"]) == 0
    x = torch.randn(9, 11)
    for n, expert in want.items():
        torch.testing.assert_close(_policy_file(run_copy, n)(x), expert(x), rtol=0, atol=0)
    assert main(args) == 0  # signed now


def test_kill_between_manifest_and_files_resumes(run_copy):
    """A kill after the manifest and the zip of a checkpoint, before its pkl: the incomplete pair is
    skipped, the run continues from the previous one and writes that checkpoint again."""
    (run_copy / "ppo_vecnormalize_2048_steps.pkl").unlink()
    old = ppo.read_manifest(run_copy)["files"]["ppo_2048_steps.zip"]
    assert [c[0] for c in ppo.checkpoints(run_copy)] == [512, 1024, 1536]
    # PPO learns in whole rollouts of 1024 steps: from 1536 to 2560, checkpointing at 2048 and 2560
    assert ppo.train(ENV, run_copy, steps=2048, seed=3, n_envs=2, checkpoint_every=512, quiet=True) == 2560
    assert [c[0] for c in ppo.verified_checkpoints(ENV, run_copy)] == [512, 1024, 1536, 2048, 2560]
    assert ppo.read_manifest(run_copy)["files"]["ppo_2048_steps.zip"] != old


def test_tampered_zip_and_missing_manifest_are_refused(run_copy, tmp_path, capsys):
    z = run_copy / "ppo_1024_steps.zip"
    data = bytearray(z.read_bytes())
    data[len(data) // 2] ^= 1
    z.write_bytes(bytes(data))
    dest = tmp_path / "x.pt"
    _refused(["expert", "export", ENV, "--run", run_copy, "--out", dest], capsys, "ppo_1024_steps.zip", "SHA-256")
    # even when the tampered checkpoint is older than the ones export would consider
    _refused(
        ["expert", "export", ENV, "--run", run_copy, "--out", dest, "--min-steps", 2048], capsys, "ppo_1024_steps.zip"
    )
    _refused(["expert", "train", ENV, "--out", run_copy, "--seed", 3, "--n-envs", 2], capsys, "ppo_1024_steps.zip")
    (run_copy / "manifest.json").unlink()
    _refused(["expert", "export", ENV, "--run", run_copy, "--out", dest], capsys, "has no manifest.json")
    _refused(["expert", "train", ENV, "--out", run_copy, "--seed", 3, "--n-envs", 2], capsys, "has no manifest.json")
    (run_copy / "manifest.json").write_text("{not json")
    _refused(["expert", "export", ENV, "--run", run_copy, "--out", dest], capsys, "manifest.json is not a valid")
    assert not dest.exists()


def test_export_of_another_envs_run_is_refused(run_dir, tmp_path, capsys):
    before = _tree(run_dir[0], tmp_path)
    _refused(
        ["expert", "export", "Walker2d-v5", "--run", run_dir[0], "--out", tmp_path / "w.pt"],
        capsys,
        "is a Hopper-v5 run",
        "env=Walker2d-v5",
    )
    _refused(["expert", "train", "Walker2d-v5", "--out", run_dir[0]], capsys, "is a Hopper-v5 run")
    assert _tree(run_dir[0], tmp_path) == before
    # A policy of another size is refused when folded, too.
    model, vn = _sb3(*ppo.checkpoints(run_dir[0])[-1][1:])
    with pytest.raises(ValueError, match=r"obs_dim, act_dim = \(11, 3\), but Walker2d-v5 has \(17, 6\)"):
        ex.fold("Walker2d-v5", model.policy, vn)


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
    with pytest.raises(ValueError, match="missing.pt does not exist"):
        ex.load_expert(ENV, tmp_path / "missing.pt")
    err = _refused(["expert", "eval", "Hopper-v9", "--H", 2], capsys, "Hopper-v9")
    assert all(e in err for e in ENV_IDS) and ex.check_env_id("Hopper-v5") == "Hopper-v5"
    with pytest.raises(ValueError, match="ics=0"):
        ex.evaluate(ENV, expert, ics=0)


def test_an_expert_setting_names_a_file_or_a_shipped_expert(tmp_path):
    assert ex.expert_file(ENV) == ex.expert_file(ENV, "") == ex.SHIPPED_DIR / f"{ENV}.pt"
    assert ex.expert_file(ENV, "Hopper-v5") == ex.SHIPPED_DIR / "Hopper-v5.pt"  # a bare name: shipped
    assert ex.expert_file(ENV, "my.pt") == Path("my.pt") and ex.expert_file(ENV, "runs/x") == Path("runs/x")
    _, by_name = ex.load_expert(ENV, "Hopper-v5")
    _, by_default = ex.load_expert(ENV)
    assert by_name["sha256"] == by_default["sha256"]
    with pytest.raises(ValueError, match=r"no-such-expert\.pt does not exist \(shipped experts: Ant-v5"):
        ex.load_expert(ENV, "no-such-expert")


def test_nan_and_code_carrying_expert_files_are_refused_in_one_line_without_library_noise(tmp_path, capsys):
    """An expert file with NaN weights would act as NaN, one that unpickles code would run it: both
    are refused in one line, and neither MuJoCo's notes on gymnasium's model files (HalfCheetah's
    ``settotalmass``) nor torch's on pickle protocols precede that line."""
    import subprocess
    import sys
    import warnings

    expert = ex.ExpertMLP(17, 6)
    with torch.no_grad():
        expert.net[0].weight[0, 0] = float("nan")
    dest = tmp_path / "cheetah.pt"
    info = {"env_id": "HalfCheetah-v5", "obs_dim": 17, "act_dim": 6, "architecture": {"hidden": [64, 64]}}
    ex.save_expert(expert, info, dest)
    with pytest.raises(ValueError, match=r"cheetah\.pt holds non-finite or invalid values in net\.0\.weight"):
        ex.load_expert("HalfCheetah-v5", dest)
    # a fresh process, whose MuJoCo compiles HalfCheetah's model for the first time
    done = subprocess.run(
        [sys.executable, "-m", "validation", "expert", "eval", "HalfCheetah-v5", "--expert", str(dest), "--H", "2"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "non-finite" in done.stderr and "settotalmass" not in done.stderr
    marker = tmp_path / "pwned"
    dest.write_bytes(pickle.dumps(_Marker(marker), protocol=4))  # a plain pickle where tensors belong
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        err = _refused(
            ["expert", "eval", "HalfCheetah-v5", "--expert", dest, "--H", 2],
            capsys,
            f"{dest} is not a plain tensor file (it would run code to load)",
        )
    assert not marker.exists() and "weights_only" not in err
    assert not [w for w in caught if "pickle protocol" in str(w.message)]


# ------------------------------------------------------------------ bad input, table-driven
# (argv after `gva expert`, or a config file's table with "CFG"; the text the one stderr line must hold).
# RUN: the module's genuine run; FILE: a regular file; DIR: an existing folder; EMPTY: an empty
# folder; MISSING: a path that does not exist.
BAD_INPUT = [
    # train: flags
    (["train", "Nope-v1"], "ENV"),
    (["train", ENV, "--steps", "0"], "steps=0"),
    (["train", ENV, "--steps", "nan"], "--steps"),
    (["train", ENV, "--steps", "inf"], "--steps"),
    (["train", ENV, "--steps", "1.5"], "--steps"),
    (["train", ENV, "--seed", "-1"], "seed=-1"),
    (["train", ENV, "--n-envs", "0"], "n_envs=0"),
    (["train", ENV, "--n-envs", "4", "--checkpoint-every", "2"], "checkpoint_every=2"),
    (["train", ENV, "--H", "0", "--export", "e.pt"], "H=0"),
    (["train", ENV, "--ics", "-2"], "ics=-2"),
    (["train", ENV, "--out", "FILE"], "out="),
    (["train", ENV, "--out", "FILE/sub"], "out="),
    (["train", ENV, "--export", "FILE/e.pt"], "export="),
    (["train", ENV, "--export", "DIR"], "export="),
    (["train", ENV, "--out", "RUN", "--seed", "3", "--n-envs", "4"], "n_envs=2, not n_envs=4"),
    # train: config file
    (["train", ENV, "CFG", {"steps": "1000"}], "steps='1000'"),
    (["train", ENV, "CFG", {"steps": float("nan")}], "steps=nan"),
    (["train", ENV, "CFG", {"steps": float("inf")}], "steps=inf"),
    (["train", ENV, "CFG", {"checkpoint_every": 0}], "checkpoint_every=0"),
    (["train", ENV, "CFG", {"n_envs": True}], "n_envs=True"),
    (["train", "CFG", {"env": "Nope-v1"}], "env='Nope-v1'"),
    (["train", ENV, "CFG", {"horizon": 1000}], "horizon"),
    (["train", ENV, "CFG", {"out": "FILE/sub"}], "out="),
    (["train", ENV, "CFG", {"out": 7}], "out=7"),
    # export: flags
    (["export", ENV], "run=''"),
    (["export", "Nope-v1", "--run", "RUN"], "ENV"),
    (["export", ENV, "--run", "MISSING"], "run="),
    (["export", ENV, "--run", "FILE"], "run="),
    (["export", ENV, "--run", "EMPTY"], "run="),
    (["export", ENV, "--run", "RUN", "--ics", "0"], "ics=0"),
    (["export", ENV, "--run", "RUN", "--H", "-5"], "H=-5"),
    (["export", ENV, "--run", "RUN", "--H", "nan"], "--H"),
    (["export", ENV, "--run", "RUN", "--ic-seed", "-1"], "ic_seed=-1"),
    (["export", ENV, "--run", "RUN", "--min-steps", "-1"], "min_steps=-1"),
    (["export", ENV, "--run", "RUN", "--heldout-ics", "-1"], "heldout_ics=-1"),
    (["export", ENV, "--run", "RUN", "--heldout-seed", "0"], "heldout_seed=0"),
    (["export", ENV, "--run", "RUN", "--ic-seed", "777"], "heldout_seed=777"),
    (["export", ENV, "--run", "RUN", "--min-steps", "999999"], "min_steps=999999"),
    (["export", ENV, "--run", "RUN", "--seed", "-2"], "seed=-2"),
    (["export", ENV, "--run", "RUN", "--seed", "4", "--out", "x.pt"], "seed=4 is not the training seed"),
    (["export", ENV, "--run", "RUN", "--out", "DIR"], "out="),
    (["export", ENV, "--run", "RUN", "--out", "FILE/x.pt"], "out="),
    # export: config file
    (["export", ENV, "CFG", {"run": "RUN", "ics": 2.5}], "ics=2.5"),
    (["export", ENV, "CFG", {"run": "RUN", "H": float("inf")}], "H=inf"),
    (["export", ENV, "CFG", {"run": "RUN", "ic_seed": float("nan")}], "ic_seed=nan"),
    (["export", ENV, "CFG", {"run": 3}], "run=3"),
    (["export", ENV, "CFG", {"run": "RUN", "to": "x.pt"}], "to"),
    # eval
    (["eval"], "env=''"),
    (["eval", ENV, "--ics", "0"], "ics=0"),
    (["eval", ENV, "--H", "inf"], "--H"),
    (["eval", ENV, "--ic-seed", "x"], "--ic-seed"),
    (["eval", ENV, "--horizon", "10"], "--horizon"),
    (["eval", ENV, "--expert", "MISSING"], "MISSING"),
    (["eval", ENV, "CFG", {"json": "yes"}], "json='yes'"),
    (["eval", ENV, "CFG", {"H": float("nan")}], "H=nan"),
    (["eval", ENV, "CFG", {"ics": 1e400}], "ics=inf"),
    (["eval", ENV, "CFG", {"n_ics": 5}], "n_ics"),
]


@pytest.mark.parametrize("argv, field", BAD_INPUT, ids=[" ".join(map(str, a[:1] + a[2:]))[:60] for a, _ in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_and_creates_nothing(run_dir, tmp_path, monkeypatch, capsys, argv, field):
    work = tmp_path / "cwd"
    work.mkdir()
    (tmp_path / "FILE").write_text("a file")
    (tmp_path / "DIR").mkdir()
    (tmp_path / "EMPTY").mkdir()
    names = {
        "RUN": str(run_dir[0]),
        "FILE": str(tmp_path / "FILE"),
        "DIR": str(tmp_path / "DIR"),
        "EMPTY": str(tmp_path / "EMPTY"),
        "MISSING": str(tmp_path / "MISSING"),
    }

    def fill(value):
        if isinstance(value, str):
            head, _, tail = value.partition("/")
            return names[head] + ("/" + tail if tail else "") if head in names else value
        return value

    args = ["expert"]
    for a in argv:
        if isinstance(a, dict):
            cfg = tmp_path / "cfg.json"
            cfg.write_text(json.dumps({k: fill(v) for k, v in a.items()}))
            args.append(str(cfg))
        else:
            args.append("--config" if a == "CFG" else fill(a))
    field = fill(field)
    monkeypatch.chdir(work)
    before = _tree(tmp_path, run_dir[0])
    code = main(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, (args, err)
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in err, (args, err)
    assert _tree(tmp_path, run_dir[0]) == before, f"{args} created or changed files"


def test_sac_run_trains_resumes_folds_and_exports(tmp_path, monkeypatch):
    """SAC through the same run directory, manifest, policy files and export as PPO. A tiny warm-up
    so that updates happen. The newest checkpoint's replay buffer is saved as plain arrays beside
    it and restored on resume; without it (a run moved from another machine) the resume refills
    the buffer before updating; a changed buffer file is refused."""
    from stable_baselines3 import SAC

    monkeypatch.setitem(ppo.RECIPES, ("sac", "default"), ppo.SACRecipe(learning_starts=100, batch_size=32))
    out = tmp_path / "sac"
    assert ppo.train(ENV, out, steps=300, checkpoint_every=150, quiet=True, algorithm="sac") == 300
    manifest = ppo.read_manifest(out)
    assert manifest["algorithm"] == "stable-baselines3 SAC" and manifest["n_envs"] == 1
    assert manifest["recipe"]["learning_starts"] == 100 and manifest["recipe"]["activation"] == "relu"
    assert [c[0] for c in ppo.checkpoints(out)] == [150, 300]
    model = SAC.load(str(out / "sac_300_steps.zip"), device="cpu")
    assert model.actor.optimizer.state  # updates happened
    obs = np.random.default_rng(1).normal(size=(100, 11)) * 3
    want = model.predict(obs, deterministic=True)[0]
    got = _policy_file(out, 300)(torch.as_tensor(obs, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)  # tanh-squashed mean, unscaled to the bounds
    with pytest.raises(ValueError, match="is a sac run.*not a run of algo=ppo"):
        ppo.train(ENV, out, steps=600, checkpoint_every=150, quiet=True)
    buffers = lambda: sorted(p.name for p in out.glob("sac_replay_buffer_*"))  # noqa: E731
    assert buffers() == ["sac_replay_buffer_300_steps.npz"]  # the newest only, and listed
    assert set(ppo.read_manifest(out)["files"]) >= {"sac_replay_buffer_300_steps.npz"}
    assert "sac_replay_buffer_150_steps.npz" not in ppo.read_manifest(out)["files"]
    with np.load(out / "sac_replay_buffer_300_steps.npz", allow_pickle=False) as z:  # plain arrays
        # SB3 calls the checkpoint callback before it stores that step's transition
        assert int(z["pos"]) == 299 and z["observations"].shape == (299, 1, 11) and not z["full"]
    assert ppo.train(ENV, out, steps=450, checkpoint_every=150, quiet=True, algorithm="sac") == 450
    assert [c[0] for c in ppo.checkpoints(out)] == [150, 300, 450]
    resumed = SAC.load(str(out / "sac_450_steps.zip"), device="cpu")
    assert resumed.num_timesteps == 450 and resumed.learning_starts == 100  # the buffer came back: no refill
    with np.load(out / "sac_replay_buffer_450_steps.npz") as z:
        assert int(z["pos"]) == 299 + 149  # the 299 restored, then the new steps' (the 450th is stored later)
    buf = out / "sac_replay_buffer_450_steps.npz"
    good = buf.read_bytes()
    buf.write_bytes(good[:-8] + b"tampered")
    with pytest.raises(ValueError, match="sac_replay_buffer_450_steps.npz does not match the SHA-256"):
        ppo.train(ENV, out, steps=600, checkpoint_every=150, quiet=True, algorithm="sac")
    buf.unlink()  # as on a machine the run was moved to: refill before updating
    assert ppo.train(ENV, out, steps=600, checkpoint_every=150, quiet=True, algorithm="sac") == 600
    assert SAC.load(str(out / "sac_600_steps.zip"), device="cpu").learning_starts == 550
    info = ex.export(ENV, out, tmp_path / "sac.pt", ics=2, H=20, quiet=True)
    expert, loaded = ex.load_expert(ENV, tmp_path / "sac.pt")
    assert (expert.activation, expert.output) == ("relu", "squash") and loaded["algorithm"].endswith("SAC")
    assert info["architecture"]["hidden"] == [256, 256]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.stem for p in ex.SHIPPED_DIR.glob("*.pt")))
def test_each_shipped_expert_returns_what_its_sidecar_records(name):
    """The sidecar's 20 evaluation initial conditions rolled out again at its horizon: the same mean
    return and falls, up to float rounding (a shipped file swapped or re-exported without its
    sidecar fails here). Rollouts are chaotic, so a machine whose matmuls round otherwise may move
    single returns (Walker2d's by a few percent) and a knife-edge fall: the check is on the mean,
    within 5 %, and on the falls, within one."""
    from gvaempirics.bc.envs import initial_conditions
    from gvaempirics.bc.evaluator import rollout

    sidecar = json.loads((ex.SHIPPED_DIR / f"{name}.json").read_text())
    env, ev = sidecar["env_id"], sidecar["eval"]
    expert, _ = ex.load_expert(env, name)
    res = rollout(env, initial_conditions(env, ev["n_ics"], ev["ic_seed"]), ev["horizon"], expert)
    returns, lengths = np.asarray(res.returns).reshape(-1), np.asarray(res.lengths).reshape(-1)
    assert returns.mean() == pytest.approx(ev["return_mean"], rel=0.05)
    if env != "HalfCheetah-v5":  # it never terminates: its sidecar counts no falls
        assert abs(int((lengths < ev["horizon"]).sum()) - ev["falls"]) <= 1
    held = sidecar.get("heldout")
    if held:  # the held-out report, with the same tolerance (falls: within 2 of the 100)
        again = ex.evaluate(env, expert, ics=held["n_ics"], H=held["horizon"], ic_seed=held["ic_seed"])
        assert again.mean == pytest.approx(held["return_mean"], rel=0.05)
        assert abs(again.falls - held["falls"]) <= 2
