import argparse
import dataclasses
import json

import pytest
import torch

from gvaempirics.rundir import RunDir, load_torch_file
from gvatheory.config import Config, build_config, option, read_config_file, to_dict
from validation.cli._args import add_config_arguments, config_from_args


@dataclasses.dataclass(frozen=True)
class Toy(Config):
    lr: float = option(0.1, "step size", low=0.0, low_open=True)
    width: int = option(8, "hidden width", low=1)
    sizes: tuple[int, ...] = option((1, 2), "window sizes", low=1)
    opt: str = option("sgd", "optimizer", choices=("sgd", "adam"))
    norm: bool = option(False, "normalize")
    cap: float | None = option(None, "optional cap")


def test_config_file_then_flags(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"lr": 0.5, "width": 4}))
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Toy)
    args = parser.parse_args(["--config", str(tmp_path / "c.json"), "--width", "16", "--sizes", "3", "4"])
    cfg = config_from_args(Toy, args)
    assert cfg == Toy(lr=0.5, width=16, sizes=(3, 4))
    assert to_dict(cfg)["sizes"] == [3, 4]
    (tmp_path / "c.toml").write_text('lr = 0.25\nopt = "adam"\n')
    args = parser.parse_args(["--config", str(tmp_path / "c.toml")])
    assert config_from_args(Toy, args) == Toy(lr=0.25, opt="adam")


def test_config_rejects_unknown_and_out_of_range():
    with pytest.raises(
        ValueError, match=r"unknown config key\(s\) depth: valid keys are lr, width, sizes, opt, norm, cap"
    ):
        build_config(Toy, {"depth": 3})
    with pytest.raises(ValueError, match=r"lr=-1.0 is out of range: must be in \(0, inf\)"):
        build_config(Toy, {"lr": -1.0})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"opt": "rmsprop"}, r"opt='rmsprop' is not valid: choose one of sgd, adam"),
        ({"norm": "false"}, r"norm='false' is not valid: must be true or false"),
        ({"width": 60.0}, r"width=60.0 is not valid: must be an integer"),
        ({"width": True}, r"width=True is not valid: must be an integer"),
        ({"lr": "0.1"}, r"lr='0.1' is not valid: must be a real number"),
        ({"lr": float("nan")}, r"lr=nan is not valid: must be finite"),
        ({"lr": float("inf")}, r"lr=inf is not valid: must be finite"),
        ({"sizes": 3}, r"sizes=3 is not valid: must be a list of integers"),
        ({"sizes": [1, 0]}, r"sizes=0 is out of range: must be in \[1, inf\)"),
        ({"cap": "big"}, r"cap='big' is not valid: must be a real number"),
    ],
)
def test_config_types_choices_and_ranges_are_checked_in_the_dataclass(values, message):
    with pytest.raises(ValueError, match=message):
        build_config(Toy, values)


def test_config_normalizes_values():
    cfg = Toy(lr=1, sizes=[2, 3], cap=2)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.sizes == (2, 3) and cfg.cap == 2.0


@pytest.mark.parametrize(
    "text, suffix, message",
    [
        ("[1, 2]", ".json", "must hold a table of field = value pairs, not a list"),
        ("{bad", ".json", "is not valid JSON"),
        ("x = ", ".toml", "is not valid TOML"),
    ],
)
def test_config_file_errors_name_the_file(tmp_path, text, suffix, message):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_config_file(path)
    with pytest.raises(ValueError, match="is a directory"):
        read_config_file(tmp_path)


def test_rundir_log_checkpoint_resume_truncates_log(tmp_path):
    run = RunDir(tmp_path / "r")
    run.start({"a": 1})
    run.log({"kind": "train", "step": 1})
    run.save_checkpoint(1, {"w": torch.ones(2)})
    run.log({"kind": "train", "step": 2})  # written after the checkpoint: lost on resume
    with pytest.raises(ValueError, match="differs in a"):
        RunDir(tmp_path / "r").start({"a": 2})
    again = RunDir(tmp_path / "r")
    again.start({"a": 1})
    state = again.load_latest()
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(2))
    assert [r["step"] for r in again.metrics()] == [1]


def test_torn_log_line_is_skipped(tmp_path):
    run = RunDir(tmp_path)
    run.start({})
    run.log({"kind": "x", "step": 0})
    with open(run.metrics_path, "a") as fh:
        fh.write('{"kind": "x", "st')
    assert [r["step"] for r in run.metrics("x")] == [0]


def test_corrupt_checkpoint_names_file_and_keeps_last_good(tmp_path):
    run = RunDir(tmp_path)
    run.start({})
    good = run.save_checkpoint(1, {"w": torch.zeros(3)})
    bad = run.save_checkpoint(2, {"w": torch.zeros(3)})
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(ValueError, match=rf"{bad.name} is corrupt or truncated.*{good.name} is kept") as err:
        run.load_latest()
    # torch's multi-line message is cut to one line, without its advice to unpickle arbitrary code
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)
    assert good.exists()
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_torch_file(tmp_path / "missing.pt")
    run.save_checkpoint(3, {"w": torch.zeros(3)}, keep=1)
    assert [c.step for c in run.checkpoints()] == [3]


def test_a_run_that_never_checkpointed_restarts_with_a_new_config(tmp_path):
    run = RunDir(tmp_path / "r")
    run.start({"eta": 1.0})
    run.log({"kind": "train", "step": 1})
    RunDir(tmp_path / "r").start({"eta": 0.1})
    assert run.read_config() == {"eta": 0.1} and list(run.metrics()) == []


def test_resume_refuses_a_log_shorter_than_its_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    run.start({})
    for step in range(20):
        run.log({"kind": "train", "step": step})
    run.save_checkpoint(20, {"w": torch.zeros(1)})
    run.truncate_metrics(100)
    before = run.metrics_path.read_bytes()
    with pytest.raises(
        ValueError, match=r"metrics.jsonl holds 100 bytes but checkpoint step_000000020.pt recorded \d+"
    ):
        run.load_latest()
    assert run.metrics_path.read_bytes() == before  # nothing changed, no NUL padding


def test_metrics_parse_error_names_file_and_line(tmp_path):
    run = RunDir(tmp_path)
    run.start({})
    run.log({"kind": "x"})
    with open(run.metrics_path, "a") as fh:
        fh.write("\0\0\0\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not a JSON record"):
        list(run.metrics())


def test_atomic_writer_leaves_old_content_when_writing_fails(tmp_path):
    from gvaempirics.rundir import atomic_write, atomic_write_bytes

    path = atomic_write_bytes(tmp_path / "f.bin", b"old")

    def fail(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    with pytest.raises(ValueError, match="is not a directory"):
        atomic_write_bytes(path / "x", b"")
