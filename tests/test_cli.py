"""The exemplar-svm command line and the corpus reader, with the real local model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import exemplar_svm.cli as cli
from exemplar_svm.calibration import CANDIDATES
from exemplar_svm.cli import build_parser, main
from exemplar_svm.corpus import read_corpus, sample_corpus_path
from exemplar_svm.index import DEFAULT_MODE, check_search_options
from tests.openai_server import OpenAICompatibleServer
from tests.word_embedder import WordEmbedder


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


# -- tune and --settings (a fast bag-of-words model in place of the real one) --------------------

TUNE_RECORDS = [
    {"_id": f"{topic}-{number}", "text": f"Notes on {topic} and {word}. More {word} here."}
    for topic, words in {
        "cats": ["purring", "whiskers", "kittens", "claws"],
        "ships": ["sails", "anchors", "harbours", "captains"],
        "bread": ["dough", "yeast", "ovens", "crusts"],
    }.items()
    for number, word in enumerate(words)
]


@pytest.fixture
def words(monkeypatch: pytest.MonkeyPatch) -> WordEmbedder:
    """The CLI embeds with a bag-of-words model instead of loading the real one."""
    embedder = WordEmbedder()
    monkeypatch.setattr(cli, "_embedder", lambda args: embedder)
    return embedder


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if the CLI gets as far as choosing a model."""

    def refuse(args: object) -> None:
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(cli, "_embedder", refuse)


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_tune_help_explains_every_option(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    text = capsys.readouterr().out
    tune = build_parser()._subparsers._group_actions[0].choices["tune"]  # type: ignore[union-attr]
    for action in tune._actions:
        for option in action.option_strings:
            assert option in text
        assert action.help, f"{action.dest} has no help text"
    assert "prf (classic)" in text  # the candidates are listed


def test_tune_with_synthetic_queries_writes_settings_search_applies(
    tmp_path: Path, words: WordEmbedder, capsys
) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", TUNE_RECORDS)
    output = tmp_path / "settings.json"
    code, out, _ = run(capsys, "tune", "--corpus", str(corpus), "-o", str(output))
    assert code == 0
    assert "synthetic queries" in out and "| candidate | settings | nDCG@10 | MAP@100 |" in out
    settings = json.loads(output.read_text(encoding="utf-8"))
    assert check_search_options(settings) == settings
    assert f"settings: {json.dumps(settings)}" in out
    assert words.queries == len(TUNE_RECORDS)  # every document gave a query (<= 200)

    code, out, _ = run(capsys, "tune", "--corpus", str(corpus), "--json", "--max-queries", "5")
    payload = json.loads(out)
    assert payload["source"] == "synthetic" and payload["n_queries"] == 5
    assert set(payload["scores"]) == set(CANDIDATES)


def test_search_applies_a_settings_file_and_flags_win(
    tmp_path: Path, words: WordEmbedder, capsys
) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", TUNE_RECORDS)
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"mode": "knn"}), encoding="utf-8")
    argv = ["search", "cat whiskers", "--corpus", str(corpus), "--json", "-k", "3"]
    code, out, _ = run(capsys, *argv, "--settings", str(settings))
    assert code == 0
    payload = json.loads(out)
    assert payload["settings"] == {"mode": "knn"} and list(payload["results"]) == ["knn"]
    hits = payload["results"]["knn"]
    assert all(hit["score"] == pytest.approx(hit["similarity"], rel=1e-5) for hit in hits)
    # An explicit flag wins over the file.
    code, out, _ = run(capsys, *argv, "--settings", str(settings), "--mode", "svm", "-C", "0.5")
    payload = json.loads(out)
    assert list(payload["results"]) == ["svm"] and payload["C"] == 0.5
    # Without a file: the library's defaults.
    code, out, _ = run(capsys, *argv)
    assert list(json.loads(out)["results"]) == [DEFAULT_MODE]


def test_tune_with_labelled_queries(tmp_path: Path, words: WordEmbedder, capsys) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", TUNE_RECORDS)
    queries = write_jsonl(
        tmp_path / "queries.jsonl",
        [
            {"_id": "q1", "text": "cats and kittens"},
            {"_id": "q2", "text": "ships in harbours"},
            {"_id": "q3", "text": "not judged"},
        ],
    )
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text(
        "query-id\tcorpus-id\tscore\nq1\tcats-2\t2\nq1\tcats-0\t1\nq1\tgone\t1\n"
        "q2\tships-2\t1\nq2\tships-0\t0\n",
        encoding="utf-8",
    )
    code, out, err = run(
        capsys,
        "tune",
        "--corpus",
        str(corpus),
        "--queries",
        str(queries),
        "--qrels",
        str(qrels),
        "--json",
    )
    assert code == 0
    payload = json.loads(out)
    assert payload["source"] == "labelled" and payload["n_queries"] == 2
    assert words.queries == 2
    assert "1 relevant judgement(s)" in err and "not in the corpus" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--queries", "q.jsonl"], "--queries and --qrels go together"),
        (["--max-queries", "2"], "--max-queries must be at least 5"),
        (["-o", "/nonexistent/folder/settings.json"], "its folder does not exist"),
        (["--corpus", "/nonexistent/file.jsonl"], "does not exist"),
        (["--queries", "/nonexistent/q.jsonl", "--qrels", "/nonexistent/q.tsv"], "does not exist"),
    ],
)
def test_tune_checks_its_options_before_loading_the_model(
    argv: list[str], message: str, no_model: None, capsys
) -> None:
    code, out, err = run(capsys, "tune", *argv)
    assert code == 2 and out == "" and message in err


def test_tune_without_enough_synthetic_queries_says_what_to_do(
    tmp_path: Path, no_model: None, capsys
) -> None:
    corpus = tmp_path / "notes.txt"
    corpus.write_text("One sentence.\nAnother one.\nA third line here.\n", encoding="utf-8")
    code, _, err = run(capsys, "tune", "--corpus", str(corpus))
    assert code == 2
    assert "only 0 of the 3 documents give a synthetic query" in err and "--qrels" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"mode": "cosine"}', "unknown mode"),
        ('{"colour": 1}', "unknown search option"),
        ('["knn"]', "one JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_search_refuses_a_bad_settings_file_before_loading_the_model(
    tmp_path: Path, content: str, message: str, no_model: None, capsys
) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(content, encoding="utf-8")
    code, out, err = run(capsys, "search", "query", "--settings", str(settings))
    assert code == 2 and out == "" and message in err
    code, _, err = run(capsys, "search", "query", "--settings", str(tmp_path / "missing.json"))
    assert code == 2 and "does not exist" in err


@pytest.mark.slow
def test_tune_the_sample_corpus_with_the_real_model(tmp_path: Path, capsys) -> None:
    output = tmp_path / "settings.json"
    code, out, _ = run(capsys, "tune", "--max-queries", "20", "-o", str(output))
    assert code == 0 and "Calibration on 20 synthetic queries" in out
    code, out, _ = run(capsys, "search", "black holes", "--settings", str(output), "--json")
    assert code == 0 and json.loads(out)["settings"] == json.loads(output.read_text())
