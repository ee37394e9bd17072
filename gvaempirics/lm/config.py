"""The run configuration :class:`LMConfig` and named sizes of it (:data:`PRESETS`).

Imports no torch, so the command line can be built without it.

Each is the same code path at another size (measured on 2 loaded CPU cores; see docs/lm.md):

* ``tiny`` -- CI smoke tests: trains and generates in a few seconds;
* ``reproduce`` -- the ``gva reproduce --quick`` LM section: the ``quick`` setting with fewer
  steps and evaluations, so the whole section takes a few minutes;
* ``quick`` -- the documented figures: a ~0.1M-parameter student of the transformer teacher,
  about 1-2 minutes per run;
* ``shakespeare`` -- a ~0.35M-parameter character model of the Shakespeare corpus, several
  minutes per run. (The class defaults, ~0.8M parameters, are for longer runs.)
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Any

from gvatheory._checks import check_choice, check_int, check_positive, check_range

from ..config import StabilizerOptions, option

CORPORA = ("shakespeare", "tinystories", "teacher", "flipflop")
TEXT_CORPORA = ("shakespeare", "tinystories")
TOKENIZERS = ("char", "bpe")


def check_tokenizer(corpus: str, tokenizer: str, bpe_vocab: int) -> None:
    """``tokenizer`` is known, and BPE (with at least one merge) only for the text corpora."""
    check_choice("tokenizer", tokenizer, TOKENIZERS)
    if tokenizer == "bpe":
        check_int("bpe_vocab", bpe_vocab, 257)
        if corpus not in TEXT_CORPORA:
            raise ValueError(f"tokenizer='bpe' applies to the text corpora ({', '.join(TEXT_CORPORA)}); "
                             f"corpus={corpus!r} has its own fixed token set")
LR_SCHEDULES = ("constant", "cosine", "wsd")


@dataclass(frozen=True)
class LMConfig(StabilizerOptions):
    """A language-model run. Every field is a ``gva lm train`` flag and a config-file key
    (the stabilizer fields come from :class:`~gvaempirics.config.StabilizerOptions`)."""

    corpus: str = option("shakespeare", "training corpus", choices=CORPORA)
    data_path: str = option("", "TinyStories .txt file or directory (corpus=tinystories)")
    corpus_size: int = option(200_000, "characters kept (tinystories) or tokens generated (synthetic corpora)")
    corpus_seed: int = option(0, "seed of the synthetic corpora and teacher")
    val_fraction: float = option(0.1, "fraction of the corpus held out for validation (its end)")
    tokenizer: str = option("char", "character level, or byte-level BPE learned on the training split (text corpora)",
                            choices=TOKENIZERS)
    bpe_vocab: int = option(512, "BPE vocabulary: the 256 bytes plus bpe_vocab - 256 merges")
    n_layer: int = option(4, "transformer blocks")
    n_head: int = option(4, "attention heads")
    n_embd: int = option(128, "embedding width C")
    block_size: int = option(128, "context window T")
    dropout: float = option(0.0, "dropout probability")
    lr: float = option(1e-3, "peak learning rate eta")
    lr_schedule: str = option("constant", "constant, cosine to zero, or warmup-stable-decay", choices=LR_SCHEDULES)
    warmup: int = option(100, "linear warmup steps (all schedules)")
    decay_fraction: float = option(0.2, "wsd: final fraction of the steps decayed linearly to zero")
    weight_decay: float = option(0.1, "AdamW weight decay")
    beta2: float = option(0.99, "AdamW beta2")
    grad_clip: float = option(1.0, "gradient norm clip (0: none)")
    batch_size: int = option(32, "sequences per minibatch")
    steps: int = option(3000, "optimizer steps")
    ema_gamma_min: float = option(0.01, "power EMA floor gamma_min; the constant EMA's gamma; BEMA's EMA floor")
    eval_every: int = option(100, "evaluate raw and stabilized weights every this many steps")
    zoom_windows: tuple[int, ...] = option((), "first steps of windows evaluated at every step")
    zoom_length: int = option(20, "consecutive steps in each zoom window")
    eval_windows: int = option(128, "validation windows for the validation loss (fixed set)")
    n_prompts: int = option(32, "prompts of the fixed prompt set (taken from the validation split)")
    prompt_len: int = option(16, "prompt length in tokens")
    H: int = option(48, "greedy continuation length")
    eval_seed: int = option(12345, "seed of the validation windows and prompts")
    checkpoint_every: int = option(500, "steps between checkpoints (always at the end)")
    seed: int = option(1, "seed of initialization, minibatches and dropout")
    threads: int = option(2, "torch threads")
    device: str = option("cpu", "torch device: cpu, cuda, cuda:N, or auto (cuda when available)")

    def __post_init__(self):
        super().__post_init__()
        check_choice("corpus", self.corpus, CORPORA)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_tokenizer(self.corpus, self.tokenizer, self.bpe_vocab)
        for name in ("corpus_size", "batch_size", "steps", "eval_every", "zoom_length", "eval_windows",
                     "n_prompts", "prompt_len", "H", "checkpoint_every", "threads"):
            check_int(name, getattr(self, name), 1)
        for name in ("corpus_seed", "warmup", "eval_seed", "seed"):
            check_int(name, getattr(self, name), 0)
        check_positive("lr", self.lr)
        check_range("decay_fraction", self.decay_fraction, 0.0, 1.0, low_open=True)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("beta2", self.beta2, 0.0, 1.0, high_open=True)
        check_range("grad_clip", self.grad_clip, 0.0)
        check_int("prompt_len", self.prompt_len, 1, self.block_size)
        for start in self.zoom_windows:
            check_int("zoom_windows", start, 0, self.steps)
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        for name in ("n_layer", "n_head", "n_embd", "block_size"):
            check_int(name, getattr(self, name), 1)
        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", self.device):
            raise ValueError(f"device={self.device!r} is out of range: use cpu, cuda, cuda:N or auto")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")

    def eval_steps(self) -> list[int]:
        """Evaluated iterates: 0, every ``eval_every``, the zoom windows, and the last one."""
        steps = set(range(0, self.steps + 1, self.eval_every)) | {self.steps}
        for start in self.zoom_windows:
            steps |= set(range(start, min(start + self.zoom_length, self.steps + 1)))
        return sorted(steps)



_TEACHER = dict(corpus="teacher", n_layer=2, n_head=4, n_embd=64, block_size=64, lr=3e-3, warmup=50,
                batch_size=32, eval_windows=64, n_prompts=32, prompt_len=16, H=32, threads=1)

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(corpus="teacher", corpus_size=4000, n_layer=1, n_head=2, n_embd=16, block_size=16, lr=3e-3,
                 warmup=2, steps=20, batch_size=8, eval_every=10, zoom_windows=(12,), zoom_length=4,
                 eval_windows=8, n_prompts=4, prompt_len=8, H=8, checkpoint_every=10, threads=1),
    "reproduce": dict(_TEACHER, corpus_size=30_000, steps=600, eval_every=50, zoom_windows=(560,),
                      zoom_length=20, checkpoint_every=300),
    "quick": dict(_TEACHER, corpus_size=50_000, steps=1200, eval_every=50, zoom_windows=(600, 1100),
                  zoom_length=20, checkpoint_every=300),
    "shakespeare": dict(corpus="shakespeare", n_layer=3, n_head=4, n_embd=96, block_size=64, lr=3e-3, warmup=50,
                        steps=1500, batch_size=32, eval_every=100, zoom_windows=(1200,), zoom_length=20,
                        eval_windows=64, n_prompts=32, prompt_len=32, H=48, checkpoint_every=500, threads=1),
}


def preset(name: str, **overrides: Any) -> dict[str, Any]:
    """The field values of preset ``name`` updated by ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is not one of {', '.join(PRESETS)}")
    return {**PRESETS[name], **overrides}
