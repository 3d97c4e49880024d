"""Optional dependencies, imported only when used, with an error that names the extra."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, *, extra: str) -> ModuleType:
    """Import ``module`` or explain which extra of exemplar-svm provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is needed for this feature but is not installed: "
            f"pip install 'exemplar-svm[{extra}]'"
        ) from exc
