"""numba kernels of :mod:`gvatheory.averaging`: SGD chains on a quadratic with EMAs.

Module-level ``@njit`` functions that take only arrays and scalars and write into ``out_*``
buffers; :class:`gvatheory.averaging.QuadraticSGD` and :func:`gvatheory.averaging.simulate_scalar`
validate the inputs and call them. Each chain draws from its own xoshiro256** stream
(:mod:`gvatheory._rng`) keyed by its chain key, so results do not depend on the thread count.
"""

from __future__ import annotations

import numba
import numpy as np

from . import _rng

#: Code of minibatch noise, the mean of ``batch`` atoms drawn with replacement; the unit noises
#: have the codes of :mod:`gvatheory._rng`. Codes are indices into ``averaging.NOISE_KINDS``.
NOISE_MINIBATCH = 3
NOISE_CODES = {
    "gaussian": _rng.NOISE_GAUSSIAN,
    "rademacher": _rng.NOISE_RADEMACHER,
    "student-t": _rng.NOISE_STUDENT_T,
    "minibatch": NOISE_MINIBATCH,
}


@numba.njit(parallel=True, cache=True)
def sgd_kernel(
    keys, H, mu, theta0, sigma_half, atoms, batch, noise, df, etas, gammas, record, zig_x, zig_f, out_final, out_path
):
    """Chains of :math:`\\theta_{t+1} = \\theta_t - \\eta_t(H(\\theta_t-\\mu) + \\xi_t)` with EMAs; writes ``out_*``."""
    # gammas[k, t]: weight of EMA k at step t; record[t]: slot of step t in out_path (-1: none); xi: gradient noise
    T = etas.shape[0]
    m = gammas.shape[0]
    d = H.shape[0]
    n_atoms = atoms.shape[0]
    for c in numba.prange(keys.shape[0]):
        s0, s1, s2, s3 = _rng.seed_state(keys[c])
        theta = theta0.copy()
        ema = np.empty((m, d))
        for k in range(m):
            ema[k] = theta0
        u = np.empty(d)
        xi = np.empty(d)
        grad = np.empty(d)
        for t in range(T + 1):
            slot = record[t]
            if slot >= 0:
                out_path[c, slot, 0] = theta
                for k in range(m):
                    out_path[c, slot, 1 + k] = ema[k]
            if t == T:
                break
            if noise == NOISE_MINIBATCH:
                xi[:] = 0.0
                for _j in range(batch):
                    i, s0, s1, s2, s3 = _rng.next_index(n_atoms, s0, s1, s2, s3)
                    for a in range(d):
                        xi[a] += atoms[i, a]
                for a in range(d):
                    xi[a] /= batch
            else:
                for a in range(d):
                    u[a], s0, s1, s2, s3 = _rng.next_unit_noise(noise, df, s0, s1, s2, s3, zig_x, zig_f)
                for a in range(d):
                    acc = 0.0
                    for b in range(d):
                        acc += sigma_half[a, b] * u[b]
                    xi[a] = acc
            for a in range(d):
                acc = 0.0
                for b in range(d):
                    acc += H[a, b] * (theta[b] - mu[b])
                grad[a] = acc + xi[a]
            eta = etas[t]
            for a in range(d):
                theta[a] = theta[a] - eta * grad[a]
            for k in range(m):
                g = gammas[k, t + 1]
                for a in range(d):
                    ema[k, a] = (1.0 - g) * ema[k, a] + g * theta[a]
        out_final[c, 0] = theta
        for k in range(m):
            out_final[c, 1 + k] = ema[k]


@numba.njit(parallel=True, cache=True)
def scalar_kernel(keys, T, eta, gamma, sigma, theta0, mu, h, zig_x, zig_f, out_theta, out_ema):
    """1-D chains of SGD with Gaussian noise and one constant-gamma EMA; writes ``out_theta``, ``out_ema``."""
    # h: curvature of the quadratic; z: a standard normal; zig_x, zig_f: ziggurat tables
    for c in numba.prange(keys.shape[0]):
        s0, s1, s2, s3 = _rng.seed_state(keys[c])
        theta = theta0
        ema = theta0
        for _ in range(T):
            z, s0, s1, s2, s3 = _rng.next_normal(s0, s1, s2, s3, zig_x, zig_f)
            theta = theta - eta * (h * (theta - mu) + sigma * z)
            ema = (1.0 - gamma) * ema + gamma * theta
        out_theta[c] = theta
        out_ema[c] = ema
