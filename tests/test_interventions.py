"""Interventions (paper Figures 2 and 3): the registry, their composition, the input-noise
augmentation they use, and the `gva bc interventions` / `gva bc train --intervention` commands."""

import json

import pytest
import torch

from gvaempirics.bc.config import PRESETS, BCConfig
from gvaempirics.bc.data import BCData
from gvaempirics.bc.interventions import GROUPS, INTERVENTIONS, Intervention, apply_interventions
from gvaempirics.bc.train import BCTrainer
from gvaempirics.rundir import RunDir
from validation.cli import main

QUICK = BCConfig(**PRESETS["quick"])


@pytest.mark.parametrize("name", list(INTERVENTIONS))
def test_every_intervention_builds_a_valid_config_that_differs_from_quick(name):
    iv = INTERVENTIONS[name]
    cfg = BCConfig(**apply_interventions(PRESETS["quick"], [name]))
    assert cfg != QUICK
    for key, value in iv.changes.items():
        assert getattr(cfg, key) == value


def test_registry_is_grouped_named_and_documented():
    groups = [iv.group for iv in INTERVENTIONS.values()]
    assert set(groups) == set(GROUPS)
    assert groups == sorted(groups, key=GROUPS.index)  # in group order
    for name, iv in INTERVENTIONS.items():
        assert iv.name == name and name == name.lower() and " " not in name
        assert iv.doc and "\n" not in iv.doc
    for expected in ("depth-2", "width-1024", "policy-transformer", "act-tanh", "wd-1e-2", "dropout-0.1"):
        assert expected in INTERVENTIONS
    for expected in ("layer-norm", "obs-noise-0.01", "clip-1", "lr-cosine", "lr-step", "lr-inverse", "lr-wsd"):
        assert expected in INTERVENTIONS
    for expected in ("eta-1e-4", "batch-256", "accum-4", "beta1-0.5", "sgd-momentum", "demos-100", "fresh-data"):
        assert expected in INTERVENTIONS
    for expected in ("ema-alpha-0.7", "polyak", "bema", "posthoc", "constant-ema"):
        assert expected in INTERVENTIONS


def test_compose_in_order_without_touching_the_input():
    base = dict(PRESETS["quick"])
    out = apply_interventions(base, ["width-512", "lr-cosine", "eta-1e-4", "polyak"])
    assert base == PRESETS["quick"]
    assert (out["width"], out["schedule"], out["eta"], out["stabilizer"]) == (512, "cosine", 1e-4, "polyak")
    assert out["depth"] == base["depth"]
    assert apply_interventions(base, []) == base
    # a name given twice is refused, as a sweep spec's entry refuses it (the one rule)
    with pytest.raises(ValueError, match=r"name 'wd-1e-4' twice"):
        apply_interventions(base, ["wd-1e-4", "polyak", "wd-1e-4"])


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown intervention 'wdith-512'") as err:
        apply_interventions({}, ["width-512", "wdith-512"])
    assert "width-512" in str(err.value) and "posthoc" in str(err.value)


def test_conflicting_interventions_are_named_with_the_field():
    with pytest.raises(ValueError, match="'wd-1e-4' and 'sgd-momentum' conflict") as err:
        apply_interventions({}, ["wd-1e-4", "sgd-momentum"])
    assert "optimizer=" in str(err.value)
    with pytest.raises(ValueError, match="eta"):
        apply_interventions({}, ["eta-1e-4", "eta-3e-5"])


def test_an_intervention_is_checked_on_creation():
    with pytest.raises(ValueError, match="'nope', which is not a BCConfig field"):
        Intervention("x", "data", "doc", {"nope": 1})
    with pytest.raises(ValueError, match="eta=-1"):
        Intervention("x", "optimization", "doc", {"eta": -1.0})
    with pytest.raises(ValueError, match="group='misc'"):
        Intervention("x", "misc", "doc", {"eta": 1e-4})
    assert Intervention("x", "optimization", "doc", {"eta": 1}).changes == {"eta": 1.0}  # normalized like a config


def _trainer(obs_noise: float) -> BCTrainer:
    torch.manual_seed(0)
    data = BCData(torch.randn(50, 1, 5), torch.randn(50, 2), torch.randn(10, 1, 5), torch.randn(10, 2))
    cfg = BCConfig(**{**PRESETS["tiny"], "threads": 1, "batch_size": 8, "obs_noise": obs_noise})
    return BCTrainer(cfg, RunDir("unused"), data, rollout=None, quiet=True)


def test_observation_noise_is_drawn_after_the_minibatch_indices():
    plain, noisy = _trainer(0.0), _trainer(0.5)
    gen = torch.Generator().manual_seed(plain.cfg.seed)
    d = plain.data
    with torch.no_grad():
        idx = torch.randint(len(d.train_x), (8,), generator=gen)
        expected_plain = ((plain.model(d.train_x[idx]) - d.train_y[idx]) ** 2).mean()
        torch.testing.assert_close(plain.minibatch_loss(), expected_plain, rtol=0, atol=0)
        # without noise the generator has drawn the indices only
        assert torch.equal(plain.generator.get_state(), gen.get_state())
        x = d.train_x[idx] + 0.5 * torch.randn(d.train_x[idx].shape, generator=gen)
        expected_noisy = ((noisy.model(x) - d.train_y[idx]) ** 2).mean()
        torch.testing.assert_close(noisy.minibatch_loss(), expected_noisy, rtol=0, atol=0)


def test_interventions_command_lists_them(capsys):
    assert main(["bc", "interventions", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["name"] for r in rows] == list(INTERVENTIONS)
    assert rows[0]["changes"] == INTERVENTIONS[rows[0]["name"]].changes
    assert main(["bc", "interventions", "--group", "data"]) == 0
    out = capsys.readouterr().out
    assert "fresh-data" in out and "fresh_every=100" in out and "width-512" not in out


def test_train_refuses_unknown_and_conflicting_interventions(refuses, tmp_path):
    line = refuses(["bc", "train", "--preset", "tiny", "--intervention", "foo", "--out", tmp_path / "r"], "foo")
    assert "width-1024" in line
    refuses(
        ["bc", "train", "--preset", "tiny", "--intervention", "eta-1e-4", "--intervention", "sgd-momentum"]
        + ["--out", tmp_path / "r"],
        "eta",
    )


def test_train_applies_interventions_before_the_flags_and_records_them(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["bc", "train", "--preset", "tiny", "--out", str(out), "--quiet", "--threads", "1"]
    argv += ["--steps", "4", "--eval-every", "2", "--zoom-windows", "2", "--zoom-length", "2"]
    argv += ["--checkpoint-every", "2", "--H", "10", "--demo-horizon", "10", "--n-demos", "2"]
    argv += ["--intervention", "eta-1e-4", "--intervention", "batch-16", "--batch-size", "8"]
    assert main(argv) == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["eta"] == 1e-4 and cfg["batch_size"] == 8  # the flag overrides the intervention
    assert json.loads((out / "interventions.json").read_text()) == {
        "preset": "tiny",
        "interventions": ["eta-1e-4", "batch-16"],
    }
