"""Tokenizers of the language-model corpora.

* :class:`CharTokenizer` -- character level over a fixed, sorted alphabet (the default);
* :class:`BPETokenizer` -- byte-level BPE (the GPT-2 scheme) through the ``tokenizers``
  library, learned on a corpus's training split only.

A run logs ``tokenizer.spec()`` (a JSON-ready dict) in its first record, and
:func:`tokenizer_from_spec` rebuilds the same tokenizer from it, so generation, plots and
post-hoc sweeps decode with the run's own tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gvatheory._checks import check_int


@dataclass(frozen=True)
class CharTokenizer:
    """Character-level tokenizer over a fixed, sorted alphabet ``chars``."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text``; characters outside the vocabulary raise ``ValueError`` listing them."""
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(
                f"text has characters outside the vocabulary: {', '.join(repr(c) for c in unknown)} "
                f"(the vocabulary has {len(self.chars)} characters: {self.chars!r})"
            )
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
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        check_int("bpe_vocab", vocab_size, 257)
        try:
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        except ImportError:
            raise ImportError("tokenizer='bpe' needs the tokenizers package: pip install tokenizers") from None
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        tok.train_from_iterator(text.splitlines(keepends=True), trainer)
        return cls(tok)

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
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
