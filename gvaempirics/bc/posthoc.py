r"""Post-hoc EMA of a behavior-cloning run: rollout reward against the EMA width, after training.

A run trained with ``stabilizer="posthoc"`` tracks power-function EMAs of relative widths
``posthoc_sigma_rels`` and stores snapshots of them every ``posthoc_every`` updates, at every
iterate of the zoom windows, and at the end (:class:`gvaempirics.stabilizers.PostHocEMA`;
:class:`gvaempirics.bc.train.BCTrainer` takes the zoom snapshots). The power-function EMA of any
other width :math:`\sigma_{rel}` at a snapshot time is the least-squares combination of the
snapshots taken up to then (Karras et al. 2024; :func:`gvaempirics.stabilizers.synthesize`), so
the width can be chosen after training at the price of rollouts, not of training runs.

:func:`posthoc_sweep` synthesizes, for each :math:`\sigma_{rel}`, the averaged weights at every
zoom iterate :math:`t` (the snapshot with ``count = t + 1``: the stabilizer absorbs
:math:`\theta_0` before the first step), rolls them out with the batched evaluator from the run's
own initial conditions and horizon (all widths of one iterate in one call), and measures what
the run's summary measures for raw and averaged weights (:func:`gvaempirics.bc.results.zoom_reward_indices`):
mean return over the zoom iterates, its spread, oscillation index and flip rate, relative to the
expert's return. The raw iterate's logged returns at the same iterates are the reference.

``fit_error`` says how well the snapshots span the target profile: the relative :math:`L^2`
error :math:`\|\sum_i x_i p_i - p_{out}\| / \|p_{out}\|` of the least-squares fit (0 for a tracked
width, up to rounding near 1e-8). A width far from the tracked ones, with few snapshots
before the zoom window, is only approximated.

A run trained with ``posthoc_zoom="rollout"`` rolled every tracked width out at every zoom
iterate during training (the ``widths`` records of its log, with each average's movement):
:func:`posthoc_sweep` reads those instead (:func:`logged_sweep`), for tracked widths only; they
are exact (``fit_error`` 0) and need no snapshots, so such a run's checkpoints stay small.

``gva bc posthoc RUN`` runs the sweep and writes ``posthoc.json`` and ``posthoc.png`` into the
run directory (or ``--out``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gvatheory._checks import check_choice, check_int, check_range
from gvatheory.stabilizers import posthoc_coefficients, power_profile_inner

from ..metrics import zoom_indices
from ..rundir import RunDir, atomic_write_json, finite_json
from ..stabilizers import Snapshot

DEFAULT_SIGMA_RELS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2)  # as `gva lm posthoc`
SIGMA_REL_MAX = 12**-0.5  # the uniform average: the widest power-function profile
ITERATES = ("zoom", "snapshots")


@dataclass(frozen=True)
class PosthocSweep:
    """Rollouts of synthesized post-hoc EMAs of one BC run.

    ``returns[k]`` and ``lengths[k]`` ``(n_steps, n_ic)``: the EMA of width ``sigma_rels[k]`` at
    each of ``steps``; ``fit_error[k]`` ``(n_steps,)`` its profile fit's relative error.
    ``windows``: index arrays into ``steps`` of consecutive iterates (the zoom windows, or all
    snapshot times as one). ``raw_returns``: the raw iterate's logged returns at ``steps``
    (``None`` where the run did not evaluate them all). ``movement[k]`` ``(n_steps,)``: the
    Euclidean distance in weight space from the width's average at the window's previous iterate
    (NaN at each window's first), what the flip-distance law reads (:mod:`gvaempirics.bc.flips`).
    """

    run: str
    iterates: str
    steps: np.ndarray
    windows: list[np.ndarray]
    sigma_rels: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray
    fit_error: np.ndarray
    raw_returns: np.ndarray | None
    raw_lengths: np.ndarray | None
    tracked_sigma_rels: tuple[float, ...]
    expert_return: float
    H: int
    seconds: float = float("nan")
    movement: np.ndarray | None = None

    def indices(self, returns: np.ndarray) -> dict[str, float]:
        """Mean return, return sd (reward units), reward oscillation, spread and flip rate of
        ``returns`` ``(n_steps, n_ic)`` over the windows, as the run's summary computes them."""
        from .results import zoom_reward_indices

        scale = self.expert_return
        if not (math.isfinite(scale) and scale > 0):
            return {"mean_return": float(np.mean([returns[z].mean() for z in self.windows]))}
        out = {k.removeprefix("zoom_"): v for k, v in zoom_reward_indices(returns, self.windows, scale).items()}
        out["return_sd"] = out["reward_spread"] * scale
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One row per weights: the raw iterate (when logged) first, then each ``sigma_rel``;
        ``falls`` is the fraction of rollouts that ended before ``H``, ``fit_error`` the largest over the iterates."""
        rows = []
        if self.raw_returns is not None:
            rows.append(
                {
                    "weights": "raw",
                    "sigma_rel": None,
                    **self.indices(self.raw_returns),
                    "falls": float(np.mean(self.raw_lengths < self.H)),
                    "fit_error": None,
                }
            )
        for k, s in enumerate(self.sigma_rels):
            rows.append(
                {
                    "weights": "posthoc",
                    "sigma_rel": float(s),
                    **self.indices(self.returns[k]),
                    "falls": float(np.mean(self.lengths[k] < self.H)),
                    "fit_error": float(np.max(self.fit_error[k])),
                }
            )
        return rows

    def summary(self) -> dict[str, Any]:
        """Everything, JSON-ready (what ``posthoc.json`` holds; non-finite floats as strings)."""
        return finite_json(
            {
                "run": self.run,
                "iterates": self.iterates,
                "steps": [int(s) for s in self.steps],
                "windows": [[int(i) for i in w] for w in self.windows],
                "sigma_rels": [float(s) for s in self.sigma_rels],
                "tracked_sigma_rels": list(self.tracked_sigma_rels),
                "expert_return": float(self.expert_return),
                "H": self.H,
                "rows": self.rows(),
                "returns": self.returns.tolist(),
                "lengths": self.lengths.tolist(),
                "fit_error": self.fit_error.tolist(),
                "movement": None if self.movement is None else self.movement.tolist(),
                "raw_returns": None if self.raw_returns is None else self.raw_returns.tolist(),
                "raw_lengths": None if self.raw_lengths is None else self.raw_lengths.tolist(),
                "seconds": float(self.seconds),
            }
        )


def save_posthoc(result: PosthocSweep, directory: Path) -> Path:
    """Write ``posthoc.json`` into ``directory`` through the atomic writer; return its path."""
    return atomic_write_json(Path(directory) / "posthoc.json", result.summary())


def load_posthoc(path: Path) -> PosthocSweep:
    """Read a sweep saved by :func:`save_posthoc` (the file, or the folder holding ``posthoc.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "posthoc.json"
    if not path.is_file():
        raise ValueError(f"posthoc file {path} does not exist")
    d = json.loads(path.read_text())

    def num(x):
        return float(x) if isinstance(x, str) else x

    def arr(x, dtype=float):
        return None if x is None else np.array(x, dtype=dtype)

    return PosthocSweep(
        run=d["run"],
        iterates=d["iterates"],
        steps=np.array(d["steps"], dtype=int),
        windows=[np.array(w, dtype=int) for w in d["windows"]],
        sigma_rels=np.array(d["sigma_rels"], dtype=float),
        returns=arr(d["returns"]),
        lengths=arr(d["lengths"], int),
        fit_error=arr(d["fit_error"]),
        raw_returns=arr(d["raw_returns"]),
        raw_lengths=arr(d["raw_lengths"], int),
        tracked_sigma_rels=tuple(d["tracked_sigma_rels"]),
        expert_return=num(d["expert_return"]),
        H=int(d["H"]),
        seconds=num(d["seconds"]),
        movement=None if d.get("movement") is None else np.array([[num(x) for x in row] for row in d["movement"]]),
    )


def check_run(path: Path | RunDir, *, checkpoints: bool = True):
    """The :class:`~gvaempirics.bc.config.BCConfig` of a BC run directory trained with the post-hoc
    stabilizer (with its checkpoints, unless ``checkpoints`` is false, a run whose measurements are
    already saved, or it rolled out its widths in training); ``ValueError`` naming ``run`` otherwise
    (checked before any work)."""
    from gvatheory.config import build_config

    from .config import BCConfig

    run = path if isinstance(path, RunDir) else RunDir(Path(path))
    if not run.exists():
        raise ValueError(f"run={run.path} is not a run directory (no config.json)")
    values = run.read_config()
    names = {f.name for f in dataclasses.fields(BCConfig)}
    foreign = sorted(set(values) - names)
    if foreign or "env" not in values:
        raise ValueError(
            f"run={run.path} is not a behavior-cloning run: its config has "
            f"{', '.join(foreign[:3]) if foreign else 'no env'} (`gva bc train` writes one)"
        )
    cfg = build_config(BCConfig, values, source=str(run.config_path))
    if cfg.stabilizer != "posthoc":
        raise ValueError(
            f"run={run.path} was trained with stabilizer={cfg.stabilizer!r}; post-hoc synthesis needs a run "
            "trained with --stabilizer posthoc"
        )
    if checkpoints and cfg.posthoc_zoom == "snapshot" and not run.checkpoints():  # "rollout": read from the log
        raise ValueError(f"run={run.path} has no checkpoint yet: train it first")
    return cfg


def zoom_steps(cfg) -> list[int]:
    """Every evaluated iterate inside the zoom windows of the run configured by ``cfg``."""
    return [t for t in cfg.eval_steps() if any(s <= t < s + cfg.zoom_length for s in cfg.zoom_windows)]


def fit_error(snapshots: Sequence[Snapshot], sigma_rel: float, count: int) -> float:
    r"""Relative :math:`L^2` error of the least-squares fit of the profile ``(count, sigma_rel)`` by
    the snapshots that :func:`gvaempirics.stabilizers.synthesize` uses (those at or before ``count``)."""
    used = [s for s in snapshots if s.count <= count]
    counts = np.array([s.count for s in used], dtype=float)
    sigmas = np.array([s.sigma_rel for s in used], dtype=float)
    x = posthoc_coefficients(counts, sigmas, count, sigma_rel)
    gram = power_profile_inner(counts[:, None], sigmas[:, None], counts[None, :], sigmas[None, :])
    rhs = power_profile_inner(counts, sigmas, count, sigma_rel)
    norm2 = float(power_profile_inner(count, sigma_rel, count, sigma_rel))
    return math.sqrt(max(float(x @ gram @ x - 2 * x @ rhs) + norm2, 0.0) / norm2)


def posthoc_sweep(
    run: Path | RunDir,
    sigma_rels: Sequence[float] = DEFAULT_SIGMA_RELS,
    *,
    iterates: str = "zoom",
    threads: int = 0,
    memory_budget: int = 2**30,
    quiet: bool = True,
) -> PosthocSweep:
    """Roll out the post-hoc EMA of each ``sigma_rel`` at the zoom iterates of a BC run.

    Parameters
    ----------
    run : path or RunDir
        A run directory of ``gva bc train --stabilizer posthoc`` (its newest checkpoint holds the snapshots).
    sigma_rels : sequence of float
        Relative EMA widths in ``(0, 12**-0.5]`` (``12**-0.5``: the uniform average).
    iterates : str
        ``"zoom"``: every zoom iterate that has a snapshot (runs trained with zoom snapshots);
        ``"snapshots"``: every snapshot time, as one series (for runs without them; the raw
        reference is then given only if the run evaluated every such step).
    threads : int
        torch and MuJoCo threads (0: the run's own ``threads``).
    memory_budget : int
        Bytes of parameters per batched evaluator call; more iterates go in several calls.
    quiet : bool
        Hide the progress bar.
    """
    from tqdm.auto import tqdm

    from .envs import initial_conditions
    from .results import load_result
    from .run import open_run
    from .train import imitator_rollout

    start = time.perf_counter()
    sigma_rels = [float(s) for s in sigma_rels]
    if not sigma_rels:
        raise ValueError("sigma_rels=[] is out of range: give at least one relative width")
    for s in sigma_rels:
        check_range("sigma_rels", s, 0.0, SIGMA_REL_MAX, low_open=True)
    check_choice("iterates", iterates, ITERATES)
    check_int("threads", threads, 0)
    check_int("memory_budget", memory_budget, 1)
    rd = run if isinstance(run, RunDir) else RunDir(Path(run))
    if check_run(rd).posthoc_zoom == "rollout":
        if iterates != "zoom":
            raise ValueError(
                f"iterates={iterates!r} is out of range for run={rd.path}: trained with "
                "posthoc_zoom='rollout', it has no snapshots; use iterates='zoom'"
            )
        return logged_sweep(rd, sigma_rels)
    opened = open_run(rd, -1, threads=threads)
    cfg, model, stabilizer = opened.cfg, opened.model, opened.stabilizer
    counts = sorted({s.count for s in stabilizer.snapshots})
    snapshotted = set(counts)
    if iterates == "zoom":
        zoom = zoom_steps(cfg)
        steps = np.array([t for t in zoom if t + 1 in snapshotted], dtype=int)
        windows = zoom_indices(steps, cfg.zoom_windows, cfg.zoom_length)
        if not windows:
            raise ValueError(
                f"run={rd.path} has no zoom window with 2 or more snapshotted iterates (zoom_windows="
                f"{list(cfg.zoom_windows)}; runs trained before zoom snapshots existed): use iterates='snapshots'"
            )
        steps = steps[np.concatenate(windows)]
        windows = zoom_indices(steps, cfg.zoom_windows, cfg.zoom_length)
    else:
        steps = np.array([c - 1 for c in counts], dtype=int)
        if len(steps) < 2:
            raise ValueError(f"run={rd.path} has {len(steps)} snapshot time(s): need at least 2")
        windows = [np.arange(len(steps))]

    res = load_result(rd)
    logged = {int(s): i for i, s in enumerate(res.eval_steps)}
    if all(int(t) in logged for t in steps):
        rows = [logged[int(t)] for t in steps]
        raw_returns, raw_lengths = res.returns["raw"][rows], res.lengths["raw"][rows]
    else:
        raw_returns = raw_lengths = None

    ics = initial_conditions(cfg.env, cfg.ics, cfg.ic_seed)
    rollout = imitator_rollout(cfg, ics)
    S = len(sigma_rels)
    per_step = S * 2 * 4 * sum(p.numel() for p in model.parameters())  # the list and its stack, float32
    chunk = max(1, min(len(steps), memory_budget // per_step))
    returns, lengths = [], []
    first = {int(w[0]) for w in windows}  # a window's first iterate has no predecessor in it
    movement, previous = np.full((S, len(steps)), np.nan), [None] * S
    errors = np.array([[fit_error(stabilizer.snapshots, s, int(t) + 1) for t in steps] for s in sigma_rels])
    with tqdm(
        total=len(steps) * S, desc=f"posthoc {rd.path.name}", unit="policy", disable=quiet, dynamic_ncols=True
    ) as bar:
        for i in range(0, len(steps), chunk):
            # every width is synthesized and its fit error reported, however large
            params = [
                stabilizer.averaged_parameters(s, count=int(t) + 1, max_residual=None)
                for t in steps[i : i + chunk]
                for s in sigma_rels
            ]
            for j, p in enumerate(params):
                i_step, k = i + j // S, j % S
                flat = torch.cat([v.reshape(-1) for v in p.values()])
                if i_step not in first:
                    movement[k, i_step] = float((flat - previous[k]).norm())
                previous[k] = flat
            r, n = rollout(model, params)
            returns.append(r)
            lengths.append(n)
            bar.update(len(params))
    n_ic = cfg.ics
    R = np.concatenate(returns).reshape(len(steps), S, n_ic).transpose(1, 0, 2)
    L = np.concatenate(lengths).reshape(len(steps), S, n_ic).transpose(1, 0, 2)
    return PosthocSweep(
        run=str(rd.path),
        iterates=iterates,
        steps=steps,
        windows=windows,
        sigma_rels=np.array(sigma_rels),
        returns=R,
        lengths=L,
        fit_error=errors,
        raw_returns=raw_returns,
        raw_lengths=raw_lengths,
        tracked_sigma_rels=tuple(cfg.posthoc_sigma_rels),
        expert_return=res.expert_return,
        H=cfg.H,
        seconds=time.perf_counter() - start,
        movement=movement,
    )


def logged_sweep(run: Path | RunDir, sigma_rels: Sequence[float]) -> PosthocSweep:
    """The sweep of a run trained with ``posthoc_zoom="rollout"``, read from its log: there every
    tracked width was rolled out at every zoom iterate during training (exact, so ``fit_error`` is
    0) and logged with its movement; each of ``sigma_rels`` must be one of its tracked widths."""
    from .results import load_result

    rd = run if isinstance(run, RunDir) else RunDir(Path(run))
    cfg = check_run(rd, checkpoints=False)
    tracked = [float(s) for s in cfg.posthoc_sigma_rels]
    order = []
    for s in sigma_rels:
        hit = [k for k, t in enumerate(tracked) if math.isclose(float(s), t, rel_tol=1e-9)]
        if not hit:
            raise ValueError(
                f"sigma_rels={float(s):g} is out of range for run={rd.path}: trained with posthoc_zoom='rollout', "
                f"it rolled out only its tracked widths {', '.join(f'{t:g}' for t in tracked)}"
            )
        order.append(hit[0])
    res = load_result(rd)
    logged = {int(t): i for i, t in enumerate(res.eval_steps)}
    recs = {int(r["step"]): r for r in rd.metrics("widths") if int(r["step"]) in logged}
    steps = np.array(zoom_steps(cfg), dtype=int)
    missing = [int(t) for t in steps if int(t) not in recs]
    if missing:  # a run still training: its windows are incomplete, and a sweep of them is not the run's
        raise ValueError(
            f"run={rd.path} has rolled out {len(steps) - len(missing)} of its {len(steps)} zoom iterates "
            f"(first missing: step {missing[0]}): train it to the end of its zoom windows first"
        )
    windows = zoom_indices(steps, cfg.zoom_windows, cfg.zoom_length)

    def pick(key: str) -> np.ndarray:  # (width, iterate[, ic]), widths in the order asked
        return np.swapaxes(np.array([recs[int(t)][key] for t in steps], dtype=float)[:, order], 0, 1)

    movement = pick("movement")
    movement[:, [int(w[0]) for w in windows]] = np.nan  # a window's first iterate has no predecessor in it
    rows = [logged[int(t)] for t in steps]
    return PosthocSweep(
        run=str(rd.path),
        iterates="zoom",
        steps=steps,
        windows=windows,
        sigma_rels=np.array([tracked[k] for k in order]),
        returns=pick("returns"),
        lengths=pick("lengths").astype(int),
        fit_error=np.zeros((len(order), len(steps))),
        raw_returns=res.returns["raw"][rows],
        raw_lengths=res.lengths["raw"][rows],
        tracked_sigma_rels=tuple(tracked),
        expert_return=res.expert_return,
        H=cfg.H,
        seconds=0.0,
        movement=movement,
    )
