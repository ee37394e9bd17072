"""Run directories: the unit of empirical output.

A run directory holds ``config.json`` (the full resolved configuration), ``metrics.jsonl`` (an
append-only log, one JSON record per line), ``checkpoints/`` (written to a temporary file, then
renamed, so a kill never leaves a half-written checkpoint under a real name) and ``summary.json``.

Exact resume: every checkpoint stores the byte length of the metrics log at the moment it was
taken. Resuming truncates the log back to that length, so the records the resumed process writes
again replace the lost tail one for one, and the finished log equals an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

_CKPT = re.compile(r"^step_(\d{9})\.pt$")


def check_creatable(path: Path, what: str = "out", *, folder: bool = False) -> Path:
    """Refuse, before any work, a ``path`` that cannot be written: a file where a folder is
    wanted (``folder``) or the reverse, or a first existing ancestor that is not a writable
    folder. Raises ``ValueError`` naming the field ``what`` and ``path``; creates nothing."""
    path = Path(path)
    kind = "directory" if folder else "file path"
    if not folder and path.name in ("", ".", ".."):
        raise ValueError(f"{what}={str(path)!r} is not a file path")
    if path.exists() and path.is_dir() != folder:
        raise ValueError(f"{what}={path} is a {'file' if folder else 'directory'}: give a {kind}")
    first = path
    while not first.exists() and first != first.parent:
        first = first.parent
    if first != path and not first.is_dir():
        raise ValueError(f"{what}={path} cannot be created: {first} is not a directory")
    if not os.access(first if first.is_dir() else first.parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what}={path} cannot be written: {first} is not writable")
    return path


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """The one writer of the toolkit: ``write(fh)`` into a temporary file beside ``path``, flush
    and fsync it, rename it over ``path``, and fsync the folder, so that ``path`` holds either the
    old or the whole new content, even across a crash. Creates missing parent folders."""
    path = Path(path)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"cannot write {path}: {parent} is not a directory") from None
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a directory")
    tmp = parent / f".{path.name}.tmp"
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(obj: Any, path: Path) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_torch_file(path: Path) -> Any:
    """``torch.load(weights_only=True)`` that names the file when it is missing, truncated or corrupt."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated / corrupt zip archives
        # torch's own message spans lines (and advises weights_only=False): keep its first line only
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        first = re.sub(r"\x1b\[[0-9;]*m", "", first)[:160]
        raise ValueError(
            f"{path} is corrupt or truncated and cannot be loaded ({type(err).__name__}: {first})"
        ) from None


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

    def start(self, config: dict[str, Any]) -> None:
        """Create the run, or continue the run already there (the one resume rule).

        A run directory with the same configuration is resumed. One with another configuration
        is refused, naming the differing fields, unless it never reached a checkpoint: then
        nothing of it is worth keeping and it is started afresh with the new configuration.
        """
        config = json.loads(json.dumps(config))
        check_creatable(self.path, "out", folder=True)
        if self.exists():
            saved = self.read_config()
            if saved == config:
                return
            if self.checkpoints():
                diff = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
                raise ValueError(
                    f"cannot resume {self.path}: its saved config differs in {', '.join(diff)}; "
                    "choose another --out to start a new run"
                )
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
            self.metrics_path.unlink(missing_ok=True)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path.touch()
        atomic_write_json(self.config_path, config)

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{self.path} is not a run directory (no config.json)") from None
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
            for number, line in enumerate(fh, 1):
                if not line.endswith("\n"):
                    break
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{self.metrics_path}, line {number}: not a JSON record ({err.msg})") from None
                if kind is None or rec.get("kind") == kind:
                    yield rec

    # ------------------------------------------------------------ checkpoints
    def checkpoints(self) -> list[Checkpoint]:
        """All complete checkpoints, oldest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = [Checkpoint(int(m.group(1)), p) for p in self.checkpoint_dir.iterdir() if (m := _CKPT.match(p.name))]
        return sorted(found, key=lambda c: c.step)

    def load_step(self, step: int = -1) -> dict[str, Any]:
        """The checkpoint of ``step`` (``-1``: the newest), read only; a ``ValueError`` naming the
        steps that have one if ``step`` has none."""
        ckpts = {c.step: c for c in self.checkpoints()}
        if not ckpts:
            raise ValueError(f"{self.path} has no checkpoint yet")
        step = max(ckpts) if step == -1 else step
        if step not in ckpts:
            raise ValueError(
                f"step={step} has no checkpoint in {self.path}: steps with one are {', '.join(map(str, sorted(ckpts)))}"
            )
        return load_torch_file(ckpts[step].path)

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
            hint = (
                f"the last good checkpoint {previous[-1].path} is kept; delete the corrupt file to resume from it"
                if previous
                else "no earlier good checkpoint exists"
            )
            raise ValueError(f"{err}; {hint}") from None
        size, have = int(state["metrics_size"]), self.metrics_size()
        if have < size:
            raise ValueError(
                f"{self.metrics_path} holds {have} bytes but checkpoint {ckpts[-1].path.name} recorded "
                f"{size}: the log lost records, so the run cannot resume exactly; nothing was changed"
            )
        self.truncate_metrics(size)
        return state


def _loads(path: Path) -> bool:
    try:
        load_torch_file(path)
        return True
    except ValueError:
        return False


def default_run_dir(group: str, label: str, config: dict[str, Any], *, root: Path = Path("runs")) -> Path:
    """The one naming scheme of run directories: ``runs/<group>/<label>__<digest8>``, where the
    digest is of the resolved configuration, so that rerunning the same command continues the
    same run and any other configuration gets its own directory."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
    return Path(root) / group / f"{label}__{digest}"
