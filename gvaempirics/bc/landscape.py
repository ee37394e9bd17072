r"""The reward landscape around a training iterate (paper Figure 1 right, result R1).

At a checkpoint :math:`\theta` of a behavior-cloning run, two independent minibatch gradients
:math:`g_1, g_2` of the BC loss (the run's own batch size) span a plane of the steps SGD could
have taken next. On the grid

.. math::

    \theta_{ab} = \theta + a\,\eta\,g_1 + b\,\eta\,g_2, \qquad a, b \in [-\text{extent}, \text{extent}],

in units of the run's own learning-rate step (:math:`\eta` the rate of the step that produced
:math:`\theta`, not normalized directions), the rollout reward :math:`J_H(\theta_{ab})` (the run's
initial conditions and horizon) and the validation BC loss are evaluated: every grid point is one
parameter dict of one batched evaluator call. GVA shows as a loss surface that is a smooth bowl
on this scale and a reward surface that is rough: a few steps of SGD noise move the reward
discontinuously. The same is done at the stabilizer's (EMA) weights at the same step, with the
gradients of the same minibatches evaluated there.

The grid's unit is one step of the run's own optimizer (``step_unit="auto"``, the default):
for SGD :math:`\eta g`; for Adam and AdamW the step Adam takes with each gradient,
:math:`\eta\, g / (\sqrt{\hat v} + \epsilon)` with the checkpoint's second moments, since
:math:`\eta g` is far smaller than an Adam step (which divides by :math:`\sqrt{\hat v}`).
``step_unit="plain"`` forces :math:`\eta g`, ``"preconditioned"`` the Adam step.

Roughness is measured on each surface relative to its own range (:mod:`.roughness`): the
quadratic-fit roughness, which is 0 for any smooth bowl, dome or plane and is what the verdicts
use, and total variation, jump fraction and fractal dimension as descriptive measures.

``gva bc landscape RUN --step N`` computes, saves (``landscape_step_N.json`` with the measures,
``landscape_step_N.npz`` with the surfaces, in the run directory) and plots it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gvatheory._checks import check_choice, check_int, check_positive

from ..rundir import RunDir, atomic_write, atomic_write_json, finite_json
from .roughness import Roughness, roughness

# ---------------------------------------------------------------------------- the landscape


@dataclass(frozen=True)
class Landscape:
    """Reward and loss surfaces around one checkpoint of a BC run, for raw and stabilized weights.

    ``a`` (na,) and ``b`` (nb,) are the grid in multiples of the directions ``d1 = eta g1``,
    ``d2 = eta g2`` (``preconditioned``: the Adam steps; :attr:`unit` names it); for each ``w`` in ``weights``
    (``("raw", stabilizer)``), ``returns[w]`` and ``lengths[w]`` are ``(na, nb, n_ic)``,
    ``losses[w]`` ``(na, nb)`` the validation BC loss. ``direction_norms[w]`` are the Euclidean
    norms of ``d1, d2`` and ``direction_cosine[w]`` the cosine between them; ``logged`` holds what
    the run's log says at this step (mean return, validation loss), for comparison with the centre.
    """

    run: str
    step: int
    eta: float
    preconditioned: bool
    seed: int
    H: int
    a: np.ndarray
    b: np.ndarray
    weights: tuple[str, ...]
    returns: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    losses: dict[str, np.ndarray]
    direction_norms: dict[str, tuple[float, float]]
    direction_cosine: dict[str, float]
    expert_return: float = float("nan")
    logged: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = float("nan")

    @property
    def rewards(self) -> dict[str, np.ndarray]:
        """Mean return over the initial conditions, ``(na, nb)`` per weights."""
        return {w: r.mean(-1) for w, r in self.returns.items()}

    @property
    def unit(self) -> str:
        """The grid's unit in words, as pages and plots print it."""
        return "Adam steps" if self.preconditioned else "eta g steps"

    @property
    def centre(self) -> tuple[int, int]:
        """Grid index of the checkpoint itself (a = b = 0)."""
        return len(self.a) // 2, len(self.b) // 2

    @cached_property
    def measures(self) -> dict[str, dict[str, Roughness]]:
        """``measures[w]["reward" | "loss"]``: the :class:`Roughness` of each surface."""
        return {w: {"reward": roughness(self.rewards[w]), "loss": roughness(self.losses[w])} for w in self.weights}

    def summary(self) -> dict[str, Any]:
        """Everything but the surfaces, JSON-ready (what ``landscape_step_N.json`` holds)."""
        i, j = self.centre
        return {
            "run": self.run,
            "step": self.step,
            "eta": self.eta,
            "preconditioned": self.preconditioned,
            "seed": self.seed,
            "H": self.H,
            "a": [float(x) for x in self.a],
            "b": [float(x) for x in self.b],
            "weights": list(self.weights),
            "expert_return": self.expert_return,
            "direction_norms": {w: list(v) for w, v in self.direction_norms.items()},
            "direction_cosine": dict(self.direction_cosine),
            "centre": {
                w: {"return": float(self.rewards[w][i, j]), "val_loss": float(self.losses[w][i, j])}
                for w in self.weights
            },
            "logged": self.logged,
            "measures": {w: {k: asdict(m) for k, m in ms.items()} for w, ms in self.measures.items()},
            "seconds": self.seconds,
        }


def landscape_paths(run: Path, step: int) -> tuple[Path, Path]:
    """``(json, npz)`` paths of the landscape of ``step`` in run directory ``run``."""
    return Path(run) / f"landscape_step_{step}.json", Path(run) / f"landscape_step_{step}.npz"


def save_landscape(result: Landscape, directory: Path) -> tuple[Path, Path]:
    """Write ``landscape_step_N.json`` (everything but the surfaces) and ``.npz`` (the surfaces)
    into ``directory`` through the atomic writer; return both paths."""
    js, npz = landscape_paths(directory, result.step)
    arrays = {"a": result.a, "b": result.b}
    for w in result.weights:
        arrays.update(
            {f"returns/{w}": result.returns[w], f"lengths/{w}": result.lengths[w], f"losses/{w}": result.losses[w]}
        )
    atomic_write(npz, lambda fh: np.savez(fh, **arrays))
    atomic_write_json(js, finite_json(result.summary()))
    return js, npz


def load_landscape(path: Path) -> Landscape:
    """Read a landscape saved by :func:`save_landscape` (give the ``.json`` or the ``.npz``)."""
    path = Path(path)
    js, npz = path.with_suffix(".json"), path.with_suffix(".npz")
    for p in (js, npz):
        if not p.is_file():
            raise ValueError(f"landscape file {p} does not exist")
    meta = json.loads(js.read_text())

    def num(x):
        return float(x) if isinstance(x, str) else x

    with np.load(npz, allow_pickle=False) as z:
        weights = tuple(meta["weights"])
        return Landscape(
            run=meta["run"],
            step=int(meta["step"]),
            eta=float(meta["eta"]),
            preconditioned=bool(meta["preconditioned"]),
            seed=int(meta["seed"]),
            H=int(meta["H"]),
            a=z["a"],
            b=z["b"],
            weights=weights,
            returns={w: z[f"returns/{w}"] for w in weights},
            lengths={w: z[f"lengths/{w}"] for w in weights},
            losses={w: z[f"losses/{w}"] for w in weights},
            direction_norms={w: tuple(map(num, v)) for w, v in meta["direction_norms"].items()},
            direction_cosine={w: num(v) for w, v in meta["direction_cosine"].items()},
            expert_return=num(meta["expert_return"]),
            logged={w: {k: num(v) for k, v in d.items()} for w, d in meta["logged"].items()},
            seconds=num(meta["seconds"]),
        )


STEP_UNITS = ("auto", "plain", "preconditioned")


def preconditioned_unit(step_unit: str, optimizer: str) -> bool:
    """Whether the grid of a run with ``optimizer`` is in Adam steps under ``step_unit``
    (:data:`STEP_UNITS`); ``"preconditioned"`` for an SGD run raises ``ValueError``."""
    check_choice("step_unit", step_unit, STEP_UNITS)
    if step_unit == "preconditioned" and optimizer == "sgd":
        raise ValueError("step_unit='preconditioned' is not valid for optimizer='sgd': only Adam/AdamW precondition")
    return step_unit == "preconditioned" or (step_unit == "auto" and optimizer != "sgd")


def compute_landscape(
    run: Path | RunDir,
    step: int = -1,
    *,
    extent: float = 5.0,
    points: int = 11,
    seed: int = 0,
    step_unit: str = "auto",
    threads: int = 0,
    memory_budget: int = 2**30,
    quiet: bool = True,
) -> Landscape:
    """The reward and loss landscape at checkpoint ``step`` of a BC run directory.

    Parameters
    ----------
    run : path or RunDir
        A run directory of ``gva bc train`` (its config, checkpoints and demonstrations).
    step : int
        A checkpointed step (``-1``: the newest checkpoint). Another step raises ``ValueError``
        naming the steps that have one.
    extent, points : float, int
        The grid: ``points`` (odd, >= 3, so that the centre is the checkpoint) values of ``a`` and of
        ``b`` evenly spaced in ``[-extent, extent]``, in units of one optimizer step (``step_unit``).
    seed : int
        Seed of the two minibatches (and of their dropout masks and input noise, when the run has them).
    step_unit : {"auto", "plain", "preconditioned"}
        The grid's unit: ``"auto"`` the run's own optimizer step (Adam-preconditioned for Adam and
        AdamW, ``eta g`` for SGD), ``"plain"`` ``eta g``, ``"preconditioned"`` the Adam step (Adam/AdamW
        runs only). See the module docstring.
    threads : int
        torch and MuJoCo threads (0: the run's own ``threads``).
    memory_budget : int
        Bytes of parameters per batched evaluator call; more grid points go in several calls.
    quiet : bool
        Hide the progress bar.
    """
    from ..stabilizers import swapped
    from .envs import initial_conditions
    from .run import adam_preconditioner, minibatch_gradient, open_run
    from .train import bc_loss, imitator_rollout

    start = time.perf_counter()
    check_positive("extent", extent)
    points = check_int("points", points, 3, 1001)
    if points % 2 == 0:
        raise ValueError(f"points={points} is not valid: must be odd, so that the centre is the checkpoint itself")
    check_int("seed", seed, 0)
    check_int("memory_budget", memory_budget, 1)
    check_choice("step_unit", step_unit, STEP_UNITS)
    opened = open_run(run, step, threads=threads)
    run, cfg, state, step, data, model = opened.run, opened.cfg, opened.state, opened.step, opened.data, opened.model
    stabilizer = opened.stabilizer
    preconditioned = preconditioned_unit(step_unit, cfg.optimizer)
    weights = ("raw", cfg.stabilizer)
    at = {
        "raw": {k: v.detach().clone() for k, v in model.named_parameters()},
        cfg.stabilizer: stabilizer.averaged_parameters(),
    }
    eta = float(cfg.lr_schedule()(step - 1))  # the size of the step that produced theta
    if eta <= 0:
        raise ValueError(f"step={step}: the learning rate of the step that produced it is {eta}; no scale for the grid")

    # Two independent minibatches of one optimizer step each (batch_size x grad_accum pairs).
    gen = torch.Generator().manual_seed(seed)
    n = cfg.batch_size * cfg.grad_accum
    batches = []
    for _ in range(2):
        idx = torch.randint(len(data.train_x), (n,), generator=gen)
        x = data.train_x[idx]
        if cfg.obs_noise > 0:
            x = x + cfg.obs_noise * torch.randn(x.shape, generator=gen)
        batches.append((x, data.train_y[idx]))
    scale = adam_preconditioner(cfg, model, state) if preconditioned else None
    directions = {}
    for w in weights:
        ds = []
        for k, (x, y) in enumerate(batches):
            g = minibatch_gradient(model, at[w], x, y, seed + k)
            ds.append({name: eta * (g[name] * scale[name] if scale else g[name]) for name in g})
        directions[w] = ds
    norms = {w: tuple(float(torch.sqrt(sum((v**2).sum() for v in d.values()))) for d in directions[w]) for w in weights}
    cosine = {
        w: float(
            sum((directions[w][0][k] * directions[w][1][k]).sum() for k in at[w]) / max(math.prod(norms[w]), 1e-300)
        )
        for w in weights
    }

    a = extent * np.linspace(-1.0, 1.0, points)
    a[points // 2] = 0.0
    grid = [(w, float(ai), float(bj)) for w in weights for ai in a for bj in a]

    def params(w: str, ai: float, bj: float) -> dict[str, Tensor]:
        d1, d2 = directions[w]
        return {k: v + (ai * d1[k] + bj * d2[k]) for k, v in at[w].items()}

    # every grid point is one parameter dict of the batched evaluator; 2 copies live at once (list + stack)
    per_point = 2 * 4 * sum(v.numel() for v in at["raw"].values())
    chunk = max(1, min(len(grid), memory_budget // per_point))
    ics = initial_conditions(cfg.env, cfg.ics, cfg.ic_seed)
    rollout = imitator_rollout(cfg, ics)
    returns, lengths, losses = [], [], []
    from tqdm.auto import tqdm

    with tqdm(total=len(grid), desc=f"landscape step {step}", unit="point", disable=quiet) as bar:
        for i in range(0, len(grid), chunk):
            plist = [params(*g) for g in grid[i : i + chunk]]
            r, n_steps = rollout(model, plist)
            returns.append(r)
            lengths.append(n_steps)
            for p in plist:  # the logging code's own loss, so the centre matches the log exactly
                with swapped(model, p):
                    losses.append(bc_loss(model, data.val_x, data.val_y))
            bar.update(len(plist))
    shape = (len(weights), points, points)
    R = np.concatenate(returns).reshape(*shape, -1)
    L = np.concatenate(lengths).reshape(*shape, -1)
    V = np.array(losses).reshape(shape)

    meta, logged = {}, {}
    for rec in run.metrics():
        if rec["kind"] == "meta":
            meta = rec
        elif rec.get("step") == step and rec["kind"] == "eval":
            logged.setdefault(rec["weights"], {})["return"] = rec["mean"]
        elif rec.get("step") == step and rec["kind"] == "loss":
            logged.setdefault("raw", {})["val_loss"] = rec["val"]
            logged.setdefault(cfg.stabilizer, {})["val_loss"] = rec["val_avg"]
    return Landscape(
        run=str(run.path),
        step=step,
        eta=eta,
        preconditioned=preconditioned,
        seed=seed,
        H=cfg.H,
        a=a,
        b=a.copy(),
        weights=weights,
        returns={w: R[k] for k, w in enumerate(weights)},
        lengths={w: L[k] for k, w in enumerate(weights)},
        losses={w: V[k] for k, w in enumerate(weights)},
        direction_norms=norms,
        direction_cosine=cosine,
        expert_return=float(meta.get("expert_return", float("nan"))),
        logged=logged,
        seconds=time.perf_counter() - start,
    )
