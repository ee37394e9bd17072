"""Run directories: the unit of empirical output.

A run directory holds ``config.json`` (the full resolved configuration), ``metrics.jsonl`` (an
append-only log, one JSON record per line), ``checkpoints/`` (written to a temporary file, then
renamed, so a kill never leaves a half-written checkpoint under a real name) and ``summary.json``.

Exact resume: every checkpoint stores the byte length of the metrics log at the moment it was
taken. Resuming truncates the log back to that length, so the records the resumed process writes
again replace the lost tail one for one, and the finished log equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

_CKPT = re.compile(r"^step_(\d{9})\.pt$")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_torch_file(path: Path) -> Any:
    """``torch.load(weights_only=True)`` that names the file when it is missing, truncated or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated / corrupt zip archives
        raise ValueError(f"{path} is corrupt or truncated and cannot be loaded ({type(err).__name__}: {err})") from None


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


class RunDir:
    """A run directory at ``path``; see the module docstring for the layout."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # ------------------------------------------------------------ config and summary
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def start(self, config: dict[str, Any], *, resume: bool) -> None:
        """Create the run, or check that a resumed run has the same configuration."""
        if self.exists():
            saved = self.read_config()
            if not resume:
                raise ValueError(f"run directory {self.path} already holds a run: pass resume to continue it, or choose another directory")
            if saved != json.loads(json.dumps(config)):
                diff = sorted(k for k in set(saved) | set(config) if saved.get(k) != json.loads(json.dumps(config.get(k))))
                raise ValueError(f"cannot resume {self.path}: its saved config differs in {', '.join(diff)}")
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_path, config)
        self.metrics_path.touch()

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path} is not a run directory (no config.json)") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.config_path} is corrupt: {err}") from None

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / "summary.json", summary)

    def read_summary(self) -> dict[str, Any]:
        return json.loads((self.path / "summary.json").read_text())

    # ------------------------------------------------------------ metrics log
    def log(self, record: dict[str, Any]) -> None:
        """Append one record (a flat JSON object). Records after the last checkpoint may be lost
        in a crash; resuming writes them again, so the log is only synced at checkpoints."""
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")

    def metrics_size(self) -> int:
        return self.metrics_path.stat().st_size if self.metrics_path.exists() else 0

    def truncate_metrics(self, size: int) -> None:
        with open(self.metrics_path, "r+b") as fh:
            fh.truncate(size)

    def metrics(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Records of the log (of one ``kind`` if given); a torn last line from a kill is skipped."""
        if not self.metrics_path.exists():
            return
        with open(self.metrics_path) as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break
                rec = json.loads(line)
                if kind is None or rec.get("kind") == kind:
                    yield rec

    # ------------------------------------------------------------ checkpoints
    def checkpoints(self) -> list[Checkpoint]:
        """All complete checkpoints, oldest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = [Checkpoint(int(m.group(1)), p) for p in self.checkpoint_dir.iterdir() if (m := _CKPT.match(p.name))]
        return sorted(found, key=lambda c: c.step)

    def save_checkpoint(self, step: int, state: dict[str, Any], *, keep: int | None = None) -> Path:
        """Write ``state`` (plus the metrics-log length) atomically; keep the newest ``keep`` files."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / f"step_{step:09d}.pt"
        with open(self.metrics_path, "ab") as fh:
            os.fsync(fh.fileno())
        atomic_torch_save({**state, "step": step, "metrics_size": self.metrics_size()}, path)
        if keep is not None:
            for old in self.checkpoints()[:-keep]:
                old.path.unlink(missing_ok=True)
        return path

    def load_latest(self) -> dict[str, Any] | None:
        """Load the newest checkpoint and truncate the metrics log to match it; ``None`` if none.

        A corrupt newest checkpoint raises ``ValueError`` naming it and the last good one, which
        is kept untouched.
        """
        ckpts = self.checkpoints()
        if not ckpts:
            return None
        try:
            state = load_torch_file(ckpts[-1].path)
        except ValueError as err:
            previous = [c for c in ckpts[:-1] if _loads(c.path)]
            hint = f"the last good checkpoint {previous[-1].path} is kept; delete the corrupt file to resume from it" if previous else "no earlier good checkpoint exists"
            raise ValueError(f"{err}; {hint}") from None
        self.truncate_metrics(int(state["metrics_size"]))
        return state


def _loads(path: Path) -> bool:
    try:
        load_torch_file(path)
        return True
    except ValueError:
        return False
