r"""The mathematics of the local model: optimizer constants, the linear-Gaussian recursion, the fit.

An optimizer with a frozen preconditioner :math:`D` is
:math:`u' = \beta u + c g,\ \theta' = \theta - \eta D u'` (:func:`optimizer_dynamics`). On the
span of the top-``k`` eigenvectors :math:`U` of :math:`\hat H = D^{1/2} H D^{1/2}`, the
coordinates :math:`z = U^\top D^{-1/2}(\theta - \theta_c)`, the projected momentum ``n`` and an
EMA ``e`` of weight :math:`\gamma` follow :math:`x' = M x + B \zeta`
(:func:`momentum_ema_matrices`); :class:`LocalModel` holds the fitted constants and the
stationary law (:func:`gvatheory.moments.stationary_cov`), and :func:`fit_local_model` fits them
at a checkpoint. The full derivation is in :mod:`gvaempirics.bc.local_model`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from gvatheory._checks import check_int, check_range
from gvatheory.moments import stationary_cov

from .autodiff import _full_gradient, flat_parameters, hvp_operator, per_sample_gradients, top_eigenpairs

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
        from ...rundir import atomic_write

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
