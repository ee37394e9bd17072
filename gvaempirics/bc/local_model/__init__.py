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

Modules: :mod:`.autodiff` (flat parameters, Hessian-vector products, per-sample gradients),
:mod:`.model` (the optimizer's constants, the recursion, :class:`LocalModel` and its fit),
:mod:`.continuation` (continued training and the variance ratios), :mod:`.runs` (``gva bc
train`` run directories); everything is importable from here.
"""

from __future__ import annotations

from .autodiff import (
    flat_parameters,
    hvp_operator,
    per_sample_gradients,
    per_sample_gradients_reference,
    top_eigenpairs,
    unflatten,
)
from .continuation import Continuation, RatioCI, continue_training, variance_ratios
from .model import Dynamics, LocalModel, fit_local_model, momentum_ema_matrices, optimizer_dynamics
from .runs import LoadedCheckpoint, continue_bc, fit_bc, load_checkpoint, rollout_vectors

__all__ = [
    "Continuation",
    "Dynamics",
    "LoadedCheckpoint",
    "LocalModel",
    "RatioCI",
    "continue_bc",
    "continue_training",
    "fit_bc",
    "fit_local_model",
    "flat_parameters",
    "hvp_operator",
    "load_checkpoint",
    "momentum_ema_matrices",
    "optimizer_dynamics",
    "per_sample_gradients",
    "per_sample_gradients_reference",
    "rollout_vectors",
    "top_eigenpairs",
    "unflatten",
    "variance_ratios",
]
