"""The sweep's figures (summary, paper Figures 2 and 3) from a tiny finished sweep, drawn by
``gva sweep`` at its end and redrawn by ``gva sweep --figures-only``: one panel per grid entry,
and every logged evaluation and loss record of the drawn seed's run on it."""

import json
from pathlib import Path

import numpy as np
import pytest

from gvaempirics.sweeps import SweepSpec
from gvaempirics.sweeps.plots import entry_runs, plot_rewards, plot_stabilized
from gvaempirics.sweeps.run import read_sweep
from validation.cli import main

BASE = {
    "steps": 10,
    "H": 20,
    "ics": 2,
    "demo_horizon": 20,
    "threads": 1,
    "eval_every": 5,
    "zoom_windows": [4],
    "zoom_length": 4,
    "checkpoint_every": 5,
}
ENTRIES = [[], ["lr-cosine"], ["width-64"]]
GRID = {"preset": "tiny", "base": BASE, "interventions": ENTRIES, "seeds": [1, 2]}
FIGURES = ("summary.png", "rewards.png", "stabilized.png")


def write_spec(path: Path, **changes) -> Path:
    path.write_text(json.dumps({**GRID, **changes}))
    return path


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """``(spec file, sweep directory, printed output)`` of the 3-entry x 2-seed grid, run by the command."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("figures")
    spec = write_spec(root / "grid.json")
    out = root / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["sweep", spec, "--out", out, "--workers", "2", "--quiet"])
    assert code == 0, buf.getvalue()
    return spec, out, buf.getvalue()


def logged(run: Path) -> tuple[dict[str, list], list[dict]]:
    """The run's evaluation records per weights and its loss records, read plainly from metrics.jsonl."""
    evals: dict[str, list] = {}
    losses = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] == "eval":
            evals.setdefault(rec["weights"], []).append(rec)
        elif rec["kind"] == "loss":
            losses.append(rec)
    return evals, losses


def panels(fig, kind: str) -> dict[str, object]:
    """The axes of ``fig`` tagged ``kind:<run id>``, by run id."""
    return {ax.get_gid().split(":", 1)[1]: ax for ax in fig.axes if (ax.get_gid() or "").startswith(kind + ":")}


def line(ax, gid: str):
    (found,) = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    return found


def test_command_writes_the_tables_and_three_figures(sweep):
    spec, out, printed = sweep
    for name in FIGURES:
        assert (out / name).stat().st_size > 0, name
        assert str(out / name) in printed
    table = (out / "summary.md").read_text().strip().splitlines()
    assert len(table) == 2 + len(ENTRIES)
    assert [row.split("|")[1].strip() for row in table[2:]] == ["base", "lr-cosine", "width-64"]


@pytest.mark.parametrize("seed", [None, 2])
def test_figure2_one_panel_per_entry_with_every_logged_point(sweep, seed):
    spec, out, _ = sweep
    outcome = read_sweep(SweepSpec.from_file(spec), out, n_resamples=200)
    entries = entry_runs(out, outcome.rows, seed=seed)
    want_seed = 1 if seed is None else seed
    assert [e.run for e in entries] == [f"Hopper-v5__{lab}__s{want_seed}" for lab in ("base", "lr-cosine", "width-64")]
    fig = plot_rewards(entries)
    rewards, losses = panels(fig, "reward"), panels(fig, "loss")
    assert list(rewards) == list(losses) == [e.run for e in entries]
    for run_id, ax in rewards.items():
        evals, loss_records = logged(out / "runs" / run_id)
        raw = sorted(evals["raw"], key=lambda r: r["step"])
        dots = line(ax, "returns")
        x, y = dots.get_xdata(), dots.get_ydata()
        assert len(y) == sum(len(r["returns"]) for r in raw) > 0
        assert sorted(zip(x, y)) == sorted((r["step"], v) for r in raw for v in r["returns"])
        mean = line(ax, "mean_return")
        assert list(mean.get_xdata()) == [r["step"] for r in raw]
        np.testing.assert_allclose(mean.get_ydata(), [np.mean(r["returns"]) for r in raw])
        loss = line(losses[run_id], "val_loss")
        assert list(loss.get_xdata()) == [r["step"] for r in loss_records]
        np.testing.assert_allclose(loss.get_ydata(), [r["val"] for r in loss_records])


def test_figure3_raw_and_stabilized_in_one_panel_per_entry(sweep):
    spec, out, _ = sweep
    outcome = read_sweep(SweepSpec.from_file(spec), out, n_resamples=200)
    entries = entry_runs(out, outcome.rows)
    fig = plot_stabilized(entries)
    axes = panels(fig, "stabilized")
    assert list(axes) == [e.run for e in entries]
    for run_id, ax in axes.items():
        evals, _ = logged(out / "runs" / run_id)
        for gid, weights in (("raw", "raw"), ("stabilized", "ema")):
            records = sorted(evals[weights], key=lambda r: r["step"])
            curve = line(ax, gid)
            assert list(curve.get_xdata()) == [r["step"] for r in records]
            np.testing.assert_allclose(curve.get_ydata(), [np.mean(r["returns"]) for r in records])


def test_figures_only_redraws_without_running(sweep, capsys):
    spec, out, printed = sweep
    runs_before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    results = (out / "results.csv").read_bytes()
    for name in FIGURES:
        (out / name).unlink()
    assert main(["sweep", spec, "--out", out, "--figures-only", "--seed", "2"]) == 0
    again = capsys.readouterr().out
    assert all((out / name).is_file() for name in FIGURES)
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()} == runs_before
    assert (out / "results.csv").read_bytes() == results
    table = lambda text: text.split("\n", 1)[1].split("tables:")[0]  # noqa: E731 (the printed summary)
    assert table(again) == table(printed)


def test_an_entry_without_runs_still_gets_its_panel(sweep, tmp_path):
    """A grown spec (one entry not run yet): its panel says so, and every entry keeps its panel."""
    _, out, _ = sweep
    grown = SweepSpec.from_file(write_spec(tmp_path / "grown.json", interventions=ENTRIES + [["batch-256"]]))
    outcome = read_sweep(grown, out, n_resamples=200)
    assert [r["status"] for r in outcome.rows].count("unfinished") == 2
    entries = entry_runs(out, outcome.rows)
    assert entries[-1].result is None
    assert len(panels(plot_rewards(entries), "reward")) == len(panels(plot_stabilized(entries), "stabilized")) == 4


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--seed", "7"], "seed"),
        (["--figures-only", "--workers", "2"], "figures_only"),
        (["--figures-only"], "out="),  # nothing was run there
    ],
)
def test_bad_figure_flags_refused(refuses, tmp_path, flags, field):
    spec = write_spec(tmp_path / "grid.json")
    refuses(["sweep", spec, "--out", tmp_path / "none", *flags], field)
