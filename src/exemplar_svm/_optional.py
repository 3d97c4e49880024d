"""Optional dependencies, imported only when used, with an error that names the extra."""

from __future__ import annotations

import importlib
from collections.abc import Collection
from types import ModuleType
from typing import Any


def require(module: str, *, extra: str) -> ModuleType:
    """Import ``module`` or explain which extra of exemplar-svm provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is needed for this feature but is not installed: "
            f"pip install 'exemplar-svm[{extra}]'"
        ) from exc


def class_in(value: Any, classes: Collection[tuple[str, str]]) -> str | None:
    """The name of ``value``'s class, or of a base class, listed in ``classes`` as
    ``(top-level package, class name)``: recognises an optional package's class without
    importing the package."""
    for cls in type(value).__mro__:
        if (cls.__module__.split(".")[0], cls.__name__) in classes:
            return cls.__name__
    return None
