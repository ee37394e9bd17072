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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gvatheory.config import to_dict

from ..rundir import RunDir
from ..stabilizers import PostHocEMA
from ..training import Trainer
from .config import BCConfig
from .config import defaults as bc_defaults
from .data import BCData
from .imitators import make_imitator
from .results import summarize

# Rolls out a list of parameter dicts of one imitator architecture from the run's fixed initial
# conditions; returns (returns (n, n_ic), lengths (n, n_ic)).
RolloutFn = Callable[[nn.Module, Sequence[dict[str, Tensor]]], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Queued:
    """An evaluated iterate waiting for its rollouts: raw, averaged, then (posthoc_zoom="rollout",
    in a zoom window) the other tracked widths; ``movement`` of every tracked width, or None."""

    step: int
    params: list[dict[str, Tensor]]
    movement: list[float] | None = None


# The training loss is logged at every evaluated iterate, raw and averaged; beyond this many pairs
# it is estimated on evenly spaced ones (N = H = 1000 demonstrations give 1M pairs, whose exact
# loss at every iterate would cost more than the rollouts). The validation loss is always exact.
TRAIN_LOSS_PAIRS = 65536


def train_loss_probe(x: Tensor, y: Tensor, cap: int = TRAIN_LOSS_PAIRS) -> tuple[Tensor, Tensor]:
    """All pairs if there are at most ``cap``, else ``cap`` evenly spaced ones (no RNG is drawn)."""
    if len(x) <= cap:
        return x, y
    idx = torch.linspace(0, len(x) - 1, cap).round().long()
    return x[idx], y[idx]


@torch.no_grad()
def bc_loss(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 65536) -> float:
    """Mean squared action error over all pairs (eval mode; chunks bound the memory)."""
    was = model.training
    model.eval()
    total = sum(float(((model(x[i : i + chunk]) - y[i : i + chunk]) ** 2).sum()) for i in range(0, len(x), chunk))
    model.train(was)
    return total / (len(x) * y.shape[-1])


class BCTrainer(Trainer):
    """One behavior-cloning run on the shared training loop: squared action error on minibatches
    of demonstration pairs; evaluations log both losses at once and queue the rollouts, which run
    ``eval_batch`` checkpoints at a time in the batched evaluator."""

    def __init__(
        self,
        cfg: BCConfig,
        run: RunDir,
        data: BCData,
        rollout: RolloutFn,
        *,
        fresh_data: Callable[[int], BCData] | None = None,
        meta: dict[str, Any] | None = None,
        quiet: bool = False,
    ):
        torch.manual_seed(cfg.seed)
        d_in, d_act = data.train_x.shape[-1], data.train_y.shape[-1]
        model = make_imitator(cfg.imitator_spec(d_in, d_act))
        model.set_normalization(data.train_x[:, -1])
        super().__init__(cfg, run, model, quiet=quiet)
        self.name = f"bc {cfg.env}"
        self.data, self.rollout, self.fresh_data, self._meta = data, rollout, fresh_data, meta or {}
        self.pending: list[Queued] = []
        # the flip-distance curve is taken at the checkpoint opening the first zoom window: never pruned
        self.pinned_step = min(cfg.zoom_windows, default=-1)

    def meta(self) -> dict[str, Any]:
        return self._meta

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "data": dataclasses.asdict(self.data) if self.fresh_data is not None else None}

    def load_state_dict(self, state: dict[str, Any], *, source: str = "state") -> None:
        super().load_state_dict(state, source=source)
        if state.get("data") is not None:
            self.data = BCData(**state["data"])

    def before_step(self) -> None:
        every = self.cfg.fresh_every
        if self.fresh_data is not None and self.step % every == 0 and self.step > 0:
            self.data = self.fresh_data(self.step // every)

    def minibatch(self) -> tuple[Tensor, Tensor]:
        """Draw one minibatch of inputs and targets from ``self.generator`` (ensembles draw each
        member's this way, so their data order is the single run's)."""
        d = self.data
        idx = torch.randint(len(d.train_x), (self.cfg.batch_size,), generator=self.generator)
        x = d.train_x[idx]
        if self.cfg.obs_noise > 0:  # drawn after the indices, so runs without noise keep their draws
            x = x + self.cfg.obs_noise * torch.randn(x.shape, generator=self.generator)
        return x, d.train_y[idx]

    def minibatch_loss(self) -> Tensor:
        x, y = self.minibatch()
        return ((self.model(x) - y) ** 2).mean()

    def record(self) -> None:
        """Log both losses now and queue the rollouts; roll out every ``eval_batch`` queued steps."""
        self.queue_evaluation()
        if len(self.pending) >= self.cfg.eval_batch:
            self.flush()

    def queue_evaluation(self) -> None:
        """Log both losses of raw and averaged weights now; queue both for :meth:`flush` (and, for
        a post-hoc EMA with ``posthoc_zoom="rollout"`` inside a zoom window, every tracked width)."""
        widths: list[dict[str, Tensor]] = []
        movement = None
        if isinstance(self.stabilizer, PostHocEMA) and any(
            s <= self.step < s + self.cfg.zoom_length for s in self.cfg.zoom_windows
        ):
            if self.cfg.posthoc_zoom == "rollout":  # the first tracked width is the averaged weights below
                widths = [t.averaged_parameters() for t in self.stabilizer.trackers[1:]]
                movement = [t.last_movement() for t in self.stabilizer.trackers]
            else:
                self.stabilizer.snapshot()  # so that `gva bc posthoc` can synthesize every zoom iterate
        raw = {k: v.detach().clone() for k, v in self.model.named_parameters()}
        avg = {k: v.clone() for k, v in self.stabilizer.averaged_parameters().items()}
        d = self.data
        train_x, train_y = train_loss_probe(d.train_x, d.train_y)
        rec = {
            "kind": "loss",
            "step": self.step,
            "train": bc_loss(self.model, train_x, train_y),
            "val": bc_loss(self.model, d.val_x, d.val_y),
        }
        with self.stabilizer.swap():
            rec["train_avg"] = bc_loss(self.model, train_x, train_y)
            rec["val_avg"] = bc_loss(self.model, d.val_x, d.val_y)
        self.run.log(rec)
        self.pending.append(Queued(self.step, [raw, avg, *widths], movement))

    def queued(self) -> list[dict[str, Tensor]]:
        """Every queued weights, in the order :meth:`log_rollouts` reads their rollouts."""
        return [p for q in self.pending for p in q.params]

    def flush(self) -> None:
        if not self.pending:
            return
        with self.timed("rollouts"):
            result = self.rollout(self.model, self.queued())
        self.log_rollouts(*result)

    def log_rollouts(self, returns: np.ndarray, lengths: np.ndarray) -> None:
        """Log the rollouts of the queued evaluations (rows as :meth:`queued`) and clear the queue.

        Each evaluation logs an ``eval`` record of the raw and of the averaged weights; one with
        every tracked width also logs a ``widths`` record: their returns, lengths and last
        movement (:meth:`gvaempirics.stabilizers.EMA.last_movement`), in ``posthoc_sigma_rels`` order."""
        row = 0
        for q in self.pending:
            r, n = returns[row : row + len(q.params)], lengths[row : row + len(q.params)]
            row += len(q.params)
            for j, weights in enumerate(("raw", self.cfg.stabilizer)):
                self.run.log(
                    {
                        "kind": "eval",
                        "step": q.step,
                        "weights": weights,
                        "mean": float(np.mean(r[j])),
                        "returns": [float(x) for x in r[j]],
                        "lengths": [int(x) for x in n[j]],
                    }
                )
            if q.movement is not None:
                self.run.log(
                    {
                        "kind": "widths",
                        "step": q.step,
                        "sigma_rels": [float(x) for x in self.cfg.posthoc_sigma_rels],
                        "returns": np.asarray(r[1:], dtype=float).tolist(),
                        "lengths": np.asarray(n[1:], dtype=int).tolist(),
                        "movement": q.movement,
                    }
                )
        self.pending.clear()

    def summarize(self) -> dict[str, Any]:
        return summarize(self.run)


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
        state = torch.cat([obs, self.prev], dim=-1)  # (P, I, d_in)
        if self.window is None:
            self.window = state.unsqueeze(-2).repeat_interleave(self.history, dim=-2)  # (P, I, W, d_in)
        else:
            self.window = torch.cat([self.window[..., 1:, :], state.unsqueeze(-2)], dim=-2)
        action = torch.clamp(self.batched(self.window), self.low, self.high)  # (P, I, d_act)
        self.prev = action
        return action


def imitator_rollout(cfg: BCConfig, ics) -> RolloutFn:
    """Roll out many imitator checkpoints at once from the run's fixed initial conditions ``ics``."""
    from .envs import action_bounds
    from .evaluator import rollout, stacked_policy

    low, high = action_bounds(cfg.env)

    def run(model: nn.Module, params: Sequence[dict[str, Tensor]]) -> tuple[np.ndarray, np.ndarray]:
        was = model.training
        model.eval()
        policy = AugmentedPolicy(stacked_policy(model, list(params)), cfg.history, low, high)
        res = rollout(cfg.env, ics, cfg.H, policy, len(params), threads=cfg.threads)
        model.train(was)
        return res.returns, res.lengths

    return run


def trainer_inputs(cfg: BCConfig, demos, expert, info: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :class:`BCTrainer` besides its config and run directory: training
    pairs, the batched evaluator from the run's initial conditions, the fresh-data source and the
    meta record (shared by :func:`train_bc` and :func:`gvaempirics.bc.ensemble.train_ensemble`)."""
    from .data import fresh_data
    from .envs import initial_conditions
    from .evaluator import rollout

    ics = initial_conditions(cfg.env, cfg.ics, cfg.ic_seed)
    # The reward scale: the expert's own return from the same initial conditions and horizon.
    expert_eval = rollout(cfg.env, ics, cfg.H, expert, threads=cfg.threads)
    meta = {
        "expert_return": float(expert_eval.returns.mean()),
        "expert_falls": int((expert_eval.lengths < cfg.H).sum()),
        "expert_file": str(cfg.expert or info.get("file", "")),
    }
    return dict(
        data=demos.bc_data(cfg.history, cfg.drop_falls),
        rollout=imitator_rollout(cfg, ics),
        fresh_data=fresh_data(demos, expert, cfg.history, drop_falls=cfg.drop_falls) if cfg.fresh_data else None,
        meta=meta,
    )


def train_bc(cfg: BCConfig, out: Path, *, quiet: bool = False, stop_at: int | None = None) -> dict[str, Any]:
    """Run (or resume) the BC experiment ``cfg`` into the run directory ``out``; return its summary.

    Everything the run needs (the expert file against the env's sizes, a ``cfg.demos`` cache
    against the config) is checked before the run directory is created. Demonstrations come
    from ``cfg.demos`` or are collected once into ``out/demos.npz`` and reused on resume.
    ``stop_at`` stops after that step, as a kill would (tests).
    """
    from .data import Demonstrations, load_or_make
    from .experts import load_expert

    defaults = bc_defaults()  # the setting of fields added since a run was written
    RunDir(out).check_start(to_dict(cfg), defaults)  # a foreign or other run's directory: refused before any work
    torch.set_num_threads(cfg.threads)
    expert, info = load_expert(cfg.env, cfg.expert)
    settings = cfg.demo_settings()
    given = Demonstrations.load(Path(cfg.demos)).check(settings, info, path=Path(cfg.demos)) if cfg.demos else None
    with RunDir(out).writing(to_dict(cfg), defaults) as run:
        demos = given or load_or_make(run.path / "demos.npz", expert, **settings, expert_info=info, quiet=quiet)
        trainer = BCTrainer(cfg, run, **trainer_inputs(cfg, demos, expert, info), quiet=quiet)
        return trainer.fit(stop_at=stop_at)
