"""Expert demonstrations for behavior cloning (Section 3 of the paper).

A demonstration is a closed-loop expert trajectory of horizon :math:`H` from a seeded initial
condition. As in the paper, the imitator's state is augmented with the previous action,

.. math::

    \\tilde s_t = (s_t, u_{t-1}), \\qquad u_{-1} = 0, \\qquad u_t = \\pi^\\star(s_t),

so ``states`` has shape ``(N, H, obs_dim + act_dim)`` and ``actions`` ``(N, H, act_dim)``.
Training and validation trajectories come from disjoint seed streams, and "fresh data" round
:math:`r` (the paper's infinite-data control R2) draws new i.i.d. initial conditions from its own
stream. Dynamics and expert are deterministic, so a trajectory is a function of its seed.

Episodes that terminate before :math:`H` (an expert fall) keep only their alive steps: arrays are
zero-padded to :math:`H` and ``lengths`` records the alive steps, which is all that
:meth:`Demonstrations.bc_data` turns into training pairs. Robust experts never need this.

The cache is one ``.npz`` written through the toolkit's atomic writer (temporary file, fsync,
rename), so an interrupted collection leaves no file under the real name. It records the
SHA-256 of the expert file that made it, and is reused only for the same expert and settings.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gvatheory._checks import check_int

from ..rundir import atomic_write
from .envs import STREAM_FRESH, STREAM_TRAIN, STREAM_VAL, initial_conditions_from_seeds, reset_seeds
from .evaluator import run_episodes


def windows(states: Tensor, history: int) -> Tensor:
    """Sliding windows of the last ``history`` augmented states of each trajectory.

    ``states`` ``(N, H, d)`` -> ``(N, H, history, d)``; before the first step the window is padded
    with the first state (the evaluator pads its rollouts the same way).
    """
    H = states.shape[1]
    idx = (torch.arange(H)[:, None] - history + 1 + torch.arange(history)[None, :]).clamp_min(0)  # (H, W)
    return states[:, idx]  # (N, H, W, d)


@dataclass
class BCData:
    """Training and validation pairs: inputs ``(n, history, d_in)``, targets ``(n, d_act)``."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor

    @classmethod
    def from_trajectories(cls, train_states, train_actions, val_states, val_actions, history: int) -> BCData:
        def flat(states, actions):
            s = torch.as_tensor(np.asarray(states), dtype=torch.float32)
            a = torch.as_tensor(np.asarray(actions), dtype=torch.float32)
            return windows(s, history).reshape(-1, history, s.shape[-1]), a.reshape(-1, a.shape[-1])

        tx, ty = flat(train_states, train_actions)
        vx, vy = flat(val_states, val_actions)
        return cls(tx, ty, vx, vy)


@dataclass(frozen=True)
class Trajectories:
    """Augmented expert trajectories, zero-padded past termination."""

    states: np.ndarray  # (N, H, obs_dim + act_dim): (s_t, u_{t-1})
    actions: np.ndarray  # (N, H, act_dim): u_t
    lengths: np.ndarray  # (N,) alive steps
    returns: np.ndarray  # (N,) expert return over the alive steps

    def without_falls(self) -> Trajectories:
        """The trajectories that reach the horizon alive (no fall before ``H``)."""
        keep = self.lengths >= self.actions.shape[1]
        return Trajectories(self.states[keep], self.actions[keep], self.lengths[keep], self.returns[keep])


def collect(
    env_id: str,
    expert: Callable[[torch.Tensor], torch.Tensor],
    seeds: np.ndarray,
    horizon: int,
    *,
    chunk: int = 50,
    quiet: bool = True,
    desc: str = "demos",
) -> Trajectories:
    """Roll the expert from ``env.reset(seed=s)`` for each seed and augment with the previous action."""
    from tqdm.auto import tqdm

    parts = []
    with tqdm(total=len(seeds), desc=desc, unit="traj", disable=quiet) as bar:
        for i in range(0, len(seeds), chunk):
            ics = initial_conditions_from_seeds(env_id, seeds[i : i + chunk])
            parts.append(run_episodes(env_id, expert, ics, horizon, record=True))
            bar.update(len(seeds[i : i + chunk]))
    obs = np.concatenate([p["obs"] for p in parts])  # (N, H, obs_dim)
    act = np.concatenate([p["actions"] for p in parts])  # (N, H, act_dim)
    prev = np.concatenate([np.zeros_like(act[:, :1]), act[:, :-1]], axis=1)  # u_{t-1}, u_{-1} = 0
    return Trajectories(
        np.concatenate([obs, prev], axis=-1),
        act,
        np.concatenate([p["lengths"] for p in parts]),
        np.concatenate([p["returns"] for p in parts]),
    )


def _kept(tr: Trajectories, drop_falls: bool) -> Trajectories:
    if not drop_falls:
        return tr
    kept = tr.without_falls()
    if not len(kept.lengths):
        raise ValueError(
            f"drop_falls=True leaves no training demonstration: the expert falls in all {len(tr.lengths)} "
            "(use drop_falls=False, or a stronger expert)"
        )
    return kept


def _pairs(tr: Trajectories, history: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for length in np.unique(tr.lengths):  # alive steps only; one group per distinct length
        rows = tr.lengths == length
        d = BCData.from_trajectories(
            tr.states[rows, :length],
            tr.actions[rows, :length],
            tr.states[rows, :length],
            tr.actions[rows, :length],
            history,
        )
        xs.append(d.train_x)
        ys.append(d.train_y)
    return torch.cat(xs), torch.cat(ys)


@dataclass(frozen=True)
class Demonstrations:
    """Training and validation demonstrations of one expert, with the settings that made them."""

    train: Trajectories
    val: Trajectories
    meta: dict[str, Any]  # env_id, n, n_val, horizon, seed, expert (file, return stats)

    @property
    def expert_return(self) -> float:
        """Mean expert return over the training trajectories."""
        return float(self.train.returns.mean())

    def bc_data(self, history: int, drop_falls: bool = False) -> BCData:
        """Training pairs for :class:`gvaempirics.bc.train.BCTrainer` from the alive steps;
        ``drop_falls``: from the training trajectories without a fall only (validation stays whole)."""
        tx, ty = _pairs(_kept(self.train, drop_falls), history)
        vx, vy = _pairs(self.val, history)
        return BCData(tx, ty, vx, vy)

    def save(self, path: Path) -> None:
        """Write the cache through the toolkit's one atomic writer."""
        arrays = {
            f"{split}_{k}": getattr(getattr(self, split), k)
            for split in ("train", "val")
            for k in ("states", "actions", "lengths", "returns")
        }
        atomic_write(path, lambda fh: np.savez(fh, meta=np.array(json.dumps(self.meta)), **arrays))

    @classmethod
    def load(cls, path: Path) -> Demonstrations:
        """Read a cache; a missing, truncated or corrupt file, or arrays of inconsistent shapes,
        raise an error naming it."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"demonstration file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                splits = {
                    s: Trajectories(*(z[f"{s}_{k}"] for k in ("states", "actions", "lengths", "returns")))
                    for s in ("train", "val")
                }
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
            raise ValueError(
                f"{path} is corrupt or truncated and cannot be read as demonstrations "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            ) from None
        for name, tr in splits.items():
            N, H = len(tr.lengths), tr.actions.shape[1] if tr.actions.ndim == 3 else -1
            act = tr.actions.shape[-1] if tr.actions.ndim == 3 else -1
            ok = (
                tr.states.ndim == 3
                and tr.actions.ndim == 3
                and tr.states.shape[:2] == (N, H)
                and tr.actions.shape[0] == N
                and tr.states.shape[2] > act > 0
                and tr.returns.shape == (N,)
                and tr.lengths.shape == (N,)
                and N >= 1
                and bool(np.all((tr.lengths >= 1) & (tr.lengths <= H)))
            )
            if not ok:
                raise ValueError(
                    f"{path}: {name} arrays have inconsistent shapes (states {tr.states.shape}, actions "
                    f"{tr.actions.shape}, lengths {tr.lengths.shape}, returns {tr.returns.shape})"
                )
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: its meta record is not a table")
        return cls(splits["train"], splits["val"], meta)

    def check(self, settings: dict[str, Any], expert_info: dict[str, Any], *, path: Path) -> Demonstrations:
        """``self`` if it was made with ``settings`` (env_id, n, n_val, horizon, seed) by the expert
        whose file digest ``expert_info`` records, and its arrays fit that env; else one error
        naming the file and every difference."""
        want = {**settings, "expert_sha256": expert_info.get("sha256")}
        diff = [f"{k} {self.meta.get(k)!r} (wanted {v!r})" for k, v in want.items() if self.meta.get(k) != v]
        if diff:
            raise ValueError(f"{path} holds other demonstrations: {'; '.join(diff)}")
        d_in = expert_info["obs_dim"] + expert_info["act_dim"]
        for name, tr in (("train", self.train), ("val", self.val)):
            if tr.states.shape[-1] != d_in or tr.actions.shape[-1] != expert_info["act_dim"]:
                raise ValueError(
                    f"{path}: {name} states/actions have sizes {tr.states.shape[-1]}/{tr.actions.shape[-1]}, "
                    f"but {settings['env_id']} needs {d_in}/{expert_info['act_dim']}"
                )
        return self


def make_demonstrations(
    env_id: str,
    expert: Callable[[torch.Tensor], torch.Tensor],
    *,
    n: int,
    horizon: int,
    seed: int,
    n_val: int | None = None,
    expert_info: dict[str, Any] | None = None,
    quiet: bool = True,
) -> Demonstrations:
    """Collect ``n`` training and ``n_val`` (default ``max(1, n // 10)``) validation trajectories."""
    n_val = max(1, n // 10) if n_val is None else n_val
    for name, v in (("n", n), ("n_val", n_val), ("horizon", horizon)):
        check_int(name, v, 1)
    train = collect(env_id, expert, reset_seeds(seed, n, STREAM_TRAIN), horizon, quiet=quiet, desc="train demos")
    val = collect(env_id, expert, reset_seeds(seed, n_val, STREAM_VAL), horizon, quiet=quiet, desc="val demos")
    info = expert_info or {}
    meta = {
        "env_id": env_id,
        "n": n,
        "n_val": n_val,
        "horizon": horizon,
        "seed": seed,
        "expert": {k: info.get(k) for k in ("env_id", "checkpoint", "env_steps")},
        "expert_sha256": info.get("sha256"),
        "expert_return_mean": float(train.returns.mean()),
        "expert_return_sd": float(train.returns.std()),
        "expert_falls": int((train.lengths < horizon).sum()),
    }
    return Demonstrations(train, val, meta)


def load_or_make(
    path: Path,
    expert: Callable[[torch.Tensor], torch.Tensor],
    *,
    env_id: str,
    n: int,
    horizon: int,
    seed: int,
    n_val: int | None = None,
    expert_info: dict[str, Any],
    quiet: bool = True,
) -> Demonstrations:
    """The cached demonstrations at ``path`` if they match the settings and the expert, else collect
    and cache them. A cache made otherwise is an error naming the file and the differences, never
    silently reused or overwritten."""
    path = Path(path)
    n_val = max(1, n // 10) if n_val is None else n_val
    settings = dict(env_id=env_id, n=n, n_val=n_val, horizon=horizon, seed=seed)
    if path.is_file():
        return Demonstrations.load(path).check(settings, expert_info, path=path)
    demos = make_demonstrations(
        env_id, expert, n=n, horizon=horizon, seed=seed, n_val=n_val, expert_info=expert_info, quiet=quiet
    )
    demos.save(path)
    return demos


def fresh_data(
    demos: Demonstrations,
    expert: Callable[[torch.Tensor], torch.Tensor],
    history: int,
    *,
    drop_falls: bool = False,
    quiet: bool = True,
) -> Callable[[int], BCData]:
    """The infinite-data control: ``round -> BCData`` with ``n`` new i.i.d. expert trajectories
    (``drop_falls``: those of them without a fall).

    Round ``r`` draws its initial conditions from ``SeedSequence([seed, 3 + r])``, disjoint from the
    cached training and validation streams; validation pairs stay the cached ones.
    """
    meta = demos.meta
    vx, vy = _pairs(demos.val, history)

    def draw(round: int) -> BCData:
        if round < 0:
            raise ValueError(f"round={round} must be >= 0")
        tr = collect(
            meta["env_id"],
            expert,
            reset_seeds(meta["seed"], meta["n"], STREAM_FRESH + round),
            meta["horizon"],
            quiet=quiet,
            desc=f"fresh demos {round}",
        )
        tx, ty = _pairs(_kept(tr, drop_falls), history)
        return BCData(tx, ty, vx, vy)

    return draw
