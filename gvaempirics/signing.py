"""Signatures that tell the toolkit's own run manifests from copies someone else edited.

A SHA-256 list beside the files it lists proves nothing about who wrote them: whoever can write
the files can write matching digests. A manifest is therefore signed with an HMAC-SHA256 under a
per-user secret key kept *outside* every run directory (``$GVA_KEY_FILE``, else
``$XDG_CONFIG_HOME/gva/run-key``, else ``~/.config/gva/run-key``; created on first use, mode
0600). A directory copied from elsewhere, or edited, fails the check unless its author holds the
same key. The toolkit loads pickles (stable-baselines3 checkpoints) only from a manifest whose
signature checks (:mod:`gvaempirics.bc.expert_runs`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

KEY_ENV = "GVA_KEY_FILE"
FIELD = "signature"


def key_path() -> Path:
    """Where this user's key is kept (see the module docstring)."""
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "gva" / "run-key"


def _key(*, create: bool) -> bytes | None:
    path = key_path()
    if not path.is_file():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(os.urandom(32).hex() + "\n")
        try:
            os.link(tmp, path)  # never replaces a key another process created meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_text().strip()
    if len(key) < 32:
        raise ValueError(f"{path} is not a key (at least 32 hex characters; delete it to make a new one)")
    return key.encode()


def _digest(key: bytes, doc: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in doc.items() if k != FIELD}, sort_keys=True, separators=(",", ":"))
    return "hmac-sha256:" + hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def sign(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with its signature under this user's key (made if there is none yet)."""
    return {**doc, FIELD: _digest(_key(create=True), doc)}


def check_signed(doc: dict[str, Any], where: Path, *, inside: Path) -> None:
    """Refuse, with a ``ValueError`` naming ``where``, a ``doc`` that is unsigned or not signed
    with this user's key, or a key kept inside the directory ``inside`` that it vouches for."""
    path = key_path()
    if path.resolve().is_relative_to(Path(inside).resolve()):
        raise ValueError(f"{KEY_ENV}={path} lies inside {inside}: the key must be kept outside run directories")
    key = _key(create=False)
    given = doc.get(FIELD)
    if key is None or not isinstance(given, str) or not hmac.compare_digest(given, _digest(key, doc)):
        why = "is not signed" if given is None else f"is not signed with this user's key ({path})"
        raise ValueError(f"{where} {why}: it was written elsewhere or edited since the toolkit wrote it")
