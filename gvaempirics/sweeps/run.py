"""Run a sweep: check everything, collect the shared demonstrations, run what is unfinished.

Layout of a sweep directory::

    SWEEP_DIR/spec.json          the spec this invocation ran
    SWEEP_DIR/demos/*.npz        one demonstration cache per (env, demo settings, expert)
    SWEEP_DIR/runs/<run id>/     one run directory per run: <env>__<interventions or base>__s<seed>
    SWEEP_DIR/failures.jsonl     one record per failed attempt (append-only)
    SWEEP_DIR/results.{csv,parquet}, summary.csv

A run is finished when its ``summary.json`` reports ``steps_done == steps``; a rerun skips it,
resumes every other run from its last checkpoint, and so loses and redoes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gvatheory.config import to_dict

from ..bc.config import BCConfig
from ..bc.config import defaults as bc_defaults
from ..rundir import RunDir, atomic_write_bytes, atomic_write_json, check_creatable, hold_lock, sha256_bytes
from .backends import Failure, LocalBackend, RayBackend
from .results import FAILED, FINISHED, UNFINISHED, SweepSummary, run_row, summarize_sweep, to_csv, write_results
from .spec import SweepRun, SweepSpec

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep invocation left: the results rows (grid order), the summary, and which runs
    it trained (started or resumed), found finished, and saw fail."""

    out: Path
    rows: tuple[dict[str, Any], ...]
    summary: SweepSummary
    trained: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[str, ...]


def demo_cache(out: Path, cfg: BCConfig) -> Path:
    """Where the sweep keeps the demonstrations of ``cfg``: one file per (env, settings, expert)."""
    name = f"{cfg.env}__n{cfg.n_demos}_v{cfg.val_demos}_h{cfg.demo_horizon}_s{cfg.demo_seed}"
    if cfg.expert:
        from ..bc.experts import expert_file

        name += "__" + sha256_bytes(str(expert_file(cfg.env, cfg.expert).resolve()).encode())[:8]
    return out.resolve() / "demos" / f"{name}.npz"


def is_finished(path: Path, cfg: BCConfig) -> bool:
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    run = RunDir(path)
    return summary.get("steps_done") == cfg.steps and run.exists() and run.read_config(bc_defaults()) == to_dict(cfg)


def default_workers(threads: int) -> int:
    return max(1, (os.cpu_count() or 1) // threads)


def run_sweep(
    spec: SweepSpec,
    out: Path,
    *,
    backend: str = "local",
    address: str = "",
    workers: int = 0,
    ensemble: int = 8,
    quiet: bool = False,
    n_resamples: int = 5000,
) -> SweepOutcome:
    """Run (or resume) every run of ``spec`` into the sweep directory ``out``.

    Everything is checked before anything is created: the output folder, runs of another
    configuration already in it, the experts, given demonstration caches, and the backend
    (``local``: ``workers`` processes, default ``cpu_count // threads``; ``ray``: the cluster at
    ``address``, or a new local runtime). A failing run is recorded and the others go on.
    Unfinished runs that may share an ensemble train as one, up to ``ensemble`` members, in no
    fewer jobs than the backend runs at once (:func:`ensemble_jobs`; ``ensemble=1``: each alone).
    """
    from tqdm.auto import tqdm

    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not valid: choose one of {', '.join(BACKENDS)}")
    out = check_creatable(Path(out), "out", folder=True)
    runs = spec.runs(progress=not quiet)
    varying = [f for f in spec.varying_fields() if f != "demos"]
    threads = max(r.config.threads for r in runs)
    configs, experts, demos = _prepare(spec, runs, out)
    finished = {r.run_id for r in runs if is_finished(_path(out, r), configs[r.run_id])}
    todo = [r for r in runs if r.run_id not in finished]

    runner = None
    if todo:  # the backend is checked (and a Ray runtime started) before anything is written
        if backend == "ray":
            runner = RayBackend(address, workers=workers, threads=threads, quiet=quiet)
        else:
            runner = LocalBackend(workers or default_workers(threads))
    out.mkdir(parents=True, exist_ok=True)
    held = contextlib.ExitStack()
    try:
        held.enter_context(hold_lock(out / "sweep.lock", f"out={out}: another sweep is running in this directory"))
    except ValueError:
        if runner is not None:
            runner.close()
        raise
    try:
        atomic_write_json(out / "spec.json", to_dict(spec))
        _collect_demos(todo, configs, experts, demos, quiet=quiet)
        rows = {r.run_id: run_row(r, _path(out, r), varying, status=FINISHED) for r in runs if r.run_id in finished}
        rows.update({r.run_id: run_row(r, _path(out, r), varying, status=UNFINISHED) for r in todo})
        order = [r.run_id for r in runs]
        by_id = {r.run_id: r for r in runs}
        write_results(out, [rows[i] for i in order])
        failed: list[str] = []
        if runner is not None:
            bar = tqdm(
                total=len(runs), initial=len(finished), desc="sweep", unit="run", disable=quiet, dynamic_ncols=True
            )
            try:
                for job in ensemble_jobs(todo, configs, ensemble, runner.capacity):
                    runner.submit(
                        [r.run_id for r in job], [configs[r.run_id] for r in job], [_path(out, r) for r in job]
                    )
                while runner.pending:
                    for run_id, failure in runner.completed(timeout=1.0):
                        run = by_id[run_id]
                        if failure is None:
                            rows[run_id] = run_row(run, _path(out, run), varying, status=FINISHED)
                        else:
                            failed.append(run_id)
                            _log_failure(out, run, configs[run_id], failure)
                            rows[run_id] = run_row(
                                run, _path(out, run), varying, status=FAILED, error=_error_text(failure)
                            )
                        write_results(out, [rows[i] for i in order])
                        bar.update(1)
                    bar.set_postfix(running=runner.running(), failed=len(failed), refresh=True)
            except BaseException:
                runner.close(interrupted=True)
                runner = None
                raise
            finally:
                bar.close()
        table = [rows[i] for i in order]
        summary = summarize_sweep(table, n_resamples=n_resamples)
        atomic_write_bytes(out / "summary.csv", to_csv(summary.rows()))
        return SweepOutcome(
            out=out,
            rows=tuple(table),
            summary=summary,
            trained=tuple(r.run_id for r in todo),
            skipped=tuple(r.run_id for r in runs if r.run_id in finished),
            failed=tuple(failed),
        )
    finally:
        if runner is not None:
            runner.close()
        held.close()


def ensemble_jobs(todo: list[SweepRun], configs: dict[str, BCConfig], size: int, capacity: int) -> list[list[SweepRun]]:
    """Group the unfinished runs into jobs: runs whose configs differ only in an ensemble member's
    fields (:data:`~gvaempirics.bc.ensemble.MEMBER_FIELDS`: seed, optimizer settings, stabilizer, ...)
    and use no dropout share one, in grid order, at most ``size`` per job and no more per job than
    it takes to give each of the ``capacity`` workers one (a lone ensemble would leave workers idle).
    Deterministic: a rerun of a killed sweep regroups what is left the same way."""
    from ..bc.ensemble import MEMBER_FIELDS

    if size < 1:
        raise ValueError(f"ensemble={size} is out of range: must be >= 1 (1: every run alone)")
    per_job = max(1, min(size, -(-len(todo) // max(capacity, 1))))
    groups: dict[str, list[SweepRun]] = {}
    for r in todo:
        cfg = configs[r.run_id]
        shared = {k: v for k, v in to_dict(cfg).items() if k not in MEMBER_FIELDS}
        key = json.dumps(shared, sort_keys=True) if per_job > 1 and cfg.dropout == 0 else r.run_id
        groups.setdefault(key, []).append(r)
    return [members[i : i + per_job] for members in groups.values() for i in range(0, len(members), per_job)]


def read_sweep(spec: SweepSpec, out: Path, *, n_resamples: int = 5000) -> SweepOutcome:
    """The outcome of ``spec`` as its sweep directory ``out`` holds it, running and writing nothing
    (to redraw the figures of a finished sweep): a run is finished as for :func:`run_sweep`, every
    other run is ``unfinished``. Raises ``ValueError`` where ``out`` holds no run of ``spec``."""
    out = Path(out)
    runs = spec.runs()
    varying = [f for f in spec.varying_fields() if f != "demos"]
    paths = {r.run_id: _path(out, r) for r in runs}
    if not any(p.is_dir() for p in paths.values()):
        raise ValueError(f"out={out}: no run of this spec there (run the sweep first, or give its --out)")
    finished = []
    for r in runs:
        cfg = r.config if r.config.demos else r.config.replace(demos=str(demo_cache(out, r.config)))
        if is_finished(paths[r.run_id], cfg):
            finished.append(r.run_id)
    table = [
        run_row(r, paths[r.run_id], varying, status=FINISHED if r.run_id in finished else UNFINISHED) for r in runs
    ]
    return SweepOutcome(
        out=out.resolve(),
        rows=tuple(table),
        summary=summarize_sweep(table, n_resamples=n_resamples),
        trained=(),
        skipped=tuple(finished),
        failed=(),
    )


def _path(out: Path, run: SweepRun) -> Path:
    return out.resolve() / "runs" / run.run_id


def _prepare(spec: SweepSpec, runs: list[SweepRun], out: Path):
    """Each run's final config (with its demonstration cache), the experts, the caches to make.

    Reads only: raises ``ValueError`` for a run directory of another configuration, an expert
    that does not load, or a given cache (``[base] demos``) that does not fit a run."""
    from ..bc.data import Demonstrations
    from ..bc.experts import load_expert

    configs: dict[str, BCConfig] = {}
    experts: dict[tuple[str, str], Any] = {}
    demos: dict[Path, tuple[str, str]] = {}  # cache -> (env, expert) that makes it
    checked: set[Path] = set()
    for run in runs:
        cfg = run.config
        key = (cfg.env, cfg.expert)
        if key not in experts:
            experts[key] = load_expert(cfg.env, cfg.expert)
        if cfg.demos:
            given = Path(cfg.demos)
            if given not in checked:
                Demonstrations.load(given).check(cfg.demo_settings(), experts[key][1], path=given)
                checked.add(given)
        else:
            cfg = cfg.replace(demos=str(demo_cache(out, cfg)))
            demos.setdefault(Path(cfg.demos), key)
        configs[run.run_id] = cfg
        path = _path(out, run)
        if (path / "config.json").is_file():
            saved, want = RunDir(path).read_config(bc_defaults()), to_dict(cfg)
            if saved != want and RunDir(path).checkpoints():
                diff = sorted(k for k in set(saved) | set(want) if saved.get(k) != want.get(k))
                raise ValueError(
                    f"out={out}: run {run.run_id} there has another configuration (differs in "
                    f"{', '.join(diff)}); give another --out for this spec"
                )
    return configs, experts, demos


def _collect_demos(todo: list[SweepRun], configs, experts, demos, *, quiet: bool) -> None:
    """Collect, once, every demonstration cache that an unfinished run needs."""
    needed = {Path(configs[r.run_id].demos) for r in todo} & set(demos)
    if not needed:
        return
    import torch

    from ..bc.data import load_or_make

    torch.set_num_threads(max(configs[r.run_id].threads for r in todo))
    for path in sorted(needed):
        if path.is_file():
            continue  # checked against its run's settings by train_bc
        cfg = next(configs[r.run_id] for r in todo if Path(configs[r.run_id].demos) == path)
        expert, info = experts[demos[path]]
        load_or_make(path, expert, **cfg.demo_settings(), expert_info=info, quiet=quiet)


def _error_text(failure: Failure) -> str:
    return f"{failure.error_type}: {failure.message}"


def _log_failure(out: Path, run: SweepRun, cfg: BCConfig, failure: Failure) -> None:
    record = {
        "run": run.run_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "error_type": failure.error_type,
        "message": failure.message,
        "config": to_dict(cfg),
        "traceback": failure.traceback,
    }
    with open(out / "failures.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
