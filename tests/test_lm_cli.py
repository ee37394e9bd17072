"""``gva lm`` smoke tests: tiny configuration trains, generates and plots; bad input exits 2 with one line
and creates nothing; run directories are named by their settings and rerunning resumes them."""

import hashlib
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest

from validation.cli import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "run"
    assert main(["lm", "train", "--preset", "tiny", "--out", str(out), "--quiet"]) == 0
    return out


def test_train_writes_a_run_directory(tiny_run):
    cfg = json.loads((tiny_run / "config.json").read_text())
    assert cfg["corpus"] == "teacher" and cfg["steps"] == 20
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["steps_done"] == 20 and {"raw", "ema"} <= set(summary)


def test_generate_and_plot(tiny_run, tmp_path, capsys):
    assert main(["lm", "generate", str(tiny_run), "--prompts", "abc", "cab", "--H", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["prompt"] for r in rows] == ["abc", "cab"] and len(rows[0]["continuation"]) == 5
    assert main(["lm", "generate", str(tiny_run), "--prompts", "abc", "--weights", "raw", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["rows"][0]["continuation"]) == 8  # the run's H
    assert main(["lm", "plot", str(tiny_run), "--decayed", str(tiny_run), "--out", str(tmp_path / "f")]) == 0
    assert (tmp_path / "f_loss.png").stat().st_size > 0 and (tmp_path / "f_bifurcations.png").stat().st_size > 0


def test_posthoc_sweep_command(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["lm", "train", "--preset", "tiny", "--stabilizer", "posthoc", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert (
        main(["lm", "posthoc", str(out), "--sigma-rels", "0.05", "0.2", "--plot", str(tmp_path / "p.png"), "--json"])
        == 0
    )
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["sigma_rel"] for r in rows] == [None, 0.05, 0.2] and (tmp_path / "p.png").stat().st_size > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["lm", "generate", "RUN", "--prompt", "ab!Z"], "outside the vocabulary: '!', 'Z'"),
        (
            [
                "lm",
                "train",
                "--preset",
                "tiny",
                "--corpus",
                "tinystories",
                "--data-path",
                "missing.txt",
                "--out",
                "OUT",
            ],
            "missing.txt does not exist",
        ),
        (
            ["lm", "train", "--preset", "tiny", "--corpus-size", "100", "--out", "OUT"],
            "shorter than one context window: need at least block_size + 1 = 17",
        ),
        (["lm", "train", "--preset", "tiny", "--eta", "-1", "--out", "OUT"], "eta=-1.0 is out of range"),
        (["lm", "train", "--preset", "tiny", "--posthoc-sigma-rels", "0.5", "--out", "OUT"], "posthoc_sigma_rels=0.5"),
        (["lm", "posthoc", "RUN"], "needs a run trained with --stabilizer posthoc"),
    ],
)
def test_bad_input_exits_2_with_one_line(tiny_run, tmp_path, capsys, argv, message):
    argv = [str(tiny_run) if a == "RUN" else str(tmp_path / "o") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_sigkilled_run_resumes_to_the_same_log(tmp_path):
    """SIGKILL ``gva lm train`` after its second checkpoint, resume it, compare with an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    flags = [
        "--preset",
        "tiny",
        "--steps",
        "80",
        "--checkpoint-every",
        "10",
        "--stabilizer",
        "posthoc",
        "--posthoc-every",
        "7",
        "--quiet",
    ]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "validation", "lm", "train", *flags, "--out", str(killed)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "checkpoints").glob("step_*.pt"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    assert main(["lm", "train", *flags, "--out", str(killed)]) == 0  # the same command continues the run
    assert main(["lm", "train", *flags, "--out", str(tmp_path / "full")]) == 0
    assert (killed / "metrics.jsonl").read_bytes() == (tmp_path / "full" / "metrics.jsonl").read_bytes()


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


BAD_FLAGS = [  # (argv after `gva lm`, what the one line must name)
    (["train", "--eta", "abc"], "--eta"),
    (["train", "--eta", "-1"], "eta=-1.0 is out of range"),
    (["train", "--eta", "nan"], "eta=nan is not valid: must be finite"),
    (["train", "--eta", "inf"], "eta=inf is not valid: must be finite"),
    (["train", "--steps", "1.5"], "--steps"),
    (["train", "--steps", "0"], "steps=0 is out of range"),
    (["train", "--schedule", "linear"], "--schedule"),
    (["train", "--optimizer", "rmsprop"], "--optimizer"),
    (["train", "--stabilizer", "swa"], "--stabilizer"),
    (["train", "--gamma-min", "0"], "gamma_min=0.0 is out of range"),
    (["train", "--val-fraction", "1"], "val_fraction=1.0 is out of range"),
    (["train", "--dropout", "1"], "dropout=1.0 is out of range"),
    (["train", "--zoom-windows", "99"], "zoom_windows=99 is out of range"),
    (["train", "--prompt-len", "100"], "prompt_len=100 is out of range"),
    (["train", "--n-embd", "15"], "n_embd=15 is not valid: must be a multiple of n_head=2"),
    (["train", "--device", "gpu"], "device='gpu' is out of range"),
    (["train", "--tokenizer", "bpe"], "tokenizer='bpe' applies to the text corpora"),
    (["train", "--corpus", "tinystories"], "data_path='' is not valid"),
    (["train", "--posthoc-sigma-rels", "0.5"], "posthoc_sigma_rels=0.5 is out of range"),
    (["train", "--preset", "huge"], "--preset"),
    (["train", "--out", "/dev/null/x"], "out=/dev/null/x cannot be created: /dev/null is not a directory"),
    (["train", "--out", "FILE"], "is a file: give a directory"),
    (["data", "--corpus-size", "0"], "corpus_size=0 is out of range"),
    (["data", "--corpus", "tinystories"], "data_path='' is not valid"),
    (["data", "--corpus", "teacher", "--bpe-vocab", "100"], "bpe_vocab=100 is out of range"),
    (["generate", "RUN"], "prompts=() is not valid"),
    (["generate", "RUN", "--prompts", "abc", "--H", "0"], "H=0 is out of range"),
    (["generate", "RUN", "--prompts", "abc", "--weights", "ema"], "--weights"),
    (["generate", "NORUN", "--prompts", "abc"], "is not a run directory"),
    (["plot", "RUN", "--out", "/dev/null/x"], "figure=/dev/null/x_loss.png cannot be created"),
    (["posthoc", "RUN", "--sigma-rels", "0.5"], "sigma_rels=0.5 is out of range"),
    (["posthoc", "RUN", "--sigma-rels", "nan"], "sigma_rels=nan is not valid: must be finite"),
    (["posthoc", "RUN", "--all-snapshots", "maybe"], "--all-snapshots"),
    (["posthoc", "RUN", "--plot", "/dev/null/p.png"], "plot=/dev/null/p.png cannot be created"),
]

BAD_CONFIG_FILES = [  # (config file name, its text, what the one line must name)
    ("c.json", '{"eta": "0.1"}', "eta='0.1' is not valid: must be a real number"),
    ("c.json", '{"steps": 10.0}', "steps=10.0 is not valid: must be an integer"),
    ("c.json", '{"eta": NaN}', "eta=nan is not valid: must be finite"),
    ("c.json", '{"eta": Infinity}', "eta=inf is not valid: must be finite"),
    ("c.json", '{"batch_size": 0}', "batch_size=0 is out of range"),
    ("c.json", '{"batch_size": true}', "batch_size=True is not valid"),
    ("c.json", '{"schedule": "linear"}', "schedule='linear' is not valid: choose one of"),
    ("c.json", '{"zoom_windows": 5}', "zoom_windows=5 is not valid: must be a list"),
    ("c.json", '{"lr": 0.1, "lr_schedule": "cosine"}', "unknown config file"),
    ("c.json", '{"eta": 0.1', "is not valid JSON"),
    ("c.json", "[1, 2]", "must hold a table"),
    ("c.toml", 'eta = "fast"', "eta='fast' is not valid: must be a real number"),
    ("c.toml", "gamma_min = inf", "gamma_min=inf is not valid: must be finite"),
]


CASES = [(argv, None, message) for argv, message in BAD_FLAGS] + [
    (["train", "--config", name], text, message) for name, text, message in BAD_CONFIG_FILES
]


@pytest.mark.parametrize(
    "argv, config_text, message", CASES, ids=[" ".join(a) + (f" {t}" if t else "") for a, t, _ in CASES]
)
def test_bad_input_is_one_line_exit_2_and_creates_nothing(
    tiny_run, tmp_path, capsys, monkeypatch, argv, config_text, message
):
    if config_text is not None:
        (tmp_path / argv[2]).write_text(config_text)
        argv = ["train", "--config", str(tmp_path / argv[2])]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the default run directory (runs/lm/...) would land here
    run_before = _listing(tiny_run)
    (tmp_path / "file").write_text("not a run directory")
    names = {"RUN": str(tiny_run), "NORUN": str(tmp_path / "norun"), "FILE": str(tmp_path / "file")}
    argv = [names.get(a, a) for a in argv]
    if argv[0] == "train":
        argv = ["train", "--preset", "tiny", "--quiet", *argv[1:]]
        if "--out" not in argv:
            argv += ["--out", str(work / "out")]
    assert main(["lm", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert _listing(work) == [] and _listing(tiny_run) == run_before and not (tmp_path / "norun").exists()
    assert (tmp_path / "file").read_text() == "not a run directory"


def test_missing_gpu_is_refused_before_any_corpus_work(tmp_path, capsys, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    import gvaempirics.lm.corpus
    import gvaempirics.lm.train

    def no_corpus(*args, **kwargs):
        raise AssertionError("corpus work started before the device was checked")

    monkeypatch.setattr(gvaempirics.lm.train, "load_corpus", no_corpus)
    monkeypatch.setattr(gvaempirics.lm.corpus, "load_corpus", no_corpus)
    monkeypatch.chdir(tmp_path)
    for argv in (["--device", "cuda"], ["--device", "cuda:0", "--out", str(tmp_path / "out")]):
        assert main(["lm", "train", "--preset", "tiny", *argv, "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not available here" in err[0] and "device='cuda" in err[0]
    assert _listing(tmp_path) == []


def test_failed_start_is_rerun_with_other_settings_into_the_same_out(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["lm", "train", "--preset", "tiny", "--eta", "1e30", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the training loss became nan" in err[0] and "no checkpoint yet" in err[0]
    assert (out / "config.json").is_file() and not list((out / "checkpoints").iterdir())
    # the failed start never reached a checkpoint: the corrected command takes over the directory
    assert main(["lm", "train", "--preset", "tiny", "--out", str(out), "--quiet"]) == 0
    assert main(["lm", "train", "--preset", "tiny", "--out", str(tmp_path / "clean"), "--quiet"]) == 0
    assert (out / "metrics.jsonl").read_bytes() == (tmp_path / "clean" / "metrics.jsonl").read_bytes()
    assert json.loads((out / "config.json").read_text())["eta"] == 3e-3
    # a run with a checkpoint is not replaced by another configuration
    capsys.readouterr()
    assert main(["lm", "train", "--preset", "tiny", "--eta", "1e-3", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "saved config differs in eta" in err[0]


def test_default_run_directory_is_named_by_the_settings_and_resumed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["lm", "train", "--preset", "tiny", "--steps", "10", "--eval-every", "5", "--zoom-windows", "3", "--quiet"]
    assert main(argv) == 0
    (run,) = (tmp_path / "runs" / "lm").iterdir()
    assert re.fullmatch(r"teacher__tiny__s1__[0-9a-f]{8}", run.name)
    saved = json.loads((run / "config.json").read_text())
    assert run.name.endswith(hashlib.sha256(json.dumps(saved, sort_keys=True).encode()).hexdigest()[:8])
    log = (run / "metrics.jsonl").read_bytes()
    assert main(argv) == 0  # the same command: the same directory, already finished
    assert [p.name for p in (tmp_path / "runs" / "lm").iterdir()] == [run.name]
    assert (run / "metrics.jsonl").read_bytes() == log
    assert main([*argv, "--seed", "2"]) == 0
    names = sorted(p.name for p in (tmp_path / "runs" / "lm").iterdir())
    assert len(names) == 2 and any(n.startswith("teacher__tiny__s2__") for n in names)


# ------------------------------------------------------------------ files that someone else wrote
def _tree(folder: Path) -> list[tuple[str, bytes]]:
    return sorted((str(p.relative_to(folder)), p.read_bytes()) for p in folder.rglob("*") if p.is_file())


def _one_line(argv, capsys, *named: str) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(n in err[0] for n in named) and "Traceback" not in err[0], err
    return err[0]


def test_an_out_of_another_tool_or_in_use_is_refused_unchanged(tmp_path, capsys):
    from gvaempirics.rundir import LOCK, hold_lock

    foreign = tmp_path / "foreign"
    (foreign / "checkpoints").mkdir(parents=True)
    (foreign / "config.json").write_text('{"model": "gpt2", "lr": 0.001}')
    (foreign / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (foreign / "metrics.jsonl").write_text('{"loss": 1.0}\n')
    before = _tree(foreign)
    _one_line(["lm", "train", "--preset", "tiny", "--out", foreign, "--quiet"], capsys, f"out={foreign}")
    assert _tree(foreign) == before
    # a second writer of one run directory: refused while the first holds it
    busy = tmp_path / "busy"
    busy.mkdir()
    with hold_lock(busy / LOCK, "held by this test"):
        _one_line(["lm", "train", "--preset", "tiny", "--out", busy, "--quiet"], capsys, "another process is writing")
    assert [p.name for p in busy.iterdir()] == [LOCK]


@pytest.mark.parametrize("tamper", ["config width", "checkpoint shape", "negative step"])
def test_tampered_run_files_are_refused_in_one_line_naming_them(tiny_run, tmp_path, capsys, tamper):
    """An edited config.json (another width) or a checkpoint whose tensors or step counter were
    changed: every command that loads the run refuses it in one line naming the file."""
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (ckpt,) = sorted((run / "checkpoints").glob("step_*.pt"))[-1:]
    config = json.loads((run / "config.json").read_text())
    named = str(ckpt)
    if tamper == "config width":
        config["n_embd"] *= 2
        (run / "config.json").write_text(json.dumps(config))
    else:
        state = torch.load(ckpt, weights_only=True)
        if tamper == "checkpoint shape":
            key = next(k for k, v in state["model"].items() if v.dim() == 2)
            state["model"][key] = torch.zeros(3, 5)
        else:
            state["step"] = -4
        torch.save(state, ckpt)
    (run / "settings.json").write_text(json.dumps(config))
    before = _tree(run)
    _one_line(["lm", "generate", run, "--prompts", "abc"], capsys, named)
    _one_line(["lm", "posthoc", run], capsys, named)
    _one_line(["lm", "train", "--config", run / "settings.json", "--out", run, "--quiet"], capsys, named)
    assert _tree(run) == before


def test_hours_of_generation_are_refused_before_anything_starts(tmp_path, capsys):
    out = tmp_path / "run"
    line = _one_line(["lm", "train", "--H", 100_000_000, "--out", out], capsys, "H=100000000")
    assert "2.54e+13 token positions" in line and "max_tokens=1e+12" in line and "--max-tokens" in line
    # --max-tokens lifts the limit: the command is then announced, and stopped here by the corpus check
    argv = ["lm", "train", "--preset", "tiny", "--H", 10**10, "--corpus-size", 100, "--out", out]
    assert main([str(a) for a in [*argv, "--max-tokens", 1e14]]) == 2
    announced, refused = capsys.readouterr().err.strip().splitlines()
    assert (
        announced.startswith("gva: training (steps=20) and evaluation (H=10000000000") and "block_size + 1" in refused
    )
    _one_line([*argv, "--max-tokens", 1e14, "--quiet"], capsys, "block_size + 1")  # quiet: the error alone
    _one_line([*argv, "--max-tokens", "nan"], capsys, "--max-tokens")
    assert not out.exists()
