r"""The study's runs: independent replicates of warm-up, spectrum and windows per setting.

:func:`run_replicate` is one replicate of a :class:`FloorSetting`: a warm-up run with its own
training seed (and its own demonstrations or validation windows), the spectrum at its end, and
one window per :math:`\eta` from its weights (see :mod:`gvaempirics.noise_floor`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gvatheory._checks import check_choice, check_int, check_range

from ..rundir import RunDir
from .spectrum import Spectrum, measure_spectrum, window_momentum
from .window import FloorWindow, measure_noise_floor

__all__ = ["FloorSetting", "Replicate", "replicate_seeds", "run_replicate"]


@dataclass(frozen=True)
class FloorSetting:
    """One empirical setting of the study ``noise-floor``: what to train and where to measure."""

    key: str  # bc-sgd, bc-adam, lm-adam
    label: str
    kind: str  # "bc" (Hopper behavior cloning) or "lm" (the teacher corpus)
    optimizer: str  # of the warm-up and the windows
    etas: tuple[float, ...]
    gammas: tuple[float, ...]
    seeds: int  # independent replicates
    burn: int
    window: int
    warm_steps: int
    warm_eta: float
    eval_every: int = 20
    modes: int = 64  # top Hessian eigenvalues of the spectrum
    spectrum_samples: int = 0  # training pairs (BC; 0: all) or windows (LM; 0: 256) behind the spectrum

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, ("bc", "lm"))
        check_choice("optimizer", self.optimizer, ("sgd", "adam"))
        for name in ("etas", "gammas"):
            if not len(getattr(self, name)):
                raise ValueError(f"{name}=() is out of range: give at least one value")
        check_range("etas", np.asarray(self.etas, dtype=float), 0.0, np.inf, low_open=True)
        check_range("gammas", np.asarray(self.gammas, dtype=float), 0.0, 1.0, low_open=True)
        check_range("warm_eta", self.warm_eta, 0.0, np.inf, low_open=True)
        for name, low in (("seeds", 1), ("burn", 0), ("window", 2), ("warm_steps", 1), ("modes", 1)):
            check_int(name, getattr(self, name), low)
        check_int("eval_every", self.eval_every, 1, self.window)
        check_int("spectrum_samples", self.spectrum_samples, 0)


@dataclass(frozen=True)
class Replicate:
    """One replicate of a setting: the spectrum at its warm start and one window per eta."""

    spectrum: Spectrum
    windows: tuple[FloorWindow, ...]


def replicate_seeds(seed: int, replicate: int) -> tuple[int, int, int]:
    """``(training, data, windows)`` seeds of replicate ``replicate`` under the study seed
    ``seed``, spawned from one ``SeedSequence`` so replicates share no stream."""
    a, b, c = (int(v) for v in np.random.SeedSequence([seed, replicate]).generate_state(3) % 2**31)
    return a, b, c


def _bc_parts(st: FloorSetting, root: Path, seeds: tuple[int, int, int], quiet: bool):
    """Warm up (``gva bc train`` code path) with this replicate's training seed and
    demonstrations; return the spectrum and window makers."""
    from ..bc.config import PRESETS, BCConfig
    from ..bc.data import Demonstrations
    from ..bc.train import BCTrainer, bc_loss, train_bc

    train_seed, data_seed, window_seed = seeds
    base = BCConfig(
        **{
            **PRESETS["tiny"],
            "n_demos": 10,
            "demo_horizon": 200,
            "val_demos": 2,
            "demo_seed": data_seed,  # its own training and validation demonstrations
            "width": 32,
            "depth": 2,
            "batch_size": 8,
            "optimizer": st.optimizer,
            "momentum": 0.9,  # the warm-up only; the windows use plain SGD
            "eta": st.warm_eta,
            "schedule": "cosine",
            "steps": st.warm_steps,
            "eval_every": st.warm_steps,
            "zoom_windows": (),
            "checkpoint_every": st.warm_steps,
            "ics": 1,
            "H": 20,
            "threads": 1,
            "seed": train_seed,
        }
    )
    warm = root / "warmup"
    train_bc(base, warm, quiet=quiet)
    data = Demonstrations.load(warm / "demos.npz").bc_data(base.history)
    state = RunDir(warm).load_step(-1)

    def window_cfg(e: int):
        eta = st.etas[e]
        return dataclasses.replace(base, eta=eta, momentum=0.0, schedule="constant", warmup=0, seed=window_seed + e)

    def spectrum() -> Spectrum:
        trainer = BCTrainer(base, RunDir(root / "spectrum"), data, rollout=None, quiet=True)
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        x, y = data.train_x, data.train_y
        if 0 < st.spectrum_samples < len(x):
            idx = np.sort(np.random.default_rng(data_seed).choice(len(x), st.spectrum_samples, replace=False))
            x, y = x[idx], y[idx]
        beta, c = window_momentum(window_cfg(0))
        return measure_spectrum(
            trainer.model, trainer.optimizer, (x, y), kind="bc", batch_size=base.batch_size, k=st.modes,
            beta=beta, c=c, seed=train_seed,
        )  # fmt: skip

    def window(e: int) -> FloorWindow:
        # the window's trainer writes nothing: its run directory only names it in error messages
        trainer = BCTrainer(window_cfg(e), RunDir(root / "windows"), data, rollout=None, quiet=True)
        trainer.model.load_state_dict(state["model"])
        return measure_noise_floor(
            trainer, lambda m: bc_loss(m, data.val_x, data.val_y), gammas=st.gammas, burn=st.burn,
            window=st.window, eval_every=st.eval_every, quiet=quiet,
        )  # fmt: skip

    return spectrum, window


def _lm_parts(st: FloorSetting, root: Path, seeds: tuple[int, int, int], quiet: bool):
    """Warm up (``gva lm train`` code path) with this replicate's training seed and validation
    windows; return the spectrum and window makers. The teacher corpus is the task and is shared."""
    from ..lm.config import LMConfig, preset
    from ..lm.train import LMTrainer, make_corpus, train

    train_seed, data_seed, window_seed = seeds
    base = LMConfig(
        **preset(
            "tiny",
            corpus_size=20000,
            eval_windows=64,
            eval_seed=data_seed,  # its own validation windows
            batch_size=16,
            optimizer=st.optimizer,
            eta=st.warm_eta,
            schedule="cosine",
            warmup=50,
            steps=st.warm_steps,
            eval_every=st.warm_steps,
            zoom_windows=(),
            checkpoint_every=st.warm_steps,
            # the windows have neither, so the warm start sits at the minimum of their loss
            weight_decay=0.0,
            grad_clip=0.0,
            seed=train_seed,
        )
    )
    warm = root / "warmup"
    train(base, warm, quiet=quiet)
    corpus = make_corpus(base, quiet=True)
    state = RunDir(warm).load_step(-1)

    @torch.no_grad()
    def val_loss(model, windows) -> float:
        was = model.training
        model.eval()
        _, loss = model(windows[:, :-1], windows[:, 1:])  # (N, T) inputs and targets
        model.train(was)
        return float(loss)

    def window_cfg(e: int):
        return dataclasses.replace(base, eta=st.etas[e], schedule="constant", warmup=0, seed=window_seed + e)

    def spectrum() -> Spectrum:
        trainer = LMTrainer(base, RunDir(root / "spectrum"), corpus, quiet=True)
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        T, n = base.block_size, st.spectrum_samples or 256  # one window's gradient at a time: a subset
        starts = np.random.default_rng(data_seed).integers(0, len(corpus.train) - T, n)
        windows = torch.as_tensor(np.stack([corpus.train[s : s + T + 1] for s in starts]))  # (n, T+1)
        beta, c = window_momentum(window_cfg(0))
        return measure_spectrum(
            trainer.model, trainer.optimizer, (windows, None), kind="lm", batch_size=base.batch_size,
            k=st.modes, beta=beta, c=c, seed=train_seed,
        )  # fmt: skip

    def window(e: int) -> FloorWindow:
        trainer = LMTrainer(window_cfg(e), RunDir(root / "windows"), corpus, quiet=True)
        trainer.model.load_state_dict(state["model"])
        windows = trainer.eval_inputs.windows
        return measure_noise_floor(
            trainer, lambda m: val_loss(m, windows), gammas=st.gammas, burn=st.burn, window=st.window,
            eval_every=st.eval_every, quiet=quiet,
        )  # fmt: skip

    return spectrum, window


def run_replicate(st: FloorSetting, root: Path, *, seed: int, replicate: int, quiet: bool = True) -> Replicate:
    """Replicate ``replicate`` of setting ``st`` under ``root``: the warm-up's run directory,
    ``spectrum.json`` and ``windows/eta<eta>.json``, each written when done and read back on a
    rerun (the warm-up resumes). The spectrum is measured before any window is run."""
    import json

    from ..rundir import atomic_write_json

    check_int("replicate", replicate, 0)
    root = Path(root)
    torch.set_num_threads(1)
    parts = None

    def make():
        nonlocal parts
        if parts is None:
            build = _bc_parts if st.kind == "bc" else _lm_parts
            parts = build(st, root, replicate_seeds(seed, replicate), quiet)
        return parts

    path = root / "spectrum.json"
    if path.is_file():
        spectrum = Spectrum.from_json(json.loads(path.read_text()))
    else:
        spectrum = make()[0]()
        atomic_write_json(path, spectrum.to_json())
    windows = []
    for e, eta in enumerate(st.etas):
        path = root / "windows" / f"eta{eta:g}.json"
        if path.is_file():
            windows.append(FloorWindow.from_json(json.loads(path.read_text())))
            continue
        fw = make()[1](e)
        atomic_write_json(path, fw.to_json())
        windows.append(fw)
    return Replicate(spectrum, tuple(windows))
