"""Input validation shared by the solver and the index, so every entry point fails the same way."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


def as_matrix(
    value: ArrayLike, name: str, *, dim: int | None = None, dtype: type = np.float64
) -> NDArray[Any]:
    """Return ``value`` as a 2-D finite array (a 1-D vector becomes one row).

    Raises ``ValueError`` naming ``name`` for an empty, ragged, non-numeric, non-finite or
    wrongly-sized input.
    """
    try:
        array: NDArray[Any] = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be numeric vectors (a 1-D vector or a 2-D array of rows); "
            f"could not convert it: {exc}"
        ) from None
    if array.ndim == 1:
        array = array[np.newaxis, :]
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 1-D vector or a 2-D array, got {array.ndim} dimensions")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); pass at least one vector")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(
            f"dimension mismatch: {name} has {array.shape[1]} dimensions but the corpus has "
            f"{dim}; embed it with the same model as the corpus"
        )
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{name} row {row} contains NaN or infinite values; fix or drop it")
    return array


def unit_rows(array: NDArray[Any], name: str) -> NDArray[Any]:
    """L2-normalise each row; an all-zero row has no direction and is refused."""
    norms = np.linalg.norm(array, axis=1)
    zero = norms == 0
    if zero.any():
        row = int(np.flatnonzero(zero)[0])
        raise ValueError(
            f"{name} row {row} is an all-zero vector, which has no direction; "
            "drop it or re-embed the text"
        )
    if not np.isfinite(norms).all():
        raise ValueError(f"{name} has values too large to normalise; rescale the vectors")
    return np.asarray(array / norms[:, np.newaxis], dtype=array.dtype)


def check_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def check_nonnegative(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_fraction(value: float, name: str) -> float:
    value = check_nonnegative(value, name)
    if value > 1:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return value


def check_count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be a whole number of results, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return int(k)


def check_ids(ids: list[str], name: str = "ids") -> None:
    """Ids are non-empty strings, each used once."""
    seen: set[str] = set()
    for position, item in enumerate(ids):
        if not isinstance(item, str) or not item:
            raise ValueError(
                f"{name}[{position}] is {item!r}; ids must be non-empty strings "
                "(convert them with str())"
            )
        if item in seen:
            raise ValueError(f"duplicate id {item!r} in {name}; every document needs its own id")
        seen.add(item)
