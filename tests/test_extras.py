"""Every example states the extras it needs, and those extras bring everything it imports.

Nothing is installed: each ```python block of the README and of docs/ is parsed for its imports,
and each imported module is traced to the installed distribution that provides it. That
distribution must be among what ``pip install "exemplar-svm[EXTRAS]"`` brings (the extras'
requirements and theirs, from pyproject.toml and the installed packages' metadata), where
EXTRAS is the nearest install line above the block in its section; a block without one may
import only what the core installs.
"""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
requirements = pytest.importorskip("packaging.requirements")

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
INSTALL = re.compile(r"""pip install ["']exemplar-svm\[([a-z0-9,-]+)\]["']""")
SECTION = re.compile(r"^#{1,2} ", re.MULTILINE)
# What an example needs without importing it: the optional modules behind exemplar_svm's own.
IMPLIED = {
    "exemplar_svm.langchain": "langchain_core",
    "exemplar_svm.llama_index": "llama_index.core",
    # The local model: SentenceTransformerEmbedder, or a retriever's default embed_model.
    "SentenceTransformerEmbedder": "sentence_transformers",
    "all-MiniLM-L6-v2": "sentence_transformers",
}


def examples() -> list[tuple[str, tuple[str, ...], str]]:
    """(where, extras named above it, code) for every python block."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for number, match in enumerate(BLOCK.finditer(text), start=1):
            before = text[: match.start()]
            sections = list(SECTION.finditer(before))
            section = before[sections[-1].start() :] if sections else before
            installs = INSTALL.findall(section)
            extras = tuple(installs[-1].split(",")) if installs else ()
            found.append((f"{page.relative_to(ROOT).as_posix()}#{number}", extras, match[1]))
    return found


def project() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return dict(tomllib.load(file)["project"])


def beyond_test_extra(extras: tuple[str, ...]) -> list[pytest.MarkDecorator]:
    """``[pytest.mark.dev]`` when ``extras`` bring a package that the ``[test]`` extra (the
    README's test command) does not install, so the test runs in CI after ``[dev]``."""
    return [] if packages(extras) <= packages(("test",)) else [pytest.mark.dev]


@cache
def packages(extras: tuple[str, ...]) -> frozenset[str]:
    """The names of the packages that pyproject.toml lists for exemplar-svm with ``extras``."""
    return frozenset(name_of(requirement) for requirement in requested(extras))


def name_of(requirement: str) -> str:
    return normal(requirements.Requirement(requirement).name)


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requested(extras: tuple[str, ...]) -> list[str]:
    """The requirements of exemplar-svm with ``extras``, its own extras expanded."""
    optional = project()["optional-dependencies"]
    assert isinstance(optional, dict)
    wanted: list[str] = list(project()["dependencies"])  # type: ignore[call-overload]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        assert extra in optional, f"pyproject.toml has no extra {extra!r}"
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in optional[extra]:
            parsed = requirements.Requirement(requirement)
            if normal(parsed.name) == "exemplar-svm":
                pending.extend(parsed.extras)
            elif parsed.marker is None or parsed.marker.evaluate():
                wanted.append(requirement)
    return wanted


@cache
def installed_closure(extras: tuple[str, ...]) -> frozenset[str]:
    """Every distribution ``pip install "exemplar-svm[extras]"`` installs, as installed here."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    pending = [requirements.Requirement(item) for item in requested(extras)]
    while pending:
        requirement = pending.pop()
        key = (normal(requirement.name), tuple(sorted(requirement.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            needs = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: it can provide nothing an example imports
        environments = [{"extra": extra} for extra in requirement.extras] or [{"extra": ""}]
        for need in needs:
            parsed = requirements.Requirement(need)
            if parsed.marker is None or any(parsed.marker.evaluate(env) for env in environments):
                pending.append(parsed)
    return frozenset(name for name, _ in seen)


def imported_modules(code: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    for marker, module in IMPLIED.items():
        if marker in code or any(name.startswith(marker) for name in modules):
            modules.add(module)
    return modules


@cache
def providers() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())


@cache
def files_of(distribution: str) -> frozenset[str]:
    return frozenset(file.as_posix() for file in metadata.files(distribution) or [])


@cache
def distribution_of(module: str) -> str | None:
    """The installed distribution whose files hold ``module`` (found in the distributions'
    file lists, without importing anything); None for the standard library and exemplar_svm."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "exemplar_svm":
        return None
    parts = module.split(".")
    for name in providers().get(top, []):
        files = files_of(name)
        # The longest part of the dotted name that a file of this distribution defines.
        for end in range(len(parts), 0, -1):
            stem = "/".join(parts[:end])
            if f"{stem}.py" in files or f"{stem}/__init__.py" in files:
                return normal(name)
    raise AssertionError(f"{module} is not installed here")


EXAMPLES = [
    pytest.param(*example, id=example[0], marks=beyond_test_extra(example[1]))
    for example in examples()
]


def test_every_example_is_found() -> None:
    assert {"README.md#1", "docs/vector-databases.md#1"} <= {e.values[0] for e in EXAMPLES}


@pytest.mark.parametrize(("where", "extras", "code"), EXAMPLES)
def test_the_named_extras_bring_every_import(
    where: str, extras: tuple[str, ...], code: str
) -> None:
    available = installed_closure(extras)
    missing = {
        module: distribution
        for module in imported_modules(code)
        if (distribution := distribution_of(module)) is not None and distribution not in available
    }
    named = f'pip install "exemplar-svm[{",".join(extras)}]"' if extras else "no install line"
    assert not missing, f"{where} ({named}) imports modules those extras do not bring: {missing}"


@pytest.mark.dev
def test_the_framework_store_extras_bring_the_framework_stores() -> None:
    # The extras the vector-database examples name, with what they must import.
    for extras, module in [
        (("langchain-chroma",), "langchain_chroma"),
        (("llama-index-chroma",), "llama_index.vector_stores.chroma"),
        (("llama-index-milvus",), "llama_index.vector_stores.milvus"),
        (("llama-index-faiss",), "llama_index.vector_stores.faiss"),
        (("langchain-milvus",), "langchain_milvus"),
        (("langchain-qdrant",), "langchain_qdrant"),
        (("llama-index-qdrant",), "llama_index.vector_stores.qdrant"),
    ]:
        assert distribution_of(module) in installed_closure(extras), (extras, module)
    assert distribution_of("langchain_chroma") not in installed_closure(("chroma",))
