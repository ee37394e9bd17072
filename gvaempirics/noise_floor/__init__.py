r"""The noise floor of constant-step training: excess loss of the raw iterate and of its EMAs,
the curvature spectrum that predicts it, and the runs of the study ``noise-floor``.

Paper Section 4.3 (the first half of Prop. 4.1): at stationarity under a constant step size
:math:`\eta`, SGD's iterate :math:`\theta_t` fluctuates around the minimizer and its excess loss
grows like :math:`\eta`, while an EMA with weight :math:`\gamma` averages the fluctuation away.

:func:`measure_noise_floor` measures this in any model trained by the toolkit's
:class:`~gvaempirics.training.Trainer` (behavior cloning, language models): from a warm start it
runs ``burn`` steps at a constant :math:`\eta` (iterate and EMAs forget the start), then a window
of ``window`` steps during which it records

* the validation loss of the raw iterate and of one constant-:math:`\gamma` EMA per entry of
  ``gammas``, every ``eval_every`` steps;
* the *reference*: the uniform average :math:`\bar\theta_W` of the window's iterates
  (:class:`gvaempirics.stabilizers.Polyak`), evaluated once at the end. It is the run's best
  estimate of the stationary mean; on a quadratic its own excess loss is about
  :math:`2/(\eta\lambda W)` of the iterate's (:func:`gvatheory.noise_floor.noise_floor`
  predicts it exactly), small once the window is many relaxation times long;
* the fluctuation: the mean squared distance between consecutive iterates
  :math:`\mathrm{msd} = \overline{\|\theta_{t+1}-\theta_t\|^2}` and the variance around the
  window mean :math:`v = \overline{\|\theta_t - \bar\theta_W\|^2}`. On a scalar quadratic
  :math:`\mathrm{msd} = 2\eta h\,v` exactly, so :math:`\hat\kappa = \mathrm{msd}/(2v)` estimates
  the per-step relaxation rate :math:`\eta h`.

Excess losses are window means minus the reference's loss (:class:`FloorWindow`). The loop is
the trainer's own step (:meth:`~gvaempirics.training.Trainer.train_step`: learning rate,
gradient accumulation and clipping, optimizer); nothing is written per step.

:func:`measure_spectrum` measures what the prediction
(:func:`gvatheory.noise_floor.spectrum_noise_floor`) takes, before any window is run: the top
``k`` eigenvalues :math:`\lambda_i` of the training loss's Hessian, preconditioned for Adam
(:math:`D^{1/2} H D^{1/2}`, :math:`D` from the optimizer's second moments), and the minibatch
gradient noise variance :math:`s_i` along each eigenvector (per-sample gradients projected on it,
their variance over the training samples divided by the batch size). It uses the local model's
Hessian-vector products and Lanczos (:mod:`gvaempirics.bc.local_model`) for behavior cloning's
squared error, and the same Lanczos on the language model's cross-entropy.

:func:`run_replicate` is one independent replicate of the study: a warm-up run with its own
training seed (and its own demonstrations or validation windows), the spectrum at its end, and one
window per :math:`\eta` from its weights (:class:`FloorSetting`, :class:`Replicate`).
"""

from __future__ import annotations

from .runs import FloorSetting, Replicate, replicate_seeds, run_replicate
from .spectrum import Spectrum, measure_spectrum, window_momentum
from .window import FloorWindow, measure_noise_floor

__all__ = [
    "FloorSetting",
    "FloorWindow",
    "Replicate",
    "Spectrum",
    "measure_noise_floor",
    "measure_spectrum",
    "replicate_seeds",
    "run_replicate",
    "window_momentum",
]
