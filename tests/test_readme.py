"""The README's examples run as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import README, python_block


@pytest.mark.slow
def test_core_quickstart_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(python_block("## Quickstart: the core"), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.split()
    assert printed[0] in {"photo", "chloro"}  # a leaf query finds a plant document first
    assert [hit.id for hit in namespace["same"].search(namespace["query"], k=2)] == [
        hit.id for hit in namespace["index"].search(namespace["query"], k=2)
    ]
    assert (tmp_path / "my-index" / "index.json").is_file()


def test_ci_runs_the_readme_test_command() -> None:
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "<!-- test-command -->" in ci and "<!-- test-command -->" in README.read_text()
