"""Every Python example in docs/ (the documentation site's pages) runs as written.

Each ```python block of every page under docs/ runs on its own, in a fresh namespace and an
empty working folder; a few pages' examples are also checked for what they print.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.test_extras import beyond_test_extra
from tests.test_extras import examples as named_extras

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
PAGES = sorted(DOCS.rglob("*.md"))


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def name(page: Path, number: int) -> str:
    return f"{page.relative_to(DOCS).as_posix()}#{number}"


# The extras named above each example (an example that needs the engines runs after [dev]).
EXTRAS = {where.removeprefix("docs/"): extras for where, extras, _ in named_extras()}
EXAMPLES = [
    pytest.param(
        name(page, number),
        code,
        id=name(page, number),
        marks=beyond_test_extra(EXTRAS[name(page, number)]),
    )
    for page in PAGES
    for number, code in enumerate(blocks(page), start=1)
]


def check_store_example(out: str, namespace: dict[str, Any]) -> None:
    """The vector-database examples: the kitten note first, no unrelated note in the top 3,
    the store searched in place, and the examples left out of the feedback results."""
    from exemplar_svm import StoreIndex

    lines = out.splitlines()
    assert lines[0].split()[0] == "kitten-food"
    first_ids = [line.split()[0] for line in lines[:3]]
    assert "mars" not in first_ids and "bread" not in first_ids
    assert isinstance(namespace["retriever"].index, StoreIndex)
    examples = eval(lines[3])  # the ids printed for the examples
    assert len(examples) == 3 and not {"cat-vet", "dog-walk"} & set(examples)


def check_framework_example(out: str, namespace: dict[str, Any]) -> None:
    """The LangChain and LlamaIndex pages: the young-cat question finds the kitten note."""
    assert out.splitlines()[0].split()[0] == "kitten-food"


def check_langchain_migration(out: str, namespace: dict[str, Any]) -> None:
    """The SVMRetriever example: the threshold cuts the 3 best to fewer, the kitten note first."""
    lines = out.splitlines()
    kept = lines[:-1]
    assert 0 < len(kept) < 3 and kept[0].startswith("1.0 ") and "Kittens" in kept[0]
    assert all(float(line.split()[0]) >= 0.7 for line in kept)
    assert len(eval(lines[-1])) == 3  # no threshold: always k


def check_llama_index_migration(out: str, namespace: dict[str, Any]) -> None:
    """The "svm" query mode and the retriever that replaces it return the same nodes and
    scores."""
    lines = out.splitlines()
    for line in lines[:3]:
        old_id, old_score, new_id, new_score = line.split()
        assert (old_id, old_score) == (new_id, new_score)
    assert lines[0].split()[0] == "kitten-food"


def check_filter_example(out: str, namespace: dict[str, Any]) -> None:
    """The filter examples: the kitten note of the filtered tenant first, no other tenant's."""
    from exemplar_svm import StoreIndex

    lines = out.splitlines()
    assert lines[0] == "acme Kittens need four small meals a day of wet kitten food."
    assert all(line.startswith("acme ") for line in lines[:2])
    if len(lines) > 2:  # the per-call filter replaced the retriever's
        assert lines[2] == "{'globex'}"
    assert isinstance(namespace["retriever"].index, StoreIndex)


#: Extra checks of what some examples print, by page and block number.
CHECKS: dict[str, Callable[[str, dict[str, Any]], None]] = {
    "vector-databases.md#1": check_store_example,
    "vector-databases.md#2": check_store_example,
    "vector-databases.md#3": check_filter_example,
    "vector-databases.md#4": check_filter_example,
    "vector-databases.md#5": check_filter_example,
    "langchain.md#1": check_framework_example,
    "llama-index.md#1": check_framework_example,
    "migrating.md#1": check_langchain_migration,
    "migrating.md#2": check_llama_index_migration,
}


def test_the_docs_have_examples() -> None:
    written = {
        "user-guide.md",
        "langchain.md",
        "llama-index.md",
        "vector-databases.md",
        "migrating.md",
    }
    assert written <= {example.values[0].split("#")[0] for example in EXAMPLES}
    assert set(CHECKS) <= {example.values[0] for example in EXAMPLES}


@pytest.fixture
def unset_llama_index_settings() -> Any:
    """LlamaIndex's global Settings.embed_model unset during an example, as on a fresh start."""
    try:
        from llama_index.core import Settings
    except ImportError:
        yield
        return
    saved = Settings._embed_model
    Settings._embed_model = None
    yield
    Settings._embed_model = saved


@pytest.mark.parametrize(("where", "code"), EXAMPLES)
def test_docs_example_runs(
    where: str,
    code: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    unset_llama_index_settings: None,
) -> None:
    monkeypatch.chdir(tmp_path)  # examples that save write here
    namespace: dict[str, Any] = {"__name__": "docs"}
    exec(compile(code, f"docs/{where}", "exec"), namespace)
    check = CHECKS.get(where)
    if check is not None:
        check(capsys.readouterr().out, namespace)
