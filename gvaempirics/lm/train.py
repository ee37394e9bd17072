r"""Next-token training with a stabilizer beside the raw iterate, and butterfly-effect evaluation.

The paper's autoregressive setting (Section 4.2, Figure 4, result R5): AdamW on the next-token
cross-entropy, an average of the iterates maintained by :mod:`gvaempirics.stabilizers` (by
default the power EMA :math:`\bar\theta_t = (1-\gamma_t)\bar\theta_{t-1} + \gamma_t\theta_t`;
also constant EMA, Polyak, BEMA, post-hoc EMA), and, at evaluated iterates (every
``eval_every`` steps, and every step inside zoom windows), for both the raw and the averaged
weights:

* the validation loss on a fixed set of windows;
* greedy continuations of length ``H`` of a fixed prompt set (logged as text), from which
  :mod:`gvaempirics.lm.rollouts` measures divergence between neighbouring iterates;
* with a synthetic teacher, the exact-match length against the teacher's greedy continuation
  and the task accuracy (flip-flop: correct reads; transformer teacher: fraction of
  continuation tokens equal to the teacher's).

Learning-rate decay is the other stabilizer the paper compares with: a run with
``lr_schedule="cosine"`` or ``"wsd"`` is the decayed-LR control. A run directory
(:class:`~gvaempirics.rundir.RunDir`) holds everything; a killed run resumes to the same
numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gvatheory._checks import check_int

from ..config import build_config, to_dict
from ..metrics import grid_indices, zoom_indices
from ..rundir import RunDir
from ..stabilizers import make_stabilizer
from .config import LMConfig
from .corpus import Corpus, FlipFlop, TransformerTeacher, load_corpus, tokenizer_from_spec
from .model import GPT, GPTConfig
from .rollouts import divergence

def gpt_config(cfg: LMConfig, vocab_size: int) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                     n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout)


def lr_at(step: int, cfg: LMConfig) -> float:
    """Learning rate at ``step``: linear warmup, then constant, cosine to zero, or stable-then-linear decay (wsd)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / (cfg.warmup + 1)
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "cosine":
        progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    decay_start = cfg.steps - int(round(cfg.decay_fraction * cfg.steps))
    if step < decay_start:
        return cfg.lr
    return cfg.lr * max(0.0, (cfg.steps - step) / max(1, cfg.steps - decay_start))


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; a CUDA device that is not there is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} is not available here (torch.cuda.is_available() is False); use cpu or auto")
    return device


def make_corpus(cfg: LMConfig, *, quiet: bool = False) -> Corpus:
    corpus = load_corpus(cfg.corpus, path=cfg.data_path, val_fraction=cfg.val_fraction, size=cfg.corpus_size,
                         seed=cfg.corpus_seed, tokenizer=cfg.tokenizer, bpe_vocab=cfg.bpe_vocab, quiet=quiet)
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

    def to(self, device: torch.device) -> "EvalSet":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return EvalSet(move(self.windows), move(self.prompts), move(self.expert), move(self.read_mask), self.floor)

    @classmethod
    def build(cls, corpus: Corpus, cfg: LMConfig) -> "EvalSet":
        gen = np.random.default_rng(cfg.eval_seed)
        val = corpus.val
        T = cfg.block_size
        starts = gen.integers(0, len(val) - T, size=cfg.eval_windows)
        windows = torch.as_tensor(np.stack([val[s:s + T + 1] for s in starts]))
        p_starts = gen.integers(1, len(val) - cfg.prompt_len + 1, size=cfg.n_prompts)
        if isinstance(corpus.teacher, FlipFlop):
            # prompts start at a pair boundary (even absolute position) so the automaton state is defined
            p_starts -= (p_starts + len(corpus.train)) % 2
        prompts = torch.as_tensor(np.stack([val[s:s + cfg.prompt_len] for s in p_starts]))
        expert = None if corpus.teacher is None else corpus.teacher.greedy(prompts, cfg.H)
        read_mask = None
        if isinstance(corpus.teacher, FlipFlop):
            full = corpus.teacher.read_targets(val, offset=len(corpus.train))
            read_mask = torch.as_tensor(np.stack([full[s + 1:s + T + 1] for s in starts]))
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
        w = ev.windows[i:i + chunk]  # (b, T+1)
        logits, loss = model(w[:, :-1], w[:, 1:])  # (b, T, V)
        total += float(loss) * len(w)
        if ev.read_mask is not None:
            m = ev.read_mask[i:i + chunk]  # (b, T)
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


class NaNLossError(ValueError):
    """The training loss became NaN or inf; the run directory stays resumable from its last checkpoint."""


class LMTrainer:
    """One language-model run: training, evaluation schedule, checkpoints and resume."""

    def __init__(self, cfg: LMConfig, run: RunDir, corpus: Corpus, *, quiet: bool = False):
        self.cfg, self.run, self.corpus, self.quiet = cfg, run, corpus, quiet
        corpus.check_context(cfg.block_size)
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)  # initialization and dropout
        self.device = resolve_device(cfg.device)
        self.model = GPT(gpt_config(cfg, corpus.tokenizer.vocab_size)).to(self.device)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}],
                                           lr=cfg.lr, betas=(0.9, cfg.beta2))
        self.stabilizer = make_stabilizer(cfg, self.model)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.train_ids = torch.as_tensor(corpus.train).to(self.device)
        self.eval_set = EvalSet.build(corpus, cfg).to(self.device)
        self.eval_steps = set(cfg.eval_steps())
        self.step = 0

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "stabilizer": self.stabilizer.state_dict(), "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                **({"cuda_rng": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stabilizer.load_state_dict(state["stabilizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.step = int(state["step"])

    def _record(self) -> None:
        """Evaluate raw and averaged weights at the current step and log both."""
        H = self.cfg.H
        self.run.log({"kind": "eval", "step": self.step, "weights": "raw", **evaluate(self.model, self.eval_set, H)})
        with self.stabilizer.swap():
            self.run.log({"kind": "eval", "step": self.step, "weights": self.cfg.stabilizer,
                          **evaluate(self.model, self.eval_set, H)})

    def _train_step(self) -> float:
        cfg = self.cfg
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        T = cfg.block_size
        # minibatch starts come from a CPU generator on every device: the same data order anywhere
        starts = torch.randint(len(self.train_ids) - T, (cfg.batch_size,), generator=self.generator).to(self.device)
        batch = self.train_ids[starts[:, None] + torch.arange(T + 1, device=self.device)]  # (B, T+1)
        _, loss = self.model(batch[:, :-1], batch[:, 1:])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NaNLossError(f"the training loss became {value} at step {self.step + 1}; stopped. The run directory "
                               f"{self.run.path} stays resumable from its last checkpoint (lower lr to avoid it)")
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.stabilizer.update()
        self.step += 1
        return value

    def fit(self, *, stop_at: int | None = None) -> dict[str, Any]:
        """Train to ``cfg.steps`` (or stop after step ``stop_at``, as a kill would) from wherever
        the run directory stands; return the summary."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        state = self.run.load_latest()
        if state is None:
            self.run.truncate_metrics(0)
            self.run.log({"kind": "meta", "n_params": self.model.n_params(), "tokenizer": self.corpus.tokenizer.spec(),
                          "prompts": self.eval_set.prompts.tolist(),
                          "expert": None if self.eval_set.expert is None else self.eval_set.expert.tolist(),
                          "val_floor": self.eval_set.floor})
            self.stabilizer.update()  # absorb theta_0
            self._record()
        else:
            self.load_state_dict(state)
        start = time.perf_counter()
        last = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"lm {cfg.corpus}", unit="step",
                   disable=self.quiet, dynamic_ncols=True)
        while self.step < last:
            loss = self._train_step()
            self.run.log({"kind": "train", "step": self.step, "loss": loss, "lr": lr_at(self.step - 1, cfg)})
            if self.step in self.eval_steps:
                self._record()
            if self.step == cfg.steps and hasattr(self.stabilizer, "snapshot"):
                self.stabilizer.snapshot()  # post-hoc EMA: the last iterate can be synthesized
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.run.save_checkpoint(self.step, self.state_dict(), keep=2)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        bar.close()
        summary = summarize(self.run)
        summary["train_seconds_last_session"] = time.perf_counter() - start
        self.run.write_summary(summary)
        return summary


def train(cfg: LMConfig, outdir: Path, *, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train ``cfg`` into run directory ``outdir`` (``resume``: continue a run there); the summary."""
    run = RunDir(outdir)
    corpus = make_corpus(cfg, quiet=quiet)
    run.start(to_dict(cfg), resume=resume)
    return LMTrainer(cfg, run, corpus, quiet=quiet).fit()


def run_config(run: RunDir) -> LMConfig:
    """The :class:`LMConfig` saved in a run directory."""
    return build_config(LMConfig, run.read_config())


def load_state(path: Path | RunDir) -> tuple[LMConfig, GPT, Any, Any]:
    """A run's config, its latest checkpoint's raw model and stabilizer (state loaded), and its
    tokenizer."""
    from ..rundir import load_torch_file

    run = path if isinstance(path, RunDir) else RunDir(path)
    cfg = run_config(run)
    meta = next(iter(run.metrics("meta")), None)
    ckpts = run.checkpoints()
    if meta is None or not ckpts:
        raise ValueError(f"run directory {run.path} has no checkpoint yet: train it first")
    tokenizer = tokenizer_from_spec(meta["tokenizer"])
    state = load_torch_file(ckpts[-1].path)
    model = GPT(gpt_config(cfg, tokenizer.vocab_size))
    model.load_state_dict(state["model"])
    stabilizer = make_stabilizer(cfg, model)
    stabilizer.load_state_dict(state["stabilizer"])
    return cfg, model.eval(), stabilizer, tokenizer


def load_model(path: Path | RunDir, *, weights: str = "avg") -> tuple[GPT, Any]:
    """The latest checkpoint's ``raw`` weights or its stabilizer's averaged weights (``avg``),
    and the run's tokenizer."""
    if weights not in ("raw", "avg"):
        raise ValueError(f"weights={weights!r} is not one of raw, avg")
    _, model, stabilizer, tokenizer = load_state(path)
    if weights == "avg":
        model = stabilizer.averaged_model().eval()
    return model, tokenizer


def generate(path: Path | RunDir, prompts: list[str], *, H: int | None = None, weights: str = "avg") -> list[tuple[str, str]]:
    """Greedy continuations of ``prompts`` (text) by a run's latest ``raw`` or averaged (``avg``) weights.

    Prompt characters outside a character-level run's vocabulary raise ``ValueError`` listing them.
    """
    model, tok = load_model(path, weights=weights)
    H = model.config.block_size if H is None else check_int("H", H, 1)
    out = []
    for text in prompts:
        if not text:
            raise ValueError("prompt='' is empty: give at least one character")
        ids = torch.as_tensor(tok.encode(text))[None, -model.config.block_size:]  # (1, T0)
        out.append((text, tok.decode(model.greedy(ids, H)[0])))
    return out


# ---------------------------------------------------------------- reading run directories


@dataclass(frozen=True)
class LMResult:
    """What a run directory's log says, as arrays over evaluated ``steps``.

    ``val[w]`` ``(n,)``, ``gen[w]`` ``(n, P, H)`` and, with a teacher, ``exact[w]`` ``(n, P)`` and
    ``task[w]`` ``(n,)``, for ``w`` in :attr:`weights` (``"raw"`` and the run's stabilizer);
    ``tokenizer`` decodes token ids; ``val_floor`` is the teacher's own validation loss (``None``
    without a transformer teacher).
    """

    config: dict[str, Any]
    steps: np.ndarray
    val: dict[str, np.ndarray]
    gen: dict[str, np.ndarray]
    exact: dict[str, np.ndarray] | None
    task: dict[str, np.ndarray] | None
    train_steps: np.ndarray
    train_loss: np.ndarray
    tokenizer: Any
    prompts: np.ndarray
    val_floor: float | None = None

    @property
    def weights(self) -> tuple[str, str]:
        return ("raw", self.config["stabilizer"])

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids)

    def zoom_windows(self) -> list[np.ndarray]:
        """Index arrays (into ``steps``) of each zoom window's consecutive iterates."""
        return zoom_indices(self.steps, self.config["zoom_windows"], self.config["zoom_length"])

    def grid(self) -> np.ndarray:
        """Indices of the regular grid (multiples of ``eval_every`` and the last step)."""
        return grid_indices(self.steps, self.config["eval_every"])


def load_result(path: Path | RunDir) -> LMResult:
    """Read an LM run directory (complete or not) into an :class:`LMResult`."""
    run = path if isinstance(path, RunDir) else RunDir(path)
    cfg = run.read_config()
    evals: dict[str, dict[int, dict]] = {"raw": {}, cfg["stabilizer"]: {}}
    train, meta = [], {}
    for rec in run.metrics():
        if rec["kind"] == "eval":
            evals[rec["weights"]][rec["step"]] = rec
        elif rec["kind"] == "train":
            train.append((rec["step"], rec["loss"]))
        elif rec["kind"] == "meta":
            meta = rec
    steps = np.array(sorted(set.intersection(*(set(e) for e in evals.values()))), dtype=int)
    has_teacher = bool(len(steps)) and "exact" in evals["raw"][int(steps[0])]
    pick = lambda key, dtype: {w: np.array([evals[w][s][key] for s in steps], dtype=dtype) for w in evals}
    tr = np.array(train, dtype=float).reshape(-1, 2)
    return LMResult(config=cfg, steps=steps, val=pick("val", float), gen=pick("gen", int),
                    exact=pick("exact", int) if has_teacher else None, task=pick("task", float) if has_teacher else None,
                    train_steps=tr[:, 0].astype(int), train_loss=tr[:, 1], tokenizer=tokenizer_from_spec(meta["tokenizer"]) if meta else None,
                    prompts=np.array(meta.get("prompts", []), dtype=int), val_floor=meta.get("val_floor"))


def summarize(run: RunDir | LMResult) -> dict[str, Any]:
    """Per weights (raw, and the stabilizer's name): final validation loss; its mean absolute change between
    consecutive iterates in the zoom windows; rollout divergence between consecutive iterates in
    the zoom windows and on the second half of the regular grid; with a teacher, the exact-match
    length (mean over prompts: final, over the grid's second half, over the zoom iterates) and
    the final task accuracy."""
    res = run if isinstance(run, LMResult) else load_result(run)
    out: dict[str, Any] = {"steps_done": int(res.steps.max()) if len(res.steps) else 0,
                           "lr_schedule": res.config["lr_schedule"], "weights": list(res.weights)}
    if len(res.steps) < 2:
        return out
    grid = res.grid()
    late = grid[len(grid) // 2:]
    zooms = res.zoom_windows()
    if res.val_floor is not None:
        out["val_floor"] = res.val_floor
    for w in res.weights:
        entry: dict[str, Any] = {"final_val_loss": float(res.val[w][-1])}
        if zooms:
            entry["zoom_val_fluctuation"] = float(np.mean([np.abs(np.diff(res.val[w][z])).mean() for z in zooms]))
            ds = [divergence([res.gen[w][i] for i in z]) for z in zooms]
            entry["zoom_changed"] = float(np.mean([d.changed for d in ds]))
            entry["zoom_edit"] = float(np.mean([d.edit for d in ds]))
            first = np.concatenate([d.first for d in ds])
            entry["zoom_first_divergence_hist"] = np.bincount(first, minlength=res.config["H"] + 1).tolist()
        if len(late) >= 2:
            d = divergence([res.gen[w][i] for i in late])
            entry["grid_changed"] = d.changed
            entry["grid_edit"] = d.edit
        if res.exact is not None:
            entry["final_exact_match"] = float(res.exact[w][-1].mean())
            entry["late_exact_match"] = float(res.exact[w][late].mean())
            entry["final_task"] = float(res.task[w][-1])
            if zooms:  # one iterate's exact-match length is noisy: also its mean over the zoom iterates
                entry["zoom_exact_match"] = float(res.exact[w][np.concatenate(zooms)].mean())
        out[w] = entry
    return out
