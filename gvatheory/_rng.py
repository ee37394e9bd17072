r"""Per-chain random numbers for the numba Monte Carlo kernels.

Every chain owns a xoshiro256** generator (Blackman & Vigna 2018) whose 256-bit state is
expanded by splitmix64 from the chain's 64-bit key, :func:`gvatheory.stats.chain_keys`. A
chain's numbers therefore depend only on ``(seed, chain index)``: the kernels give identical
samples whatever the number of threads that run the chains.

Normals come from a 256-layer ziggurat (Marsaglia & Tsang 2000). Its tables are built here in
numpy: with :math:`f(x) = e^{-x^2/2}`, right edge :math:`R` and common layer area
:math:`V = R f(R) + \int_R^\infty f`,

.. math::

    x_0 = V / f(R), \quad x_1 = R, \quad x_{i+1} = f^{-1}\big(f(x_i) + V / x_i\big), \quad x_{256} = 0 .

One 64-bit draw gives the layer (its low 8 bits) and a signed uniform on [-1, 1) (its top 54
bits); the draw is accepted at once when it falls inside the rectangle under the curve (about 99%
of draws), and otherwise the wedge or the tail (Marsaglia's exponential method) is sampled exactly.

The ``*_py`` functions are plain-Python references (Python integers, no numba) that the tests
compare bit for bit with the compiled versions.

The state is passed around as four ``uint64`` scalars (not an array) so that it stays in
registers inside the kernels' inner loops.

The kernels that inline these functions cache their machine code (numba ``cache=True``), and
numba checks only the kernel's own source file for changes: after editing this file, delete
``gvatheory/__pycache__/*.nbi`` and ``*.nbc``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_MASK = (1 << 64) - 1
_U53 = 1.0 / (1 << 53)

# ---------------------------------------------------------------- ziggurat tables (numpy)

ZIG_LAYERS = 256
#: Right edge of the base layer for 256 layers (Marsaglia & Tsang 2000).
ZIG_R = 3.6541528853610088


def _ziggurat_tables(n: int = ZIG_LAYERS, r: float = ZIG_R) -> tuple[np.ndarray, np.ndarray]:
    """Layer edges ``x`` (length ``n + 1``) and curve heights ``f = exp(-x**2/2)``."""
    f_r = math.exp(-0.5 * r * r)
    v = r * f_r + math.sqrt(math.pi / 2.0) * math.erfc(r / math.sqrt(2.0))
    x = np.empty(n + 1)
    x[0], x[1] = v / f_r, r
    for i in range(1, n - 1):
        x[i + 1] = math.sqrt(-2.0 * math.log(math.exp(-0.5 * x[i] ** 2) + v / x[i]))
    x[n] = 0.0  # the recursion lands on 0 up to rounding; the top layer's peak is exactly f = 1
    return x, np.exp(-0.5 * x * x)


ZIG_X, ZIG_F = _ziggurat_tables()

# ---------------------------------------------------------------- compiled generators

_U64 = numba.uint64

# Codes of the unit noises of next_unit_noise (numba compiles these module-level ints as constants)
NOISE_GAUSSIAN = 0
NOISE_RADEMACHER = 1
NOISE_STUDENT_T = 2


@numba.njit(inline="always", cache=True)
def _rotl(x, k):
    return (x << _U64(k)) | (x >> _U64(64 - k))


@numba.njit(inline="always", cache=True)
def splitmix64(x):
    """One splitmix64 step: returns ``(output, new_state)``."""
    x = x + _U64(0x9E3779B97F4A7C15)
    z = x
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31)), x


@numba.njit(inline="always", cache=True)
def seed_state(key):
    """xoshiro256** state from a 64-bit key (splitmix64 expansion, never all zero)."""
    s0, x = splitmix64(_U64(key))
    s1, x = splitmix64(x)
    s2, x = splitmix64(x)
    s3, x = splitmix64(x)
    return s0, s1, s2, s3


@numba.njit(inline="always", cache=True)
def next_u64(s0, s1, s2, s3):
    """One xoshiro256** draw: ``(output, s0, s1, s2, s3)``."""
    # s0..s3: the 256-bit state in four words; t: the shifted word of the reference implementation
    out = _rotl(s1 * _U64(5), 7) * _U64(9)
    t = s1 << _U64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    return out, s0, s1, s2, s3


@numba.njit(inline="always", cache=True)
def next_uniform(s0, s1, s2, s3):
    """Uniform on [0, 1) with 53 random bits: ``(u, s0, s1, s2, s3)``."""
    r, s0, s1, s2, s3 = next_u64(s0, s1, s2, s3)
    return float(r >> _U64(11)) * _U53, s0, s1, s2, s3


@numba.njit(cache=True)
def _normal_slow(i, z, s0, s1, s2, s3, zig_x, zig_f):
    """Rejected-rectangle path of the ziggurat: tail (layer 0) or wedge, with retries."""
    # i: layer, z: the rejected candidate; tail: x, y exponential draws (Marsaglia), r the base layer's edge
    sign = 1.0 if z >= 0.0 else -1.0
    while True:
        if i == 0:
            r = zig_x[1]
            while True:
                u1, s0, s1, s2, s3 = next_uniform(s0, s1, s2, s3)
                u2, s0, s1, s2, s3 = next_uniform(s0, s1, s2, s3)
                x = -math.log(1.0 - u1) / r
                y = -math.log(1.0 - u2)
                if 2.0 * y > x * x:
                    return sign * (r + x), s0, s1, s2, s3
        u, s0, s1, s2, s3 = next_uniform(s0, s1, s2, s3)
        if zig_f[i + 1] + u * (zig_f[i] - zig_f[i + 1]) < math.exp(-0.5 * z * z):
            return z, s0, s1, s2, s3
        # Rejected: draw afresh from the whole ziggurat.
        r64, s0, s1, s2, s3 = next_u64(s0, s1, s2, s3)
        i = np.int64(r64 & _U64(0xFF))
        z = float(np.int64(r64) >> np.int64(10)) * _U53 * zig_x[i]
        sign = 1.0 if z >= 0.0 else -1.0
        if abs(z) < zig_x[i + 1]:
            return z, s0, s1, s2, s3


@numba.njit(inline="always", cache=True)
def next_normal(s0, s1, s2, s3, zig_x, zig_f):
    """Standard normal by the ziggurat (tables ``ZIG_X``, ``ZIG_F``): ``(z, s0, s1, s2, s3)``."""
    # zig_x[i], zig_f[i]: edge and curve height of layer i; r64: one 64-bit draw; i: its layer; z: the candidate
    r64, s0, s1, s2, s3 = next_u64(s0, s1, s2, s3)
    i = np.int64(r64 & _U64(0xFF))
    # bits 10..63 as a signed integer: a uniform on [-1, 1) with its sign, without a branch
    z = float(np.int64(r64) >> np.int64(10)) * _U53 * zig_x[i]
    if abs(z) < zig_x[i + 1]:
        return z, s0, s1, s2, s3
    return _normal_slow(i, z, s0, s1, s2, s3, zig_x, zig_f)


@numba.njit(cache=True)
def _gamma_mt(shape, s0, s1, s2, s3, zig_x, zig_f):
    """Gamma(shape, 1) for ``shape >= 1`` by Marsaglia & Tsang (2000)."""
    # the paper's names: d = shape - 1/3, c = 1/sqrt(9d), candidate d v with v = (1 + c x)^3, x normal, u uniform
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x, s0, s1, s2, s3 = next_normal(s0, s1, s2, s3, zig_x, zig_f)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u, s0, s1, s2, s3 = next_uniform(s0, s1, s2, s3)
        if math.log(1.0 - u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v, s0, s1, s2, s3


@numba.njit(inline="always", cache=True)
def next_unit_noise(kind, df, s0, s1, s2, s3, zig_x, zig_f):
    """One mean-0, variance-1 draw: ``kind`` ``NOISE_GAUSSIAN``, ``NOISE_RADEMACHER`` or
    ``NOISE_STUDENT_T`` (``df > 2`` degrees of freedom)."""
    if kind == NOISE_GAUSSIAN:
        return next_normal(s0, s1, s2, s3, zig_x, zig_f)
    if kind == NOISE_RADEMACHER:
        r, s0, s1, s2, s3 = next_u64(s0, s1, s2, s3)
        return (1.0 if r >> _U64(63) else -1.0), s0, s1, s2, s3
    z, s0, s1, s2, s3 = next_normal(s0, s1, s2, s3, zig_x, zig_f)
    g, s0, s1, s2, s3 = _gamma_mt(0.5 * df, s0, s1, s2, s3, zig_x, zig_f)
    # t = z / sqrt(chi2_df / df) has variance df / (df - 2).
    return z * math.sqrt((df - 2.0) / (2.0 * g)), s0, s1, s2, s3


@numba.njit(inline="always", cache=True)
def next_index(n, s0, s1, s2, s3):
    """Uniform integer in ``[0, n)`` (Lemire's multiply-shift; bias below ``n / 2**64``)."""
    # r: the 64-bit draw; lo, hi: its 32-bit halves; t: the top 96 bits of r * n
    r, s0, s1, s2, s3 = next_u64(s0, s1, s2, s3)
    # high 64 bits of r * n, computed with 32-bit halves since numba has no 128-bit integers
    n64 = _U64(n)
    lo = r & _U64(0xFFFFFFFF)
    hi = r >> _U64(32)
    t = hi * n64 + ((lo * n64) >> _U64(32))
    return np.int64(t >> _U64(32)), s0, s1, s2, s3


@numba.njit(parallel=True, cache=True)
def normals(keys, n_per_key, zig_x, zig_f):
    """``n_per_key`` standard normals per key: shape ``(len(keys), n_per_key)`` (for tests)."""
    out = np.empty((keys.shape[0], n_per_key))
    for c in numba.prange(keys.shape[0]):
        s0, s1, s2, s3 = seed_state(keys[c])
        for j in range(n_per_key):
            z, s0, s1, s2, s3 = next_normal(s0, s1, s2, s3, zig_x, zig_f)
            out[c, j] = z
    return out


@numba.njit(cache=True)
def u64_stream(key, n):
    """The first ``n`` xoshiro256** outputs for ``key`` (for tests)."""
    out = np.empty(n, dtype=np.uint64)
    s0, s1, s2, s3 = seed_state(key)
    for j in range(n):
        r, s0, s1, s2, s3 = next_u64(s0, s1, s2, s3)
        out[j] = r
    return out


# ---------------------------------------------------------------- plain-Python references


class XoshiroPy:
    """Reference xoshiro256** with splitmix64 seeding, in Python integers."""

    def __init__(self, key: int):
        x = int(key) & _MASK
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & _MASK
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def _rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & _MASK

    def next_u64(self) -> int:
        s = self.s
        out = (self._rotl((s[1] * 5) & _MASK, 7) * 9) & _MASK
        t = (s[1] << 17) & _MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return out

    def uniform(self) -> float:
        return (self.next_u64() >> 11) * _U53

    def normal(self) -> float:
        """Same ziggurat as :func:`next_normal`, written out plainly."""
        x, f = ZIG_X, ZIG_F
        while True:
            r = self.next_u64()
            i = r & 0xFF
            signed = r - (1 << 64) if r >> 63 else r  # two's complement
            z = ((signed >> 10) * _U53) * x[i]
            sign = 1.0 if z >= 0.0 else -1.0
            if abs(z) < x[i + 1]:
                return z
            if i == 0:
                while True:
                    a = -math.log(1.0 - self.uniform()) / x[1]
                    b = -math.log(1.0 - self.uniform())
                    if 2.0 * b > a * a:
                        return sign * (x[1] + a)
            if f[i + 1] + self.uniform() * (f[i] - f[i + 1]) < math.exp(-0.5 * z * z):
                return z
