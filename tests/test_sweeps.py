"""Sweeps end to end on a tiny Hopper grid: the spec's checks, a 2x2 local grid and its tables,
kill-and-rerun, a failing run, the summary's intervals over seeds against a direct computation, and Ray."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from gvaempirics.bc.config import BCConfig
from gvaempirics.bc.results import summarize
from gvaempirics.sweeps import SweepSpec, prob_lower, run_sweep, summarize_sweep
from gvaempirics.sweeps.plots import plot_summary
from gvaempirics.sweeps.run import demo_cache, ensemble_jobs
from gvatheory.config import to_dict
from validation.cli import main

ROOT = Path(__file__).resolve().parents[1]
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
GRID = {"preset": "tiny", "base": BASE, "interventions": [[], ["lr-cosine"]], "seeds": [1, 2]}


def write_spec(path: Path, **changes) -> Path:
    path.write_text(json.dumps({**GRID, **changes}))
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The 2x2 grid (base and lr-cosine x seeds 1, 2), uninterrupted, on 2 local workers."""
    root = tmp_path_factory.mktemp("sweep")
    spec = SweepSpec.from_file(write_spec(root / "grid.json"))
    start = time.perf_counter()
    outcome = run_sweep(spec, root / "out", workers=2, quiet=True, n_resamples=2000)
    print(f"2x2 grid: {time.perf_counter() - start:.1f} s")
    return spec, outcome


# ----------------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"colour": "red"}, "colour"),
        ({"interventions": [[], ["width-9999"]]}, "width-9999"),
        ({"interventions": [["eta-1e-3", "eta-1e-4"]]}, "conflict"),
        ({"interventions": [["lr-cosine", "warmup-500"], ["warmup-500", "lr-cosine"]]}, "listed twice"),
        ({"interventions": [["lr-cosine", "lr-cosine"]]}, "name 'lr-cosine' twice"),  # as bc train says it
        ({"interventions": ["lr-cosine"]}, "interventions"),
        ({"base": {**BASE, "widht": 3}}, "widht"),
        ({"base": {**BASE, "zoom_windows": [40]}}, "zoom_windows"),
        ({"base": {**BASE, "eta": -1.0}}, "eta"),
        ({"seeds": []}, "seeds"),
        ({"seeds": [1, 1]}, "seeds"),
        ({"envs": ["Pong-v5"]}, "envs"),
        ({"preset": "huge"}, "preset"),
    ],
)
def test_bad_spec_is_one_line_and_creates_nothing(refuses, tmp_path, changes, field):
    spec = write_spec(tmp_path / "bad.json", **changes)
    line = refuses(["sweep", str(spec), "--workers", "1"], field)
    if field == "width-9999":
        assert "lr-cosine" in line  # the valid ones are listed


def test_a_grid_nobody_means_is_refused_before_its_runs_are_checked(refuses, tmp_path, capsys, monkeypatch):
    """336,000 runs were once checked one by one before a word was printed: the grid's size is
    refused at once (--max-runs lifts it), the check builds one configuration per entry and env
    (seeds change the seed alone), and building a large grid's runs shows progress."""
    big = write_spec(tmp_path / "big.json", envs=["Hopper-v5", "Walker2d-v5"], seeds=list(range(84_000)))
    line = refuses(["sweep", str(big)], "= 336000 runs is out of range: must be <= max_runs=10000")
    assert "--max-runs" in line
    built = []
    entry = SweepSpec._entry_config
    monkeypatch.setattr(SweepSpec, "_entry_config", lambda self, *a: built.append(a) or entry(self, *a))
    spec = SweepSpec.from_file(big)
    assert spec.size() == 336_000 and len(built) == 2 * 2  # envs x interventions
    assert spec.varying_fields() == ["schedule"] and len(built) == 2 * 2 * 2
    monkeypatch.undo()
    small = SweepSpec.from_file(write_spec(tmp_path / "s.json", seeds=list(range(1000))))
    runs = small.runs(progress=True)
    assert len(runs) == 2000 and "sweep runs: 100%" in capsys.readouterr().err
    assert small.runs() == runs  # built once
    assert {r.config.seed for r in runs} == set(range(1000)) and runs[1].config == BCConfig(
        **{**runs[0].config.__dict__, "seed": 1}
    )


def test_composed_runs_are_checked_and_named(tmp_path):
    spec = write_spec(tmp_path / "s.json", interventions=[["policy-transformer", "act-tanh"]])
    ids = [r.run_id for r in SweepSpec.from_file(spec).runs()]
    assert ids == ["Hopper-v5__policy-transformer+act-tanh__s1", "Hopper-v5__policy-transformer+act-tanh__s2"]
    # the base is valid; only the composed configuration of one run is not (too many demonstration steps)
    bad = write_spec(tmp_path / "b.json", interventions=[[], ["demos-250"]], base={**BASE, "demo_horizon": 500000})
    with pytest.raises(ValueError, match=r"b.json: run Hopper-v5__demos-250__s1: n_demos=250 x demo_horizon=500000"):
        SweepSpec.from_file(bad)


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--address", "auto"], "address"),  # without --backend ray
        (["--backend", "ray", "--address", "head-node"], "address"),  # no port
        (["--backend", "ray", "--address", "auto", "--workers", "2"], "workers"),
        (["--backend", "slurm"], "--backend"),
    ],
)
def test_bad_flags_refused(refuses, tmp_path, flags, field):
    spec = write_spec(tmp_path / "s.json")
    refuses(["sweep", str(spec), *flags], field)


def test_unreachable_ray_address_is_one_line(refuses, tmp_path):
    pytest.importorskip("ray")
    spec = write_spec(tmp_path / "s.json")
    line = refuses(["sweep", str(spec), "--backend", "ray", "--address", "127.0.0.1:1"], "address")
    assert "cannot reach" in line


def test_shipped_example_spec_is_valid():
    spec = SweepSpec.from_file(ROOT / "docs" / "sweeps" / "quick.toml")
    runs = spec.runs()
    assert len(runs) == len(spec.interventions) * len(spec.seeds) * len(spec.env_ids())
    assert len(spec.seeds) == 3 and runs[0].run_id.endswith("__base__s" + str(spec.seeds[0]))


# ---------------------------------------------------------------------------------- the grid


def test_grid_tables_one_row_per_run(grid):
    spec, outcome = grid
    out = outcome.out
    ids = [r.run_id for r in spec.runs()]
    assert ids == [
        "Hopper-v5__base__s1",
        "Hopper-v5__base__s2",
        "Hopper-v5__lr-cosine__s1",
        "Hopper-v5__lr-cosine__s2",
    ]
    assert outcome.trained == tuple(ids) and not outcome.failed and not outcome.skipped
    rows = read_csv(out / "results.csv")
    assert [r["run"] for r in rows] == ids and {r["status"] for r in rows} == {"finished"}
    assert [r["schedule"] for r in rows] == ["constant", "constant", "cosine", "cosine"]  # the differing field
    assert "eta" not in rows[0] and "demos" not in rows[0]  # fields that no run changes are left out
    # one demonstration cache, shared by the four runs
    assert sorted(p.name for p in (out / "demos").iterdir()) == ["Hopper-v5__n3_v1_h20_s0.npz"]
    for run, row in zip(spec.runs(), outcome.rows):
        path = out / "runs" / run.run_id
        assert json.loads((path / "config.json").read_text())["demos"] == str(demo_cache(out, run.config))
        s = summarize(path)
        assert s["steps_done"] == 10 and row["steps_done"] == 10
        assert row["raw_oscillation"] == s["raw"]["zoom_reward_oscillation"]
        assert row["stab_flip_rate"] == s["ema"]["zoom_flip_rate"]
        assert row["raw_best_return"] >= row["raw_final_return"]
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["run"] for r in table] == ids and table[2]["raw_oscillation"] == outcome.rows[2]["raw_oscillation"]
    summary = read_csv(out / "summary.csv")
    assert [r["interventions"] for r in summary] == ["base", "lr-cosine"]
    assert [int(r["finished"]) for r in summary] == [2, 2]


def test_grid_summary_is_the_direct_computation(grid):
    _, outcome = grid
    x = {
        lab: np.array([r["raw_oscillation"] for r in outcome.rows if r["interventions"] == lab])
        for lab in ("base", "lr-cosine")
    }
    base, cos = outcome.summary.stats
    assert base.mean.estimate == pytest.approx(x["base"].mean()) and math.isnan(base.p_lower)
    pairs = [(a < b) + 0.5 * (a == b) for a in x["lr-cosine"] for b in x["base"]]
    assert cos.p_lower == pytest.approx(np.mean(pairs))
    # Student t over the 2 seeds, by hand
    half = scipy.stats.t.ppf(0.975, 1) * x["lr-cosine"].std(ddof=1) / math.sqrt(2)
    assert (cos.mean.low, cos.mean.high) == pytest.approx((x["lr-cosine"].mean() - half, x["lr-cosine"].mean() + half))
    assert math.isnan(cos.iqm.low)  # no bootstrap below 10 runs


def test_rerun_of_a_finished_grid_skips_everything(grid, tmp_path):
    spec, outcome = grid
    before = (outcome.out / "results.csv").read_bytes()
    again = run_sweep(spec, outcome.out, workers=2, quiet=True, n_resamples=2000)
    assert again.trained == () and again.skipped == outcome.trained
    assert (outcome.out / "results.csv").read_bytes() == before


def test_runs_written_before_a_field_existed_count_as_finished(grid):
    spec, outcome = grid
    configs = sorted((outcome.out / "runs").glob("*/config.json"))
    texts = [c.read_text() for c in configs]
    try:
        for c in configs:  # as a run written before drop_falls existed holds it
            cfg = json.loads(c.read_text())
            del cfg["drop_falls"]
            c.write_text(json.dumps(cfg))
        again = run_sweep(spec, outcome.out, workers=2, quiet=True, n_resamples=2000)
        assert again.trained == () and again.skipped == outcome.trained
    finally:
        for c, t in zip(configs, texts):
            c.write_text(t)


def test_figure_has_one_row_per_entry(grid):
    fig = plot_summary(grid[1].summary)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert sorted(labels) == ["base (n=2)", "lr-cosine (n=2)"]


def test_killed_sweep_resumes_without_redoing_finished_runs(grid, tmp_path):
    """SIGKILL a ``python -m validation sweep`` after its first run finished, rerun it: the
    finished run is not touched, and the tables equal the uninterrupted grid's."""
    spec_path = write_spec(tmp_path / "grid.json")
    out = tmp_path / "out"
    first = out / "runs" / "Hopper-v5__base__s1"
    second = out / "runs" / "Hopper-v5__base__s2"
    cmd = [sys.executable, "-m", "validation", "sweep", str(spec_path), "--out", str(out), "--workers", "1", "--quiet"]
    cmd += ["--ensemble", "1"]  # one run at a time, so that one finishes while the next is under way
    log = open(tmp_path / "stderr.txt", "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log)
    try:
        # kill once the first run finished and the second has a checkpoint (or finished too)
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            if (first / "summary.json").is_file() and any(second.glob("checkpoints/step_*.pt")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the sweep ended before the kill: {(tmp_path / 'stderr.txt').read_text()[-2000:]}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert (first / "summary.json").is_file()
    assert not (out / "results.csv").is_file() or read_csv(out / "results.csv")[-1]["status"] != "finished"
    stat = (first / "metrics.jsonl").stat()
    finished_before = {p.parent.name for p in (out / "runs").glob("*/summary.json")}
    outcome = run_sweep(SweepSpec.from_file(spec_path), out, workers=2, quiet=True, n_resamples=2000)
    assert "Hopper-v5__base__s1" in outcome.skipped and set(outcome.skipped) == finished_before
    after = (first / "metrics.jsonl").stat()
    assert (after.st_mtime_ns, after.st_size) == (stat.st_mtime_ns, stat.st_size)
    assert (out / "results.csv").read_bytes() == (grid[1].out / "results.csv").read_bytes()
    assert (out / "summary.csv").read_bytes() == (grid[1].out / "summary.csv").read_bytes()


def test_runs_that_share_shapes_form_ensembles_enough_to_fill_the_workers():
    spec = SweepSpec.from_file(ROOT / "docs" / "sweeps" / "quick.toml")
    runs = spec.runs()
    configs = {r.run_id: r.config for r in runs}
    ids = lambda jobs: [[r.run_id for r in job] for job in jobs]  # noqa: E731
    assert ids(ensemble_jobs(runs, configs, 1, 2)) == [[r.run_id] for r in runs]
    one = ensemble_jobs(runs, configs, 100, 1)  # one worker: everything that can share a model does
    assert sum(map(len, one)) == len(runs) and all(len({configs[r.run_id].width for r in job}) == 1 for job in one)
    assert len(one) == len({(configs[r.run_id].width, configs[r.run_id].batch_size) for r in runs})
    assert max(map(len, ensemble_jobs(runs, configs, 100, 5))) <= -(-len(runs) // 5)
    dropout = {k: c.replace(dropout=0.1) for k, c in configs.items()}
    assert ids(ensemble_jobs(runs, dropout, 8, 1)) == [[r.run_id] for r in runs]  # dropout masks cannot be shared
    with pytest.raises(ValueError, match="ensemble=0"):
        ensemble_jobs(runs, configs, 0, 1)


def test_ensembles_give_each_run_its_single_runs_numbers(grid, tmp_path):
    """The grid ran as two 2-member ensembles (2 workers); run alone, every number is the same."""
    spec = SweepSpec.from_file(write_spec(tmp_path / "grid.json"))
    alone = run_sweep(spec, tmp_path / "out", workers=2, ensemble=1, quiet=True, n_resamples=2000)
    assert (alone.out / "results.csv").read_bytes() == (grid[1].out / "results.csv").read_bytes()


def test_failing_run_is_recorded_and_the_others_finish(tmp_path, capsys):
    spec_path = write_spec(tmp_path / "s.json", interventions=[[]])
    out = tmp_path / "out"
    # a run that passes every check but fails in its worker: its newest checkpoint is corrupt
    bad = next(r for r in SweepSpec.from_file(spec_path).runs() if r.seed == 2)
    cfg = bad.config.replace(demos=str(demo_cache(out, bad.config)))
    path = out / "runs" / bad.run_id
    (path / "checkpoints").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(to_dict(cfg)))
    (path / "metrics.jsonl").write_text("")
    (path / "checkpoints" / "step_000000005.pt").write_bytes(b"not a checkpoint")
    code = main(["sweep", str(spec_path), "--out", str(out), "--workers", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "1 run(s) failed: Hopper-v5__base__s2" in err
    rows = read_csv(out / "results.csv")
    assert [(r["run"], r["status"]) for r in rows] == [("Hopper-v5__base__s1", "finished"), (bad.run_id, "failed")]
    assert (
        rows[1]["error"].startswith("ValueError: ")
        and "step_000000005.pt is not a plain tensor file" in rows[1]["error"]
    )
    assert rows[1]["raw_oscillation"] == "nan" and rows[0]["raw_oscillation"] != "nan"
    (record,) = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert record["run"] == bad.run_id and record["error_type"] == "ValueError"
    assert record["config"]["seed"] == 2 and "\n" not in record["message"]


# ------------------------------------------------------------------------------- statistics


def _summary_rows(x, y):
    rows = [
        {"env": env, "interventions": lab, "seed": i, "raw_oscillation": float(v), "stab_oscillation": float(v) / 2}
        for lab, d in (("base", y), ("lr-cosine", x))
        for env in d
        for i, v in enumerate(d[env])
    ]
    rows.append(
        {
            "env": "Hopper-v5",
            "interventions": "lr-cosine",
            "seed": 99,
            "raw_oscillation": math.nan,
            "stab_oscillation": math.nan,
        }
    )
    return rows


def test_summary_against_direct_computation():
    from gvatheory.stats import seed_sequence

    rng = np.random.default_rng(7)
    x = {env: rng.gamma(2.0, 0.01, size=8) for env in ("Hopper-v5", "Walker2d-v5")}
    y = {env: rng.gamma(2.0, 0.02, size=8) for env in x}
    y["Hopper-v5"][0] = x["Hopper-v5"][0]  # a tie, counted one half
    summary = summarize_sweep(_summary_rows(x, y), n_resamples=4000, seed=3)
    base, cos = summary.stats
    pooled = np.concatenate(list(x.values()))
    assert (cos.runs, cos.finished) == (17, 16)
    assert cos.iqm.estimate == pytest.approx(np.sort(pooled)[4:12].mean())  # the middle half of 16
    assert cos.stab_mean == pytest.approx(pooled.mean() / 2)
    # P(X < Y) by counting, per env, then averaged over envs
    by_env = [np.mean([(a < b) + 0.5 * (a == b) for a in x[e] for b in y[e]]) for e in x]
    assert cos.p_lower == pytest.approx(np.mean(by_env)) and math.isnan(base.p_lower)
    # the mean: each seed's mean over the two envs, then Student t over the 8 seeds, by hand
    seed_means = (x["Hopper-v5"] + x["Walker2d-v5"]) / 2
    half = scipy.stats.t.ppf(0.975, 7) * seed_means.std(ddof=1) / math.sqrt(8)
    assert cos.mean.estimate == pytest.approx(pooled.mean()) and cos.mean.n == 8
    assert (cos.mean.low, cos.mean.high) == pytest.approx((seed_means.mean() - half, seed_means.mean() + half))
    # an env that sits higher as a whole shifts the mean, not the width: env effects drop out
    shifted = summarize_sweep(_summary_rows({**x, "Walker2d-v5": x["Walker2d-v5"] + 1.0}, y)).stats[1].mean
    assert shifted.high - shifted.low == pytest.approx(cos.mean.high - cos.mean.low)
    # the IQM's interval (16 runs): scipy's BCa, one sample per env resampled on its own
    direct = scipy.stats.bootstrap(
        tuple(x.values()),
        lambda *s, axis: scipy.stats.trim_mean(np.concatenate(s, axis=axis), 0.25, axis=axis),
        vectorized=True,
        n_resamples=4000,
        method="BCa",
        random_state=np.random.default_rng(seed_sequence(3)),
    )
    assert (cos.iqm.low, cos.iqm.high) == pytest.approx(tuple(direct.confidence_interval))


def test_small_samples_give_nan_intervals_not_errors():
    one = summarize_sweep(
        [{"env": "Hopper-v5", "interventions": "base", "seed": 1, "raw_oscillation": 0.3, "stab_oscillation": 0.1}]
    ).stats[0]
    assert one.mean.estimate == 0.3 and math.isnan(one.mean.low) and math.isnan(one.mean.high)
    assert one.iqm.estimate == 0.3 and math.isnan(one.iqm.low)
    assert math.isnan(prob_lower(np.array([1.0]), np.array([])))
    assert prob_lower(np.array([1.0, 2.0]), np.array([2.0])) == 0.75


# --------------------------------------------------------------------------------------- Ray


@pytest.mark.slow  # it starts a Ray runtime, which the default test run should not wait for
def test_ray_local_runtime_runs_a_grid(grid, tmp_path):
    pytest.importorskip("ray")
    spec = SweepSpec.from_file(write_spec(tmp_path / "s.json", interventions=[[]]))
    start = time.perf_counter()
    outcome = run_sweep(spec, tmp_path / "out", backend="ray", workers=2, quiet=True, n_resamples=2000)
    print(f"ray grid: {time.perf_counter() - start:.1f} s")
    assert outcome.trained == ("Hopper-v5__base__s1", "Hopper-v5__base__s2") and not outcome.failed
    local = {r["run"]: r for r in grid[1].rows}
    for row in outcome.rows:  # the same numbers as the local pool's runs
        assert row["status"] == "finished"
        assert row["raw_oscillation"] == local[row["run"]]["raw_oscillation"]
        assert row["stab_final_return"] == local[row["run"]]["stab_final_return"]
