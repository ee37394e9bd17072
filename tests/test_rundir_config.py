import argparse
import dataclasses
import json

import pytest
import torch

from gvaempirics.rundir import RunDir, load_torch_file
from gvatheory.config import Config, build_config, option, read_config_file, redefault, to_dict
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


def test_redefault_keeps_help_choices_and_range_and_changes_what_it_is_told():
    @dataclasses.dataclass(frozen=True)
    class Wider(Toy):
        width: int = redefault(Toy, "width", 64)
        opt: str = redefault(Toy, "opt", "adam", help="the optimizer")

    fields = {f.name: f for f in dataclasses.fields(Wider)}
    base = {f.name: f for f in dataclasses.fields(Toy)}
    assert Wider().width == 64 and Wider().opt == "adam"
    assert fields["width"].metadata == base["width"].metadata
    assert dict(fields["opt"].metadata) == {**base["opt"].metadata, "help": "the optimizer"}
    assert list(fields) == list(base)  # a redeclared field keeps its place (flags, saved configs)
    with pytest.raises(ValueError, match="width=0 is out of range"):
        Wider(width=0)
    with pytest.raises(ValueError, match="hight are not settings of option"):
        redefault(Toy, "width", 3, hight=4)
    with pytest.raises(ValueError, match="name='depth' is not a field of Toy"):
        redefault(Toy, "depth", 3)


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


def test_a_run_written_before_a_field_existed_resumes_at_its_default(tmp_path):
    run = RunDir(tmp_path / "r")
    run.start({"eta": 0.1})
    run.save_checkpoint(1, {"w": torch.zeros(1)})
    with pytest.raises(ValueError, match="not a run directory of this kind"):
        RunDir(tmp_path / "r").check_start({"eta": 0.1, "new": False})  # without the defaults: refused
    assert RunDir(tmp_path / "r").check_start({"eta": 0.1, "new": False}, {"eta": 3e-4, "new": False})
    with pytest.raises(ValueError, match="saved config differs in new"):  # a new field off its default
        RunDir(tmp_path / "r").start({"eta": 0.1, "new": True}, {"eta": 3e-4, "new": False})
    assert run.read_config({"eta": 3e-4, "new": False}) == {"eta": 0.1, "new": False}
    RunDir(tmp_path / "r").start({"eta": 0.1, "new": False}, {"eta": 3e-4, "new": False})
    assert run.read_config() == {"eta": 0.1, "new": False}  # the default it ran with, recorded


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


def test_finite_json_writes_strict_json(tmp_path):
    from gvaempirics.rundir import atomic_write_json, finite_json

    obj = {"a": [1.5, float("nan"), {"b": float("-inf")}], "c": "x", "d": 2}
    path = atomic_write_json(tmp_path / "f.json", finite_json(obj))
    assert json.loads(path.read_text(), parse_constant=pytest.fail) == {
        "a": [1.5, "nan", {"b": "-inf"}],
        "c": "x",
        "d": 2,
    }


# ------------------------------------------------------------------ files that someone else wrote
def _tree(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


def test_a_folder_that_is_not_a_run_of_this_kind_is_refused_unchanged(tmp_path):
    foreign = tmp_path / "foreign"
    (foreign / "checkpoints").mkdir(parents=True)
    (foreign / "config.json").write_text('{"model": "resnet", "lr": 0.1}')
    (foreign / "checkpoints" / "epoch_3.ckpt").write_bytes(b"weights")
    (foreign / "metrics.jsonl").write_text('{"epoch": 3}\n')
    before = _tree(foreign)
    with pytest.raises(ValueError, match=rf"out={foreign} is not a run directory of this kind"):
        RunDir(foreign).start({"eta": 0.1, "steps": 5})
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=rf"out={stray} is neither empty nor a run directory .*notes.txt"):
        RunDir(stray).start({"eta": 0.1})
    assert _tree(foreign) == before and _tree(stray) == [("notes.txt", 4)]
    (tmp_path / "empty").mkdir()
    RunDir(tmp_path / "empty").start({"eta": 0.1})  # an empty folder is a new run's
    assert RunDir(tmp_path / "empty").read_config() == {"eta": 0.1}


def test_a_second_writer_is_refused_while_the_first_holds_the_run(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "r"
    with RunDir(out).writing({"a": 1}) as run:
        run.log({"kind": "train", "step": 1})
        with pytest.raises(ValueError, match=rf"out={out}: another process is writing this run directory"):
            with RunDir(out).writing({"a": 1}):
                pass
    assert [r["step"] for r in RunDir(out).metrics()] == [1]
    # a writer in another process, as two `gva ... train --out r` would be
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom gvaempirics.rundir import RunDir\n"
            f"with RunDir({str(out)!r}).writing({{'a': 1}}):\n    print('held', flush=True)\n    time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match="another process is writing"):
            with RunDir(out).writing({"a": 1}):
                pass
    finally:
        holder.kill()
        holder.wait()
    with RunDir(out).writing({"a": 1}):  # the kernel dropped the dead writer's lock
        pass


def test_two_writers_of_one_path_never_share_a_temporary_file(tmp_path):
    from gvaempirics.rundir import atomic_write, atomic_write_bytes

    path = tmp_path / "f.json"

    def slow(fh):  # a second writer of the same path runs while the first is writing
        fh.write(b"first")
        atomic_write_bytes(path, b"second")

    atomic_write(path, slow)
    assert path.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_a_checkpoint_with_a_forged_step_counter_is_refused_by_name(tmp_path):
    run = RunDir(tmp_path)
    run.start({})
    path = run.save_checkpoint(3, {"w": torch.zeros(1)})
    for bad in (-5, 7, "3"):
        torch.save({"w": torch.zeros(1), "step": bad, "metrics_size": 0}, path)
        with pytest.raises(ValueError, match=rf"checkpoint {path} records step={bad!r}, not step 3"):
            run.load_latest()
        with pytest.raises(ValueError, match=rf"{path.name} records step"):
            run.load_step(3)
    torch.save({"w": torch.zeros(1), "step": 3, "metrics_size": -1}, path)
    with pytest.raises(ValueError, match=r"records metrics_size=-1, not a byte count"):
        run.load_latest()


def test_load_checked_refuses_what_does_not_fit_in_one_line():
    from gvaempirics.rundir import load_checked
    from gvaempirics.stabilizers import EMA

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    wide = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Linear(8, 2)).state_dict()
    with pytest.raises(
        ValueError, match=r"checkpoint c.pt does not fit the model \(shape .* of 0.weight \(8, 3\) vs \(4, 3\)"
    ):
        load_checked(model, wide, source="c.pt")
    with pytest.raises(ValueError, match=r"missing 1.weight, 1.bias"):
        load_checked(model, {k: v for k, v in model.state_dict().items() if k.startswith("0.")}, source="c.pt")
    with pytest.raises(ValueError, match=r"holds a list where a state dict belongs"):
        load_checked(model, [1, 2], source="c.pt")
    load_checked(model, model.state_dict(), source="c.pt")  # a fitting state loads
    # an optimizer's moments of another shape (torch itself checks only the groups' sizes)
    opt = torch.optim.Adam(model.parameters())
    state = torch.optim.Adam(
        torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).parameters()
    ).state_dict()
    state["state"] = {
        i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(5), "exp_avg_sq": torch.zeros(5)} for i in range(4)
    }
    with pytest.raises(ValueError, match=r"does not fit the optimizer \(optimizer exp_avg of shape \(5,\)"):
        load_checked(opt, state, source="c.pt", what="the optimizer")
    # a stabilizer's averages of another shape, checked against the model's parameters
    ema = EMA(model, 0.1)
    state = ema.state_dict()
    state["average"]["0.weight"] = torch.zeros(8, 3)
    with pytest.raises(
        ValueError, match=r"c.pt does not fit the stabilizer \(shape .* of 0.weight \(8, 3\) vs \(4, 3\)"
    ):
        load_checked(ema, state, source="c.pt", what="the stabilizer", params=model)


def test_a_pickle_that_would_run_code_is_named_as_such(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "c.pt"
    torch.save({"w": Payload()}, path)
    with pytest.raises(ValueError) as err:
        load_torch_file(path)
    assert str(err.value) == f"{path} is not a plain tensor file (it would run code to load)"
    torch.save({"w": torch.zeros(2)}, path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ValueError) as err:
        load_torch_file(path)
    # torch's first sentence, whole: not cut in the middle of a word
    assert str(err.value).endswith(
        "(RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory)"
    )
