"""A griffe extension for the docs site: Sphinx roles in docstrings become code spans.

The docstrings follow numpydoc and name other objects with Sphinx roles
(``:class:`~exemplar_svm.Hit```), which mkdocstrings would print verbatim. They become code
spans of the name as Sphinx shows it (the last part for a ``~`` target).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|data|mod|exc|obj):`(~?)([^`]+)`")


def _code(match: re.Match[str]) -> str:
    short, target = match.groups()
    name = target.rsplit(".", 1)[-1] if short else target
    return f"`{name}`"


class SphinxRoles(Extension):
    """Rewrite Sphinx roles in every docstring as it is loaded."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
