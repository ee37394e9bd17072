"""Expert runs for the behavior-cloning experiments: PPO or SAC training with stable-baselines3,
and the run manifest that makes its pickled checkpoints safe to load.

One recipe per algorithm and environment (:data:`gvaempirics.bc.expert_recipes.RECIPES`, recorded in the run's manifest and the
expert's sidecar). **PPO** (the shipped experts): 4 envs, ``VecNormalize`` on observations and
rewards, tanh MLP policy and value nets; Hopper, Walker2d and HalfCheetah use SB3's defaults with
64x64 nets and ``n_steps`` 512; Ant has its own (wider nets, longer rollouts, smaller initial
action noise). **SAC** (the paper's expert algorithm): SB3's defaults (ReLU 256x256 actor and
twin critics, replay buffer 1M, batch 256) with 10k random warm-up steps, one env, and a
``VecNormalize`` that normalizes nothing (it only keeps both algorithms' checkpoints alike).
Training writes a checkpoint every 50k env steps: SB3's own files
(``<algo>_<N>_steps.zip`` + ``<algo>_vecnormalize_<N>_steps.pkl``), to resume from, and the policy it
stands for as plain tensors (``expert_<N>_steps.pt``: the deterministic expert with the
observation normalization folded in, :class:`~gvaempirics.bc.policy.ExpertMLP`), which
:mod:`gvaempirics.bc.experts` selects and exports from.

**Trust.** SB3's checkpoint formats are pickles: loading one runs whatever code it names. So
export never loads them: it reads the plain-tensor files (``torch.load(weights_only=True)``) and
the JSON manifest only. Resume has to load them, and does so only for a run this user's toolkit
wrote: the run directory holds ``manifest.json`` (:data:`MANIFEST`), written by :func:`train`
only (the run's env id, sizes, seed, number of envs and recipe, and the SHA-256 of every
checkpoint file), signed with an HMAC under a key kept outside every run directory
(:mod:`gvaempirics.signing`). A digest list beside the files proves nothing (whoever writes the
files can write their digests); the signature cannot be forged by a copy of the directory.
Resume checks it, then loads exactly the bytes whose digests it checked; ``trust=True`` (``gva
expert train --trust-run``) skips the signature, for a run the user vouches for.

**SAC's replay buffer.** Each SAC checkpoint also saves the replay buffer's filled part as plain
arrays (``sac_replay_buffer_<N>_steps.npz``, no pickle; only the newest is kept, listed in the
manifest like every checkpoint file), and resume restores it, so a run continued on the machine
that wrote it goes on as it was (its episodes restart, as a resumed PPO run's do). A run moved to
another machine without that file (``longruns/`` holds none: buffers are large and are never
committed) refills an empty buffer with the recipe's warm-up before updating again."""

from __future__ import annotations

import io
import json
import pickle
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gvatheory._checks import check_int

from ..rundir import atomic_write_bytes, atomic_write_json, check_creatable, sha256_bytes
from ..signing import FIELD, check_signed, sign
from .envs import check_env_id
from .expert_recipes import ALGORITHMS, RECIPES, Recipe, SACRecipe, recipe_for  # noqa: F401 (importable from here)
from .policy import fold

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "gva-expert-run/1"
_CKPT = re.compile(r"^(ppo|sac)_(\d+)_steps\.zip$")
_CKPT_FILE = re.compile(
    r"^((ppo|sac)_(vecnormalize_)?\d+_steps\.(zip|pkl)|expert_\d+_steps\.pt|sac_replay_buffer_\d+_steps\.npz)$"
)
_BUFFER = re.compile(r"^sac_replay_buffer_(\d+)_steps\.npz$")
# The arrays of SB3's ReplayBuffer that hold transitions (saved up to its fill, as plain arrays)
BUFFER_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
_EXPERT = re.compile(r"^expert_(\d+)_steps\.pt$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def run_algorithm(manifest: dict[str, Any]) -> str:
    """``"ppo"`` or ``"sac"``: the algorithm a run's manifest records (runs from before SAC: PPO)."""
    return "sac" if "SAC" in str(manifest.get("algorithm", "")) else "ppo"


# ------------------------------------------------------------------ the run manifest
def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest of a run directory written by :func:`train`; a ``ValueError`` naming the file
    if it is missing or not a valid manifest."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise ValueError(
            f"run directory {run_dir} has no {MANIFEST}: resume and export load only checkpoints that "
            "`gva expert train` wrote and recorded there (SB3 checkpoints are pickles, which run code "
            "when loaded)"
        )
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, not {MANIFEST_FORMAT!r}")
        for key, kind in (
            ("env_id", str),
            ("obs_dim", int),
            ("act_dim", int),
            ("seed", int),
            ("n_envs", int),
            ("files", dict),
        ):
            if not isinstance(doc.get(key), kind) or isinstance(doc.get(key), bool):
                raise ValueError(f"{key} is missing or not {kind.__name__}")
        for name, digest in doc["files"].items():
            if not _CKPT_FILE.match(name) or not isinstance(digest, str) or not _SHA256.match(digest):
                raise ValueError(f"bad entry {name!r}")
        if not isinstance(doc.get(FIELD, ""), str):
            raise ValueError(f"{FIELD} is not a string")
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a valid run manifest ({str(err).splitlines()[0]})") from None
    return doc


def read_verified(path: Path, manifest: dict[str, Any]) -> bytes:
    """The bytes of checkpoint file ``path`` if ``manifest`` (its run directory's) lists it with
    their SHA-256; otherwise a ``ValueError`` naming the file. Load these bytes, not the path, so
    that what is loaded is what was checked."""
    path = Path(path)
    where = path.parent / MANIFEST
    digest = manifest["files"].get(path.name)
    if digest is None:
        raise ValueError(
            f"{path} is not listed in {where}: refusing to load a checkpoint file that "
            "`gva expert train` did not write (a pickle runs code when loaded); remove it"
        )
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path} cannot be read ({err.strerror})") from None
    if sha256_bytes(data) != digest:
        raise ValueError(
            f"{path} does not match the SHA-256 recorded in {where}: refusing to load a checkpoint "
            "file changed since `gva expert train` wrote it"
        )
    return data


def _checkpoint_files(run_dir: Path) -> list[Path]:
    return sorted(p for p in Path(run_dir).iterdir() if _CKPT_FILE.match(p.name))


def expert_path(run_dir: Path, steps: int) -> Path:
    """The plain-tensor policy of the checkpoint at ``steps`` env steps."""
    return Path(run_dir) / f"expert_{steps}_steps.pt"


def buffer_path(run_dir: Path, steps: int) -> Path:
    """The SAC replay buffer saved with the checkpoint at ``steps`` env steps (only the newest is kept)."""
    return Path(run_dir) / f"sac_replay_buffer_{steps}_steps.npz"


def _buffer_bytes(rb) -> bytes:
    """An SB3 ``ReplayBuffer`` as plain arrays (``.npz``, no pickle): its filled part, ``pos`` and ``full``."""
    n = rb.buffer_size if rb.full else rb.pos
    buf = io.BytesIO()
    np.savez(buf, pos=rb.pos, full=rb.full, **{k: getattr(rb, k)[:n] for k in BUFFER_FIELDS})
    return buf.getvalue()


def _restore_buffer(rb, data: bytes, path: Path) -> None:
    """Fill the fresh ``ReplayBuffer`` ``rb`` from :func:`_buffer_bytes`' ``data`` (read from ``path``)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        for k in BUFFER_FIELDS:
            arr, dest = z[k], getattr(rb, k)
            if arr.shape[1:] != dest.shape[1:] or len(arr) > len(dest):
                raise ValueError(f"{path}: {k} has shape {arr.shape}, which does not fit the buffer's {dest.shape}")
            dest[: len(arr)] = arr
        rb.pos, rb.full = int(z["pos"]), bool(z["full"])


def checkpoints(run_dir: Path) -> list[tuple[int, Path, Path]]:
    """``(env steps, model zip, VecNormalize pkl)`` of every SB3 checkpoint in ``run_dir`` (what resume
    loads), oldest first. Lists what is on disk; :func:`check_train_run` also checks it."""
    run_dir = Path(run_dir)
    found = []
    for p in run_dir.glob("*_steps.zip") if run_dir.is_dir() else []:
        m = _CKPT.match(p.name)
        pkl = run_dir / f"{m.group(1)}_vecnormalize_{m.group(2)}_steps.pkl" if m else None
        if m and pkl.is_file():
            found.append((int(m.group(2)), p, pkl))
    return sorted(found)


def check_run_identity(
    run_dir: Path, manifest: dict[str, Any], env_id: str, *, what: str = "run", **expected: int
) -> None:
    """The run's recorded env id and sizes must be ``env_id``'s, and ``expected`` fields as given."""
    if manifest["env_id"] != env_id:
        raise ValueError(
            f"{what}={run_dir} is a {manifest['env_id']} run (see its {MANIFEST}), not a run of env={env_id}"
        )
    from .envs import act_dim, obs_dim

    dims, want = (manifest["obs_dim"], manifest["act_dim"]), (obs_dim(env_id), act_dim(env_id))
    if dims != want:
        raise ValueError(
            f"{what}={run_dir} records obs_dim, act_dim = {dims} in its {MANIFEST}, but {env_id} has {want}"
        )
    for key, value in expected.items():
        if manifest[key] != value:
            raise ValueError(
                f"{what}={run_dir} was started with {key}={manifest[key]}, not {key}={value}: "
                f"continue it with {key}={manifest[key]}, or choose another {what}"
            )


def verified_checkpoints(env_id: str, run_dir: Path, *, min_steps: int = 0) -> list[tuple[int, Path]]:
    """``(env steps, plain-tensor policy file)`` of the checkpoints of a run directory of ``env_id``
    from ``min_steps`` env steps on (what export reads), after checking, loading nothing: the
    directory exists and holds policy files, its manifest is the env's, and every checkpoint file
    in it is listed there with the SHA-256 of its bytes (which catches files damaged or changed
    by mistake; no pickle is loaded on the strength of it). Every problem is a ``ValueError``
    naming the directory or the file."""
    check_env_id(env_id)
    min_steps = check_int("min_steps", min_steps, 0)
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ValueError(f"run={run_dir} does not exist: give a run directory written by `gva expert train`")
    if not run_dir.is_dir():
        raise ValueError(f"run={run_dir} is not a directory: give a run directory written by `gva expert train`")
    ckpts = sorted((int(m.group(1)), p) for p in run_dir.iterdir() if (m := _EXPERT.match(p.name)))
    if not ckpts:
        raise ValueError(
            f"run={run_dir} has no policy files (expert_<N>_steps.pt, written by `gva expert train` beside its SB3 "
            "checkpoints; a run from before them gets them by `gva expert train --out RUN --trust-run`)"
        )
    manifest = read_manifest(run_dir)
    check_run_identity(run_dir, manifest, env_id)
    for path in _checkpoint_files(run_dir):
        read_verified(path, manifest)
    kept = [c for c in ckpts if c[0] >= min_steps]
    if not kept:
        raise ValueError(
            f"run={run_dir} has no checkpoint from min_steps={min_steps} on (newest: {ckpts[-1][0]} env steps)"
        )
    return kept


# ------------------------------------------------------------------ training (SB3 PPO or SAC)
def _make_venv(env_id: str, n_envs: int, seed: int):
    from stable_baselines3.common.env_util import make_vec_env

    return make_vec_env(env_id, n_envs=n_envs, seed=seed)


def check_train_run(
    env_id: str, out: Path, *, seed: int = 1, n_envs: int = 4, trust: bool = False, algorithm: str = "ppo"
) -> dict[str, Any] | None:
    """Check, creating nothing, that :func:`train` can start or continue ``out``; return its
    manifest, unsigned (``None`` for a new run). Refused: a run of another env, seed or number of
    envs; SB3 checkpoints under a manifest this user's toolkit did not sign (unless ``trust``),
    since continuing would unpickle them; any checkpoint file the manifest does not list with
    the digest of its bytes."""
    check_env_id(env_id)
    out = check_creatable(Path(out), "out", folder=True)
    if not out.is_dir():
        return None
    present = _checkpoint_files(out)
    if not (out / MANIFEST).exists() and not present:
        return None
    manifest = read_manifest(out)
    if run_algorithm(manifest) != algorithm:
        raise ValueError(
            f"out={out} is a {run_algorithm(manifest)} run (see its {MANIFEST}), not a run of algo={algorithm}: "
            "continue it with its own algorithm, or choose another out"
        )
    check_run_identity(out, manifest, env_id, what="out", seed=seed, n_envs=n_envs)
    if checkpoints(out) and not trust:
        try:
            check_signed(manifest, out / MANIFEST, inside=out)
        except ValueError as err:
            raise ValueError(
                f"{err}; continuing the run would unpickle its SB3 checkpoints, which run code when loaded, so "
                "only runs this user's toolkit signed are continued (`gva expert export` loads no pickle and "
                "still works; pass --trust-run only if you trust every file in the run directory)"
            ) from None
    for path in present:
        read_verified(path, manifest)
    return {k: v for k, v in manifest.items() if k != FIELD}


def train(
    env_id: str,
    out: Path,
    *,
    steps: int,
    seed: int = 1,
    n_envs: int | None = None,
    checkpoint_every: int = 50_000,
    quiet: bool = False,
    trust: bool = False,
    algorithm: str = "ppo",
) -> int:
    """Train (or continue) ``algorithm`` (``"ppo"`` or ``"sac"``) on ``env_id`` to ``steps`` env
    steps, checkpointing into ``out``; ``n_envs`` ``None`` is the recipe's (PPO 4, SAC 1).

    Everything is checked before anything is created (:func:`check_train_run`; ``trust`` skips
    its signature check). A run directory with checkpoints is continued from its newest one
    (``PPO.load`` or ``SAC.load`` + the ``VecNormalize`` statistics from the verified bytes, learning
    continued with ``reset_num_timesteps=False``; SAC refills its replay buffer first; a continued run keeps the recipe it was started with, which
    its checkpoint and manifest carry); its checkpoints that lack a policy file get one first. A
    new run uses :func:`recipe_for` ``(env_id)``. Each checkpoint's digests go into the signed
    ``out/manifest.json`` before its files are written (the policy file first), each file through
    the atomic writer, so that a kill never leaves a checkpoint file the manifest does not vouch
    for. Wall and CPU seconds accumulate in ``out/train_time.json``. Returns the env steps reached.
    """
    recipe = recipe_for(env_id, algorithm)
    n_envs = recipe.n_envs if n_envs is None else n_envs
    steps, seed, n_envs = check_int("steps", steps, 1), check_int("seed", seed, 0), check_int("n_envs", n_envs, 1)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, n_envs)
    manifest = check_train_run(env_id, out, seed=seed, n_envs=n_envs, trust=trust, algorithm=algorithm)

    from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
    from stable_baselines3.common.vec_env import VecNormalize
    from tqdm.auto import tqdm

    from .envs import act_dim, obs_dim

    torch.set_num_threads(1)  # the machine is shared; these small nets gain little from threads
    out = Path(out)
    ckpts = checkpoints(out)
    if manifest is None:
        manifest = {
            "format": MANIFEST_FORMAT,
            "env_id": env_id,
            "obs_dim": obs_dim(env_id),
            "act_dim": act_dim(env_id),
            "seed": seed,
            "n_envs": n_envs,
            "algorithm": f"stable-baselines3 {algorithm.upper()}",
            "recipe": recipe.record(),
            "files": {},
        }
        atomic_write_json(out / MANIFEST, sign(manifest))  # creates out
    venv = _make_venv(env_id, n_envs, seed)
    for n, zip_path, pkl_path in ckpts:  # runs from before policy files: give each checkpoint its own
        if not expert_path(out, n).is_file():
            old, vn = _load_sb3(zip_path, pkl_path, manifest)
            _write_checkpoint(out, manifest, {expert_path(out, n): _policy_bytes(env_id, old, vn)})
    if ckpts:
        newest, zip_path, pkl_path = ckpts[-1]
        model, venv = _load_sb3(zip_path, pkl_path, manifest, venv=venv)
        buffer = buffer_path(out, newest)
        if algorithm == "sac" and buffer.is_file():  # the replay buffer saved beside it (same machine)
            _restore_buffer(model.replay_buffer, read_verified(buffer, manifest), buffer)
        elif algorithm == "sac":  # none (a run moved from another machine): refill before updating again
            model.learning_starts = model.num_timesteps + int(manifest["recipe"]["learning_starts"])
    else:
        normalize = recipe.vecnormalize == "obs+reward"
        venv = VecNormalize(venv, norm_obs=normalize, norm_reward=normalize)
        model = _sb3_class(algorithm)(
            "MlpPolicy",
            venv,
            seed=seed,
            verbose=0,
            device="cpu",
            **recipe.algo_kwargs(),
            policy_kwargs=recipe.policy_kwargs(),
        )
    remaining = steps - model.num_timesteps
    if remaining <= 0:
        return model.num_timesteps

    class Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(
                total=steps,
                initial=self.model.num_timesteps,
                desc=f"{algorithm.upper()} {env_id}",
                unit="step",
                disable=quiet,
            )

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    class ManifestCheckpoint(CheckpointCallback):
        """SB3's checkpoint schedule and names; digests into the manifest first, then each file atomically."""

        def _on_step(self) -> bool:
            if self.n_calls % self.save_freq == 0:
                buf = _KeepOpenBytes()
                self.model.save(buf)
                vn = self.model.get_vec_normalize_env()
                files = {  # the policy file first: a checkpoint resume can load always has one
                    expert_path(out, self.num_timesteps): _policy_bytes(env_id, self.model, vn),
                    Path(self._checkpoint_path(extension="zip")): buf.getvalue(),
                    Path(self._checkpoint_path("vecnormalize_", extension="pkl")): pickle.dumps(vn),
                }  # the pkl is what VecNormalize.save writes
                if algorithm == "sac":  # last, so that a checkpoint without its buffer refills instead
                    files[buffer_path(out, self.num_timesteps)] = _buffer_bytes(self.model.replay_buffer)
                _write_checkpoint(out, manifest, files)
                if algorithm == "sac":
                    _drop_older_buffers(out, manifest, self.num_timesteps)
            return True

    ckpt_cb = ManifestCheckpoint(
        save_freq=max(checkpoint_every // n_envs, 1), save_path=str(out), name_prefix=algorithm
    )
    wall, cpu = time.time(), time.process_time()
    model.learn(total_timesteps=remaining, callback=[ckpt_cb, Progress()], reset_num_timesteps=False)
    times_path = out / "train_time.json"
    times = read_times(times_path) or {"wall_s": 0.0, "cpu_s": 0.0}
    times = {
        "wall_s": times["wall_s"] + time.time() - wall,
        "cpu_s": (times["cpu_s"] or 0.0) + time.process_time() - cpu,
    }
    atomic_write_json(times_path, times)
    return model.num_timesteps


def _write_checkpoint(out: Path, manifest: dict[str, Any], files: dict[Path, bytes]) -> None:
    """The digests of ``files`` into the signed manifest first, then each file atomically, in order."""
    manifest["files"].update({path.name: sha256_bytes(data) for path, data in files.items()})
    atomic_write_json(out / MANIFEST, sign(manifest))
    for path, data in files.items():
        atomic_write_bytes(path, data)


def _drop_older_buffers(out: Path, manifest: dict[str, Any], steps: int) -> None:
    """Keep only the newest replay buffer (the only one resume reads): each older file is removed
    before its manifest entry, so that a kill never leaves a file the manifest does not list."""
    old = [p for p in out.iterdir() if (m := _BUFFER.match(p.name)) and int(m.group(1)) < steps]
    for path in old:
        path.unlink()
        manifest["files"].pop(path.name, None)
    if old:
        atomic_write_json(out / MANIFEST, sign(manifest))


def _sb3_class(algorithm: str):
    from stable_baselines3 import PPO, SAC

    return {"ppo": PPO, "sac": SAC}[algorithm]


def _load_sb3(zip_path: Path, pkl_path: Path, manifest: dict[str, Any], *, venv=None):
    """``(PPO or SAC model, VecNormalize)`` unpickled from the bytes of a checkpoint pair that
    :func:`check_train_run` authenticated (the bytes loaded are the bytes checked); with
    ``venv``, training continues on it."""
    zip_bytes, pkl_bytes = read_verified(zip_path, manifest), read_verified(pkl_path, manifest)
    vn = pickle.loads(pkl_bytes)  # VecNormalize.load, from the verified bytes
    if venv is not None:
        vn.set_venv(venv)
        vn.training = True
    cls = _sb3_class(run_algorithm(manifest))
    return cls.load(io.BytesIO(zip_bytes), env=vn if venv is not None else None, device="cpu"), vn


def _policy_bytes(env_id: str, model, vn) -> bytes:
    """The plain-tensor policy file of a PPO or SAC model and its normalization (what export reads)."""
    buf = io.BytesIO()
    torch.save(fold(env_id, model.policy, vn).state_dict(), buf)
    return buf.getvalue()


class _KeepOpenBytes(io.BytesIO):
    """A ``BytesIO`` that survives SB3's ``save`` closing it."""

    def close(self) -> None:
        pass


def read_times(path: Path) -> dict[str, float] | None:
    if not path.is_file():
        return None
    try:
        times = json.loads(path.read_text())
        return {
            "wall_s": float(times["wall_s"]),
            "cpu_s": None if times.get("cpu_s") is None else float(times["cpu_s"]),
        }
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not valid ({str(err).splitlines()[0]})") from None
