"""The exemplar-svm command line and the corpus reader, with the real local model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from exemplar_svm.cli import build_parser, main
from exemplar_svm.corpus import read_corpus, sample_corpus_path
from exemplar_svm.index import DEFAULT_MODE
from tests.openai_server import OpenAICompatibleServer


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_explains_every_option(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    search = build_parser()._subparsers._group_actions[0].choices["search"]  # type: ignore[union-attr]
    for action in search._actions:
        for option in action.option_strings:
            assert option in text
        assert action.help, f"{action.dest} has no help text"


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("exemplar-svm")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "search" in result.stdout


def test_sample_corpus_ships_with_the_package() -> None:
    records = read_corpus(sample_corpus_path())
    assert len(records) >= 100
    assert all(record.text and record.metadata.get("topic") for record in records)


@pytest.mark.slow
def test_search_sample_corpus_json(capsys) -> None:
    code, out, _ = run(
        capsys, "search", "how do leaves capture sunlight to make sugar", "--json", "-k", "3"
    )
    assert code == 0
    payload = json.loads(out)
    hits = payload["results"][DEFAULT_MODE]
    assert [hit["rank"] for hit in hits] == [1, 2, 3]
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(
        "photosynthesis" in hit["text"].lower() or "chlorophyll" in hit["text"].lower()
        for hit in hits
    )


@pytest.mark.slow
def test_compare_side_by_side_and_json(capsys) -> None:
    code, out, _ = run(capsys, "search", "black holes", "--compare", "-k", "4")
    assert code == 0
    assert "KNN (score)" in out and f"{DEFAULT_MODE.upper()} (score)" in out
    assert (
        sum(
            line.lstrip().startswith(f"{rank}.")
            for rank in range(1, 5)
            for line in out.splitlines()
        )
        == 4
    )
    code, out, _ = run(capsys, "search", "black holes", "--compare", "--mode", "hybrid", "--json")
    results = json.loads(out)["results"]
    assert set(results) == {"knn", "hybrid"}
    assert all(abs(hit["score"] - hit["similarity"]) < 1e-6 for hit in results["knn"])


@pytest.mark.slow
def test_text_corpus_positive_by_id_and_negative_text(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "notes.txt"
    corpus.write_text(
        "Cats purr when content.\n\nDogs bark at strangers.\nKittens are young cats.\n"
        "The stock market fell today.\n",
        encoding="utf-8",
    )
    code, out, _ = run(
        capsys,
        "search",
        "cats",
        "--corpus",
        str(corpus),
        "--json",
        "--positive",
        "4",
        "--negative",
        "finance and shares",
        "-k",
        "10",
    )
    assert code == 0
    hits = json.loads(out)["results"][DEFAULT_MODE]
    # Line numbers are ids; the blank line 2 is skipped; the named positive (line 4) is left out.
    assert sorted(hit["id"] for hit in hits) == ["1", "3", "5"]
    assert hits[0]["id"] == "1"


@pytest.mark.slow
def test_openai_compatible_server_gives_the_local_ranking(local_embedder, capsys) -> None:
    _, local, _ = run(capsys, "search", "ancient rome", "--json", "-k", "5")
    with OpenAICompatibleServer(local_embedder.embed_documents) as server:
        code, remote, _ = run(
            capsys,
            "search",
            "ancient rome",
            "--json",
            "-k",
            "5",
            "--openai-model",
            "minilm",
            "--base-url",
            server.base_url,
        )
    assert code == 0 and server.request_count >= 2
    ids = [
        [hit["id"] for hit in json.loads(out)["results"][DEFAULT_MODE]] for out in (local, remote)
    ]
    assert ids[0] == ids[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-k", "0"], "-k must be at least 1"),
        (["--corpus", "/nonexistent/file.jsonl"], "does not exist"),
        (["--base-url", "http://127.0.0.1:9"], "--base-url applies to --openai-model"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv: list[str], message: str, capsys) -> None:
    code, out, err = run(capsys, "search", "query", *argv)
    assert code == 2 and out == "" and message in err


def test_unknown_mode_is_refused_by_argparse(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "query", "--mode", "cosine"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\n{"text": \n', "line 2 is not valid JSON"),
        ('{"text": "ok"}\n["a list"]\n', "line 2 must be a JSON object"),
        ('{"title": "no text"}\n', "line 1 has no text"),
        ('{"id": 1, "text": "a"}\n{"id": "1", "text": "b"}\n', "duplicate id '1'"),
        ("\n\n", "holds no documents"),
    ],
)
def test_bad_corpus_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_corpus(path)


def test_jsonl_fields(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        '{"_id": "a", "title": "T", "text": "body", "label": 3}\n{"content": "no id here"}\n',
        encoding="utf-8",
    )
    first, second = read_corpus(path)
    assert (first.id, first.text, first.metadata) == ("a", "T\nbody", {"title": "T", "label": 3})
    assert (second.id, second.text) == ("2", "no id here")
