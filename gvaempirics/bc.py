r"""Behavior cloning with stabilizers and every-iterate evaluation (paper Section 3, Figure 1).

An imitator is trained by minibatch SGD (or Adam/AdamW) on the one-step imitation loss
:math:`\ell_{BC}(\pi) = \mathbb{E}\,\|\pi(s) - a^\star\|^2` over expert demonstrations, where
``s`` is the augmented state (observation and previous action). Alongside the raw iterate
:math:`\theta_t` a stabilizer (EMA by default) is maintained. At evaluated iterates — every
``eval_every`` steps, and at *every* step inside the zoom windows — both the raw and the
stabilized weights are rolled out from the same seeded initial conditions with deterministic
policies, so the only thing that changes between neighbouring evaluations is the SGD iterate.

Everything goes to a :class:`~gvaempirics.rundir.RunDir`; a run killed at any point resumes to
the same final numbers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .bc_config import BCConfig
from .config import to_dict
from .imitators import make_imitator
from .metrics import grid_indices, zoom_indices
from .rundir import RunDir
from .stabilizers import make_stabilizer

def windows(states: Tensor, history: int) -> Tensor:
    """Sliding windows of the last ``history`` augmented states of each trajectory.

    ``states`` ``(N, H, d)`` -> ``(N, H, history, d)``; before the first step the window is padded
    with the first state (the evaluator pads its rollouts the same way).
    """
    H = states.shape[1]
    idx = (torch.arange(H)[:, None] - history + 1 + torch.arange(history)[None, :]).clamp_min(0)  # (H, W)
    return states[:, idx]  # (N, H, W, d)


def make_optimizer(cfg: BCConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class BCData:
    """Training and validation pairs: inputs ``(n, history, d_in)``, targets ``(n, d_act)``."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor

    @classmethod
    def from_trajectories(cls, train_states, train_actions, val_states, val_actions, history: int) -> "BCData":
        def flat(states, actions):
            s = torch.as_tensor(np.asarray(states), dtype=torch.float32)
            a = torch.as_tensor(np.asarray(actions), dtype=torch.float32)
            return windows(s, history).reshape(-1, history, s.shape[-1]), a.reshape(-1, a.shape[-1])

        tx, ty = flat(train_states, train_actions)
        vx, vy = flat(val_states, val_actions)
        return cls(tx, ty, vx, vy)


@torch.no_grad()
def bc_loss(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 65536) -> float:
    """Mean squared action error over all pairs (eval mode; chunks bound the memory)."""
    was = model.training
    model.eval()
    total = sum(float(((model(x[i:i + chunk]) - y[i:i + chunk]) ** 2).sum()) for i in range(0, len(x), chunk))
    model.train(was)
    return total / (len(x) * y.shape[-1])


class NaNLossError(ValueError):
    """The training loss became NaN or inf; the run directory stays resumable from its last checkpoint."""


# Rolls out a list of parameter dicts of one imitator architecture from the run's fixed initial
# conditions; returns (returns (n, n_ic), lengths (n, n_ic)).
RolloutFn = Callable[[nn.Module, Sequence[dict[str, Tensor]]], tuple[np.ndarray, np.ndarray]]


class BCTrainer:
    """One behavior-cloning run: training, evaluation schedule, checkpoints and resume."""

    def __init__(self, cfg: BCConfig, run: RunDir, data: BCData, rollout: RolloutFn, *,
                 fresh_data: Callable[[int], BCData] | None = None, meta: dict[str, Any] | None = None,
                 quiet: bool = False):
        self.cfg, self.run, self.data, self.rollout = cfg, run, data, rollout
        self.fresh_data, self.meta, self.quiet = fresh_data, meta or {}, quiet
        torch.manual_seed(cfg.seed)
        d_in, d_act = data.train_x.shape[-1], data.train_y.shape[-1]
        self.model = make_imitator(cfg.imitator_spec(d_in, d_act))
        self.model.set_normalization(data.train_x[:, -1])
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.stabilizer = make_stabilizer(cfg, self.model)
        self.lr = cfg.lr_schedule_fn()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.eval_set = set(cfg.eval_steps())
        self.pending: list[tuple[int, dict[str, Tensor], dict[str, Tensor]]] = []
        self.step = 0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "stabilizer": self.stabilizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "data": dataclasses.asdict(self.data) if self.fresh_data is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stabilizer.load_state_dict(state["stabilizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["data"] is not None:
            self.data = BCData(**state["data"])
        self.step = int(state["step"])

    # ------------------------------------------------------------------ pieces
    def _record(self) -> None:
        """Log both losses of raw and averaged weights now; queue both for rollout."""
        raw = {k: v.detach().clone() for k, v in self.model.named_parameters()}
        avg = {k: v.clone() for k, v in self.stabilizer.averaged_parameters().items()}
        d = self.data
        rec = {"kind": "loss", "step": self.step,
               "train": bc_loss(self.model, d.train_x, d.train_y), "val": bc_loss(self.model, d.val_x, d.val_y)}
        with self.stabilizer.swap():
            rec["train_avg"] = bc_loss(self.model, d.train_x, d.train_y)
            rec["val_avg"] = bc_loss(self.model, d.val_x, d.val_y)
        self.run.log(rec)
        self.pending.append((self.step, raw, avg))

    def _flush(self) -> None:
        if not self.pending:
            return
        params = [p for _, raw, avg in self.pending for p in (raw, avg)]
        returns, lengths = self.rollout(self.model, params)
        for i, (step, _, _) in enumerate(self.pending):
            for j, weights in enumerate(("raw", self.cfg.stabilizer)):
                r, n = returns[2 * i + j], lengths[2 * i + j]
                self.run.log({"kind": "eval", "step": step, "weights": weights, "mean": float(np.mean(r)),
                              "returns": [float(x) for x in r], "lengths": [int(x) for x in n]})
        self.pending.clear()

    def _train_step(self) -> float:
        cfg, d = self.cfg, self.data
        for group in self.optimizer.param_groups:
            group["lr"] = float(self.lr(self.step))
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.grad_accum):
            idx = torch.randint(len(d.train_x), (cfg.batch_size,), generator=self.generator)
            loss = ((self.model(d.train_x[idx]) - d.train_y[idx]) ** 2).mean()
            (loss / cfg.grad_accum).backward()
            total += float(loss.detach()) / cfg.grad_accum
        if not math.isfinite(total):
            raise NaNLossError(
                f"the training loss became {total} at step {self.step + 1}; stopped. The run directory "
                f"{self.run.path} stays resumable from its last checkpoint (lower lr to avoid it)")
        self.optimizer.step()
        self.stabilizer.update()
        self.step += 1
        return total

    def _checkpoint(self) -> None:
        self._flush()
        self.run.save_checkpoint(self.step, self.state_dict(), keep=2)

    # ------------------------------------------------------------------ main loop
    def fit(self) -> dict[str, Any]:
        """Train to ``cfg.steps`` from wherever the run directory stands; return the summary."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        state = self.run.load_latest()
        if state is None:
            self.run.truncate_metrics(0)
            self.run.log({"kind": "meta", **self.meta})
            self.stabilizer.update()  # absorb theta_0
            self._record()
        else:
            self.load_state_dict(state)
        start = time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"bc {cfg.env}", unit="step", disable=self.quiet, dynamic_ncols=True)
        while self.step < cfg.steps:
            if self.fresh_data is not None and self.step % cfg.fresh_every == 0 and self.step > 0:
                self.data = self.fresh_data(self.step // cfg.fresh_every)
            loss = self._train_step()
            self.run.log({"kind": "train", "step": self.step, "loss": loss, "lr": float(self.lr(self.step - 1))})
            if self.step in self.eval_set:
                self._record()
            if len(self.pending) >= cfg.eval_batch:
                self._flush()
            if self.step == cfg.steps and hasattr(self.stabilizer, "snapshot"):
                self.stabilizer.snapshot()  # post-hoc EMA: the last iterate can be synthesized
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self._checkpoint()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        bar.close()
        self._flush()
        summary = summarize(self.run)
        summary["train_seconds_last_session"] = time.perf_counter() - start
        self.run.write_summary(summary)
        return summary


@dataclass(frozen=True)
class BCResult:
    """Everything a run directory's log says about a BC run, as arrays.

    ``returns[w]`` ``(n_eval, n_ic)`` and ``lengths[w]`` for ``w`` in ``("raw", stabilizer)``,
    at ``eval_steps``; ``losses[key]`` at ``loss_steps`` (keys ``train``, ``val``, ``train_avg``,
    ``val_avg``); ``train_steps`` / ``train_loss`` are the minibatch losses.
    """

    config: dict[str, Any]
    eval_steps: np.ndarray
    returns: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    loss_steps: np.ndarray
    losses: dict[str, np.ndarray]
    train_steps: np.ndarray
    train_loss: np.ndarray
    expert_return: float

    @property
    def weights(self) -> tuple[str, str]:
        return ("raw", self.config["stabilizer"])

    def zoom_windows(self) -> list[np.ndarray]:
        """Index arrays (into ``eval_steps``) of each zoom window's consecutive iterates."""
        return zoom_indices(self.eval_steps, self.config["zoom_windows"], self.config["zoom_length"])

    def grid(self) -> np.ndarray:
        """Indices of the regular evaluation grid (multiples of ``eval_every`` and the last step)."""
        return grid_indices(self.eval_steps, self.config["eval_every"])


def load_result(path: Path | RunDir, *, expert_return: float | None = None) -> BCResult:
    """Read a BC run directory (complete or not) into a :class:`BCResult`."""
    run = path if isinstance(path, RunDir) else RunDir(path)
    cfg = run.read_config()
    evals: dict[str, dict[int, dict]] = {}
    losses, train = [], []
    meta = {}
    for rec in run.metrics():
        kind = rec["kind"]
        if kind == "eval":
            evals.setdefault(rec["weights"], {})[rec["step"]] = rec
        elif kind == "loss":
            losses.append(rec)
        elif kind == "train":
            train.append((rec["step"], rec["loss"]))
        elif kind == "meta":
            meta.update(rec)
    raw = evals.get("raw", {})
    steps = np.array(sorted(s for s in raw if all(s in evals[w] for w in evals)), dtype=int)
    returns = {w: np.array([evals[w][s]["returns"] for s in steps]) for w in evals}
    lengths = {w: np.array([evals[w][s]["lengths"] for s in steps]) for w in evals}
    if expert_return is None:
        expert_return = float(meta.get("expert_return", np.nan))
    tr = np.array(train, dtype=float).reshape(-1, 2)
    return BCResult(
        config=cfg, eval_steps=steps, returns=returns, lengths=lengths,
        loss_steps=np.array([r["step"] for r in losses], dtype=int),
        losses={k: np.array([r[k] for r in losses]) for k in ("train", "val", "train_avg", "val_avg")},
        train_steps=tr[:, 0].astype(int), train_loss=tr[:, 1], expert_return=expert_return,
    )


def summarize(run: RunDir | BCResult) -> dict[str, Any]:
    """GVA indices of raw and stabilized weights (see :mod:`gvaempirics.metrics` for the scales).

    On the regular grid over the second half of training, and in every zoom window (consecutive
    iterates): reward oscillation relative to the expert's return, loss oscillation relative to
    the validation loss's decrease over the run, their ratio, and the per-initial-condition flip
    rate (changes of more than 10% of the expert's return).
    """
    from .metrics import flip_rate, oscillation_index, window_spread

    res = run if isinstance(run, BCResult) else load_result(run)
    out: dict[str, Any] = {"steps_done": int(res.eval_steps.max()) if len(res.eval_steps) else 0,
                           "expert_return": res.expert_return}
    scale = res.expert_return
    if not (len(res.eval_steps) >= 2 and math.isfinite(scale) and scale > 0):
        return out
    grid = res.grid()
    late = grid[len(grid) // 2:]
    at_evals = np.searchsorted(res.loss_steps, res.eval_steps)  # loss records of the evaluated iterates
    decrease = float(res.losses["val"][0] - res.losses["val"].min())  # the loss scale: its decrease over the run
    for w, key in zip(res.weights, ("val", "val_avg")):
        val = res.losses[key][at_evals]
        r = res.returns[w]
        entry = {
            "final_return": float(r[-1].mean()), "final_return_sd": float(r[-1].std()),
            "final_falls": int((res.lengths[w][-1] < res.config["eval_horizon"]).sum()),
            "final_val_loss": float(val[-1]),
        }
        if len(late) >= 2 and decrease > 0:
            entry["grid_reward_oscillation"] = oscillation_index(r[late].mean(1), scale)
            entry["grid_loss_oscillation"] = oscillation_index(val[late], decrease)
            entry["grid_flip_rate"] = flip_rate(r[late], scale)
        zooms = res.zoom_windows()
        if zooms and decrease > 0:
            entry["zoom_mean_return"] = float(np.mean([r[z].mean() for z in zooms]))
            entry["zoom_reward_oscillation"] = float(np.mean([oscillation_index(r[z].mean(1), scale) for z in zooms]))
            entry["zoom_reward_spread"] = float(np.mean([window_spread(r[z].mean(1), scale) for z in zooms]))
            entry["zoom_loss_oscillation"] = float(np.mean([oscillation_index(val[z], decrease) for z in zooms]))
            entry["zoom_flip_rate"] = float(np.mean([flip_rate(r[z], scale) for z in zooms]))
            entry["zoom_amplification"] = entry["zoom_reward_oscillation"] / max(entry["zoom_loss_oscillation"], 1e-300)
        out[w] = entry
    return out


class AugmentedPolicy:
    """Closed-loop wrapper that feeds an imitator what it was trained on.

    Called once per step with observations ``(P, I, obs_dim)``; keeps the previous action
    (``u_0 = 0``) and the window of the last ``history`` augmented states (padded with the
    first one, as :func:`windows` pads demonstrations); returns actions clipped to the action
    bounds, which are also what the next augmented state records.
    """

    def __init__(self, batched: Callable[[Tensor], Tensor], history: int, low: np.ndarray, high: np.ndarray):
        self.batched, self.history = batched, history
        self.low = torch.as_tensor(low, dtype=torch.float32)
        self.high = torch.as_tensor(high, dtype=torch.float32)
        self.prev: Tensor | None = None
        self.window: Tensor | None = None

    @torch.no_grad()
    def __call__(self, obs: Tensor) -> Tensor:
        if self.prev is None:
            self.prev = torch.zeros(*obs.shape[:-1], self.low.numel())
        state = torch.cat([obs, self.prev], dim=-1)                                    # (P, I, d_in)
        if self.window is None:
            self.window = state.unsqueeze(-2).repeat_interleave(self.history, dim=-2)  # (P, I, W, d_in)
        else:
            self.window = torch.cat([self.window[..., 1:, :], state.unsqueeze(-2)], dim=-2)
        action = torch.clamp(self.batched(self.window), self.low, self.high)          # (P, I, d_act)
        self.prev = action
        return action


def imitator_rollout(cfg: BCConfig, ics) -> RolloutFn:
    """Roll out many imitator checkpoints at once from the run's fixed initial conditions ``ics``."""
    from .envs import action_bounds
    from .rollout import rollout, stacked_policy

    low, high = action_bounds(cfg.env)

    def run(model: nn.Module, params: Sequence[dict[str, Tensor]]) -> tuple[np.ndarray, np.ndarray]:
        was = model.training
        model.eval()
        policy = AugmentedPolicy(stacked_policy(model, list(params)), cfg.history, low, high)
        res = rollout(cfg.env, ics, cfg.eval_horizon, policy, len(params), threads=cfg.threads)
        model.train(was)
        return res.returns, res.lengths

    return run


def train_bc(cfg: BCConfig, out: Path, *, resume: bool = True, demos_path: Path | None = None,
             quiet: bool = False) -> dict[str, Any]:
    """Run (or resume) the BC experiment ``cfg`` into the run directory ``out``; return its summary.

    Demonstrations are cached at ``demos_path`` (default ``out/demos.npz``) and reused on resume.
    """
    from .demos import fresh_data, load_or_make
    from .envs import initial_conditions
    from .experts import load_expert
    from .rollout import rollout

    torch.set_num_threads(cfg.threads)
    run = RunDir(out)
    run.start(to_dict(cfg), resume=resume)
    expert, info = load_expert(cfg.env, Path(cfg.expert) if cfg.expert else None)
    demos = load_or_make(Path(demos_path or run.path / "demos.npz"), cfg.env, expert, n=cfg.n_demos,
                         n_val=cfg.val_demos, horizon=cfg.demo_horizon, seed=cfg.demo_seed, expert_info=info, quiet=quiet)
    ics = initial_conditions(cfg.env, cfg.eval_ics, cfg.eval_seed)
    # The reward scale: the expert's own return from the same initial conditions and horizon.
    expert_eval = rollout(cfg.env, ics, cfg.eval_horizon, expert, threads=cfg.threads)
    meta = {"expert_return": float(expert_eval.returns.mean()), "expert_falls": int((expert_eval.lengths < cfg.eval_horizon).sum()),
            "expert_file": str(cfg.expert or info.get("file", ""))}
    trainer = BCTrainer(cfg, run, demos.bc_data(cfg.history), imitator_rollout(cfg, ics),
                        fresh_data=fresh_data(demos, expert, cfg.history) if cfg.fresh_data else None,
                        meta=meta, quiet=quiet)
    return trainer.fit()
