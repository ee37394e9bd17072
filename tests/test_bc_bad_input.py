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
