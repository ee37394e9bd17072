"""``gva lm`` smoke tests: tiny configuration trains, generates and plots; bad input exits 2 with one line."""

import json

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
    assert main(["lm", "generate", str(tiny_run), "--prompt", "abc", "--H", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["prompt"] == "abc" and len(rows[0]["continuation"]) == 5
    assert main(["lm", "plot", str(tiny_run), "--decayed", str(tiny_run), "--out", str(tmp_path / "f")]) == 0
    assert (tmp_path / "f_loss.png").stat().st_size > 0 and (tmp_path / "f_bifurcations.png").stat().st_size > 0


def test_posthoc_sweep_command(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["lm", "train", "--preset", "tiny", "--stabilizer", "posthoc", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["lm", "posthoc", str(out), "--sigma-rel", "0.05", "0.2", "--plot", str(tmp_path / "p.png"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["sigma_rel"] for r in rows] == [None, 0.05, 0.2] and (tmp_path / "p.png").stat().st_size > 0


@pytest.mark.parametrize("argv, message", [
    (["lm", "generate", "RUN", "--prompt", "ab!Z"], "outside the vocabulary: '!', 'Z'"),
    (["lm", "train", "--preset", "tiny", "--corpus", "tinystories", "--data-path", "missing.txt", "--out", "OUT"],
     "missing.txt does not exist"),
    (["lm", "train", "--preset", "tiny", "--corpus-size", "100", "--out", "OUT"],
     "shorter than one context window: need at least block_size + 1 = 17"),
    (["lm", "train", "--preset", "tiny", "--lr", "-1", "--out", "OUT"], "lr"),
    (["lm", "train", "--preset", "tiny", "--posthoc-sigma-rels", "0.5", "--out", "OUT"], "posthoc_sigma_rels=0.5"),
    (["lm", "posthoc", "RUN"], "needs a run trained with --stabilizer posthoc"),
])
def test_bad_input_exits_2_with_one_line(tiny_run, tmp_path, capsys, argv, message):
    argv = [str(tiny_run) if a == "RUN" else str(tmp_path / "o") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_sigkilled_run_resumes_to_the_same_log(tmp_path):
    """SIGKILL ``gva lm train`` after its second checkpoint, resume it, compare with an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    flags = ["--preset", "tiny", "--steps", "80", "--checkpoint-every", "10", "--stabilizer", "posthoc",
             "--posthoc-every", "7", "--quiet"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "validation", "lm", "train", *flags, "--out", str(killed)],
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "checkpoints").glob("step_*.pt"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    assert main(["lm", "train", *flags, "--out", str(killed), "--resume"]) == 0
    assert main(["lm", "train", *flags, "--out", str(tmp_path / "full")]) == 0
    assert (killed / "metrics.jsonl").read_bytes() == (tmp_path / "full" / "metrics.jsonl").read_bytes()
