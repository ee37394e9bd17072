r"""Next-token training with a stabilizer beside the raw iterate, and butterfly-effect evaluation.

The paper's autoregressive setting (Section 4.2, Figure 4, result R5) on the shared training
loop (:class:`gvaempirics.training.Trainer`): AdamW on the next-token cross-entropy, an average
of the iterates maintained by :mod:`gvaempirics.stabilizers` (by default the power EMA
:math:`\bar\theta_t = (1-\gamma_t)\bar\theta_{t-1} + \gamma_t\theta_t`; also constant EMA,
Polyak, BEMA, post-hoc EMA), and, at evaluated iterates (every ``eval_every`` steps, and every
step inside zoom windows), for both the raw and the averaged weights:

* the validation loss on a fixed set of windows;
* greedy continuations of length ``H`` of a fixed prompt set (logged as token ids), from which
  :mod:`gvaempirics.lm.generations` measures divergence between neighbouring iterates;
* with a synthetic teacher, the exact-match length against the teacher's greedy continuation
  and the task accuracy (flip-flop: correct reads; transformer teacher: fraction of
  continuation tokens equal to the teacher's).

Learning-rate decay is the other stabilizer the paper compares with: a run with
``schedule="cosine"`` or ``"wsd"`` is the decayed-LR control. A run directory
(:class:`~gvaempirics.rundir.RunDir`) holds everything; a killed run resumes to the same
numbers. :func:`load_model` and :func:`generate` read a finished (or running) run's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gvatheory._checks import check_int
from gvatheory.config import build_config, to_dict

from ..rundir import RunDir, check_creatable, load_checked
from ..stabilizers import make_stabilizer
from ..training import Trainer
from .config import LMConfig
from .corpus import Corpus, load_corpus
from .model import GPT, GPTConfig
from .results import summarize
from .teachers import FlipFlop, TransformerTeacher
from .tokenizers import tokenizer_from_spec


def gpt_config(cfg: LMConfig, vocab_size: int) -> GPTConfig:
    return GPTConfig(
        vocab_size=vocab_size,
        block_size=cfg.block_size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        dropout=cfg.dropout,
    )


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; a CUDA device that is not there is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={name!r} is not available here (torch.cuda.is_available() is False); use cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={name!r} is not available here: {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_inputs(cfg: LMConfig, outdir: Path) -> torch.device:
    """What can be checked without building the corpus, in this order: the device, the
    TinyStories path, and that ``outdir`` is (or can be created as) a folder; the device."""
    device = resolve_device(cfg.device)
    if cfg.corpus == "tinystories" and not Path(cfg.data_path).exists():
        raise ValueError(
            f"data_path={cfg.data_path!r}: TinyStories corpus {cfg.data_path} does not exist "
            "(give a .txt file or a directory of them)"
        )
    check_creatable(outdir, "out", folder=True)
    return device


def make_corpus(cfg: LMConfig, *, quiet: bool = False) -> Corpus:
    corpus = load_corpus(
        cfg.corpus,
        path=cfg.data_path,
        val_fraction=cfg.val_fraction,
        size=cfg.corpus_size,
        seed=cfg.corpus_seed,
        tokenizer=cfg.tokenizer,
        bpe_vocab=cfg.bpe_vocab,
        quiet=quiet,
    )
    corpus.check_context(cfg.block_size)
    return corpus


@dataclass(frozen=True)
class EvalSet:
    """The fixed evaluation inputs: validation windows ``(N, T+1)``, prompts ``(P, prompt_len)``,
    the teacher's continuations ``(P, H)`` (or ``None``), a mask of determined targets
    (flip-flop reads) over the windows' target positions ``(N, T)`` (or ``None``), and the
    transformer teacher's own loss on the windows (or ``None``), the floor of the validation loss."""

    windows: torch.Tensor
    prompts: torch.Tensor
    expert: torch.Tensor | None
    read_mask: torch.Tensor | None
    floor: float | None = None

    def to(self, device: torch.device) -> EvalSet:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return EvalSet(move(self.windows), move(self.prompts), move(self.expert), move(self.read_mask), self.floor)

    @classmethod
    def build(cls, corpus: Corpus, cfg: LMConfig) -> EvalSet:
        gen = np.random.default_rng(cfg.eval_seed)
        val = corpus.val
        T = cfg.block_size
        starts = gen.integers(0, len(val) - T, size=cfg.eval_windows)
        windows = torch.as_tensor(np.stack([val[s : s + T + 1] for s in starts]))
        p_starts = gen.integers(1, len(val) - cfg.prompt_len + 1, size=cfg.n_prompts)
        if isinstance(corpus.teacher, FlipFlop):
            # prompts start at a pair boundary (even absolute position) so the automaton state is defined
            p_starts -= (p_starts + len(corpus.train)) % 2
        prompts = torch.as_tensor(np.stack([val[s : s + cfg.prompt_len] for s in p_starts]))
        expert = None if corpus.teacher is None else corpus.teacher.greedy(prompts, cfg.H)
        read_mask = None
        if isinstance(corpus.teacher, FlipFlop):
            full = corpus.teacher.read_targets(val, offset=len(corpus.train))
            read_mask = torch.as_tensor(np.stack([full[s + 1 : s + T + 1] for s in starts]))
        floor = corpus.teacher.loss(windows) if isinstance(corpus.teacher, TransformerTeacher) else None
        return cls(windows, prompts, expert, read_mask, floor)


@torch.no_grad()
def evaluate(model: GPT, ev: EvalSet, H: int, chunk: int = 64) -> dict[str, Any]:
    """Validation loss, greedy continuations ``(P, H)`` and, with a teacher, exact-match lengths
    and task accuracy, of ``model``'s current weights."""
    was = model.training
    model.eval()
    total, correct, n_read = 0.0, 0, 0
    for i in range(0, len(ev.windows), chunk):
        w = ev.windows[i : i + chunk]  # (b, T+1)
        logits, loss = model(w[:, :-1], w[:, 1:])  # (b, T, V)
        total += float(loss) * len(w)
        if ev.read_mask is not None:
            m = ev.read_mask[i : i + chunk]  # (b, T)
            correct += int(((logits.argmax(-1) == w[:, 1:]) & m).sum())
            n_read += int(m.sum())
    gen = model.greedy(ev.prompts, H)  # (P, H)
    model.train(was)
    out: dict[str, Any] = {"val": total / len(ev.windows), "gen": gen.tolist()}
    if ev.expert is not None:
        match = ev.expert == gen  # (P, H)
        out["exact"] = torch.where(match.all(1), H, (~match).int().argmax(1)).tolist()
        out["task"] = correct / n_read if ev.read_mask is not None else float(match.float().mean())
    return out


class LMTrainer(Trainer):
    """One language-model run on the shared training loop: next-token cross-entropy on random
    windows of the training split; evaluations of raw and averaged weights on :class:`EvalSet`."""

    def __init__(self, cfg: LMConfig, run: RunDir, corpus: Corpus, *, quiet: bool = False):
        corpus.check_context(cfg.block_size)
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)  # initialization and dropout
        device = resolve_device(cfg.device)
        model = GPT(gpt_config(cfg, corpus.tokenizer.vocab_size)).to(device)
        super().__init__(cfg, run, model, device=device, quiet=quiet)
        self.name = f"lm {cfg.corpus}"
        self.corpus = corpus
        self.train_ids = torch.as_tensor(corpus.train).to(device)
        self.eval_inputs = EvalSet.build(corpus, cfg).to(device)

    def minibatch_loss(self) -> torch.Tensor:
        T, device = self.cfg.block_size, self.device
        # window starts come from the CPU generator on every device: the same data order anywhere
        starts = torch.randint(len(self.train_ids) - T, (self.cfg.batch_size,), generator=self.generator).to(device)
        batch = self.train_ids[starts[:, None] + torch.arange(T + 1, device=device)]  # (B, T+1)
        _, loss = self.model(batch[:, :-1], batch[:, 1:])
        return loss

    def record(self) -> None:
        """Evaluate raw and averaged weights at the current step and log both."""
        H = self.cfg.H
        self.run.log({"kind": "eval", "step": self.step, "weights": "raw", **evaluate(self.model, self.eval_inputs, H)})
        with self.stabilizer.swap():
            self.run.log(
                {
                    "kind": "eval",
                    "step": self.step,
                    "weights": self.cfg.stabilizer,
                    **evaluate(self.model, self.eval_inputs, H),
                }
            )

    def meta(self) -> dict[str, Any]:
        ev = self.eval_inputs
        return {
            "n_params": self.model.n_params(),
            "tokenizer": self.corpus.tokenizer.spec(),
            "prompts": ev.prompts.tolist(),
            "expert": None if ev.expert is None else ev.expert.tolist(),
            "val_floor": ev.floor,
        }

    def summarize(self) -> dict[str, Any]:
        return summarize(self.run)


def train(cfg: LMConfig, outdir: Path, *, quiet: bool = False, stop_at: int | None = None) -> dict[str, Any]:
    """Train ``cfg`` into run directory ``outdir``; return the summary.

    Everything is checked before anything is created: the device (before any corpus work), the
    data path and ``outdir``, then the corpus (its size against the context). ``outdir`` then
    follows the one rule of :meth:`RunDir.start`: the same configuration resumes, another one is
    refused unless the run never reached a checkpoint. ``stop_at`` stops after that step, as a
    kill would (tests).
    """
    check_inputs(cfg, outdir)
    RunDir(outdir).check_start(to_dict(cfg))  # before the corpus is built
    corpus = make_corpus(cfg, quiet=quiet)
    with RunDir(outdir).writing(to_dict(cfg)) as run:
        return LMTrainer(cfg, run, corpus, quiet=quiet).fit(stop_at=stop_at)


# ---------------------------------------------------------------- reading a run's weights


def run_config(run: RunDir) -> LMConfig:
    """The :class:`LMConfig` saved in a run directory."""
    return build_config(LMConfig, run.read_config(), source=f"{run.config_path}")


def load_state(path: Path | RunDir) -> tuple[LMConfig, GPT, Any, Any]:
    """A run's config, its latest checkpoint's raw model and stabilizer (state loaded), and its
    tokenizer."""
    run = path if isinstance(path, RunDir) else RunDir(path)
    cfg = run_config(run)
    meta = next(iter(run.metrics("meta")), None)
    ckpts = run.checkpoints()
    if meta is None or not ckpts:
        raise ValueError(f"run directory {run.path} has no checkpoint yet: train it first")
    tokenizer = tokenizer_from_spec(meta["tokenizer"])
    state = run.load_step(-1)
    model = GPT(gpt_config(cfg, tokenizer.vocab_size))
    load_checked(model, state.get("model"), source=ckpts[-1].path)
    stabilizer = make_stabilizer(cfg, model)
    load_checked(stabilizer, state.get("stabilizer"), source=ckpts[-1].path, what="the stabilizer", params=model)
    return cfg, model.eval(), stabilizer, tokenizer


def load_model(path: Path | RunDir, *, weights: str = "avg") -> tuple[GPT, Any]:
    """The latest checkpoint's ``raw`` weights or its stabilizer's averaged weights (``avg``),
    and the run's tokenizer."""
    if weights not in ("raw", "avg"):
        raise ValueError(f"weights={weights!r} is not valid: choose one of raw, avg")
    _, model, stabilizer, tokenizer = load_state(path)
    if weights == "avg":
        model = stabilizer.averaged_model().eval()
    return model, tokenizer


def generate(
    path: Path | RunDir, prompts: list[str], *, H: int | None = None, weights: str = "avg"
) -> list[tuple[str, str]]:
    """Greedy continuations of length ``H`` (default: the run's ``H``) of ``prompts`` (text) by a
    run's latest ``raw`` or averaged (``avg``) weights.

    Prompt characters outside a character-level run's vocabulary raise ``ValueError`` listing them.
    """
    if weights not in ("raw", "avg"):
        raise ValueError(f"weights={weights!r} is not valid: choose one of raw, avg")
    cfg, model, stabilizer, tok = load_state(path)
    if weights == "avg":
        model = stabilizer.averaged_model().eval()
    H = cfg.H if H is None else check_int("H", H, 1)
    out = []
    for text in prompts:
        if not text:
            raise ValueError("prompt='' is empty: give at least one character")
        ids = torch.as_tensor(tok.encode(text))[None, -model.config.block_size :]  # (1, T0)
        out.append((text, tok.decode(model.greedy(ids, H)[0])))
    return out
