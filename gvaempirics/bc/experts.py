"""Expert policies for the behavior-cloning experiments (Section 3 and Figure 1 of the paper).

The imitators of the paper clone a fixed deterministic expert :math:`\\pi^\\star(s)`. Here the
expert is a stable-baselines3 PPO policy trained with its environment's recipe
(:data:`gvaempirics.bc.expert_runs.RECIPES`: ``VecNormalize`` on observations and rewards, tanh nets), and
exported as a plain torch MLP that acts with the Gaussian mean,

.. math::

    \\pi^\\star(s) = \\operatorname{clip}_{[u_{lo}, u_{hi}]}\\big(W_3 \\tanh(W_2 \\tanh(W_1 \\bar s + b_1) + b_2) + b_3\\big),
    \\qquad \\bar s = \\operatorname{clip}_{[-c, c]}\\Big(\\frac{s - m}{\\sqrt{v + \\epsilon}}\\Big),

with the ``VecNormalize`` statistics :math:`(m, v, \\epsilon, c)` folded in and the final clip to
the action bounds that SB3's ``predict`` applies. Training and its checkpoints are in
:mod:`gvaempirics.bc.expert_runs`. PPO is noisy between checkpoints, so the shipped expert is *selected*: every checkpoint is
evaluated deterministically over 20 seeded initial conditions at H=1000, and the best robust one
(no episode terminated early) with the highest mean return is exported. The best of many
checkpoints on one set of initial conditions is biased upward on that set (a checkpoint may walk
all 20 and fall on one in ten elsewhere), so the sidecar also reports the chosen expert on
:data:`HELDOUT_ICS` initial conditions of another seed (``heldout``): that is its figure.

Export reads only plain tensors and JSON: each checkpoint's policy as training folded it
(``expert_<N>_steps.pt``, loaded with ``weights_only=True``) and the run's manifest, never SB3's
pickles (:mod:`gvaempirics.bc.expert_runs`). Every expert file is checked to fit its declared
architecture and to hold finite weights before it acts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from gvatheory._checks import check_int

from ..rundir import atomic_torch_save, atomic_write_bytes, check_creatable, sha256_file
from .envs import check_env_id
from .expert_recipes import RECIPES
from .expert_runs import MANIFEST, read_manifest, read_times, verified_checkpoints
from .policy import ExpertMLP, fold, load_expert_file  # noqa: F401 (importable from here, as before)

SHIPPED_DIR = Path(__file__).with_name("shipped")
HELDOUT_ICS = 100  # initial conditions the selected expert is reported on, none of them used to select it
HELDOUT_SEED = 777  # their seed (the selection's default is 0)


@dataclass(frozen=True)
class ExpertEval:
    """Deterministic returns and episode lengths of an expert over seeded initial conditions."""

    returns: np.ndarray  # (ics,)
    lengths: np.ndarray  # (ics,)
    horizon: int
    distances: np.ndarray  # (ics,) forward progress: x displacement of the root over the episode

    @property
    def distance(self) -> float:
        """Mean forward progress: tells walking from standing still (Humanoid earns ~5 per step alive)."""
        return float(self.distances.mean())

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def sd(self) -> float:
        return float(self.returns.std(ddof=1)) if len(self.returns) > 1 else 0.0

    @property
    def falls(self) -> int:
        """Episodes that terminated before the horizon (Walker2d/Hopper fall; HalfCheetah never terminates)."""
        return int((self.lengths < self.horizon).sum())


def evaluate(env_id: str, expert: nn.Module, *, ics: int = 20, H: int = 1000, ic_seed: int = 0) -> ExpertEval:
    """Deterministic evaluation of ``expert`` from ``ics`` seeded initial conditions (evaluation
    stream of ``ic_seed``) for at most ``H`` steps."""
    check_env_id(env_id)
    ics, H, ic_seed = check_int("ics", ics, 1), check_int("H", H, 1), check_int("ic_seed", ic_seed, 0)
    from .envs import initial_conditions
    from .evaluator import run_episodes

    res = run_episodes(env_id, expert, initial_conditions(env_id, ics, ic_seed), H)
    return ExpertEval(res["returns"], res["lengths"], H, res["distances"])


def eval_record(ev: ExpertEval, ic_seed: int, *, per_ic: bool = True) -> dict[str, Any]:
    """An evaluation as a sidecar records it (``eval``, ``heldout``)."""
    rec = {
        "n_ics": len(ev.returns),
        "horizon": ev.horizon,
        "ic_seed": ic_seed,
        "return_mean": ev.mean,
        "return_sd": ev.sd,
        "falls": ev.falls,
        "distance_mean": round(ev.distance, 2),
    }
    if per_ic:
        rec["returns"] = [round(float(r), 2) for r in ev.returns]
        rec["distances"] = [round(float(x), 2) for x in ev.distances]
    return rec


def heldout_record(
    env_id: str, expert: nn.Module, *, ics: int = HELDOUT_ICS, H: int = 1000, ic_seed: int = HELDOUT_SEED
) -> dict[str, Any]:
    """The sidecar's ``heldout`` block: ``expert`` on ``ics`` initial conditions of ``ic_seed``, with the
    ``gva expert eval`` options that repeat it."""
    rec = eval_record(evaluate(env_id, expert, ics=ics, H=H, ic_seed=ic_seed), ic_seed, per_ic=False)
    rec["command"] = f"gva expert eval {env_id} --expert EXPERT --ics {ics} --H {H} --ic-seed {ic_seed}"
    return rec


def run_expert(manifest: dict[str, Any], path: Path) -> ExpertMLP:
    """The policy file ``path`` of a run, in the architecture its manifest records."""
    recipe = _recipe_of(manifest)
    hidden = tuple(int(h) for h in recipe["hidden"])
    kind = dict(activation=recipe.get("activation", "tanh"), output=recipe.get("output", "clip"))
    return load_expert_file(path, manifest["obs_dim"], manifest["act_dim"], hidden, **kind)


@dataclass(frozen=True)
class Candidate:
    steps: int
    evaluation: ExpertEval


def select(
    env_id: str,
    run_dir: Path,
    *,
    ics: int = 20,
    H: int = 1000,
    ic_seed: int = 0,
    min_steps: int = 0,
    quiet: bool = False,
) -> tuple[list[Candidate], Candidate]:
    """Evaluate every checkpoint of ``run_dir`` (from ``min_steps`` on) and pick the expert.

    The run directory is checked first (:func:`verified_checkpoints`). The pick is the robust
    checkpoint (no fall) with the highest mean return; if no checkpoint is robust, the one with
    the fewest falls, then the highest mean return.
    """
    from tqdm.auto import tqdm

    ckpts = verified_checkpoints(env_id, run_dir, min_steps=min_steps)
    manifest = read_manifest(run_dir)
    experts = [run_expert(manifest, path) for _, path in ckpts]  # every file checked before any rollout
    ics, H, ic_seed = check_int("ics", ics, 1), check_int("H", H, 1), check_int("ic_seed", ic_seed, 0)
    cands = []
    for (steps, _), expert in tqdm(
        list(zip(ckpts, experts)), desc=f"evaluate {env_id} checkpoints", unit="ckpt", disable=quiet
    ):
        cands.append(Candidate(steps, evaluate(env_id, expert, ics=ics, H=H, ic_seed=ic_seed)))
    return cands, pick(cands)


def pick(cands: list[Candidate]) -> Candidate:
    """Fewest falls first (robust = none), then the highest mean return."""
    return max(cands, key=lambda c: (-c.evaluation.falls, c.evaluation.mean))


def export(
    env_id: str,
    run_dir: Path,
    dest: Path,
    *,
    ics: int = 20,
    H: int = 1000,
    ic_seed: int = 0,
    min_steps: int = 0,
    command: str = "",
    train_seed: int | None = None,
    note: str = "",
    training_time: dict[str, float] | None = None,
    heldout_ics: int = HELDOUT_ICS,
    heldout_seed: int = HELDOUT_SEED,
    quiet: bool = False,
) -> dict[str, Any]:
    """Select the best checkpoint of ``run_dir`` and write ``dest`` (state dict) + ``dest.json`` (sidecar).

    The selection's evaluation (``eval``: ``ics`` initial conditions of ``ic_seed``) is biased
    upward by the selection itself; the chosen checkpoint is then evaluated on ``heldout_ics``
    initial conditions of ``heldout_seed`` (``heldout``; 0: not evaluated), which must differ from
    ``ic_seed``.

    Checks the run directory (:func:`verified_checkpoints`) and ``dest`` before evaluating
    anything. ``command`` is recorded as given: give paths relative to the run directory (the
    ``gva expert`` commands do). ``train_seed``, recorded in the sidecar, is the seed in the run's
    manifest; one given that differs from it is refused.
    """
    run_dir, dest = Path(run_dir), check_creatable(Path(dest), "out")
    heldout_ics = check_int("heldout_ics", heldout_ics, 0)
    if heldout_ics and check_int("heldout_seed", heldout_seed, 0) == ic_seed:
        raise ValueError(
            f"heldout_seed={heldout_seed} is out of range: it must differ from ic_seed={ic_seed}, the selection's "
            "initial conditions"
        )
    verified_checkpoints(env_id, run_dir, min_steps=min_steps)
    manifest = read_manifest(run_dir)
    if train_seed is not None and train_seed != manifest["seed"]:
        raise ValueError(
            f"seed={train_seed} is not the training seed of run={run_dir}: its {MANIFEST} records "
            f"seed={manifest['seed']} (leave seed out to record that one)"
        )
    cands, best = select(env_id, run_dir, ics=ics, H=H, ic_seed=ic_seed, min_steps=min_steps, quiet=quiet)
    z = next(p for steps, p in verified_checkpoints(env_id, run_dir, min_steps=min_steps) if steps == best.steps)
    expert = run_expert(manifest, z)
    if training_time is None:
        training_time = read_times(run_dir / "train_time.json")
    ev = best.evaluation
    info = {
        "env_id": env_id,
        "obs_dim": expert.obs_dim,
        "act_dim": expert.act_dim,
        "architecture": {
            "hidden": list(expert.hidden),
            "activation": expert.activation,
            "input": "VecNormalize obs normalization folded in (clip included)",
            "output": _OUTPUT_TEXT[expert.output],
        },
        "algorithm": manifest.get("algorithm", "stable-baselines3 PPO"),
        "recipe": {**_recipe_of(manifest), "n_envs": manifest["n_envs"]},
        "command": command,
        "seed": manifest["seed"] if train_seed is None else train_seed,
        "env_steps": best.steps,
        "training_time": training_time,
        "checkpoint": z.name,
        "checkpoint_sha256": manifest["files"][z.name],
        "eval": eval_record(ev, ic_seed),
        "heldout": heldout_record(env_id, expert, ics=heldout_ics, H=H, ic_seed=heldout_seed) if heldout_ics else None,
        "candidates": [
            {
                "steps": c.steps,
                "return_mean": round(c.evaluation.mean, 1),
                "return_sd": round(c.evaluation.sd, 1),
                "falls": c.evaluation.falls,
                "distance_mean": round(c.evaluation.distance, 2),
            }
            for c in cands
        ],
        "note": note,
    }
    save_expert(expert, info, dest)
    return info


_OUTPUT_TEXT = {
    "clip": "Gaussian mean clipped to the action bounds",
    "squash": "tanh of the Gaussian mean, mapped affinely onto the action bounds",
}


def _recipe_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The run's recipe as its manifest records it (runs from before per-env recipes: the default)."""
    recipe = manifest.get("recipe")
    return dict(recipe) if isinstance(recipe, dict) else RECIPES[("ppo", "default")].record()


def save_expert(expert: ExpertMLP, info: dict[str, Any], dest: Path) -> None:
    """Write the state dict to ``dest`` and ``info`` to ``dest`` with suffix ``.json``, each through
    the toolkit's atomic writer."""
    dest = Path(dest)
    atomic_torch_save(expert.state_dict(), dest)
    atomic_write_bytes(dest.with_suffix(".json"), (json.dumps(info, indent=2) + "\n").encode())


def expert_file(env_id: str, expert: str | Path | None = None) -> Path:
    """The file an expert setting names: empty or ``None``, the expert shipped for ``env_id``; a bare
    name without a suffix (``Walker2d-v5-sac``), the shipped ``gvaempirics/bc/shipped/<name>.pt``;
    anything else, that path."""
    if not expert:
        return SHIPPED_DIR / f"{env_id}.pt"
    path = Path(expert)
    if not path.suffix and str(expert) == path.name:
        return SHIPPED_DIR / f"{path.name}.pt"
    return path


def load_expert(env_id: str, path: str | Path | None = None) -> tuple[ExpertMLP, dict[str, Any]]:
    """Load an exported expert (default: the shipped ``gvaempirics/bc/shipped/<env_id>.pt``; a bare
    name, the shipped expert of that name: :func:`expert_file`) and its
    sidecar, checked against the env: the sidecar's ``env_id`` and the observation and action
    sizes must be the env's. The returned info also holds the file's ``sha256``.

    Every problem (missing or corrupt file or sidecar, another env's expert, wrong sizes) raises
    ``ValueError`` naming the file.
    """
    from .envs import act_dim, check_env_id, obs_dim

    check_env_id(env_id)
    path = expert_file(env_id, path)
    if not path.is_file():
        shipped = sorted(p.stem for p in SHIPPED_DIR.glob("*.pt"))
        raise ValueError(f"expert file {path} does not exist (shipped experts: {', '.join(shipped) or 'none'})")
    side = path.with_suffix(".json")
    if not side.is_file():
        raise ValueError(f"expert sidecar {side} does not exist (it is written beside the .pt by `gva expert export`)")
    try:
        info = json.loads(side.read_text())
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        hidden = tuple(int(h) for h in info["architecture"]["hidden"])
        said = info["architecture"].get("output", _OUTPUT_TEXT["clip"])  # sidecars from before SAC: PPO's
        output = next((k for k, text in _OUTPUT_TEXT.items() if text == said), None)
        if output is None:
            raise ValueError(f"architecture output {said!r} is not known")
        kind = dict(activation=str(info["architecture"].get("activation", "tanh")), output=output)
        dims = int(info["obs_dim"]), int(info["act_dim"])
    except (ValueError, KeyError, TypeError) as err:
        what = f"missing {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        raise ValueError(f"expert sidecar {side} is not valid ({what})") from None
    if info.get("env_id") != env_id:
        raise ValueError(f"{path} is an expert for {info.get('env_id')!r}, not for env_id={env_id!r}")
    want = obs_dim(env_id), act_dim(env_id)
    if dims != want:
        raise ValueError(f"{side} declares obs_dim, act_dim = {dims}, but {env_id} has {want}")
    try:
        expert = load_expert_file(path, *dims, hidden, **kind)
    except ValueError as err:
        if "activation=" not in str(err):
            raise
        raise ValueError(f"expert sidecar {side} is not valid ({err})") from None
    return expert, {**info, "file": str(path), "sha256": sha256_file(path)}
