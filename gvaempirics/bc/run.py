"""Open a behavior-cloning run at one of its checkpoints: its config, training data, imitator and
stabilizer as they were at that step (the one place that does this for the tools that read runs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gvatheory._checks import check_int

from ..rundir import RunDir, load_checked


@dataclass(frozen=True)
class OpenedRun:
    """A run at checkpoint ``step``: ``model`` holds the raw iterate, ``stabilizer`` its average."""

    run: RunDir
    cfg: Any  # BCConfig (torch-free module, imported lazily)
    step: int
    state: dict[str, Any]
    data: Any  # BCData: the training set in use at that step
    model: nn.Module
    stabilizer: Any

    def raw_parameters(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.model.named_parameters()}


def open_run(run: Path | RunDir, step: int = -1, *, threads: int = 0) -> OpenedRun:
    """The run directory ``run`` of ``gva bc train`` at checkpoint ``step`` (``-1``: the newest).

    ``threads`` (0: the run's own) sets torch's threads and the config's. A step without a
    checkpoint, a config that is not a BC run's, or a checkpoint that does not fit the run's
    model raises ``ValueError`` naming the file.
    """
    from gvatheory.config import build_config

    from ..stabilizers import make_stabilizer
    from .config import BCConfig
    from .data import BCData, Demonstrations
    from .imitators import make_imitator

    run = run if isinstance(run, RunDir) else RunDir(Path(run))
    check_int("threads", threads, 0)
    cfg = build_config(BCConfig, run.read_config(), source=f"{run.config_path}")
    if threads:
        cfg = cfg.replace(threads=threads)
    state = run.load_step(step)
    step = int(state["step"])  # -1 resolved to the newest
    torch.set_num_threads(cfg.threads)
    if state.get("data") is not None:  # fresh-data runs: the training set in use at that step
        data = BCData(**state["data"])
    else:
        demos = Path(cfg.demos) if cfg.demos else run.path / "demos.npz"
        data = Demonstrations.load(demos).bc_data(cfg.history, cfg.drop_falls)
    model = make_imitator(cfg.imitator_spec(data.train_x.shape[-1], data.train_y.shape[-1]))
    source = f"{run.checkpoint_dir}/step_{step:09d}.pt"
    load_checked(model, state.get("model"), source=source)
    stabilizer = make_stabilizer(cfg, model)
    load_checked(stabilizer, state.get("stabilizer"), source=source, what="the stabilizer", params=model)
    return OpenedRun(run, cfg, step, state, data, model, stabilizer)


def last_step(opened: OpenedRun) -> dict[str, Tensor]:
    """The update that produced the checkpoint's weights, from its optimizer state, per parameter:
    Adam/AdamW ``-eta m_hat / (sqrt(v_hat) + eps)`` (decoupled weight decay left out), SGD
    ``-eta buf`` (heavy ball). Its norm is the run's own optimizer step: the unit in which
    distances in weight space are measured (:mod:`gvaempirics.bc.flips`)."""
    from ..training import make_optimizer

    cfg, model = opened.cfg, opened.model
    eta = float(cfg.lr_schedule()(opened.step - 1))
    opt = make_optimizer(cfg, model)
    opt.load_state_dict(opened.state["optimizer"])
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            if "exp_avg" in st:
                beta1, beta2 = group["betas"]
                t = float(st["step"])
                m_hat, v_hat = st["exp_avg"] / (1.0 - beta1**t), st["exp_avg_sq"] / (1.0 - beta2**t)
                out[names[id(p)]] = -eta * m_hat / (v_hat.sqrt() + group["eps"])
            elif "momentum_buffer" in st and st["momentum_buffer"] is not None:
                out[names[id(p)]] = -eta * st["momentum_buffer"]
            else:
                raise ValueError(
                    f"the checkpoint at step {opened.step} of {opened.run.path} has no optimizer moments for "
                    f"{names[id(p)]}: its last step cannot be recovered (plain SGD without momentum keeps none)"
                )
    return out


def minibatch_gradient(
    model: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor, seed: int, *, chunk: int = 65_536
) -> dict[str, Tensor]:
    """Gradient of the mean squared action error on ``(x, y)`` at ``params``, in training mode
    (dropout masks from ``seed``, the global RNG left as it was); rows go through in chunks of
    ``chunk``, so a whole training set fits in memory."""
    p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    was = model.training
    model.train()
    total = {k: torch.zeros_like(v) for k, v in p.items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(x), chunk):
            xs, ys = x[i : i + chunk], y[i : i + chunk]
            loss = ((torch.func.functional_call(model, p, (xs,)) - ys) ** 2).mean() * (len(xs) / len(x))
            for k, g in zip(p, torch.autograd.grad(loss, list(p.values()))):
                total[k] += g
    model.train(was)
    return {k: g.detach() for k, g in total.items()}


def adam_preconditioner(cfg, model: nn.Module, state: dict[str, Any]) -> dict[str, Tensor]:
    """``1 / (sqrt(v_hat) + eps)`` per parameter from a checkpoint's Adam/AdamW state."""
    from ..training import make_optimizer

    opt = make_optimizer(cfg, model)
    opt.load_state_dict(state["optimizer"])
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in opt.param_groups:
        beta2, eps = group["betas"][1], group["eps"]
        for p in group["params"]:
            st = opt.state.get(p, {})
            if "exp_avg_sq" not in st:
                raise ValueError(f"the checkpoint's optimizer state has no second moments for {names[id(p)]}")
            t = float(st["step"])
            v_hat = st["exp_avg_sq"] / (1.0 - beta2**t)
            out[names[id(p)]] = 1.0 / (v_hat.sqrt() + eps)
    return out
