r"""Ensembles: K behavior-cloning runs of one architecture trained as one vmapped model.

GVA is measured over seeds and hyperparameters (paper Figures 1-3), so the same imitator is
trained many times over. An ensemble of K members that share the architecture, the data and the
schedule stacks their parameters into tensors of shape ``(K, ...)`` and takes one step for all:

.. math::

    \ell_k = \tfrac{1}{B} \textstyle\sum_{i \in B_k} \|\pi_{\theta_k}(s_i) - a_i\|^2, \qquad
    \nabla_{\theta_k} \textstyle\sum_j \ell_j = \nabla_{\theta_k} \ell_k ,

one ``torch.func.vmap`` of ``functional_call`` over the rows for the forward and backward pass,
each member's minibatch ``B_k`` drawn from its own generator. Everything else stays per member
and is the single run's own code: each member is a :class:`~gvaempirics.bc.train.BCTrainer`
whose module's parameters are *views of its row*, so its optimizer (``make_optimizer``: SGD,
Adam or AdamW with its own ``eta``, betas, momentum, weight decay, clip and schedule), its
stabilizer (any kind, own ``alpha``, ``gamma_min``, ``burn_in``), its evaluations, its metrics
log and its checkpoints are those of ``train_bc``. Every member writes its own run directory,
file for file as ``train_bc`` would, and a member's directory can even be resumed by ``train_bc``
alone. Rollouts of all members' queued checkpoints go to the batched evaluator in one call.

Exactness: a member's numbers equal its single run's up to float32 rounding: the vmapped matmuls
may round differently from the single model's, and the optimizers step with torch's fused CPU
kernel (``fused=True``, faster than the per-tensor loop a single run uses);
``fused=False`` steps with exactly that loop, the reference, and then the members of the tiny
preset reproduce their single runs bit for bit (``tests/test_ensemble.py`` states the tolerances
it asks for). The update is deliberately not written as one broadcast over the stacked
``(K, ...)`` tensors with per-member hyperparameter tensors: on the 4x256 imitator that form is
slower than the fused kernel on each member's rows, because the stacked state falls out of cache
and one member's does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from gvatheory.config import to_dict

from ..rundir import RunDir, atomic_write, read_checkpoint
from ..training import NaNLossError
from .config import BCConfig
from .config import defaults as bc_defaults
from .data import BCData
from .train import BCTrainer, RolloutFn, trainer_inputs

# Fields in which members may differ: each member's optimizer, schedule, stabilizer, seed (its
# initialization and data order) and input noise. Every other field is shared.
MEMBER_FIELDS: tuple[str, ...] = tuple(
    "seed optimizer eta schedule warmup t0 drop drop_every decay_fraction momentum beta1 beta2 weight_decay "
    "grad_clip stabilizer alpha gamma_min burn_in posthoc_sigma_rels posthoc_every posthoc_zoom obs_noise".split()
)


def check_ensemble(cfgs: Sequence[BCConfig]) -> None:
    """Raise ``ValueError`` naming the field unless ``cfgs`` can train as one ensemble: same
    architecture, data, batch size, steps, evaluation and checkpoint schedule, environment and
    initial conditions, differing only in :data:`MEMBER_FIELDS`, and no dropout (its masks come
    from the global torch RNG, which members cannot share and still match their single runs)."""
    if len(cfgs) < 1:
        raise ValueError("cfgs=[] is out of range: an ensemble needs at least one member")
    first = cfgs[0]
    for i, cfg in enumerate(cfgs):
        if not isinstance(cfg, BCConfig):
            raise ValueError(f"cfgs[{i}] is a {type(cfg).__name__}, expected a BCConfig")
        if cfg.dropout > 0:
            raise ValueError(
                f"cfgs[{i}].dropout={cfg.dropout} is out of range for an ensemble: dropout masks come from "
                "the global torch RNG, so members could not match their single runs; use dropout=0"
            )
        for f in dataclasses.fields(BCConfig):
            if f.name not in MEMBER_FIELDS and getattr(cfg, f.name) != getattr(first, f.name):
                raise ValueError(
                    f"cfgs[{i}].{f.name}={getattr(cfg, f.name)!r} differs from cfgs[0].{f.name}="
                    f"{getattr(first, f.name)!r}: ensemble members share it (they may differ only in "
                    f"{', '.join(MEMBER_FIELDS)})"
                )


def stack_parameters(modules: Sequence[nn.Module]) -> dict[str, Tensor]:
    """Stack the parameters of modules of one architecture into leaves of shape ``(K, ...)``
    (``torch.func.stack_module_state``) and make module ``k``'s parameters views of row ``k``:
    whatever updates a module's parameters in place (its optimizer, a stabilizer's swap)
    updates the stacked tensors, and the reverse."""
    params, _ = stack_module_state(list(modules))
    for k, module in enumerate(modules):
        for name, p in module.named_parameters():
            p.data = params[name].detach()[k]
    return params


class MemberOptimizers:
    """Each member's own optimizer, stepped on its row of the stacked gradients.

    ``optimizers[k]`` comes from ``make_optimizer(cfgs[k], modules[k])`` over a module whose
    parameters are views of row ``k`` of ``stacked`` (:func:`stack_parameters`). :meth:`step`
    hands each member its gradient rows, clips them as the single run does, and steps with
    torch's fused CPU kernel (``fused=True``) or, with ``fused=False``, with the per-tensor loop
    a single run uses (the reference). State dicts are the single run's, fused flag included.
    """

    def __init__(
        self,
        optimizers: Sequence[torch.optim.Optimizer],
        modules: Sequence[nn.Module],
        stacked: dict[str, Tensor],
        *,
        grad_clips: Sequence[float],
        fused: bool = True,
    ):
        self.optimizers, self.grad_clips, self.fused = list(optimizers), list(grad_clips), fused
        self.stacked = stacked
        self.params = [list(m.named_parameters()) for m in modules]
        self._flags = [[g["fused"] for g in opt.param_groups] for opt in self.optimizers]
        self.use_kernels()

    def use_kernels(self) -> None:
        """(Re)select the fused kernels; loading a state dict restores the single run's flag."""
        if self.fused:
            for opt in self.optimizers:
                for group in opt.param_groups:
                    group["fused"] = True

    @torch.no_grad()
    def step(self, lrs: Sequence[float]) -> None:
        """One step of every member, member ``k`` with learning rate ``lrs[k]``."""
        for k, (opt, named, clip, lr) in enumerate(zip(self.optimizers, self.params, self.grad_clips, lrs)):
            for name, p in named:
                grad = self.stacked[name].grad
                p.grad = None if grad is None else grad[k]
            if clip > 0:
                torch.nn.utils.clip_grad_norm_([p for _, p in named], clip)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()

    def state_dict(self, k: int) -> dict[str, Any]:
        """Member ``k``'s optimizer state as its single run would save it."""
        state = self.optimizers[k].state_dict()
        for group, flag in zip(state["param_groups"], self._flags[k]):
            group["fused"] = flag
        return state


class EnsembleTrainer:
    """K :class:`BCTrainer` members (one per config and run directory) trained together; see the
    module docstring. The loop is :meth:`gvaempirics.training.Trainer.fit`'s, step for step."""

    def __init__(
        self,
        cfgs: Sequence[BCConfig],
        runs: Sequence[RunDir],
        data: BCData,
        rollout: RolloutFn,
        *,
        fresh_data: Callable[[int], BCData] | None = None,
        meta: dict[str, Any] | None = None,
        quiet: bool = False,
        fused: bool = True,
    ):
        check_ensemble(cfgs)
        self.cfg, self.quiet, self.rollout = cfgs[0], quiet, rollout
        self.members: list[BCTrainer] = []
        self.torch_rng: list[Tensor] = []  # each member's global RNG after its init, as its single run saves it
        for cfg, run in zip(cfgs, runs, strict=True):
            self.members.append(BCTrainer(cfg, run, data, rollout, fresh_data=fresh_data, meta=meta, quiet=True))
            self.torch_rng.append(torch.get_rng_state())
        modules = [m.model for m in self.members]
        self.params = stack_parameters(modules)
        self.template = modules[0]  # buffers (input normalization) are the same for every member
        self.optimizers = MemberOptimizers(
            [m.optimizer for m in self.members],
            modules,
            self.params,
            grad_clips=[c.grad_clip for c in cfgs],
            fused=fused,
        )
        self.eval_set = set(self.cfg.eval_steps())
        self.step = 0
        self.lrs: list[float] = []  # the members' learning rates of the last step
        self._vmapped = vmap(self._member_loss)

    # ------------------------------------------------------------------ one step
    def _member_loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return ((functional_call(self.template, params, (x,)) - y) ** 2).mean()  # BCTrainer.minibatch_loss

    def _losses(self, x: Tensor, y: Tensor) -> Tensor:
        """Every member's minibatch loss, ``(K,)``; a loop over members where vmap cannot batch the module."""
        if self._vmapped is not None:
            try:
                return self._vmapped(self.params, x, y)
            except (RuntimeError, NotImplementedError):
                self._vmapped = None
        rows = [{n: t[k] for n, t in self.params.items()} for k in range(len(self.members))]
        return torch.stack([self._member_loss(p, x[k], y[k]) for k, p in enumerate(rows)])

    def train_step(self) -> list[float]:
        """One optimizer step and stabilizer update of every member; returns their minibatch losses."""
        accum = self.cfg.grad_accum
        for t in self.params.values():
            t.grad = None
        totals = [0.0] * len(self.members)
        for _ in range(accum):
            batches = [m.minibatch() for m in self.members]
            x = torch.stack([b[0] for b in batches])  # (K, B, W, d_in)
            y = torch.stack([b[1] for b in batches])  # (K, B, d_act)
            losses = self._losses(x, y)  # (K,)
            (losses / accum).sum().backward()
            for k, loss in enumerate(losses.detach().tolist()):
                totals[k] += loss / accum
        for k, (m, total) in enumerate(zip(self.members, totals)):
            if not math.isfinite(total):
                raise NaNLossError(
                    f"the training loss of ensemble member {k} ({m.run.path}) became {total} at step "
                    f"{self.step + 1} (eta={m.cfg.eta:g}); stopped. Every member stays resumable from its last "
                    "checkpoint; one without a checkpoint can be rerun into the same directory with other settings"
                )
        self.lrs = [m.lr_schedule(self.step) for m in self.members]
        self.optimizers.step(self.lrs)
        for m in self.members:
            m.stabilizer.update()
        self._set_step(self.step + 1)
        return totals

    def _set_step(self, step: int) -> None:
        self.step = step
        for m in self.members:
            m.step = step

    # ------------------------------------------------------------------ evaluations and checkpoints
    def record(self) -> None:
        for m in self.members:
            m.queue_evaluation()
        if len(self.members[0].pending) >= self.cfg.eval_batch:
            self.flush()

    def flush(self) -> None:
        """Roll out every member's queued raw and averaged weights in one batched evaluator call."""
        if not self.members[0].pending:
            return
        params = [p for m in self.members for p in m.queued()]
        returns, lengths = self.rollout(self.template, params)
        start = 0
        for m in self.members:
            stop = start + len(m.queued())
            m.log_rollouts(returns[start:stop], lengths[start:stop])
            start = stop

    def member_state(self, k: int) -> dict[str, Any]:
        """Member ``k``'s checkpoint, as its single run would write it."""
        m = self.members[k]
        state = m.state_dict()
        state["model"] = {n: t.clone() for n, t in state["model"].items()}  # a row alone, not the stacked storage
        state["optimizer"] = self.optimizers.state_dict(k)
        state["torch_rng"] = self.torch_rng[k]
        return state

    def checkpoint(self) -> None:
        self.flush()
        for k, m in enumerate(self.members):
            m.run.save_checkpoint(self.step, self.member_state(k), keep=2, pin=m.pinned_step)

    def resume(self) -> bool:
        """Load every member's checkpoint at the last step all of them reached; ``False`` if there
        is none (start afresh). A kill between the members' checkpoints leaves some one checkpoint
        ahead: that one is dropped, and rewritten identically on the way."""
        cfg = self.cfg
        have = [{c.step: c for c in m.run.checkpoints()} for m in self.members]
        step = max(set.intersection(*(set(h) for h in have)), default=0)
        following = min((step // cfg.checkpoint_every + 1) * cfg.checkpoint_every, cfg.steps)
        for m, ckpts in zip(self.members, have):
            if any(s > step and s != following for s in ckpts):
                raise ValueError(
                    f"cannot resume the ensemble: {m.run.path} has a checkpoint at step {max(ckpts)}, "
                    f"while the last step every member reached is {step}; an ensemble resumes only run "
                    "directories it wrote together (train_bc resumes each one alone)"
                )
        states = [read_checkpoint(ckpts[step]) for ckpts in have] if step else []
        for m, ckpts, state in zip(self.members, have, states):
            size, size_now = int(state["metrics_size"]), m.run.metrics_size()
            if size_now < size:
                raise ValueError(
                    f"{m.run.metrics_path} holds {size_now} bytes but checkpoint {ckpts[step].path.name} recorded "
                    f"{size}: the log lost records, so the run cannot resume exactly; nothing was changed"
                )
        for ckpts in have:  # checked: now drop what is ahead
            for s in [s for s in ckpts if s > step]:
                ckpts[s].path.unlink()
        if step == 0:
            return False
        for m, ckpts, state in zip(self.members, have, states):  # every member fits before a log changes
            m.load_state_dict(state, source=str(ckpts[step].path))
        for m, state in zip(self.members, states):
            m.run.truncate_metrics(int(state["metrics_size"]))
        self.optimizers.use_kernels()
        self._set_step(step)
        return True

    # ------------------------------------------------------------------ the loop
    def fit(self, *, stop_at: int | None = None) -> list[dict[str, Any]]:
        """Train every member to ``cfg.steps`` (or stop after step ``stop_at``, as a kill would)
        from wherever the run directories stand; write and return the members' summaries."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        if not self.resume():
            for m in self.members:
                m.run.truncate_metrics(0)
                m.run.log({"kind": "meta", **m.meta()})
                m.stabilizer.update()  # absorb theta_0
            self.record()
        start = time.perf_counter()
        last = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
        name = f"ensemble of {len(self.members)} {cfg.env}"
        bar = tqdm(total=cfg.steps, initial=self.step, desc=name, unit="step", disable=self.quiet, dynamic_ncols=True)
        while self.step < last:
            self.members[0].before_step()  # fresh data, drawn once for every member
            for m in self.members[1:]:
                m.data = self.members[0].data
            losses = self.train_step()
            for m, loss, lr in zip(self.members, losses, self.lrs):
                m.run.log({"kind": "train", "step": self.step, "loss": loss, "lr": lr})
            if self.step in self.eval_set:
                self.record()
            if self.step == cfg.steps:
                for m in self.members:
                    m.stabilizer.end()
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.checkpoint()
            bar.update(1)
        bar.close()
        self.flush()
        seconds = time.perf_counter() - start
        summaries = []
        for m in self.members:
            summary = m.summarize()
            summary["train_seconds_last_session"] = seconds
            m.run.write_summary(summary)
            summaries.append(summary)
        return summaries


def _share(src: Path, dst: Path) -> None:
    """Give ``dst`` the file ``src`` (a hard link, else a copy), atomically."""
    if dst.is_file():
        return
    tmp = dst.parent / f".{dst.name}.link"
    try:
        tmp.unlink(missing_ok=True)
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_write(dst, lambda fh: fh.write(src.read_bytes()))


def train_ensemble(
    cfgs: Sequence[BCConfig],
    outs: Sequence[Path],
    *,
    quiet: bool = False,
    fused: bool = True,
    stop_at: int | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) the BC experiments ``cfgs`` as one ensemble, member ``k`` into the run
    directory ``outs[k]``; return the members' summaries.

    Each run directory ends up as :func:`~gvaempirics.bc.train.train_bc` would leave it (config,
    metrics log, checkpoints, summary, ``demos.npz`` unless ``cfg.demos`` names a cache), with the
    same numbers up to float32 rounding. ``fused=False`` steps the optimizers with the per-tensor
    loop of a single run instead of torch's fused kernel: slower, and closer to the single runs
    (bit-identical on the tiny preset here). The configs, the expert, the demonstrations and every
    run directory are checked before anything is created. ``stop_at`` stops after that step, as a
    kill would (tests).
    """
    from .data import Demonstrations, load_or_make
    from .experts import load_expert

    cfgs, outs = list(cfgs), [Path(o) for o in outs]
    check_ensemble(cfgs)
    if len(outs) != len(cfgs):
        raise ValueError(f"len(outs)={len(outs)} must equal len(cfgs)={len(cfgs)}: one run directory per member")
    if len({o.resolve() for o in outs}) < len(outs):
        raise ValueError(f"outs={[str(o) for o in outs]} names a run directory twice: one per member")
    cfg = cfgs[0]
    torch.set_num_threads(cfg.threads)
    expert, info = load_expert(cfg.env, cfg.expert)
    settings = cfg.demo_settings()
    given = Demonstrations.load(Path(cfg.demos)).check(settings, info, path=Path(cfg.demos)) if cfg.demos else None
    runs = [RunDir(out) for out in outs]
    defaults = bc_defaults()  # the setting of fields added since a run was written
    for c, run in zip(cfgs, runs):
        run.check_start(to_dict(c), defaults)  # every member, before any directory changes
    with contextlib.ExitStack() as held:
        for c, run in zip(cfgs, runs):
            held.enter_context(run.writing(to_dict(c), defaults))
        demos = given or load_or_make(runs[0].path / "demos.npz", expert, **settings, expert_info=info, quiet=quiet)
        if given is None:
            for run in runs[1:]:
                _share(runs[0].path / "demos.npz", run.path / "demos.npz")
        trainer = EnsembleTrainer(cfgs, runs, **trainer_inputs(cfg, demos, expert, info), quiet=quiet, fused=fused)
        return trainer.fit(stop_at=stop_at)
