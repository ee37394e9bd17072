"""Every ``gva bc`` command and ``gva reproduce`` refuse bad input, from flags and from config
files, with one line naming the field, exit status 2, before any work, leaving nothing behind."""

import json

import pytest

from validation.reproduce import SECTIONS

BAD_VALUES = [  # (field, value, what the message names)
    ("steps", "0", "steps"),
    ("steps", "60.5", "steps"),
    ("steps", "1e30", "steps"),
    ("eta", "nan", "eta"),
    ("eta", "inf", "eta"),
    ("eta", "-1", "eta"),
    ("gamma-min", "1.5", "gamma_min"),
    ("optimizer", "rmsprop", "optimizer"),
    ("env", "Foo-v9", "env"),
    ("activation", "mish", "activation"),
    ("schedule", "linear", "schedule"),
    ("layer-norm", "maybe", "layer-norm"),
    ("policy", "rnn", "policy"),
    ("dropout", "1", "dropout"),
    ("zoom-windows", "-3", "zoom_windows"),
    ("history", "2", "history"),
    ("expert", "/nonexistent/e.pt", "e.pt"),
    ("demos", "/nonexistent/d.npz", "d.npz"),
]
BAD_FILE_VALUES = [  # config-file keys hold the same rules as flags
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"layer_norm": "false"}, "layer_norm"),
    ({"schedule": "linear"}, "schedule"),
    ({"steps": 60.0}, "steps"),
    ({"activation": "mish"}, "activation"),
    ({"demos": 5}, "demos"),
    ({"eta": "0.1"}, "eta"),
    ({"zoom_windows": 5}, "zoom_windows"),
    ({"widht": 3}, "widht"),
    ({"env": None}, "env"),
]


@pytest.mark.parametrize("field, value, named", BAD_VALUES)
def test_bc_train_flags(refuses, tmp_path, field, value, named):
    refuses(["bc", "train", "--preset", "tiny", f"--{field}", value, "--out", tmp_path / "run"], named)


@pytest.mark.parametrize("values, named", BAD_FILE_VALUES)
def test_bc_train_config_file(refuses, tmp_path, values, named):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(values))
    refuses(["bc", "train", "--preset", "tiny", "--config", cfg, "--out", tmp_path / "run"], named)


@pytest.mark.parametrize("text, named", [("[1, 2]", "not a list"), ("{", "not valid JSON")])
def test_bc_train_config_file_not_a_table(refuses, tmp_path, text, named):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(text)
    refuses(["bc", "train", "--config", cfg, "--out", tmp_path / "run"], named)


def test_bc_train_unwritable_out(refuses, tmp_path):
    (tmp_path / "file").write_text("x")
    refuses(["bc", "train", "--preset", "tiny", "--out", tmp_path / "file" / "run"], "not a directory")
    refuses(["bc", "train", "--preset", "tiny", "--out", "/dev/null/run"], "/dev/null")
    refuses(["bc", "train", "--preset", "tiny", "--config", tmp_path], "is a directory")


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--env", "Foo-v9"], "env"),
        (["--n-demos", "0"], "n_demos"),
        (["--demo-horizon", "x"], "--demo-horizon"),
        (["--demo-seed", "-1"], "demo_seed"),
        (["--expert", "/nonexistent.pt"], "nonexistent.pt"),
        (["--out", "/dev/null/d.npz"], "/dev/null"),
        (["--preset", "huge"], "--preset"),
    ],
)
def test_bc_demos(refuses, tmp_path, argv, named):
    refuses(["bc", "demos", "--preset", "tiny", "--out", tmp_path / "d.npz", *argv], named)


def test_bc_eval_and_plot(refuses, tmp_path):
    refuses(["bc", "eval", tmp_path / "missing"], "missing")
    refuses(["bc", "plot", tmp_path / "missing"], "missing")
    refuses(["bc", "eval", tmp_path / "missing", "--json", "maybe"], "--json")
    refuses(["bc", "plot"], "run")


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--only", "nope"], "nope"),
        (["--skip", *SECTIONS], "no section"),
        (["--seed", "-1"], "seed"),
        (["--seed", "1.5"], "--seed"),
        (["--out", "/dev/null/r"], "/dev/null"),
        (["--quick", "sometimes"], "--quick"),
    ],
)
def test_reproduce(refuses, argv, named):
    refuses(["reproduce", "--quick", *argv], named)


# ------------------------------------------------------------------ files that someone else wrote
def test_bc_train_refuses_an_out_of_another_tool_or_in_use(refuses, tmp_path):
    from gvaempirics.rundir import LOCK, hold_lock

    foreign = tmp_path / "foreign"
    (foreign / "checkpoints").mkdir(parents=True)
    (foreign / "config.json").write_text('{"policy": "diffusion", "lr": 0.0001}')
    (foreign / "checkpoints" / "model_9.ckpt").write_bytes(b"weights")
    (foreign / "metrics.jsonl").write_text('{"epoch": 9}\n')
    before = {p: p.read_bytes() for p in foreign.rglob("*") if p.is_file()}
    refuses(["bc", "train", "--preset", "tiny", "--out", foreign], f"out={foreign} is not a run directory")
    assert {p: p.read_bytes() for p in foreign.rglob("*") if p.is_file()} == before
    busy = tmp_path / "busy"
    busy.mkdir()
    with hold_lock(busy / LOCK, "held by this test"):  # a first `gva bc train --out busy` is running
        refuses(["bc", "train", "--preset", "tiny", "--out", busy], f"out={busy}: another process is writing")


def test_bc_train_names_an_intervention_given_twice(refuses, tmp_path):
    argv = ["bc", "train", "--preset", "tiny", "--intervention", "eta-1e-4", "--intervention", "eta-1e-4"]
    refuses([*argv, "--out", tmp_path / "run"], "name 'eta-1e-4' twice")


@pytest.mark.parametrize("tamper", ["config width", "checkpoint shape", "negative step"])
def test_tampered_bc_run_files_are_refused_in_one_line_naming_them(tiny_bc_run, refuses, tmp_path, tamper):
    """An edited config.json (another width) or a checkpoint whose tensors or step counter were
    changed: resuming, the landscape and post-hoc EMA refuse it in one line naming the file."""
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(tiny_bc_run[0], run)
    ckpt = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    config = json.loads((run / "config.json").read_text())
    if tamper == "config width":
        config["width"] *= 2
        (run / "config.json").write_text(json.dumps(config))
    else:
        state = torch.load(ckpt, weights_only=True)
        if tamper == "checkpoint shape":
            key = next(k for k, v in state["model"].items() if v.dim() == 2)
            state["model"][key] = torch.zeros(3, 5)
        else:
            state["step"] = -4
        torch.save(state, ckpt)
    (tmp_path / "settings.json").write_text(json.dumps(config))
    log = (run / "metrics.jsonl").read_bytes()
    refuses(["bc", "train", "--config", tmp_path / "settings.json", "--out", run, "--quiet"], str(ckpt))
    refuses(["bc", "landscape", run, "--step", "40", "--quiet"], str(ckpt))
    (run / "config.json").write_text(json.dumps({**config, "stabilizer": "posthoc"}))
    refuses(["bc", "posthoc", run, "--quiet"], str(ckpt))
    assert (run / "metrics.jsonl").read_bytes() == log  # not even truncated to the checkpoint
