"""The run configuration :class:`LMConfig` and named sizes of it (:data:`PRESETS`).

Imports no torch, so the command line can be built without it. :class:`CorpusOptions` holds the
fields that choose a corpus and its tokenizer; ``gva lm data`` takes them alone.

Each preset is the same code path at another size (docs/lm.md reports the wall times of
``quick`` and ``shakespeare`` runs):

* ``tiny`` -- CI smoke tests: sized for tests, which train and generate with it;
* ``reproduce`` -- the ``gva reproduce --quick`` LM section: the ``quick`` setting with fewer
  steps and evaluations, so that the quick report stays short;
* ``quick`` -- the documented figures: a ~0.1M-parameter student of the transformer teacher,
  small enough to run on a laptop's CPU;
* ``shakespeare`` -- a ~0.35M-parameter character model of the Shakespeare corpus, longer than
  ``quick``. (The class defaults, ~0.8M parameters, are for longer runs.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gvatheory._checks import check_choice, check_int
from gvatheory.config import Config, option, redefault

from ..config import TrainingOptions

CORPORA = ("shakespeare", "tinystories", "teacher", "flipflop")
TEXT_CORPORA = ("shakespeare", "tinystories")
TOKENIZERS = ("char", "bpe")
DEVICE = re.compile(r"cpu|auto|cuda(:\d+)?")


def check_tokenizer(corpus: str, tokenizer: str, bpe_vocab: int) -> None:
    """``tokenizer`` is known, and BPE (with at least one merge) only for the text corpora."""
    check_choice("tokenizer", tokenizer, TOKENIZERS)
    if tokenizer == "bpe":
        check_int("bpe_vocab", bpe_vocab, 257)
        if corpus not in TEXT_CORPORA:
            raise ValueError(
                f"tokenizer='bpe' applies to the text corpora ({', '.join(TEXT_CORPORA)}); "
                f"corpus={corpus!r} has its own fixed token set"
            )


@dataclass(frozen=True)
class CorpusOptions(Config):
    """Which corpus, how much of it, and its tokenizer (:func:`gvaempirics.lm.corpus.load_corpus`)."""

    corpus: str = option("shakespeare", "training corpus", choices=CORPORA)
    data_path: str = option("", "TinyStories .txt file or directory (corpus=tinystories)", metavar="PATH")
    corpus_size: int = option(200_000, "characters kept (tinystories) or tokens generated (synthetic corpora)", low=1)
    corpus_seed: int = option(0, "seed of the synthetic corpora and teacher", low=0)
    val_fraction: float = option(
        0.1,
        "fraction of the corpus held out for validation (its end)",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )
    tokenizer: str = option(
        "char", "character level, or byte-level BPE learned on the training split (text corpora)", choices=TOKENIZERS
    )
    bpe_vocab: int = option(512, "BPE vocabulary: the 256 bytes plus bpe_vocab - 256 merges", low=257)

    def check(self) -> None:
        super().check()
        check_tokenizer(self.corpus, self.tokenizer, self.bpe_vocab)
        if self.corpus == "tinystories" and not self.data_path:
            raise ValueError(
                "data_path='' is not valid with corpus='tinystories': give a TinyStories .txt file or directory"
            )


@dataclass(frozen=True)
class LMConfig(TrainingOptions, CorpusOptions):
    """A language-model run. Every field is a ``gva lm train`` flag and a config-file key (the
    optimizer, schedule, evaluation and stabilizer fields come from
    :class:`~gvaempirics.config.TrainingOptions`, given the LM's default here by
    :func:`gvatheory.config.redefault` where it differs)."""

    # shared fields with the LM's defaults
    optimizer: str = redefault(TrainingOptions, "optimizer", "adamw")
    eta: float = redefault(TrainingOptions, "eta", 1e-3)
    warmup: int = redefault(TrainingOptions, "warmup", 100, help="linear warmup steps (all schedules)")
    weight_decay: float = redefault(TrainingOptions, "weight_decay", 0.1)
    beta2: float = redefault(TrainingOptions, "beta2", 0.99)
    grad_clip: float = redefault(TrainingOptions, "grad_clip", 1.0)
    batch_size: int = redefault(TrainingOptions, "batch_size", 32, help="sequences per minibatch")
    steps: int = redefault(TrainingOptions, "steps", 3000, high=None)  # LM runs have never had the 10**9 ceiling
    eval_every: int = redefault(TrainingOptions, "eval_every", 100)
    zoom_length: int = redefault(TrainingOptions, "zoom_length", 20)
    checkpoint_every: int = redefault(TrainingOptions, "checkpoint_every", 500)
    gamma_min: float = redefault(TrainingOptions, "gamma_min", 0.01)
    # the model
    n_layer: int = option(4, "transformer blocks", low=1)
    n_head: int = option(4, "attention heads", low=1)
    n_embd: int = option(128, "embedding width C (a multiple of n_head)", low=1)
    block_size: int = option(128, "context window T", low=1)
    dropout: float = option(0.0, "dropout probability", low=0.0, high=1.0, high_open=True)
    # evaluation
    eval_windows: int = option(128, "validation windows for the validation loss (fixed set)", low=1)
    n_prompts: int = option(32, "prompts of the fixed prompt set (taken from the validation split)", low=1)
    prompt_len: int = option(16, "prompt length in tokens (at most block_size)", low=1)
    H: int = option(48, "greedy continuation length", low=1)
    eval_seed: int = option(12345, "seed of the validation windows and prompts", low=0)
    device: str = option("cpu", "torch device: cpu, cuda, cuda:N, or auto (cuda when available)", metavar="DEVICE")

    def check(self) -> None:
        super().check()
        if not DEVICE.fullmatch(self.device):
            raise ValueError(f"device={self.device!r} is out of range: use cpu, cuda, cuda:N or auto")
        if self.prompt_len > self.block_size:
            raise ValueError(
                f"prompt_len={self.prompt_len} is out of range: must be in [1, block_size={self.block_size}]"
            )
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not valid: must be a multiple of n_head={self.n_head}")

    def token_positions(self) -> tuple[int, int]:
        """``(training, evaluation)``: the token positions the run's forward passes process, the
        measure of its work. Each evaluated iterate, raw and averaged, reads the validation
        windows and generates ``H`` tokens per prompt, each a forward pass over the context so far
        (at most ``block_size``)."""
        train = self.steps * self.grad_accum * self.batch_size * self.block_size
        context = min(self.block_size, self.prompt_len + self.H)
        per_eval = self.eval_windows * self.block_size + self.n_prompts * self.H * context
        return train, 2 * len(self.eval_steps()) * per_eval


_TEACHER = dict(
    corpus="teacher",
    n_layer=2,
    n_head=4,
    n_embd=64,
    block_size=64,
    eta=3e-3,
    warmup=50,
    batch_size=32,
    eval_windows=64,
    n_prompts=32,
    prompt_len=16,
    H=32,
    threads=1,
)

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        corpus="teacher",
        corpus_size=4000,
        n_layer=1,
        n_head=2,
        n_embd=16,
        block_size=16,
        eta=3e-3,
        warmup=2,
        steps=20,
        batch_size=8,
        eval_every=10,
        zoom_windows=(12,),
        zoom_length=4,
        eval_windows=8,
        n_prompts=4,
        prompt_len=8,
        H=8,
        checkpoint_every=10,
        threads=1,
    ),
    "reproduce": dict(
        _TEACHER,
        corpus_size=30_000,
        steps=600,
        eval_every=50,
        zoom_windows=(560,),
        zoom_length=20,
        checkpoint_every=300,
    ),
    "quick": dict(
        _TEACHER,
        corpus_size=50_000,
        steps=1200,
        eval_every=50,
        zoom_windows=(600, 1100),
        zoom_length=20,
        checkpoint_every=300,
    ),
    "shakespeare": dict(
        corpus="shakespeare",
        n_layer=3,
        n_head=4,
        n_embd=96,
        block_size=64,
        eta=3e-3,
        warmup=50,
        steps=1500,
        batch_size=32,
        eval_every=100,
        zoom_windows=(1200,),
        zoom_length=20,
        eval_windows=64,
        n_prompts=32,
        prompt_len=32,
        H=48,
        checkpoint_every=500,
        threads=1,
    ),
}


def preset(name: str, **overrides: Any) -> dict[str, Any]:
    """The field values of preset ``name`` updated by ``overrides`` (checked when the
    :class:`LMConfig` is built from them)."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is not valid: choose one of {', '.join(PRESETS)}")
    return {**PRESETS[name], **overrides}
