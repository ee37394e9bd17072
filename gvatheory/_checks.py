"""Input validation shared by every public entry point.

Each check raises ``ValueError`` naming the parameter, the offending value and the valid range,
so that the CLI can print it as one line.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np


def _show(value: Any) -> str:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return repr(arr.item())
    return np.array2string(arr, threshold=6, precision=4)


def check_finite(name: str, value: Any) -> np.ndarray:
    """Return ``value`` as a float array, rejecting NaN and inf."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a real number or array of real numbers") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}={_show(arr)} must be finite (got NaN or inf)")
    return arr


def check_range(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> np.ndarray:
    """Check ``low <(=) value <(=) high`` elementwise; the interval is printed in the message."""
    arr = check_finite(name, value)
    ok_low = arr > low if low_open else arr >= low
    ok_high = arr < high if high_open else arr <= high
    if not np.all(ok_low & ok_high):
        lo = "(" if low_open or low == -math.inf else "["
        hi = ")" if high_open or high == math.inf else "]"
        raise ValueError(f"{name}={_show(arr)} is out of range: must be in {lo}{low:g}, {high:g}{hi}")
    return arr


#: Largest scale whose square is a finite float64: a standard deviation above it has no variance.
MAX_SCALE = math.sqrt(np.finfo(float).max)
#: Smallest scale whose square is a normal (nonzero, full-precision) float64.
MIN_SCALE = math.sqrt(np.finfo(float).tiny)


def check_scale(name: str, value: Any) -> np.ndarray:
    """A standard deviation: ``0 <= value < MAX_SCALE``, so that its square (a variance) is finite."""
    return check_range(name, value, 0.0, MAX_SCALE, high_open=True)


def check_positive(name: str, value: Any) -> np.ndarray:
    """Check ``value > 0`` elementwise."""
    return check_range(name, value, 0.0, math.inf, low_open=True)


def check_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """Check that ``value`` is an integer in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        upper = "inf" if maximum is None else str(maximum)
        raise ValueError(f"{name}={value} is out of range: must be an integer in [{minimum}, {upper}]")
    return value


def check_shape(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Check that ``arr`` has exactly ``shape``."""
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} has shape {arr.shape}, expected {tuple(shape)}")
    return arr


def check_matrix(name: str, value: Any, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``value`` as a finite 2-D float array (scalars and vectors are promoted), of ``shape`` if given."""
    arr = check_finite(name, value)
    arr = np.atleast_2d(arr) if arr.ndim < 2 else arr
    if arr.ndim != 2:
        raise ValueError(f"{name} has {arr.ndim} dimensions, expected a matrix")
    if shape is not None:
        check_shape(name, arr, shape)
    return arr


def check_plant(A: Any, B: Any) -> tuple[np.ndarray, np.ndarray]:
    """The matrices of a linear plant :math:`x' = Ax + Bu`: ``A`` square (n, n) and ``B`` (n, m), both
    finite float arrays (scalars and vectors are promoted, as in :func:`check_matrix`)."""
    A = check_matrix("A", A)
    n = A.shape[0]
    check_shape("A", A, (n, n))
    B = check_matrix("B", B)
    if B.shape[0] != n:
        raise ValueError(f"B has shape {B.shape}, expected ({n}, m) to match A")
    return A, B


def check_psd(name: str, mat: np.ndarray) -> np.ndarray:
    """Check that a square matrix is symmetric positive semi-definite (to rounding)."""
    if not np.allclose(mat, mat.T) or np.linalg.eigvalsh((mat + mat.T) / 2).min() < -1e-12:
        raise ValueError(f"{name}={mat.tolist()} must be symmetric positive semi-definite")
    return mat


def check_choice(name: str, value: str, choices: tuple[str, ...] | list[str]) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid: choose one of {', '.join(map(str, choices))}")
    return value


#: Share of the available memory one call may allocate: the rest is left to the process and
#: to everything else running on the machine.
MEMORY_FRACTION = 0.5


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``MemAvailable`` on Linux, else free pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**63 - 1  # unknown: do not refuse


def _show_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def check_memory(
    name: str, value: int, bytes_per_unit: float, *, fixed: float = 0.0, limit: float | None = None
) -> int:
    """Refuse a size whose arrays cannot fit before allocating them.

    The call needs ``fixed + value * bytes_per_unit`` bytes; ``limit`` defaults to
    :data:`MEMORY_FRACTION` of :func:`available_memory`. Raises ``ValueError`` naming ``name``,
    the value, the bytes it needs and the largest value that fits.
    """
    limit = MEMORY_FRACTION * available_memory() if limit is None else float(limit)
    need = float(fixed) + float(value) * float(bytes_per_unit)
    if need > limit:
        largest = max(int((limit - float(fixed)) // float(bytes_per_unit)), 0)
        raise ValueError(
            f"{name}={value} is too large: it needs {_show_bytes(need)} of memory and "
            f"{_show_bytes(limit)} is available; the largest {name} that fits is {largest}"
        )
    return value


def nan_to_inf(x: np.ndarray) -> np.ndarray:
    """Overflowed entries (``inf - inf = NaN``) reported as ``inf``, never NaN."""
    return np.where(np.isnan(x), np.inf, x)
