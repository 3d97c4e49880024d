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
    wrongly-sized input. Complex numbers and strings are refused rather than converted: numpy
    would drop an imaginary part (with only a warning) and parse ``"0.5"`` as a number.
    """
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be numeric vectors (a 1-D vector or a 2-D array of rows); "
            f"could not convert it: {exc}"
        ) from None
    _refuse_kinds(raw, name)
    try:
        array: NDArray[Any] = np.asarray(raw, dtype=dtype)
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


def _refuse_kinds(raw: NDArray[Any], name: str) -> None:
    """Refuse complex numbers and strings, which numpy would convert: it drops an imaginary part
    (with only a warning) and parses ``"0.5"`` as a number."""
    kinds = {raw.dtype.kind}
    if raw.dtype.kind == "O":  # a mix: look at each item
        kinds = {np.asarray(item).dtype.kind for item in raw.flat}
    if "c" in kinds:
        raise ValueError(
            f"{name} must be numeric vectors of real numbers; it holds complex numbers (their "
            "imaginary part would be lost)"
        )
    if kinds & {"U", "S"}:
        raise ValueError(
            f"{name} must be numeric vectors; it holds strings, which are never parsed as "
            "numbers: pass the vectors themselves"
        )
    if not kinds <= {"f", "i", "u", "b", "O"}:
        raise ValueError(f"{name} must be numeric vectors; it holds {raw.dtype} values")


def check_rows(array: NDArray[Any], name: str, most: int) -> NDArray[Any]:
    """Refuse more than ``most`` rows: every row of a query or an example costs the search
    memory over the whole corpus."""
    if len(array) > most:
        raise ValueError(
            f"{name} has {len(array)} vectors; at most {most} are allowed (each one costs the "
            "search memory over every corpus row): pass fewer, or their mean"
        )
    return array


def as_id_list(ids: Any, name: str = "ids") -> list[Any]:
    """``ids`` as a list; one string is refused (``list("abc")`` would be three ids)."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(
            f"{name} must be a sequence of strings, one per vector, not one string {ids!r}; "
            f"wrap it in a list: [{ids!r}]"
        )
    return list(ids)


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


def _check_number(value: float, name: str, *, most: float | None, positive: bool) -> float:
    low = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number {low}, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number {low}, got {value!r}")
    if positive and number <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if most is not None and number > most:
        raise ValueError(
            f"{name} must be at most {most:g}, got {value!r}: beyond that the solver is no "
            "longer well-conditioned (or the option has no further effect)"
        )
    return number


def check_positive(value: float, name: str, most: float | None = None) -> float:
    """A finite number > 0 (and at most ``most``)."""
    return _check_number(value, name, most=most, positive=True)


def check_nonnegative(value: float, name: str, most: float | None = None) -> float:
    """A finite number >= 0 (and at most ``most``)."""
    return _check_number(value, name, most=most, positive=False)


def check_fraction(value: float, name: str) -> float:
    value = check_nonnegative(value, name)
    if value > 1:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return value


def check_count(value: int, name: str, most: int | None = None) -> int:
    """A whole number >= 0 (and at most ``most``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    if most is not None and value > most:
        raise ValueError(
            f"{name} must be at most {most}, got {value!r}: each one costs the search memory "
            "over every corpus row"
        )
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
