"""Input validation shared by every public entry point.

Each check raises ``ValueError`` naming the parameter, the offending value and the valid range,
so that the CLI can print it as one line.
"""

from __future__ import annotations

import math
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


def check_choice(name: str, value: str, choices: tuple[str, ...] | list[str]) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid: choose one of {', '.join(map(str, choices))}")
    return value
