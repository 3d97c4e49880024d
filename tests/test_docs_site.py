"""The documentation site builds with ``mkdocs build --strict``: no broken link, no page missing
from the navigation or the navigation missing a page, no docstring mkdocstrings cannot read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def nav_pages(entries: object) -> list[str]:
    """Every page file named in the ``nav`` of mkdocs.yml."""
    if isinstance(entries, str):
        return [entries]
    if isinstance(entries, list):
        return [page for entry in entries for page in nav_pages(entry)]
    if isinstance(entries, dict):
        return [page for value in entries.values() for page in nav_pages(value)]
    return []


def test_every_page_is_in_the_navigation() -> None:
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):
        """mkdocs.yml may hold tags such as !ENV; only the nav matters here."""

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert pages <= set(nav_pages(config["nav"])), "pages missing from mkdocs.yml's nav"


@pytest.mark.dev
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    site = tmp_path / "site"
    # NO_MKDOCS_2_WARNING: mkdocs-material's banner about its successor, not a build problem.
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    reference = (site / "reference" / "core" / "index.html").read_text(encoding="utf-8")
    # The API reference comes from the docstrings, with Sphinx roles turned into code.
    assert "search_batch" in reference and "calibrate" in reference
    assert ":class:" not in reference and ":meth:" not in reference
    pages = ("user-guide", "cli", "langchain", "llama-index", "vector-databases", "quality")
    for page in (*pages, "migrating"):
        assert (site / page / "index.html").is_file(), page
