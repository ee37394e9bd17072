r"""The one training loop of the toolkit, configured by behavior cloning and language models.

A :class:`Trainer` runs minibatch steps of an optimizer on a model, keeps a stabilizer (EMA
and co.) beside the raw iterate :math:`\theta_t`, evaluates both at the iterates of
``cfg.eval_steps()`` (a regular grid plus zoom windows of consecutive iterates), and writes
everything to a :class:`~gvaempirics.rundir.RunDir`. One step is

.. math::

    \theta_{t+1} = \mathrm{opt}\big(\theta_t, \nabla \ell_{B_t}(\theta_t), \eta_t\big), \qquad
    \bar\theta_{t+1} = \mathrm{stabilizer}(\bar\theta_t, \theta_{t+1}),

with :math:`\eta_t` from :meth:`gvaempirics.config.TrainingOptions.lr_schedule`, the loss
averaged over ``grad_accum`` minibatches and its gradient clipped to ``grad_clip`` when set.

Resume protocol: checkpoints hold the model, optimizer, stabilizer, minibatch generator and
torch RNG, plus the metrics log's length; resuming truncates the log to it, so a run killed at
any point finishes with the same log as an uninterrupted one. A subclass supplies the model's
loss on one minibatch, what an evaluation records, and the run's summary.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
from torch import nn

from .config import TrainingOptions
from .rundir import RunDir, load_checked
from .stabilizers import make_stabilizer


class NaNLossError(ValueError):
    """The training loss became NaN or inf; the run directory stays resumable from its last checkpoint."""


def make_optimizer(cfg: TrainingOptions, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW over ``model``; weight decay applies to parameters with
    two or more dimensions only (matrices, embeddings), not to biases and norm gains."""
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.eta, momentum=cfg.momentum)
    kind = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return kind(groups, lr=cfg.eta, betas=(cfg.beta1, cfg.beta2))


class Trainer:
    """One run of the training loop; subclasses implement :meth:`minibatch_loss`, :meth:`record`,
    :meth:`meta` and :meth:`summarize`, and may extend :meth:`before_step`, :meth:`flush` and the
    state dict."""

    name = "train"

    def __init__(
        self,
        cfg: TrainingOptions,
        run: RunDir,
        model: nn.Module,
        *,
        device: torch.device | None = None,
        quiet: bool = False,
    ):
        self.cfg, self.run, self.model, self.quiet = cfg, run, model, quiet
        self.device = device or torch.device("cpu")
        self.optimizer = make_optimizer(cfg, model)
        self.stabilizer = make_stabilizer(cfg, model)
        self.lr_schedule = cfg.lr_schedule()  # step -> eta_t
        # minibatch order from a CPU generator on every device: the same data order anywhere
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.eval_set = set(cfg.eval_steps())
        self.step = 0
        self.seconds: dict[str, float] = {}  # wall seconds per phase this session (see fit)
        self.pinned_step = -1  # also keep the newest checkpoint at or before this step (a setting's choice)

    @contextlib.contextmanager
    def timed(self, phase: str):
        """Add the wall time of the block to ``self.seconds[phase]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    # ------------------------------------------------------------------ what a setting supplies
    def minibatch_loss(self) -> torch.Tensor:
        """Draw one minibatch (from ``self.generator``) and return the model's mean loss on it."""
        raise NotImplementedError

    def record(self) -> None:
        """Evaluate raw and averaged weights at ``self.step`` and log them (or queue them; see :meth:`flush`)."""
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        """The run's first log record (besides ``kind``): what evaluation is measured against."""
        return {}

    def summarize(self) -> dict[str, Any]:
        raise NotImplementedError

    def before_step(self) -> None:
        """Called before every optimizer step (behavior cloning swaps in fresh data here)."""

    def flush(self) -> None:
        """Finish queued evaluations; called before each checkpoint and at the end."""

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "stabilizer": self.stabilizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any], *, source: str = "state") -> None:
        """Load a checkpoint's ``state`` (read from ``source``, which errors name), after checking
        that each part fits this run's model (:func:`~gvaempirics.rundir.load_checked`)."""
        load_checked(self.model, state.get("model"), source=source)
        load_checked(self.optimizer, state.get("optimizer"), source=source, what="the optimizer")
        load_checked(self.stabilizer, state.get("stabilizer"), source=source, what="the stabilizer", params=self.model)
        try:
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if self.device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        except (KeyError, TypeError, RuntimeError) as err:  # a foreign or edited file: one line, no traceback
            raise ValueError(f"checkpoint {source} holds no valid random state ({type(err).__name__}: {err})") from None
        self.step = int(state["step"])

    # ------------------------------------------------------------------ the loop
    def train_step(self) -> float:
        """One optimizer step and stabilizer update; returns the minibatch loss."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_schedule(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.grad_accum):
            loss = self.minibatch_loss()
            (loss / cfg.grad_accum).backward()
            total += float(loss.detach()) / cfg.grad_accum
        if not math.isfinite(total):
            last = self.run.checkpoints()
            where = (
                f"it stays resumable from its last checkpoint (step {last[-1].step})"
                if last
                else "it has no checkpoint yet, so the same --out can be rerun with other settings"
            )
            raise NaNLossError(
                f"the training loss became {total} at step {self.step + 1} (eta={cfg.eta:g}); "
                f"stopped. Run directory {self.run.path}: {where}"
            )
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.stabilizer.update()
        self.step += 1
        return total

    def checkpoint(self) -> None:
        self.flush()
        self.run.save_checkpoint(self.step, self.state_dict(), keep=2, pin=self.pinned_step)

    def fit(self, *, stop_at: int | None = None) -> dict[str, Any]:
        """Train to ``cfg.steps`` (or stop after step ``stop_at``, as a kill would) from wherever
        the run directory stands; write and return the summary."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        state = self.run.load_latest(truncate=False)
        if state is None:
            self.run.truncate_metrics(0)
            self.run.log({"kind": "meta", **self.meta()})
            self.stabilizer.update()  # absorb theta_0
            self.record()
        else:
            self.load_state_dict(state, source=str(self.run.checkpoints()[-1].path))
            self.run.truncate_metrics(int(state["metrics_size"]))  # the log as the checkpoint knew it
        start = time.perf_counter()
        last = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
        bar = tqdm(
            total=cfg.steps, initial=self.step, desc=self.name, unit="step", disable=self.quiet, dynamic_ncols=True
        )
        while self.step < last:
            with self.timed("train steps"):
                self.before_step()
                loss = self.train_step()
            with self.timed("metrics log"):
                self.run.log({"kind": "train", "step": self.step, "loss": loss, "lr": self.lr_schedule(self.step - 1)})
            if self.step in self.eval_set:
                with self.timed("evaluations"):
                    self.record()
            if self.step == cfg.steps:
                self.stabilizer.end()  # post-hoc EMA: the last iterate can be synthesized
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                with self.timed("checkpoints"):
                    self.checkpoint()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        bar.close()
        with self.timed("evaluations"):
            self.flush()
        summary = self.summarize()
        summary["train_seconds_last_session"] = time.perf_counter() - start
        # where this session's time went; a setting may time its own parts (BC: "rollouts", inside
        # evaluations and checkpoints, which run the queued rollouts)
        summary["profile_seconds_last_session"] = {k: round(v, 3) for k, v in self.seconds.items()}
        self.run.write_summary(summary)
        return summary
