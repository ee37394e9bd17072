"""Where a sweep's runs execute: a pool of local worker processes, or Ray tasks.

Both backends run the same function, :func:`run_job`: one run (:func:`~gvaempirics.bc.train.train_bc`
into its run directory) or several that share shapes trained as one ensemble
(:func:`~gvaempirics.bc.ensemble.train_ensemble`), and report the same outcome per run: ``None``
for a finished run, or a :class:`Failure`. A backend only schedules; what a run writes is in its run directory, so the
driver can die at any point and a rerun resumes every unfinished run from its checkpoints.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bc.config import BCConfig


@dataclass(frozen=True)
class Failure:
    """Why a run did not finish: the exception's type and its message on one line."""

    error_type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, err: BaseException) -> Failure:
        text = " ".join(str(err).split()) or type(err).__name__
        return cls(type(err).__name__, text, "".join(traceback.format_exception(err)))


def run_one(cfg: BCConfig, out: str) -> Failure | None:
    """Train (or resume) one run; an exception becomes a :class:`Failure`, so that the sweep goes on."""
    try:
        from ..bc.train import train_bc

        train_bc(cfg, Path(out), quiet=True)
    except Exception as err:
        return Failure.from_exception(err)
    return None


def run_job(cfgs: list[BCConfig], outs: list[str]) -> list[Failure | None]:
    """Train the runs ``cfgs`` into ``outs``: several as one ensemble, with the per-tensor optimizer
    loop of a single run (``fused=False``), so that each member's numbers are its single run's; if
    the ensemble fails (one member's loss became NaN, say), each run is resumed alone from its own
    checkpoints, so that each records its own outcome."""
    if len(cfgs) > 1:
        try:
            from ..bc.ensemble import train_ensemble

            train_ensemble(cfgs, [Path(o) for o in outs], quiet=True, fused=False)
            return [None] * len(cfgs)
        except Exception:
            pass
    return [run_one(cfg, out) for cfg, out in zip(cfgs, outs)]


def _exit_with_parent(parent: int) -> None:
    """Pool-worker initializer: exit as soon as the driver is gone (killed), so that no orphan
    keeps writing into a run directory that a rerun resumes."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class LocalBackend:
    """``workers`` local processes (``spawn``: a fresh interpreter each, nothing inherited)."""

    name = "local"

    def __init__(self, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.capacity = workers
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )
        self.pending: dict[Any, list[str]] = {}

    def submit(self, run_ids: list[str], cfgs: list[BCConfig], outs: list[Path]) -> None:
        """Queue one job: the runs ``run_ids`` (one, or an ensemble)."""
        self.pending[self.pool.submit(run_job, cfgs, [str(o) for o in outs])] = run_ids

    def running(self) -> int:
        return min(self.capacity, sum(f.running() for f in self.pending))

    def completed(self, timeout: float) -> Iterator[tuple[str, Failure | None]]:
        """Runs whose job completed within ``timeout`` seconds (none if none did)."""
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(list(self.pending), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            run_ids = self.pending.pop(future)
            try:
                yield from zip(run_ids, future.result())
            except Exception as err:  # the worker process died (BrokenProcessPool) or pickling failed
                yield from ((run_id, Failure.from_exception(err)) for run_id in run_ids)

    def close(self, *, interrupted: bool = False) -> None:
        """Wait for the workers to exit; ``interrupted``: end them now (their runs stay resumable)."""
        if interrupted:
            for process in list((getattr(self.pool, "_processes", None) or {}).values()):
                process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast, with one line, on a ``HOST:PORT`` where nothing listens (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(
            f"address={address!r}: cannot reach a Ray cluster there ({reason}); start one with "
            "`ray start --head --port 6379` or give another address"
        ) from None


class RayBackend:
    """One Ray task per run, ``num_cpus = cfg.threads``, on the cluster at ``address`` (``auto``:
    the one this machine belongs to; empty: a new local runtime of ``workers`` x threads CPUs,
    all CPUs when ``workers`` is 0). A runtime this backend started is shut down by :meth:`close`."""

    name = "ray"

    def __init__(self, address: str = "", *, workers: int = 0, threads: int = 1, quiet: bool = False):
        import logging

        try:
            import ray
        except ImportError:
            raise ValueError(
                "backend='ray' needs the ray package: pip install -e '.[sweeps]' (or pip install 'ray>=2.9')"
            ) from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            if address and address != "auto" and "://" not in address:
                _probe(address)
            kwargs: dict[str, Any] = dict(
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING if quiet else logging.INFO,
            )
            if address:
                kwargs["address"] = address
            elif workers:
                kwargs["num_cpus"] = workers * threads
            try:
                ray.init(**kwargs)
            except ConnectionError as err:
                first = " ".join(str(err).split())
                raise ValueError(f"address={address!r}: cannot connect to a Ray cluster ({first})") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.capacity = max(1, cpus // threads)
        self.task = ray.remote(run_job)
        self.pending: dict[Any, list[str]] = {}

    def submit(self, run_ids: list[str], cfgs: list[BCConfig], outs: list[Path]) -> None:
        """One Ray task per job (one run, or an ensemble), with the CPUs its threads use."""
        name = run_ids[0] + (f"+{len(run_ids) - 1}" if len(run_ids) > 1 else "")
        ref = self.task.options(num_cpus=cfgs[0].threads, name=name).remote(cfgs, [str(o) for o in outs])
        self.pending[ref] = run_ids

    def running(self) -> int:
        return min(self.capacity, sum(len(ids) for ids in self.pending.values()))

    def completed(self, timeout: float) -> Iterator[tuple[str, Failure | None]]:
        if not self.pending:
            return
        done, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        for ref in done:
            run_ids = self.pending.pop(ref)
            try:
                yield from zip(run_ids, self.ray.get(ref))
            except Exception as err:  # the task's worker or node died (Ray retried it first)
                yield from ((run_id, Failure.from_exception(err)) for run_id in run_ids)

    def close(self, *, interrupted: bool = False) -> None:
        for ref in self.pending:
            self.ray.cancel(ref, force=True)
        self.pending.clear()
        if self.started:
            self.ray.shutdown()
