r"""Autodiff of the local model: flat parameter vectors, curvature and per-sample gradients.

The local model (:mod:`gvaempirics.bc.local_model`) needs three derivatives of the mean squared
error :math:`L(\theta)` of a network, all in float64 through ``torch.func``:

* the Hessian-vector product :math:`v \mapsto S H S v` (``S = diag(scale)``, :math:`D^{1/2}` for
  Adam) as a ``scipy`` operator, and its top eigenpairs by Lanczos (:func:`top_eigenpairs`);
* per-sample gradients projected on a basis, :math:`V^\top S \nabla \ell_i` (``vmap`` of
  ``grad``, with a plain loop as the reference);
* the full-batch gradient :math:`\nabla L(\theta)`.

:mod:`gvaempirics.noise_floor.spectrum` uses the same operators on windows of training.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from gvatheory._checks import check_int

# ---------------------------------------------------------------------------- flat parameters


def flat_parameters(model: nn.Module) -> Tensor:
    """All trainable parameters of ``model`` as one detached vector (``model.parameters()`` order)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _shapes(model: nn.Module) -> list[tuple[str, torch.Size]]:
    return [(n, p.shape) for n, p in model.named_parameters()]


def unflatten(vec: Tensor, shapes: Sequence[tuple[str, torch.Size]]) -> dict[str, Tensor]:
    """A flat parameter vector back into named tensors (views of ``vec``)."""
    out, i = {}, 0
    for name, shape in shapes:
        n = math.prod(shape)
        out[name] = vec[i : i + n].reshape(shape)
        i += n
    return out


def _loss_of(model: nn.Module):
    """``loss(theta, x, y)``: mean squared error of ``model`` with flat parameters ``theta``
    (the run's minibatch loss: mean over pairs and action dimensions)."""
    shapes = _shapes(model)
    buffers = {n: b for n, b in model.named_buffers()}

    def loss(theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
        out = torch.func.functional_call(model, {**unflatten(theta, shapes), **buffers}, (x,))
        return ((out - y) ** 2).mean()

    return loss


def _double(model: nn.Module, x: Tensor, y: Tensor) -> tuple[nn.Module, Tensor, Tensor]:
    """A float64 copy of the model and data: Hessian-vector products and gradient covariances in
    double precision, so that ``eigsh`` converges to the tolerance it is given."""
    m = copy.deepcopy(model).double().train(model.training)
    return m, x.double(), y.double()


# ---------------------------------------------------------------------------- curvature


def hvp_operator(model: nn.Module, theta: Tensor, x: Tensor, y: Tensor, *, scale: Tensor | None = None, chunk=8192):
    """``scipy.sparse.linalg.LinearOperator`` of :math:`S H S` (``S = diag(scale)``, default ``I``)
    with ``H`` the Hessian of the mean squared error over all of ``(x, y)`` at ``theta``: forward
    over reverse (``torch.func.jvp`` of ``grad``), in float64, in chunks of ``chunk`` pairs."""
    from scipy.sparse.linalg import LinearOperator

    m, x, y = _double(model, x, y)
    loss = _loss_of(m)
    theta = theta.double()
    s = None if scale is None else scale.double()
    n = len(x)
    grad = torch.func.grad(loss)

    def matvec(v: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(-1))
        v = v * s if s is not None else v
        out = torch.zeros_like(theta)
        for i in range(0, n, chunk):
            xc, yc = x[i : i + chunk], y[i : i + chunk]
            _, hv = torch.func.jvp(lambda t: grad(t, xc, yc), (theta,), (v,))  # noqa: B023
            out += hv * (len(xc) / n)
        out = out * s if s is not None else out
        return out.numpy()

    d = theta.numel()
    return LinearOperator((d, d), matvec=matvec, rmatvec=matvec, dtype=np.float64)


def top_eigenpairs(operator, k: int, *, seed: int = 0, tol: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest (algebraic) eigenvalues, descending, and their orthonormal eigenvectors
    ``(d, k)`` of a symmetric operator, by ``scipy.sparse.linalg.eigsh`` (implicitly restarted
    Lanczos, ARPACK) from a seeded start vector."""
    from scipy.sparse.linalg import eigsh

    d = operator.shape[0]
    k = check_int("k", k, 1, d - 1)
    v0 = np.random.default_rng(seed).standard_normal(d)
    vals, vecs = eigsh(operator, k=k, which="LA", v0=v0, tol=tol)
    order = np.argsort(vals)[::-1]
    return vals[order], vecs[:, order]


# ---------------------------------------------------------------------------- gradient noise


def per_sample_gradients(
    model: nn.Module,
    theta: Tensor,
    x: Tensor,
    y: Tensor,
    basis: np.ndarray,
    *,
    scale: Tensor | None = None,
    chunk: int = 0,
) -> np.ndarray:
    """Projected per-sample gradients ``(n, k)``: row ``i`` is ``basis^T (scale * grad l_i)``, with
    ``l_i`` the squared error of pair ``i`` averaged over action dimensions (so the minibatch loss
    is their mean); ``torch.func.vmap`` of ``grad``, float64, ``chunk`` pairs at a time (0: as many
    as keep one chunk's gradients near 128 MB)."""
    d = sum(p.numel() for p in model.parameters())
    chunk = chunk or max(1, min(1024, 2**27 // (8 * d)))
    m, x, y = _double(model, x, y)
    loss = _loss_of(m)
    theta = theta.double()
    V = torch.as_tensor(np.asarray(basis, dtype=np.float64))
    one = torch.func.vmap(torch.func.grad(lambda t, xi, yi: loss(t, xi[None], yi[None])), in_dims=(None, 0, 0))
    out = []
    for i in range(0, len(x), chunk):
        G = one(theta, x[i : i + chunk], y[i : i + chunk])  # (n_c, d)
        if scale is not None:
            G = G * scale.double()
        out.append((G @ V).numpy())
    return np.concatenate(out) if out else np.zeros((0, V.shape[1]))


def per_sample_gradients_reference(
    model: nn.Module, theta: Tensor, x: Tensor, y: Tensor, basis: np.ndarray, *, scale: Tensor | None = None
) -> np.ndarray:
    """:func:`per_sample_gradients` by a plain loop of ``torch.autograd.grad``, one pair at a time."""
    m, x, y = _double(model, x, y)
    loss = _loss_of(m)
    V = torch.as_tensor(np.asarray(basis, dtype=np.float64))
    rows = []
    for i in range(len(x)):
        t = theta.double().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(t, x[i : i + 1], y[i : i + 1]), t)
        if scale is not None:
            g = g * scale.double()
        rows.append((g @ V).numpy())
    return np.stack(rows)


def _full_gradient(model: nn.Module, theta: Tensor, x: Tensor, y: Tensor, chunk: int = 8192) -> np.ndarray:
    """Gradient (d,) of the mean squared error over all of ``(x, y)`` at ``theta``, float64."""
    m, x, y = _double(model, x, y)
    grad = torch.func.grad(_loss_of(m))
    out = torch.zeros_like(theta, dtype=torch.float64)
    for i in range(0, len(x), chunk):
        out += grad(theta.double(), x[i : i + chunk], y[i : i + chunk]) * (len(x[i : i + chunk]) / len(x))
    return out.numpy()
