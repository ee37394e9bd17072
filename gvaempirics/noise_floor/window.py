r"""One window at a constant step size: excess loss of the raw iterate and of its EMAs.

:func:`measure_noise_floor` runs ``burn`` steps of a warm-started :class:`~gvaempirics.training.Trainer`
at its constant :math:`\eta`, then a window of ``window`` steps, and returns a :class:`FloorWindow`:
validation losses of the raw iterate and of constant-:math:`\gamma` EMAs, the window mean's
loss (the reference), and the iterates' fluctuation (see :mod:`gvaempirics.noise_floor`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from gvatheory._checks import check_int, check_range

from ..stabilizers import EMA, Polyak
from ..training import Trainer

__all__ = ["FloorWindow", "measure_noise_floor"]


@dataclass(frozen=True)
class FloorWindow:
    """What :func:`measure_noise_floor` measured in one window at constant ``eta``.

    Attributes
    ----------
    eta : float
        The constant step size.
    gammas : tuple of float
        EMA weights.
    steps : ndarray (n,)
        Evaluated steps (counted from the warm start).
    raw : ndarray (n,)
        Validation loss of the raw iterate at ``steps``.
    ema : ndarray (m, n)
        Validation loss of each EMA at ``steps``.
    reference : float
        Validation loss of the window's uniform average of iterates.
    msd : float
        Mean squared distance between consecutive iterates over the window.
    var : float
        Mean squared distance of the window's iterates from their mean.
    burn, window : int
        Steps before the window, and in it.
    """

    eta: float
    gammas: tuple[float, ...]
    steps: np.ndarray
    raw: np.ndarray
    ema: np.ndarray
    reference: float
    msd: float
    var: float
    burn: int
    window: int

    @property
    def excess_raw(self) -> float:
        """Mean validation loss of the raw iterate over the window minus the reference's."""
        return float(self.raw.mean() - self.reference)

    @property
    def excess_ema(self) -> np.ndarray:
        """The same for each EMA, shape ``(m,)``."""
        return self.ema.mean(axis=1) - self.reference

    @property
    def kappa(self) -> float:
        r""":math:`\hat\kappa = \mathrm{msd}/(2v)`: the per-step relaxation rate :math:`\eta h` of a quadratic."""
        return self.msd / (2.0 * self.var) if self.var > 0 else float("nan")

    @property
    def drift(self) -> float:
        """Mean raw loss over the window's second half minus its first half (stationarity check: ~0)."""
        half = len(self.raw) // 2
        return float(self.raw[half:].mean() - self.raw[:half].mean()) if half else float("nan")

    @property
    def trend(self) -> float:
        """Least-squares slope of the raw loss against the step over the window (0 at stationarity)."""
        if len(self.steps) < 2:
            return float("nan")
        x = self.steps - self.steps.mean()
        return float(x @ (self.raw - self.raw.mean()) / (x @ x))

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(steps=self.steps.tolist(), raw=self.raw.tolist(), ema=self.ema.tolist(), gammas=list(self.gammas))
        return d

    @classmethod
    def from_json(cls, d: dict) -> FloorWindow:
        return cls(
            **{
                **d,
                "steps": np.asarray(d["steps"]),
                "raw": np.asarray(d["raw"], dtype=float),
                "ema": np.asarray(d["ema"], dtype=float).reshape(len(d["gammas"]), -1),
                "gammas": tuple(d["gammas"]),
            }
        )


def _flat(params: Sequence[nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params]).to(torch.float64)


def measure_noise_floor(
    trainer: Trainer,
    val_loss: Callable[[nn.Module], float],
    *,
    gammas: Sequence[float],
    burn: int,
    window: int,
    eval_every: int = 10,
    quiet: bool = True,
) -> FloorWindow:
    """Run ``burn + window`` steps of ``trainer`` at its constant learning rate and measure the
    noise floor of the raw iterate and of EMAs with weights ``gammas`` (module docstring).

    Parameters
    ----------
    trainer : Trainer
        Holds the warm-started model and a fresh optimizer; its learning-rate schedule must be
        constant over the ``burn + window`` steps from ``trainer.step``.
    val_loss : callable
        ``model -> float``: the validation loss of the model's current weights.
    gammas : sequence of float in (0, 1]
        EMA weights; each EMA starts at the warm start (it copies :math:`\\theta_0`).
    burn, window : int
        Steps before the window (>= 0) and in it (>= 2).
    eval_every : int
        Steps between validation-loss evaluations inside the window.
    """
    gammas = tuple(float(check_range("gammas", g, 0.0, 1.0, low_open=True)) for g in gammas)
    if not gammas:
        raise ValueError("gammas=() is out of range: give at least one EMA weight")
    burn = check_int("burn", burn, 0)
    window = check_int("window", window, 2)
    eval_every = check_int("eval_every", eval_every, 1, window)
    start = trainer.step
    lrs = {float(trainer.lr_schedule(t)) for t in range(start, start + burn + window)}
    if len(lrs) != 1:
        raise ValueError(
            f"trainer's learning rate varies over steps [{start}, {start + burn + window}) "
            f"(from {min(lrs):g} to {max(lrs):g}): the noise floor needs a constant one (schedule='constant', warmup=0)"
        )
    from tqdm.auto import tqdm

    model = trainer.model
    params = [p for p in model.parameters() if p.is_floating_point()]
    emas = [EMA(model, g) for g in gammas]
    for e in emas:
        e.update()  # absorb the warm start
    steps, raw, ema = [], [], []
    with tqdm(total=burn + window, desc=f"noise floor eta={trainer.cfg.eta:g}", disable=quiet, leave=False) as bar:
        for _ in range(burn):
            trainer.train_step()
            for e in emas:
                e.update()
            bar.update(1)
        polyak = Polyak(model)
        polyak.update()
        shift = _flat(params)  # sums are taken around the window's first iterate, against cancellation
        prev, total, total_sq, msd = shift.clone(), torch.zeros_like(shift), 0.0, 0.0
        for k in range(1, window):
            trainer.train_step()
            for e in emas:
                e.update()
            polyak.update()
            now = _flat(params)
            msd += float(((now - prev) ** 2).sum())
            dev = now - shift
            total += dev
            total_sq += float((dev**2).sum())
            prev = now
            if k % eval_every == 0:
                steps.append(trainer.step - start)
                raw.append(val_loss(model))
                row = []
                for e in emas:
                    with e.swap():
                        row.append(val_loss(model))
                ema.append(row)
            bar.update(1)
        bar.update(1)
        with polyak.swap():
            reference = val_loss(model)
    mean_dev = total / window  # the first iterate contributes dev = 0 to both sums
    var = total_sq / window - float((mean_dev**2).sum())
    return FloorWindow(
        eta=float(lrs.pop()),
        gammas=gammas,
        steps=np.asarray(steps),
        raw=np.asarray(raw, dtype=float),
        ema=np.asarray(ema, dtype=float).T.reshape(len(gammas), -1),
        reference=float(reference),
        msd=msd / (window - 1),
        var=max(var, 0.0),
        burn=burn,
        window=window,
    )
