"""Run directories: the unit of empirical output.

A run directory holds ``config.json`` (the full resolved configuration), ``metrics.jsonl`` (an
append-only log, one JSON record per line), ``checkpoints/`` (written to a temporary file, then
renamed, so a kill never leaves a half-written checkpoint under a real name) and ``summary.json``.

Exact resume: every checkpoint stores the byte length of the metrics log at the moment it was
taken. Resuming truncates the log back to that length, so the records the resumed process writes
again replace the lost tail one for one, and the finished log equals an uninterrupted run's.

One writer: a process writes a run directory only while it holds the directory's lock
(:meth:`RunDir.writing`, over the toolkit's one lock helper :func:`hold_lock`), and a directory
that is neither empty nor a run of the same kind is never written into. Every loader checks
that a checkpoint fits the model it is loaded into (:func:`load_checked`), so a tampered or
foreign file is refused in one line naming it.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import math
import os
import pickle
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

_CKPT = re.compile(r"^step_(\d{9})\.pt$")
LOCK = ".lock"  # the writer lock of a run directory (see RunDir.writing)


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


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files of ``path`` left by writers that were killed mid-write (their
    process is gone); a live writer's file is left alone."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (PermissionError, OverflowError):
            pass  # alive under another user, or not a pid: not ours to remove


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
    # a name of its own per writer: two processes writing one path never share a temporary file
    tmp = parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _remove_stale_temporaries(path)
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


def finite_json(obj: Any) -> Any:
    """``obj`` (dicts, lists, numbers) with NaN and inf as strings, so that its file is strict JSON."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite_json(v) for v in obj]
    return str(obj) if isinstance(obj, float) and not math.isfinite(obj) else obj


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
        if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
            # the weights-only unpickler met a global it does not allow: a crafted or foreign pickle
            raise ValueError(f"{path} is not a plain tensor file (it would run code to load)") from None
        # torch's own message spans lines (and advises weights_only=False): keep its first sentence
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        first = re.split(r"(?<=\.)\s", re.sub(r"\x1b\[[0-9;]*m", "", first))[0].rstrip(".")
        raise ValueError(
            f"{path} is corrupt or truncated and cannot be loaded ({type(err).__name__}: {first})"
        ) from None


@contextlib.contextmanager
def hold_lock(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block; raise
    ``ValueError(busy)`` at once if another process holds it. The one lock of the toolkit (run
    directories, sweeps): the kernel drops it when its holder dies, so a kill leaves no stale lock."""
    try:
        fh = open(path, "a")
    except OSError as err:
        raise ValueError(f"cannot lock {path} ({err.strerror})") from None
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(busy) from None
        yield
    finally:
        fh.close()


def load_checked(target: Any, state: Any, *, source: Path | str, what: str = "the model", params: Any = None) -> None:
    """``target.load_state_dict(state)`` for a module, an optimizer or a stabilizer, after checking
    that ``state`` fits it: the one "checkpoint fits the model" check of every loader. A state of
    other keys or shapes (an edited config, a tampered file) raises one ``ValueError`` naming
    ``source`` and what does not fit; nothing is half-loaded into a module. A stabilizer's
    state is checked against the model's named ``params`` (a module): every table of parameters
    in it (averages, snapshots) must have their shapes, which the stabilizers do not all check."""
    import torch
    from torch import nn

    def refuse(why: str):
        return ValueError(f"checkpoint {source} does not fit {what} ({why})")

    if not isinstance(state, Mapping):
        raise refuse(f"it holds a {type(state).__name__} where a state dict belongs")
    if isinstance(target, nn.Module) and (misfit := _misfit(target.state_dict(), state)):
        raise refuse(misfit)
    if params is not None and (misfit := _tables_misfit(state, dict(params.named_parameters()))):
        raise refuse(misfit)
    try:
        target.load_state_dict(state)
    except Exception as err:  # torch's RuntimeError spans many lines: say the gist on one
        raise refuse(_first_line(err)) from None
    if isinstance(target, torch.optim.Optimizer):  # torch checks the groups' sizes, not the moments' shapes
        for group in target.param_groups:
            for p in group["params"]:
                for key, value in target.state.get(p, {}).items():
                    if isinstance(value, torch.Tensor) and value.dim() and value.shape != p.shape:
                        raise refuse(
                            f"optimizer {key} of shape {tuple(value.shape)} for a parameter of {tuple(p.shape)}"
                        )


def _misfit(want: Mapping[str, Any], have: Mapping[str, Any]) -> str:
    """Missing and unexpected keys and shape mismatches of ``have`` against ``want``, briefly."""
    import torch

    show = lambda keys: ", ".join(map(str, keys[:3])) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")  # noqa: E731
    parts = []
    if missing := [k for k in want if k not in have]:
        parts.append(f"missing {show(missing)}")
    if unexpected := [k for k in have if k not in want]:
        parts.append(f"unexpected {show(unexpected)}")
    if not_tensors := [k for k in want if k in have and not isinstance(have[k], torch.Tensor)]:
        parts.append(f"not a tensor: {show(not_tensors)}")
    shapes = [
        f"{k} {tuple(have[k].shape)} vs {tuple(want[k].shape)}"
        for k in want
        if k in have and isinstance(have[k], torch.Tensor) and have[k].shape != want[k].shape
    ]
    if shapes:
        parts.append(f"shape (checkpoint vs model) of {show(shapes)}")
    return "; ".join(parts)


def _tables_misfit(obj: Any, want: Mapping[str, Any]) -> str:
    """The first table of parameters (a dict keyed by parameter names) inside ``obj`` that does
    not fit ``want``; ``""`` if all fit."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(k, str) and k in want for k in obj):
            return _misfit({k: want[k] for k in want if k in obj}, obj)
        found = (_tables_misfit(v, want) for v in obj.values())
    elif isinstance(obj, (list, tuple)):
        found = (_tables_misfit(v, want) for v in obj)
    else:
        return ""
    return next((m for m in found if m), "")


def _first_line(err: BaseException) -> str:
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


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

    def check_start(self, config: dict[str, Any], defaults: dict[str, Any] | None = None) -> bool:
        """Check, changing nothing, that :meth:`start` may write ``config`` here; ``True`` if the
        run there is to be resumed. Refused: a path that cannot be a folder; a folder that is not
        empty and not a run of this kind (no ``config.json`` of the same fields: another tool's
        files are never deleted); a run of another configuration that reached a checkpoint.
        ``defaults``: the configuration class's defaults; a run written before a field existed ran
        with its default, so a saved config that lacks it is read with the default filled in."""
        config = json.loads(json.dumps(config))
        check_creatable(self.path, "out", folder=True)
        if not self.path.is_dir():
            return False
        if not self.exists():
            others = sorted(p.name for p in self.path.iterdir() if p.name != LOCK)
            if others:
                shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
                raise ValueError(
                    f"out={self.path} is neither empty nor a run directory (no config.json; it holds {shown}): "
                    "refusing to write into it; choose another --out"
                )
            return False
        saved = self.read_config(defaults)
        if not isinstance(saved, dict) or set(saved) != set(config):
            raise ValueError(
                f"out={self.path} is not a run directory of this kind (its config.json has other fields): "
                "refusing to change its files; choose another --out"
            )
        if saved == config:
            return True
        if self.checkpoints():
            diff = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
            raise ValueError(
                f"cannot resume {self.path}: its saved config differs in {', '.join(diff)}; "
                "choose another --out to start a new run"
            )
        return False

    def start(self, config: dict[str, Any], defaults: dict[str, Any] | None = None) -> None:
        """Create the run, or continue the run already there (the one resume rule).

        A run directory with the same configuration is resumed. One with another configuration
        is refused, naming the differing fields, unless it never reached a checkpoint: then
        nothing of it is worth keeping and it is started afresh with the new configuration.
        Anything else is refused by :meth:`check_start` before a file changes. Writers hold the
        run's lock while they start and train (:meth:`writing`).
        """
        config = json.loads(json.dumps(config))
        if self.check_start(config, defaults):
            if self.read_config() != config:  # written before a field existed: record its default
                atomic_write_json(self.config_path, config)
        else:
            if self.exists():  # a run of another configuration that never checkpointed
                shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
                self.metrics_path.unlink(missing_ok=True)
            # config.json first: a kill after it leaves a run directory that the next start resumes
            atomic_write_json(self.config_path, config)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path.touch()

    @contextlib.contextmanager
    def writing(self, config: dict[str, Any], defaults: dict[str, Any] | None = None) -> Iterator[RunDir]:
        """:meth:`start` the run and hold its lock for the block: a second process writing the
        same run directory is refused in one line, and two writers never interleave a log.
        Everything :meth:`check_start` refuses is refused before the folder or its lock exist."""
        self.check_start(config, defaults)
        self.path.mkdir(parents=True, exist_ok=True)
        busy = f"out={self.path}: another process is writing this run directory (wait for it, or choose another --out)"
        with hold_lock(self.path / LOCK, busy):
            self.start(config, defaults)
            yield self

    def read_config(self, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
        """The saved configuration; with ``defaults`` (the configuration class's), a field the run
        was written before is filled in with its default, which is what the run ran with."""
        try:
            saved = json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{self.path} is not a run directory (no config.json)") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.config_path} is corrupt: {err}") from None
        if isinstance(saved, dict) and defaults:
            saved = {**json.loads(json.dumps(defaults)), **saved}
        return saved

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
        return read_checkpoint(ckpts[step])

    def save_checkpoint(self, step: int, state: dict[str, Any], *, keep: int | None = None, pin: int = -1) -> Path:
        """Write ``state`` (plus the metrics-log length) atomically; keep the newest ``keep`` files
        and the newest at or before step ``pin``."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / f"step_{step:09d}.pt"
        with open(self.metrics_path, "ab") as fh:
            os.fsync(fh.fileno())
        atomic_torch_save({**state, "step": step, "metrics_size": self.metrics_size()}, path)
        if keep is not None:
            found = self.checkpoints()
            pinned = max((c.step for c in found if c.step <= pin), default=None)
            for old in (c for c in found[:-keep] if c.step != pinned):
                old.path.unlink(missing_ok=True)
        return path

    def load_latest(self, *, truncate: bool = True) -> dict[str, Any] | None:
        """Load the newest checkpoint and truncate the metrics log to match it; ``None`` if none.

        A corrupt newest checkpoint raises ``ValueError`` naming it and the last good one, which
        is kept untouched. ``truncate=False`` leaves the log to the caller, which truncates it to
        ``state["metrics_size"]`` once the state is known to fit (so a refusal changes nothing).
        """
        ckpts = self.checkpoints()
        if not ckpts:
            return None
        try:
            state = read_checkpoint(ckpts[-1])
        except ValueError as err:
            previous = [c for c in ckpts[:-1] if _loads(c)]
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
        if truncate:
            self.truncate_metrics(size)
        return state


def read_checkpoint(ckpt: Checkpoint) -> dict[str, Any]:
    """A run's checkpoint file, checked to be one: a dict whose step counter is the step of its
    name and whose metrics-log length is a byte count; a ``ValueError`` naming the file otherwise
    (a resumed counter drives schedules and the log, so a forged one must not get that far)."""
    state = load_torch_file(ckpt.path)
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {ckpt.path} holds a {type(state).__name__}, not a run's checkpoint")
    for key, want in (("step", ckpt.step), ("metrics_size", None)):
        value = state.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or want not in (None, value):
            expected = f"step {want}, as its name says" if want is not None else "a byte count >= 0"
            raise ValueError(f"checkpoint {ckpt.path} records {key}={value!r}, not {expected}")
    return state


def _loads(ckpt: Checkpoint) -> bool:
    try:
        read_checkpoint(ckpt)
        return True
    except ValueError:
        return False


def default_run_dir(group: str, label: str, config: dict[str, Any], *, root: Path = Path("runs")) -> Path:
    """The one naming scheme of run directories: ``runs/<group>/<label>__<digest8>``, where the
    digest is of the resolved configuration, so that rerunning the same command continues the
    same run and any other configuration gets its own directory."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
    return Path(root) / group / f"{label}__{digest}"
