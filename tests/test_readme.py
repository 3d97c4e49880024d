"""The README's examples run as written."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from exemplar_svm.cli import main
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


def test_the_readme_runs_the_fast_tests_and_ci_the_slow_ones_too() -> None:
    """Contributors' command installs [test] and leaves the slow and [dev]-only tests out; CI
    installs [dev] after it and runs exactly those."""
    text = README.read_text(encoding="utf-8").split("<!-- test-command -->", 1)[1]
    command = re.search(r"```bash\n(.*?)\n```", text, re.DOTALL)
    assert command and '-e ".[test]"' in command.group(1)
    assert command.group(1).endswith('.venv/bin/python -m pytest -m "not slow and not dev"')
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    readme_step = ci.index('bash -euo pipefail -c "$command"')
    rest = ci.index('-e ".[dev]" && .venv/bin/python -m pytest -m "slow or dev"', readme_step)
    assert ci.index('bash -euo pipefail -c "$rest"', rest) > rest


def test_a_fast_test_needing_a_dev_package_fails_instead_of_skipping(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        (README.parent / "tests" / "conftest.py").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (tmp_path / "test_it.py").write_text(
        "import pytest\n"
        "def test_unmarked():\n    pytest.importorskip('no_such_module_here')\n"
        "@pytest.mark.dev\n"
        "def test_marked():\n    pytest.importorskip('no_such_module_here')\n"
        "def test_other_skip():\n    pytest.skip('no dataset')\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", "test_it.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert "1 failed, 2 skipped" in done.stdout, done.stdout
    assert "test_unmarked needs a package the [test] extra does not install" in done.stdout


NUMBER = re.compile(r"-?\d+\.\d{3}")


def shown_compare_output() -> tuple[str, str]:
    """The command of the README's "Try it" and the output shown below it."""
    section = README.read_text(encoding="utf-8").split("\n## Try it\n", 1)[1]
    command = re.search(r"```bash\n(.*?)\n```", section, re.DOTALL)
    output = re.search(r"<!-- compare-output -->\n```text\n(.*?)\n```", section, re.DOTALL)
    assert command and output, "README's Try it has no command or no output block"
    return command.group(1), output.group(1)


@pytest.mark.slow
def test_try_it_prints_what_the_readme_shows(monkeypatch, capsys) -> None:
    command, shown = shown_compare_output()
    argv = shlex.split(command.split("&& .venv/bin/exemplar-svm ")[-1])
    assert argv[0] == "search" and "--compare" in argv
    monkeypatch.setenv("COLUMNS", "100")  # the README shows a 100-column terminal
    assert main(argv) == 0
    printed = capsys.readouterr().out.rstrip("\n")
    # The same text; the scores may differ in the last digit on another CPU's arithmetic.
    assert NUMBER.sub("#.###", printed) == NUMBER.sub("#.###", shown)
    for ours, theirs in zip(NUMBER.findall(printed), NUMBER.findall(shown), strict=True):
        assert abs(float(ours) - float(theirs)) <= 0.002


@pytest.mark.slow
def test_the_example_query_ranks_differently_under_the_svm(capsys) -> None:
    # The demo's point: the two top 5s differ, beyond a swap of neighbours.
    assert main(["search", "why do stars die", "--compare", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    knn, svm = ([hit["id"] for hit in results[mode]] for mode in ("knn", "svm"))
    assert set(knn) != set(svm) and knn != svm
    assert all(hit["id"].startswith("astro-") for hit in results["svm"])
    assert not all(doc.startswith("astro-") for doc in knn)  # kNN lets a houseplant in


def test_every_readme_example_is_run_by_a_test() -> None:
    # Each heading below has a test that executes its example (tests/test_readme.py,
    # test_langchain.py, test_llama_index.py); a new example needs one too.
    tested = {"## Quickstart: the core", "## LangChain", "## LlamaIndex"}
    headings = []
    heading = None
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            heading = line
        elif line == "```python":
            headings.append(heading)
    assert sorted(headings) == sorted(tested)
