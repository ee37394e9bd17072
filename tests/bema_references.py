"""The two published BEMA rules, re-implemented in numpy from their sources, and a shared trajectory.

The tests feed the same float64 trajectory ``thetas[t]`` (the iterate after ``t`` gradient steps)
to these rules and to ``BEMA.from_authors`` / ``BEMA.from_trl`` (numpy and torch), which must agree
to 1e-12. The rules are small enough to transcribe; each function names its source.
"""

from __future__ import annotations

import numpy as np


def trajectory(n: int, dim: int = 6, seed: int = 0) -> np.ndarray:
    """``(n + 1, dim)`` float64 iterates: a random walk with drift, so that the EMA lags behind and
    the bias correction has something to correct."""
    rng = np.random.default_rng(seed)
    steps = 0.05 + 0.3 * rng.standard_normal((n, dim))
    return np.concatenate([rng.standard_normal((1, dim)), steps]).cumsum(axis=0)


def authors_offline(
    thetas: np.ndarray,
    *,
    update_freq: int,
    ema_power: float = 0.5,
    update_after: int = 0,
    eta_power: float = 0.2,
    ema_gamma: float = 1.0,
    scaling_lag: float = 0,
    min_ema_multiplier: float = 0.0,
) -> dict[int, np.ndarray]:
    """The authors' offline BEMA: github.com/abblock/bema, ``src/core_offline.py`` class ``BEMA``
    (methods ``update``, ``ema_update``, ``get_ema_weights``, ``get_ema_time``,
    ``get_stabilizer_time``, ``get_bema_correction_weights``; commit 0b58bd0), driven as
    ``src/run_eval.py`` drives it: built on the base model ``thetas[0]``, then ``update(theta_s, s)``
    at the checkpoints ``s = update_freq, 2 update_freq, ...``. Returns ``{s: running_model}``.

    One deviation: for ``update_after > 0`` their ``initial_weights`` dict holds the loaded
    checkpoint tensors themselves, which the in-place correction of the same call overwrites with
    ``(theta - theta) * a = 0``; we keep ``theta_0`` = the iterate at the first checkpoint at or
    after ``update_after``, as their docstrings and the paper define it.
    """
    u = update_after
    do_ema = 0.0 < ema_power < 1.0  # their __init__: EMA off outside (0, 1)
    do_bema = eta_power >= 0.0
    initialized = u == 0  # update_after == 0: theta_0 and the EMA are the base model
    theta0, ema, running = thetas[0].copy(), thetas[0].copy(), thetas[0].copy()
    out = {}
    for s in range(update_freq, len(thetas), update_freq):
        new = thetas[s]
        if s >= u:  # check_if_update with ema_update_after = update_after
            if not initialized:
                theta0 = new.copy()
                ema = running.copy()  # deepcopy(running_model): the previous checkpoint
                initialized = True
            if do_ema:
                t_ema = max(s - u + scaling_lag, 1)
                beta = max((1 + ema_gamma * t_ema) ** (-ema_power), min_ema_multiplier)
                ema = ema * (1 - beta) + new * beta
            else:
                ema = new.copy()
            if do_bema:
                t_bema = max(s - u + scaling_lag, 1)
                a = (1 + t_bema) ** (-eta_power)  # no ema_gamma here
                running = (new * a + theta0 * (-a)) * 1.0 + ema * 1.0
            else:
                running = ema.copy()
        else:
            running = new.copy()
        out[s] = running
    return out


def trl_callback(
    thetas: np.ndarray,
    *,
    update_freq: int = 400,
    ema_power: float = 0.5,
    bias_power: float = 0.2,
    lag: float = 10,
    update_after: int = 0,
    multiplier: float = 1.0,
    min_ema_multiplier: float = 0.0,
) -> dict[int, np.ndarray]:
    """TRL's ``BEMACallback``: github.com/huggingface/trl, ``trl/trainer/callbacks.py`` (methods
    ``on_train_begin``, ``on_step_end``, ``_ema_beta``, ``_bema_alpha``, ``_update_bema_weights``):
    ``beta = max((lag + multiplier s)^-ema_power, min_ema_multiplier)``,
    ``alpha = (lag + multiplier s)^-bias_power`` on the absolute step ``s``; ``theta_0`` and the
    EMA taken at ``s = update_after``; an update when ``(s - update_after) % update_freq == 0``.
    ``on_step_end`` runs at ``state.global_step = s = 1, 2, ...``. Returns
    ``{s: running_model}`` from the first update on (before it, TRL's running model is the
    initial model)."""
    theta0, ema, running = thetas[0].copy(), thetas[0].copy(), None
    out = {}
    for s in range(1, len(thetas)):
        if s < update_after:
            continue
        if s == update_after:
            theta0, ema = thetas[s].copy(), thetas[s].copy()
        elif (s - update_after) % update_freq == 0:
            beta = max((lag + multiplier * s) ** (-ema_power), min_ema_multiplier)
            alpha = (lag + multiplier * s) ** (-bias_power)
            ema = ema * (1 - beta) + thetas[s] * beta
            running = ema + alpha * (thetas[s] - theta0)
        if running is not None:
            out[s] = running.copy()
    return out


# Settings grids: burn-in 0 and 20, c (ema_gamma / multiplier) 1 and 2, updates every step and
# every 4 steps, with and without lag and floor; the examples are among them.
AUTHORS_GRID = [
    dict(update_freq=1),
    dict(update_freq=1, update_after=20, scaling_lag=10),
    dict(update_freq=1, ema_gamma=2.0, scaling_lag=10),
    dict(update_freq=4, update_after=20, ema_gamma=2.0, scaling_lag=10, min_ema_multiplier=0.05),
    dict(update_freq=4, update_after=18, ema_power=0.7, eta_power=0.4, scaling_lag=3),  # 18: not on the grid
    dict(update_freq=3, update_after=1, ema_power=1.0, eta_power=0.0),  # their EMA off, correction weight 1
]
TRL_GRID = [
    dict(update_freq=1),
    dict(update_freq=1, update_after=20, multiplier=2.0),
    dict(update_freq=4, update_after=20, lag=1.0, multiplier=0.5, min_ema_multiplier=0.05),
    dict(update_freq=4, ema_power=0.3, bias_power=0.6, lag=25.0, multiplier=2.0),
    dict(update_freq=2, update_after=4, ema_power=0.0, bias_power=0.0),  # EMA off, alpha = 1
]


def grid_id(settings: dict) -> str:
    return ",".join(f"{k}={v:g}" for k, v in settings.items())
