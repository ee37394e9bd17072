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

The cache is one ``.npz`` written to a temporary file and renamed, so an interrupted collection
leaves no file under the real name and the next call simply collects again.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from gvaempirics.bc import BCData
from gvaempirics.experts import ic_seeds, run_episodes

_STREAM_TRAIN, _STREAM_VAL, _STREAM_FRESH = 1, 2, 3


@dataclass(frozen=True)
class Trajectories:
    """Augmented expert trajectories, zero-padded past termination."""

    states: np.ndarray  # (N, H, obs_dim + act_dim): (s_t, u_{t-1})
    actions: np.ndarray  # (N, H, act_dim): u_t
    lengths: np.ndarray  # (N,) alive steps
    returns: np.ndarray  # (N,) expert return over the alive steps


def collect(env_id: str, expert: Callable[[torch.Tensor], torch.Tensor], seeds: list[int], horizon: int, *,
            chunk: int = 50, quiet: bool = True, desc: str = "demos") -> Trajectories:
    """Roll the expert from ``env.reset(seed=s)`` for each seed and augment with the previous action."""
    from tqdm.auto import tqdm

    parts = []
    with tqdm(total=len(seeds), desc=desc, unit="traj", disable=quiet) as bar:
        for i in range(0, len(seeds), chunk):
            parts.append(run_episodes(env_id, expert, seeds[i:i + chunk], horizon, record=True))
            bar.update(len(seeds[i:i + chunk]))
    obs = np.concatenate([p["obs"] for p in parts])  # (N, H, obs_dim)
    act = np.concatenate([p["actions"] for p in parts])  # (N, H, act_dim)
    prev = np.concatenate([np.zeros_like(act[:, :1]), act[:, :-1]], axis=1)  # u_{t-1}, u_{-1} = 0
    return Trajectories(np.concatenate([obs, prev], axis=-1), act,
                        np.concatenate([p["lengths"] for p in parts]), np.concatenate([p["returns"] for p in parts]))


def _pairs(tr: Trajectories, history: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for length in np.unique(tr.lengths):  # alive steps only; one group per distinct length
        rows = tr.lengths == length
        d = BCData.from_trajectories(tr.states[rows, :length], tr.actions[rows, :length],
                                     tr.states[rows, :length], tr.actions[rows, :length], history)
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

    def bc_data(self, history: int) -> BCData:
        """Training pairs for :class:`gvaempirics.bc.BCTrainer` from the alive steps."""
        tx, ty = _pairs(self.train, history)
        vx, vy = _pairs(self.val, history)
        return BCData(tx, ty, vx, vy)

    def save(self, path: Path) -> None:
        """Write the cache atomically: a temporary file, then ``os.replace``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        arrays = {f"{split}_{k}": getattr(getattr(self, split), k)
                  for split in ("train", "val") for k in ("states", "actions", "lengths", "returns")}
        np.savez(tmp, meta=np.array(json.dumps(self.meta)), **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "Demonstrations":
        """Read a cache; a missing, truncated or corrupt file raises an error naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such demonstration file")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                splits = {s: Trajectories(*(z[f"{s}_{k}"] for k in ("states", "actions", "lengths", "returns")))
                          for s in ("train", "val")}
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
            raise ValueError(f"{path} is corrupt or truncated and cannot be read as demonstrations "
                             f"({type(err).__name__}: {err})") from None
        return cls(splits["train"], splits["val"], meta)


def _check(n: int, n_val: int, horizon: int) -> None:
    for name, v, lo in (("n", n, 1), ("n_val", n_val, 1), ("horizon", horizon, 1)):
        if v < lo:
            raise ValueError(f"{name}={v} must be >= {lo}")


def make_demonstrations(env_id: str, expert: Callable[[torch.Tensor], torch.Tensor], *, n: int, horizon: int,
                        seed: int, n_val: int | None = None, expert_info: dict[str, Any] | None = None,
                        quiet: bool = True) -> Demonstrations:
    """Collect ``n`` training and ``n_val`` (default ``max(1, n // 10)``) validation trajectories."""
    n_val = max(1, n // 10) if n_val is None else n_val
    _check(n, n_val, horizon)
    train = collect(env_id, expert, ic_seeds(seed, n, _STREAM_TRAIN), horizon, quiet=quiet, desc="train demos")
    val = collect(env_id, expert, ic_seeds(seed, n_val, _STREAM_VAL), horizon, quiet=quiet, desc="val demos")
    meta = {"env_id": env_id, "n": n, "n_val": n_val, "horizon": horizon, "seed": seed,
            "expert": {k: (expert_info or {}).get(k) for k in ("env_id", "checkpoint", "env_steps")},
            "expert_return_mean": float(train.returns.mean()), "expert_return_sd": float(train.returns.std()),
            "expert_falls": int((train.lengths < horizon).sum())}
    return Demonstrations(train, val, meta)


def load_or_make(path: Path, env_id: str, expert: Callable[[torch.Tensor], torch.Tensor], *, n: int,
                 horizon: int, seed: int, n_val: int | None = None, expert_info: dict[str, Any] | None = None,
                 quiet: bool = True) -> Demonstrations:
    """The cached demonstrations at ``path`` if they match the settings, else collect and cache them.

    A cache made with other settings is an error (it names the file and the differing settings),
    never silently overwritten.
    """
    path = Path(path)
    n_val = max(1, n // 10) if n_val is None else n_val
    if path.is_file():
        demos = Demonstrations.load(path)
        want = {"env_id": env_id, "n": n, "n_val": n_val, "horizon": horizon, "seed": seed}
        diff = {k: (demos.meta.get(k), v) for k, v in want.items() if demos.meta.get(k) != v}
        if diff:
            raise ValueError(f"{path} holds other demonstrations (cached vs requested: {diff}); "
                             "choose another path or delete it")
        return demos
    demos = make_demonstrations(env_id, expert, n=n, horizon=horizon, seed=seed, n_val=n_val,
                                expert_info=expert_info, quiet=quiet)
    demos.save(path)
    return demos


def fresh_data(demos: Demonstrations, expert: Callable[[torch.Tensor], torch.Tensor], history: int, *,
               quiet: bool = True) -> Callable[[int], BCData]:
    """The infinite-data control: ``round -> BCData`` with ``n`` new i.i.d. expert trajectories.

    Round ``r`` draws its initial conditions from ``SeedSequence([seed, 3 + r])``, disjoint from the
    cached training and validation streams; validation pairs stay the cached ones.
    """
    meta = demos.meta
    vx, vy = _pairs(demos.val, history)

    def draw(round: int) -> BCData:
        if round < 0:
            raise ValueError(f"round={round} must be >= 0")
        tr = collect(meta["env_id"], expert, ic_seeds(meta["seed"], meta["n"], _STREAM_FRESH + round),
                     meta["horizon"], quiet=quiet, desc=f"fresh demos {round}")
        tx, ty = _pairs(tr, history)
        return BCData(tx, ty, vx, vy)

    return draw
