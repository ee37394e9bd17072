import argparse
import dataclasses
import json

import pytest
import torch

from gvaempirics.config import add_config_arguments, build_config, config_from_args, option, to_dict
from gvaempirics.rundir import RunDir, load_torch_file
from gvatheory._checks import check_positive


@dataclasses.dataclass(frozen=True)
class Toy:
    lr: float = option(0.1, "step size")
    width: int = option(8, "hidden width")
    sizes: tuple[int, ...] = option((1, 2), "window sizes")
    opt: str = option("sgd", "optimizer", choices=("sgd", "adam"))

    def __post_init__(self):
        check_positive("lr", self.lr)


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
    with pytest.raises(ValueError, match=r"unknown config key\(s\) depth: valid keys are lr, width, sizes, opt"):
        build_config(Toy, {"depth": 3})
    with pytest.raises(ValueError, match=r"lr=-1.0 is out of range"):
        build_config(Toy, {"lr": -1.0})


def test_rundir_log_checkpoint_resume_truncates_log(tmp_path):
    run = RunDir(tmp_path / "r")
    run.start({"a": 1}, resume=False)
    run.log({"kind": "train", "step": 1})
    run.save_checkpoint(1, {"w": torch.ones(2)})
    run.log({"kind": "train", "step": 2})  # written after the checkpoint: lost on resume
    with pytest.raises(ValueError, match="already holds a run"):
        RunDir(tmp_path / "r").start({"a": 1}, resume=False)
    with pytest.raises(ValueError, match="differs in a"):
        RunDir(tmp_path / "r").start({"a": 2}, resume=True)
    again = RunDir(tmp_path / "r")
    again.start({"a": 1}, resume=True)
    state = again.load_latest()
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(2))
    assert [r["step"] for r in again.metrics()] == [1]


def test_torn_log_line_is_skipped(tmp_path):
    run = RunDir(tmp_path)
    run.start({}, resume=False)
    run.log({"kind": "x", "step": 0})
    with open(run.metrics_path, "a") as fh:
        fh.write('{"kind": "x", "st')
    assert [r["step"] for r in run.metrics("x")] == [0]


def test_corrupt_checkpoint_names_file_and_keeps_last_good(tmp_path):
    run = RunDir(tmp_path)
    run.start({}, resume=False)
    good = run.save_checkpoint(1, {"w": torch.zeros(3)})
    bad = run.save_checkpoint(2, {"w": torch.zeros(3)})
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(ValueError, match=rf"{bad.name} is corrupt or truncated.*{good.name} is kept"):
        run.load_latest()
    assert good.exists()
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_torch_file(tmp_path / "missing.pt")
    run.save_checkpoint(3, {"w": torch.zeros(3)}, keep=1)
    assert [c.step for c in run.checkpoints()] == [3]
