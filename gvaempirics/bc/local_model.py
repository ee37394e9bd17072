r"""A local linear-Gaussian model of training around a checkpoint, fitted and checked.

The toy systems of :mod:`gvatheory` assume that, near a late iterate :math:`\theta_c`, training is
a linear recursion driven by additive Gaussian gradient noise. This module fits that model to a
real network and measures whether it holds.

**Optimizer with a frozen preconditioner.** SGD with heavy-ball momentum and Adam/AdamW with
their second moments frozen at the checkpoint are both

.. math::

    u_{t+1} = \beta u_t + c\, g_t, \qquad \theta_{t+1} = \theta_t - \eta\, D\, u_{t+1},

with :math:`g_t` the minibatch gradient and :math:`D` diagonal: SGD has :math:`D = I`,
:math:`c = 1`, :math:`\beta` its momentum; Adam has :math:`D = 1/(\sqrt{\hat v} + \epsilon)`
(the checkpoint's bias-corrected second moments), :math:`c = 1-\beta_1`, :math:`\beta = \beta_1`
and :math:`\eta = \mathrm{lr}/(1-\beta_1^{t})`.

**The invariant subspace.** With :math:`g = H(\theta-\theta^\star) + \xi` and
:math:`w = D^{-1/2}\theta` this is heavy-ball SGD on the *preconditioned* Hessian
:math:`\hat H = D^{1/2} H D^{1/2}` with noise :math:`D^{1/2}\xi`. The span of the top-``k``
eigenvectors :math:`U` of :math:`\hat H` (``scipy.sparse.linalg.eigsh`` on Hessian-vector
products) is invariant under these linearized dynamics, so the coordinates

.. math::

    z = U^\top D^{-1/2} (\theta - \theta_c), \qquad \theta = \theta_c + D^{1/2} U z
    \ (\text{complement held fixed}),

follow a closed ``k``-dimensional recursion with curvature :math:`\Lambda = \mathrm{diag}(\lambda_i)`
and noise :math:`\zeta = U^\top D^{1/2}\xi`, of covariance :math:`\Sigma_1 / B`
(:math:`\Sigma_1` the covariance over training pairs of per-sample gradients, ``torch.func.vmap``,
:math:`B` the minibatch size; minibatches are drawn with replacement). For SGD (:math:`D=I`) these
are the ordinary top Hessian directions.

**The prediction.** The state :math:`(z, n, e)` (``n`` the projected momentum, ``e`` an EMA of
weight :math:`\gamma` of ``z``) is a linear-Gaussian recursion
(:func:`momentum_ema_matrices`); its stationary covariance is the discrete Lyapunov solution of
:func:`gvatheory.moments.stationary_cov`, and equals :func:`gvatheory.moments.sgd_ema_stationary`
without momentum. The stationary mean is :math:`z^\star = -\Lambda^{-1} U^\top D^{1/2}\nabla L(\theta_c)`.

**The measurement.** :func:`continue_training` continues training from the checkpoint at constant
learning rate with the same optimizer (its second moments keep adapting, as in the run), in
independent chains, and records :math:`z` of the raw iterates and of a constant-:math:`\gamma` EMA
started at the checkpoint. :func:`variance_ratios` compares the measured and predicted variances
per group of directions: the chains are the independent units (time blocks of one chain share its
slow fluctuations), so each chain gives one ratio and the interval is Student t over chains on their
logs (:func:`gvatheory.inference.mean_interval`).

:func:`load_checkpoint` and :func:`fit_bc` apply all this to any checkpoint of a ``gva bc train``
run directory.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gvatheory._checks import check_int, check_range
from gvatheory.inference import Interval, mean_interval
from gvatheory.moments import stationary_cov

from ..rundir import RunDir, load_checked

__all__ = [
    "Continuation",
    "LoadedCheckpoint",
    "LocalModel",
    "RatioCI",
    "continue_bc",
    "continue_training",
    "fit_bc",
    "fit_local_model",
    "load_checkpoint",
    "momentum_ema_matrices",
    "optimizer_dynamics",
    "per_sample_gradients",
    "per_sample_gradients_reference",
    "top_eigenpairs",
    "variance_ratios",
]

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


# ---------------------------------------------------------------------------- the optimizer


@dataclass(frozen=True)
class Dynamics:
    """The constants of :math:`u' = \\beta u + c g,\\ \\theta' = \\theta - \\eta D u'` read from an
    optimizer: ``precond`` is :math:`D` as a flat float64 vector."""

    kind: str
    eta: float
    beta: float
    c: float
    precond: Tensor


def optimizer_dynamics(optimizer: torch.optim.Optimizer, model: nn.Module) -> Dynamics:
    """Read the frozen-preconditioner dynamics of an SGD (with momentum) or Adam/AdamW optimizer
    over ``model``: learning rate of its (single) rate, momentum, and Adam's :math:`D` from its
    current state (bias-corrected for the next step). Weight decay, Nesterov, dampening and
    AMSGrad are outside the model and raise ``ValueError``."""
    groups = optimizer.param_groups
    lrs = {float(g["lr"]) for g in groups}
    if len(lrs) != 1:
        raise ValueError(f"optimizer has learning rates {sorted(lrs)}: the local model needs one")
    lr = lrs.pop()
    if any(float(g.get("weight_decay", 0.0)) != 0.0 for g in groups):
        raise ValueError("weight_decay is out of range for the local model: it needs weight_decay=0")
    params = list(model.parameters())
    if isinstance(optimizer, torch.optim.SGD):
        g = groups[0]
        if g.get("nesterov") or g.get("dampening", 0.0):
            raise ValueError("SGD with nesterov or dampening is not covered by the local model")
        ones = torch.ones(sum(p.numel() for p in params), dtype=torch.float64)
        return Dynamics("sgd", lr, float(g.get("momentum", 0.0)), 1.0, ones)
    if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        g = groups[0]
        if g.get("amsgrad"):
            raise ValueError("Adam with amsgrad is not covered by the local model")
        beta1, beta2 = (float(b) for b in g["betas"])
        eps = float(g["eps"])
        parts, step = [], None
        for p in params:
            st = optimizer.state.get(p, {})
            if "exp_avg_sq" not in st:
                raise ValueError("the optimizer has no second moments yet: take at least one step first")
            step = float(st["step"]) + 1.0  # the next step's bias corrections
            v_hat = st["exp_avg_sq"].double().reshape(-1) / (1.0 - beta2**step)
            parts.append(1.0 / (v_hat.sqrt() + eps))
        eta = lr / (1.0 - beta1**step)
        return Dynamics("adam", eta, beta1, 1.0 - beta1, torch.cat(parts))
    raise ValueError(f"optimizer {type(optimizer).__name__} is not covered: use SGD, Adam or AdamW")


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


# ---------------------------------------------------------------------------- the linear model


def momentum_ema_matrices(
    H: np.ndarray, eta: float, beta: float, c: float, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    r"""``M`` (3k, 3k) and ``B`` (3k, k) of one step of the state :math:`x = (z, n, e)`:

    .. math::

        n' = \beta n + c (H z + \zeta), \quad z' = z - \eta n', \quad e' = (1-\gamma) e + \gamma z',

    so :math:`x' = M x + B \zeta`. With ``beta = 0, c = 1`` the ``(z, e)`` block is
    :func:`gvatheory.moments.sgd_ema_matrices` with one EMA."""
    k = H.shape[0]
    eye = np.eye(k)
    F = eye - eta * c * H
    M = np.zeros((3 * k, 3 * k))
    z, n, e = slice(0, k), slice(k, 2 * k), slice(2 * k, 3 * k)
    M[z, z], M[z, n] = F, -eta * beta * eye
    M[n, z], M[n, n] = c * H, beta * eye
    M[e, z], M[e, n], M[e, e] = gamma * F, -gamma * eta * beta * eye, (1.0 - gamma) * eye
    B = np.zeros((3 * k, k))
    B[z], B[n], B[e] = -eta * c * eye, c * eye, -gamma * eta * c * eye
    return M, B


@dataclass(frozen=True)
class LocalModel:
    """The fitted local model at a checkpoint (see the module docstring).

    Attributes
    ----------
    eigenvalues : (k,) array
        Top eigenvalues :math:`\\lambda_i` of :math:`\\hat H = D^{1/2} H D^{1/2}`, descending.
    directions : (d, k) array
        :math:`W = D^{1/2} U`: parameter-space displacement of a unit of each coordinate.
    coords : (d, k) array
        :math:`\\Pi = D^{-1/2} U`: :math:`z = \\Pi^\\top(\\theta - \\theta_c)`.
    noise_cov : (k, k) array
        Covariance of one minibatch's projected noise :math:`\\zeta` (per-sample covariance / batch).
    mean : (k,) array
        Stationary mean :math:`z^\\star = -\\Lambda^{-1} U^\\top D^{1/2} \\nabla L(\\theta_c)`.
    eta, beta, c : float
        Optimizer constants (:class:`Dynamics`); ``gamma`` the EMA weight; ``batch_size`` ``B``.
    optimizer : str
        ``"sgd"`` or ``"adam"``.
    theta : (d,) array
        :math:`\\theta_c`, the checkpoint's parameters.
    noise_samples : int
        Training pairs behind ``noise_cov``.
    scale : (d,) array
        :math:`D^{1/2}` (ones for SGD).
    """

    eigenvalues: np.ndarray
    directions: np.ndarray
    coords: np.ndarray
    noise_cov: np.ndarray
    mean: np.ndarray
    eta: float
    beta: float
    c: float
    gamma: float
    batch_size: int
    optimizer: str
    theta: np.ndarray
    noise_samples: int
    scale: np.ndarray

    @property
    def k(self) -> int:
        return len(self.eigenvalues)

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(M, B)`` of :func:`momentum_ema_matrices` for this model."""
        return momentum_ema_matrices(np.diag(self.eigenvalues), self.eta, self.beta, self.c, self.gamma)

    @property
    def spectral_radius(self) -> float:
        """Of ``M``; the stationary law exists when it is below 1."""
        return float(np.max(np.abs(np.linalg.eigvals(self.matrices()[0]))))

    @property
    def stable(self) -> bool:
        return self.spectral_radius < 1.0

    def stationary(self) -> np.ndarray:
        """Stationary covariance (3k, 3k) of ``(z, n, e)``; ``inf`` everywhere when unstable."""
        k = self.k
        if not self.stable:
            return np.full((3 * k, 3 * k), np.inf)
        M, B = self.matrices()
        P = stationary_cov(M, B @ self.noise_cov @ B.T)
        return 0.5 * (P + P.T)

    @property
    def raw_cov(self) -> np.ndarray:
        """Predicted stationary covariance (k, k) of the raw iterates' coordinates."""
        return self.stationary()[: self.k, : self.k]

    @property
    def ema_cov(self) -> np.ndarray:
        """Predicted stationary covariance (k, k) of the EMA's coordinates."""
        k = self.k
        return self.stationary()[2 * k :, 2 * k :]

    @property
    def relaxation_steps(self) -> np.ndarray:
        r"""Steps for each raw coordinate's mean to relax by ``1/e``: :math:`-1/\log\rho_i`, with
        :math:`\rho_i` the spectral radius of that direction's ``(z, n)`` block (inf when :math:`\rho_i \ge 1`)."""
        out = []
        for lam in self.eigenvalues:
            a = self.eta * self.c * lam
            rho = np.max(np.abs(np.linalg.eigvals([[1 - a, -self.eta * self.beta], [self.c * lam, self.beta]])))
            out.append(-1.0 / math.log(rho) if rho < 1 else math.inf)
        return np.array(out)

    def sample_windows(self, windows: int, length: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(z_raw, z_ema)``, each ``(windows, length, k)``: independent stretches of ``length``
        consecutive iterates of the linear-Gaussian recursion, each started from its stationary law
        (means :attr:`mean`)."""
        k = self.k
        M, B = self.matrices()
        P = self.stationary()
        rng = np.random.default_rng(seed)
        Lp = _psd_sqrt(P)
        Ln = _psd_sqrt(self.noise_cov)
        out = np.empty((windows, length, 3 * k))
        for w in range(windows):
            x = Lp @ rng.standard_normal(3 * k)
            for t in range(length):
                out[w, t] = x
                x = M @ x + B @ (Ln @ rng.standard_normal(k))
        return out[..., :k] + self.mean, out[..., 2 * k :] + self.mean

    def parameters_of(self, z: np.ndarray) -> np.ndarray:
        """Parameter vectors ``theta_c + W z`` (``z``: (..., k) -> (..., d)); the complement of the
        subspace stays at the checkpoint."""
        return self.theta + np.asarray(z) @ self.directions.T

    def subspace_fraction(self, deltas: np.ndarray) -> float:
        """Share of the squared length of parameter displacements ``deltas`` (n, d) that lies in the
        subspace, measured where the dynamics are isotropic (:math:`w = D^{-1/2}\theta`): how much of
        the motion the model describes."""
        deltas = np.asarray(deltas, dtype=np.float64)
        inside = (deltas @ self.coords) ** 2  # z = U^T w (coords = D^{-1/2} U)
        return float(inside.sum() / max(((deltas / self.scale) ** 2).sum(), 1e-300))

    def save(self, path: Path) -> Path:
        """Write the model as one ``.npz`` through the atomic writer."""
        from ..rundir import atomic_write

        arrays = {f: np.asarray(getattr(self, f)) for f in self.__dataclass_fields__}
        arrays["optimizer"] = np.array(self.optimizer)
        atomic_write(Path(path), lambda fh: np.savez(fh, **arrays))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> LocalModel:
        with np.load(path, allow_pickle=False) as z:
            vals = {f: z[f] for f in cls.__dataclass_fields__}
        for f in ("eta", "beta", "c", "gamma"):
            vals[f] = float(vals[f])
        for f in ("batch_size", "noise_samples"):
            vals[f] = int(vals[f])
        vals["optimizer"] = str(vals["optimizer"])
        return cls(**vals)


def _psd_sqrt(P: np.ndarray) -> np.ndarray:
    """A square root ``L`` with ``L L^T = P`` for a PSD matrix (eigenvalues clipped at 0)."""
    w, Q = np.linalg.eigh(0.5 * (P + P.T))
    return Q * np.sqrt(np.clip(w, 0.0, None))


def fit_local_model(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int,
    k: int,
    gamma: float,
    noise_samples: int = 0,
    seed: int = 0,
    tol: float = 1e-8,
) -> LocalModel:
    """Fit the local model of training ``model`` on the pairs ``(x, y)`` (mean squared error) with
    ``optimizer`` at its current state and learning rate, minibatches of ``batch_size`` drawn
    with replacement, and an EMA of weight ``gamma``.

    ``noise_samples`` pairs (a seeded subset; 0: all) estimate the per-sample gradient covariance.
    """
    k = check_int("k", k, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    check_range("gamma", gamma, 0.0, 1.0, low_open=True)
    check_int("noise_samples", noise_samples, 0)
    dyn = optimizer_dynamics(optimizer, model)
    theta = flat_parameters(model).double()
    if k >= theta.numel():
        raise ValueError(f"k={k} is out of range: must be below the number of parameters ({theta.numel()})")
    s = dyn.precond.sqrt()
    op = hvp_operator(model, theta, x, y, scale=s)
    vals, U = top_eigenpairs(op, k, seed=seed, tol=tol)
    rng = np.random.default_rng(seed)
    n = len(x)
    idx = np.sort(rng.choice(n, size=noise_samples, replace=False)) if 0 < noise_samples < n else np.arange(n)
    G = per_sample_gradients(model, theta, x[idx], y[idx], U, scale=s)
    noise = np.cov(G, rowvar=False, ddof=1).reshape(k, k) / batch_size
    g_full = G.mean(0) if len(idx) == n else _full_gradient(model, theta, x, y) * s.numpy() @ U
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(vals > 0, -g_full / vals, 0.0)
    sn = s.numpy()
    return LocalModel(
        eigenvalues=vals,
        directions=sn[:, None] * U,
        coords=U / sn[:, None],
        noise_cov=noise,
        mean=mean,
        eta=dyn.eta,
        beta=dyn.beta,
        c=dyn.c,
        gamma=float(gamma),
        batch_size=batch_size,
        optimizer=dyn.kind,
        theta=theta.numpy(),
        noise_samples=len(idx),
        scale=sn,
    )


# ---------------------------------------------------------------------------- the measurement


@dataclass(frozen=True)
class Continuation:
    """Iterates of continued training, projected on a local model's coordinates.

    ``z`` and ``z_ema`` are ``(chains, steps + 1, k)`` (index 0: the checkpoint); the EMA of
    weight ``gamma`` starts at the checkpoint. ``kept_raw`` / ``kept_ema`` are the full parameter
    vectors ``(chains, len(kept_steps), d)`` (float32) at ``kept_steps``.
    """

    z: np.ndarray
    z_ema: np.ndarray
    gamma: float
    kept_steps: np.ndarray
    kept_raw: np.ndarray
    kept_ema: np.ndarray
    seconds: float


def continue_training(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    local: LocalModel,
    *,
    steps: int,
    chains: int = 1,
    seed: int = 0,
    keep: Sequence[int] = (),
    quiet: bool = True,
) -> Continuation:
    """Continue training ``model`` with ``optimizer`` (its current learning rate, held constant)
    on minibatches of ``local.batch_size`` pairs of ``(x, y)`` drawn with replacement, for
    ``steps`` steps in each of ``chains`` independent chains (minibatch seeds spawned from
    ``seed``), all from the current state; record the coordinates of the raw iterates and of an
    EMA of weight ``local.gamma``, and the full vectors at the steps ``keep``. The model and
    optimizer are left as they were."""
    from tqdm.auto import tqdm

    steps = check_int("steps", steps, 1)
    chains = check_int("chains", chains, 1)
    keep = sorted({check_int("keep", int(t), 0, steps) for t in keep})
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    theta_c = flat_parameters(model).double()
    Pi = torch.as_tensor(local.coords, dtype=torch.float64)
    k, d = local.k, theta_c.numel()
    Z = np.empty((chains, steps + 1, k))
    E = np.empty((chains, steps + 1, k))
    kept_raw = np.empty((chains, len(keep), d), np.float32)
    kept_ema = np.empty((chains, len(keep), d), np.float32)
    start = time.perf_counter()
    seeds = np.random.SeedSequence(seed).spawn(chains)
    bar = tqdm(total=chains * steps, desc="continuation", unit="step", disable=quiet)
    try:
        for r in range(chains):
            model.load_state_dict(model_state)
            optimizer.load_state_dict(opt_state)
            gen = torch.Generator().manual_seed(int(seeds[r].generate_state(1)[0]))
            ema = theta_c.clone()
            for t in range(steps + 1):
                theta = flat_parameters(model).double()
                if t > 0:
                    ema.mul_(1.0 - local.gamma).add_(theta, alpha=local.gamma)
                Z[r, t] = ((theta - theta_c) @ Pi).numpy()
                E[r, t] = ((ema - theta_c) @ Pi).numpy()
                if t in keep:
                    j = keep.index(t)
                    kept_raw[r, j], kept_ema[r, j] = theta.numpy(), ema.numpy()
                if t == steps:
                    break
                idx = torch.randint(len(x), (local.batch_size,), generator=gen)
                optimizer.zero_grad(set_to_none=True)
                loss = ((model(x[idx]) - y[idx]) ** 2).mean()
                loss.backward()
                if not math.isfinite(float(loss.detach())):
                    raise ValueError(f"the loss became {float(loss.detach())} at continuation step {t} of chain {r}")
                optimizer.step()
                bar.update(1)
    finally:
        bar.close()
        model.load_state_dict(model_state)
        optimizer.load_state_dict(opt_state)
    return Continuation(
        Z, E, local.gamma, np.array(keep, dtype=np.int64), kept_raw, kept_ema, time.perf_counter() - start
    )


@dataclass(frozen=True)
class RatioCI:
    """Measured / predicted variance of one group of directions: one ratio per chain, and their
    geometric mean with its t interval over chains (``interval``)."""

    group: tuple[int, int]  # directions [first, last), 0-based
    predicted: float  # sum of the group's predicted variances
    per_chain: np.ndarray  # (chains,) each chain's measured variance (summed over the group) / predicted
    interval: Interval  # mean_interval(per_chain, log=True)

    @property
    def ratio(self) -> float:
        return self.interval.estimate

    @property
    def low(self) -> float:
        return self.interval.low

    @property
    def high(self) -> float:
        return self.interval.high

    @property
    def measured(self) -> float:
        """The geometric mean over chains of the measured variance."""
        return self.ratio * self.predicted


def variance_ratios(
    z: np.ndarray,
    predicted_var: np.ndarray,
    groups: Sequence[tuple[int, int]],
    *,
    burn_in: int,
    level: float = 0.95,
) -> list[RatioCI]:
    """Measured over predicted variance per group of coordinates, one ratio per chain.

    ``z`` (chains, T, k) are iterates' coordinates in independent chains. After ``burn_in`` steps,
    a chain's measured variance is its mean square deviation from the mean of all chains: the
    chains share the stationary mean, and a chain's own mean would absorb its slow fluctuations
    (for an EMA of weight gamma about ``2 / (gamma T)`` of its variance). The interval is Student t
    over chains on the log ratios (:func:`gvatheory.inference.mean_interval` with ``log=True``)."""
    z = np.asarray(z, dtype=float)
    if z.ndim != 3:
        raise ValueError(f"z must have shape (chains, T, k), got {z.shape}")
    burn_in = check_int("burn_in", burn_in, 0, z.shape[1] - 2)
    pred = check_range("predicted_var", predicted_var, 0.0, math.inf, low_open=True, high_open=True)
    if pred.shape != (z.shape[-1],):
        raise ValueError(f"predicted_var must have shape ({z.shape[-1]},), one per coordinate of z, got {pred.shape}")
    tail = z[:, burn_in:]
    per_chain = ((tail - tail.mean(axis=(0, 1))) ** 2).mean(axis=1)  # (chains, k)
    out = []
    for lo_i, hi_i in groups:
        if not 0 <= lo_i < hi_i <= z.shape[-1]:
            raise ValueError(f"group ({lo_i}, {hi_i}) is out of range: need 0 <= first < last <= {z.shape[-1]}")
        p = float(pred[lo_i:hi_i].sum())
        ratios = per_chain[:, lo_i:hi_i].sum(axis=1) / p
        if not (ratios > 0).all():
            raise ValueError(f"a chain has zero variance in directions [{lo_i}, {hi_i}): its iterates did not move")
        out.append(RatioCI((lo_i, hi_i), p, ratios, mean_interval(ratios, level=level, log=True)))
    return out


# ---------------------------------------------------------------------------- behavior-cloning runs


@dataclass
class LoadedCheckpoint:
    """A checkpoint of a ``gva bc train`` run, ready to fit and continue: ``model`` and
    ``optimizer`` in the checkpoint's state with the learning rate of step ``step`` (held constant
    from here), ``data`` the training pairs in use, ``expert_return`` from the run's log."""

    run: Path
    step: int
    cfg: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: Any
    eta: float
    expert_return: float

    @property
    def batch_size(self) -> int:
        """Pairs per optimizer step (``batch_size * grad_accum``: accumulated minibatches average)."""
        return self.cfg.batch_size * self.cfg.grad_accum

    def run_gamma(self) -> float:
        """The run's EMA weight at this step (power or constant EMA); ``gamma_min`` for other stabilizers."""
        from gvatheory.schedules import PowerEMA

        cfg = self.cfg
        if cfg.stabilizer == "ema":
            return float(PowerEMA(cfg.alpha, cfg.gamma_min, cfg.burn_in)(self.step))
        return float(cfg.gamma_min)


def load_checkpoint(run: Path | RunDir, step: int = -1, *, threads: int = 0) -> LoadedCheckpoint:
    """Load checkpoint ``step`` (``-1``: the newest) of a BC run directory. Settings outside the
    local model (gradient clipping, input noise, dropout, weight decay) raise ``ValueError``."""
    from gvatheory.config import build_config

    from ..training import make_optimizer
    from .config import BCConfig
    from .data import BCData, Demonstrations
    from .imitators import make_imitator

    run = run if isinstance(run, RunDir) else RunDir(Path(run))
    check_int("threads", threads, 0)
    if not run.config_path.is_file():
        raise ValueError(f"run={run.path} is not a run directory: it has no config.json")
    cfg = build_config(BCConfig, run.read_config(), source=f"{run.config_path}")
    if threads:
        cfg = cfg.replace(threads=threads)
    for name, bad in (
        ("grad_clip", cfg.grad_clip > 0),
        ("obs_noise", cfg.obs_noise > 0),
        ("dropout", cfg.dropout > 0),
        ("weight_decay", cfg.weight_decay > 0),
    ):
        if bad:
            raise ValueError(f"{name}={getattr(cfg, name)} is out of range for the local model: it needs {name}=0")
    state = run.load_step(step)
    step = int(state["step"])  # -1 resolved to the newest
    torch.set_num_threads(cfg.threads)
    if state.get("data") is not None:
        data = BCData(**state["data"])
    else:
        demos = Path(cfg.demos) if cfg.demos else run.path / "demos.npz"
        data = Demonstrations.load(demos).bc_data(cfg.history)
    model = make_imitator(cfg.imitator_spec(data.train_x.shape[-1], data.train_y.shape[-1]))
    source = f"{run.checkpoint_dir}/step_{step:09d}.pt"
    load_checked(model, state.get("model"), source=source)
    model.train()
    optimizer = make_optimizer(cfg, model)
    load_checked(optimizer, state.get("optimizer"), source=source, what="the optimizer")
    eta = float(cfg.lr_schedule()(step))
    if eta <= 0:
        raise ValueError(f"step={step}: the learning rate there is {eta}; the local model needs a positive one")
    for g in optimizer.param_groups:
        g["lr"] = eta
    meta = next(run.metrics("meta"), {})
    return LoadedCheckpoint(
        run.path, step, cfg, model, optimizer, data, eta, float(meta.get("expert_return", float("nan")))
    )


def fit_bc(
    ck: LoadedCheckpoint, *, k: int, gamma: float | None = None, noise_samples: int = 0, seed: int = 0
) -> LocalModel:
    """:func:`fit_local_model` on a loaded BC checkpoint (training pairs, the run's batch size,
    ``gamma`` by default the run's EMA weight at that step)."""
    gamma = ck.run_gamma() if gamma is None else gamma
    d = ck.data
    return fit_local_model(
        ck.model,
        ck.optimizer,
        d.train_x,
        d.train_y,
        batch_size=ck.batch_size,
        k=k,
        gamma=gamma,
        noise_samples=noise_samples,
        seed=seed,
    )


def continue_bc(
    ck: LoadedCheckpoint,
    local: LocalModel,
    *,
    steps: int,
    chains: int = 1,
    seed: int = 0,
    keep: Sequence[int] = (),
    quiet: bool = True,
) -> Continuation:
    """:func:`continue_training` on a loaded BC checkpoint's training pairs."""
    return continue_training(
        ck.model,
        ck.optimizer,
        ck.data.train_x,
        ck.data.train_y,
        local,
        steps=steps,
        chains=chains,
        seed=seed,
        keep=keep,
        quiet=quiet,
    )


def rollout_vectors(
    ck: LoadedCheckpoint, vectors: np.ndarray, ics, horizons: Sequence[int], *, chunk: int = 256
) -> dict[int, np.ndarray]:
    """Rollout returns of the policies with flat parameter vectors ``vectors`` (P, d) from ``ics``,
    truncated at each horizon: ``{H: (P, n_ic)}``. One batched evaluator call (up to ``chunk``
    policies) for the longest horizon; shorter ones are partial sums of its per-step rewards."""
    from .envs import action_bounds
    from .rollout import rollout, stacked_policy
    from .train import AugmentedPolicy

    cfg = ck.cfg
    horizons = sorted({check_int("horizon", int(h), 1) for h in horizons})
    shapes = _shapes(ck.model)
    low, high = action_bounds(cfg.env)
    vectors = np.asarray(vectors, dtype=np.float32)
    out: dict[int, list[np.ndarray]] = {h: [] for h in horizons}
    was = ck.model.training
    ck.model.eval()
    try:
        for i in range(0, len(vectors), chunk):
            plist = [unflatten(torch.from_numpy(v.copy()), shapes) for v in vectors[i : i + chunk]]
            policy = AugmentedPolicy(stacked_policy(ck.model, plist), cfg.history, low, high)
            res = rollout(cfg.env, ics, horizons[-1], policy, len(plist), record=True, threads=cfg.threads)
            cum = np.cumsum(res.rewards, axis=-1)  # (P, I, H)
            for h in horizons:
                out[h].append(cum[..., h - 1])
    finally:
        ck.model.train(was)
    return {h: np.concatenate(v) for h, v in out.items()}
