r"""The curvature spectrum and per-mode gradient noise at a warm start: the prediction's inputs.

:func:`measure_spectrum` returns the top ``k`` eigenvalues of the training loss's Hessian,
preconditioned for Adam, and the minibatch noise variance along each eigenvector
(:class:`Spectrum`); :func:`gvatheory.noise_floor.spectrum_noise_floor` turns them into the
predicted noise floor (see :mod:`gvaempirics.noise_floor`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from gvatheory._checks import check_int

__all__ = ["Spectrum", "measure_spectrum", "window_momentum"]


EIGSH_TOL = 1e-6  # relative accuracy of the eigenvalues: far below the spread of the spectrum


@dataclass(frozen=True)
class Spectrum:
    """What :func:`measure_spectrum` measured at a warm start: the prediction's inputs.

    Attributes
    ----------
    curvatures : ndarray (k,)
        Top eigenvalues of the (preconditioned) training-loss Hessian, descending.
    noise : ndarray (k,)
        Variance of one minibatch gradient along each eigenvector, same coordinates.
    noise_total : float
        Trace of the whole minibatch noise covariance in those coordinates: ``noise.sum() /
        noise_total`` is the share of the gradient noise the ``k`` modes hold.
    beta, c : float
        Momentum constants of the windows' optimizer (:func:`gvatheory.moments.heavy_ball_ema_matrices`).
    samples : int
        Training samples behind the Hessian and the noise.
    """

    curvatures: np.ndarray
    noise: np.ndarray
    noise_total: float
    beta: float
    c: float
    samples: int

    @property
    def captured(self) -> float:
        """Share of the minibatch noise trace along the ``k`` measured modes."""
        return float(self.noise.sum() / self.noise_total) if self.noise_total > 0 else float("nan")

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(curvatures=self.curvatures.tolist(), noise=self.noise.tolist())
        return d

    @classmethod
    def from_json(cls, d: dict) -> Spectrum:
        return cls(**{**d, "curvatures": np.asarray(d["curvatures"]), "noise": np.asarray(d["noise"])})


def window_momentum(cfg) -> tuple[float, float]:
    """``(beta, c)`` of the optimizer that ``cfg`` trains with: SGD ``(momentum, 1)``, Adam
    ``(beta1, 1 - beta1)`` (its learning rate is the step, bias corrections long gone)."""
    if cfg.optimizer == "sgd":
        return float(cfg.momentum), 1.0
    return float(cfg.beta1), 1.0 - float(cfg.beta1)


def _loss_hvp_operator(loss: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, scale: torch.Tensor):
    """``LinearOperator`` of :math:`S H S` for the Hessian ``H`` of ``loss`` (flat float64
    parameters -> scalar) at ``theta``, ``S = diag(scale)``: reverse over reverse, since the CPU
    attention kernels have no forward-mode derivative."""
    from scipy.sparse.linalg import LinearOperator

    def matvec(v: np.ndarray) -> np.ndarray:
        t = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(t), t, create_graph=True)
        (hv,) = torch.autograd.grad(g @ (torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(-1)) * scale), t)
        return (hv * scale).numpy()

    d = theta.numel()
    return LinearOperator((d, d), matvec=matvec, rmatvec=matvec, dtype=np.float64)


def measure_spectrum(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    samples: tuple[torch.Tensor, torch.Tensor],
    *,
    kind: str,
    batch_size: int,
    k: int,
    beta: float,
    c: float,
    seed: int = 0,
) -> Spectrum:
    r"""Top-``k`` curvature spectrum and per-mode minibatch noise of ``model`` at its current
    weights (module docstring), on the training ``samples``: ``(x, y)`` pairs for ``kind="bc"``
    (squared action error), ``(windows, None)`` of token ids ``(n, T+1)`` for ``kind="lm"``
    (next-token cross-entropy). Adam's preconditioner comes from ``optimizer``'s state
    (:func:`gvaempirics.bc.local_model.optimizer_dynamics`); ``beta, c`` are the windows' momentum
    constants (:func:`window_momentum`), stored with the spectrum."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..bc.local_model import (
        flat_parameters,
        hvp_operator,
        optimizer_dynamics,
        per_sample_gradients,
        top_eigenpairs,
        unflatten,
    )

    batch_size = check_int("batch_size", batch_size, 1)
    scale = optimizer_dynamics(optimizer, model).precond.sqrt()  # D^{1/2}; ones for SGD
    theta = flat_parameters(model).double()
    x, y = samples
    if kind == "bc":
        op = hvp_operator(model, theta, x, y, scale=scale)
        vals, U = top_eigenpairs(op, k, seed=seed, tol=EIGSH_TOL)
        G = per_sample_gradients(model, theta, x, y, np.eye(theta.numel()), scale=scale)  # (n, d)
    elif kind == "lm":
        import copy

        m = copy.deepcopy(model).double().train(model.training)
        shapes = [(n, p.shape) for n, p in m.named_parameters()]

        def loss(t: torch.Tensor, w: torch.Tensor = x) -> torch.Tensor:
            return torch.func.functional_call(m, unflatten(t, shapes), (w[:, :-1], w[:, 1:]))[1]

        # the fused CPU attention kernel has no second derivative; the math kernel has
        with sdpa_kernel(SDPBackend.MATH):
            vals, U = top_eigenpairs(_loss_hvp_operator(loss, theta, scale), k, seed=seed, tol=EIGSH_TOL)
            rows = []
            for i in range(len(x)):  # one window's gradient at a time: the plain per-sample loop
                t = theta.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(loss(t, x[i : i + 1]), t)
                rows.append((g * scale).numpy())
        G = np.stack(rows)  # (n, d)
    else:
        raise ValueError(f"kind={kind!r} is not valid: choose bc or lm")
    # minibatches are drawn with replacement: one step's noise covariance is the per-sample one / B
    return Spectrum(
        curvatures=vals,
        noise=(G @ U).var(axis=0, ddof=1) / batch_size,
        noise_total=float(G.var(axis=0, ddof=1).sum() / batch_size),
        beta=float(beta),
        c=float(c),
        samples=len(G),
    )
