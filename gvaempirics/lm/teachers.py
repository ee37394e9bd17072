r"""Synthetic sources with an exactly known next-token law: the *teachers* of the language-model
experiments (paper Section 4.2).

A student's greedy continuation is scored against the teacher's greedy continuation, the
expert trajectory of autoregression (the analogue of behavior cloning, where :math:`J_H` is the
agreement over a horizon :math:`H`).

* :class:`TransformerTeacher` -- a fixed random transformer that reads the last 6 tokens;
* :class:`FlipFlop` -- the flip-flop language of Liu et al. (2023, "Exposing attention glitches
  with flip-flop language modeling"): pairs ``w b`` (write bit b), ``i b`` (ignore), ``r b``
  (read: b must equal the last written bit), so the task accuracy (correct reads) is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from gvatheory._checks import check_int, check_range

from .model import GPT, GPTConfig


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
            rows.append(seq[len(prompt) :])
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

    def __init__(
        self,
        *,
        vocab_size: int = 16,
        context: int = 6,
        n_layer: int = 1,
        n_embd: int = 64,
        gain: float = 1.5,
        sharpness: float = 4.0,
        seed: int = 0,
    ):
        check_int("vocab_size", vocab_size, 2, 26)
        check_range("gain", gain, 0.0, low_open=True)
        check_range("sharpness", sharpness, 0.0, low_open=True)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(seed)
            self.model = (
                GPT(
                    GPTConfig(
                        vocab_size=vocab_size, block_size=context, n_layer=n_layer, n_head=4, n_embd=n_embd, dropout=0.0
                    )
                )
                .eval()
                .requires_grad_(False)
            )
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
        return self.sharpness * (self.model.features(ids[:, -self.context :])[:, -1] @ self.head)

    @torch.no_grad()
    def sample(self, n_streams: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """``n_streams`` streams ``(n_streams, length)`` sampled at temperature 1, each continuing
        ``context`` uniform tokens that are then dropped (so every kept token follows the law)."""
        ids = torch.randint(self.model.config.vocab_size, (n_streams, self.context), generator=generator)
        for _ in range(length):
            probs = torch.softmax(self.logits(ids), dim=-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator)], dim=1)
        return ids[:, self.context :]

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
        return ids[:, prompts.shape[1] :]
