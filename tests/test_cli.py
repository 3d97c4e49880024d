"""The exemplar-svm command line and the corpus reader, with the real local model."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import exemplar_svm.cli as cli
from exemplar_svm._cli_output import Ranking, scale, side_by_side
from exemplar_svm.calibration import CANDIDATES
from exemplar_svm.cli import build_parser, main
from exemplar_svm.corpus import Record, read_corpus, sample_corpus_path
from exemplar_svm.index import DEFAULT_MODE, Hit, check_search_options
from tests.conftest import dataset_path
from tests.openai_server import OpenAICompatibleServer
from tests.word_embedder import WordEmbedder


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["search", "index", "eval"])
def test_help_explains_every_option(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    search = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
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
def test_compare_shows_knn_beside_the_exemplar_svm_and_json(capsys) -> None:
    code, out, _ = run(capsys, "search", "black holes", "--compare", "-k", "4")
    assert code == 0
    header = out.splitlines()[3]
    assert header.startswith("kNN") and "exemplar SVM" in header
    assert "kNN score: cosine similarity" in out and "exemplar SVM score: decision value" in out
    ranks = [line.split(".")[0].strip() for line in out.splitlines()[4:] if line[:3].strip()]
    assert ranks[:4] == ["1", "2", "3", "4"]
    code, out, _ = run(capsys, "search", "black holes", "--compare", "--json")
    assert set(json.loads(out)["results"]) == {"knn", "svm"}
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
    monkeypatch.setattr(cli, "_embedder", lambda *args: embedder)
    return embedder


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if the CLI gets as far as choosing a model."""

    def refuse(*args: object) -> None:
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


# -- index once, search the folder (the bag-of-words model in place of the real one) -----------


def test_index_then_search_embeds_only_the_query(
    tmp_path: Path, words: WordEmbedder, capsys
) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", TUNE_RECORDS)
    folder = tmp_path / "notes-index"
    code, out, _ = run(capsys, "index", str(corpus), "-o", str(folder), "--no-progress")
    assert code == 0 and f"--corpus {folder}" in out
    assert words.documents == len(TUNE_RECORDS)
    saved = json.loads((folder / "corpus.json").read_text(encoding="utf-8"))
    assert saved["embedder"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert [record["id"] for record in saved["records"]] == [r["_id"] for r in TUNE_RECORDS]

    argv = ["search", "cat whiskers", "--json", "-k", "4", "--compare"]
    code, out, _ = run(capsys, *argv, "--corpus", str(folder))
    assert code == 0
    assert words.documents == len(TUNE_RECORDS) and words.queries == 1  # the query alone
    from_folder = json.loads(out)["results"]
    code, out, _ = run(capsys, *argv, "--corpus", str(corpus))
    assert json.loads(out)["results"] == from_folder  # the same as embedding the file now
    assert from_folder["svm"][0]["id"].startswith("cats-")
    assert from_folder["svm"][0]["text"] == "Notes on cats and whiskers. More whiskers here."


def test_index_saves_settings_that_search_applies(
    tmp_path: Path, words: WordEmbedder, capsys
) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", TUNE_RECORDS)
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"mode": "knn"}), encoding="utf-8")
    folder = tmp_path / "index"
    run(capsys, "index", str(corpus), "-o", str(folder), "--settings", str(settings))
    code, out, _ = run(capsys, "search", "ships", "--corpus", str(folder), "--json")
    assert code == 0 and list(json.loads(out)["results"]) == ["knn"]
    code, out, _ = run(
        capsys, "search", "ships", "--corpus", str(folder), "--json", "--mode", "svm"
    )
    assert list(json.loads(out)["results"]) == ["svm"]  # a flag wins over the saved settings


def test_index_replaces_an_index_but_never_other_files(
    tmp_path: Path, words: WordEmbedder, capsys
) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", TUNE_RECORDS)
    folder = tmp_path / "index"
    assert run(capsys, "index", str(corpus), "-o", str(folder))[0] == 0
    smaller = write_jsonl(tmp_path / "small.jsonl", TUNE_RECORDS[:3])
    assert run(capsys, "index", str(smaller), "-o", str(folder))[0] == 0
    assert len(json.loads((folder / "corpus.json").read_text())["records"]) == 3
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "corpus.jsonl",
        "index",
        "small.jsonl",
    ]  # no temporary folder left behind

    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"not an index")
    code, _, err = run(capsys, "index", str(corpus), "-o", str(other))
    assert code == 2 and "holds other files" in err
    assert [path.name for path in other.iterdir()] == ["holiday.jpg"]


def test_a_failed_index_leaves_the_old_one_whole(
    tmp_path: Path, words: WordEmbedder, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", TUNE_RECORDS)
    folder = tmp_path / "index"
    run(capsys, "index", str(corpus), "-o", str(folder))
    before = sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))

    def crash(self: object, path: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(cli.ExemplarIndex, "save", crash)
    code, _, err = run(capsys, "index", str(corpus), "-o", str(folder))
    assert code == 2 and "disk full" in err
    assert sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus.jsonl", "index"]


@pytest.fixture
def indexed(tmp_path: Path, words: WordEmbedder, capsys) -> Path:
    """A folder made by ``exemplar-svm index`` with the (patched) default model."""
    corpus = write_jsonl(tmp_path / "corpus.jsonl", TUNE_RECORDS)
    folder = tmp_path / "index"
    assert run(capsys, "index", str(corpus), "-o", str(folder))[0] == 0
    return folder


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "BAAI/bge-small-en-v1.5"], "was indexed with sentence-transformers/all-"),
        (["--openai-model", "text-embedding-3-small"], "drop --model/--openai-model"),
        (["--api-key", "sk-test"], "--api-key applies to --openai-model"),
    ],
)
def test_a_folder_is_searched_with_the_model_it_was_indexed_with(
    indexed: Path, argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(cli, "_embedder", lambda *args: pytest.fail("a model was loaded"))
    code, out, err = run(capsys, "search", "cats", "--corpus", str(indexed), *argv)
    assert code == 2 and out == "" and message in err
    assert "exemplar-svm index CORPUS -o" in err or "applies to" in err


def test_a_folder_that_is_not_an_index_is_refused(tmp_path: Path, no_model: None, capsys) -> None:
    code, _, err = run(capsys, "search", "cats", "--corpus", str(tmp_path))
    assert code == 2 and "has no corpus.json" in err and "exemplar-svm index CORPUS -o" in err
    (tmp_path / "corpus.json").write_text('{"format": "something else"}', encoding="utf-8")
    code, _, err = run(capsys, "search", "cats", "--corpus", str(tmp_path))
    assert code == 2 and "is not a corpus folder written by 'exemplar-svm index'" in err


def test_a_corrupt_index_folder_is_refused_before_the_model_loads(
    indexed: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(cli, "_embedder", lambda *args: pytest.fail("a model was loaded"))
    manifest = indexed / "corpus.json"
    saved = json.loads(manifest.read_text(encoding="utf-8"))
    saved["records"] = saved["records"][:-1]
    manifest.write_text(json.dumps(saved), encoding="utf-8")
    code, _, err = run(capsys, "search", "cats", "--corpus", str(indexed))
    assert code == 2 and "do not match the index" in err


def test_index_over_an_openai_compatible_server_then_search_sends_only_the_query(
    tmp_path: Path, capsys
) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", TUNE_RECORDS)
    folder = tmp_path / "index"
    with OpenAICompatibleServer(WordEmbedder().embed_documents, api_key="sk-test") as server:
        model = ["--openai-model", "words", "--base-url", server.base_url, "--api-key", "sk-test"]
        code, _, _ = run(capsys, "index", str(corpus), "-o", str(folder), *model)
        assert code == 0
        indexed_requests = server.request_count
        saved = json.loads((folder / "corpus.json").read_text(encoding="utf-8"))
        assert saved["embedder"] == {
            "kind": "openai",
            "model": "words",
            "base_url": server.base_url,
            "dimensions": None,
            "normalize": True,
        }
        assert "sk-test" not in (folder / "corpus.json").read_text(encoding="utf-8")
        # The model and the server come from the folder; only the key is given again.
        argv = ["search", "ships", "--corpus", str(folder), "--json", "--api-key", "sk-test"]
        code, out, _ = run(capsys, *argv)
        assert code == 0 and server.request_count == indexed_requests + 1
        assert json.loads(out)["results"]["auto"][0]["id"].startswith("ships-")
        # A wrong key: one line that names the flag and the variable, no traceback.
        code, _, err = run(capsys, *argv[:-1], "sk-wrong")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "HTTP 401" in err and "--api-key KEY or OPENAI_API_KEY" in err


# -- options and errors: checked before any model loads, one line each ------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["", "--compare"], "the query is empty"),
        (["   "], "the query is empty"),
        (["q", "-C", "-1"], "C must be a positive finite number"),
        (["q", "-C", "nan"], "C must be a finite number > 0"),
        (["q", "--negative-weight", "0"], "negative_weight must be a positive"),
        (["q", "-k", "0", "--mode", "svm"], "-k must be at least 1"),
        (["q", "--positive", ""], "a --positive example is empty"),
        (["q", "--negative", " "], "a --negative example is empty"),
        (["q", "--dimensions", "64"], "--dimensions applies to --openai-model"),
        (["q", "--openai-model", "m", "--dimensions", "0"], "--dimensions must be at least 1"),
        (["q", "--openai-model", "m", "--model", "x"], "exclude each other"),
    ],
)
def test_search_checks_every_option_before_loading_a_model(
    argv: list[str], message: str, no_model: None, capsys
) -> None:
    code, out, err = run(capsys, "search", *argv)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_a_missing_api_key_names_the_flag_and_the_variable(
    no_model: None, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run(capsys, "search", "q", "--openai-model", "text-embedding-3-small")
    assert code == 2
    assert "--api-key KEY" in err and "OPENAI_API_KEY" in err and "--base-url URL" in err
    assert "api_key=" not in err and "base_url=" not in err


def test_an_unreachable_server_is_one_line_with_the_url_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    code, out, err = run(capsys, "search", "q", "--openai-model", "m", "--base-url", url)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{url}/embeddings" in err and "connection failed" in err
    assert "point --base-url (or OPENAI_BASE_URL) at it" in err


def test_commands_that_need_no_model_do_not_import_it(tmp_path: Path) -> None:
    # A labelled corpus with precomputed embeddings, beside a README (as in ../shared/datasets).
    dataset = tmp_path / "tiny"
    (dataset / "embeddings" / "all-MiniLM-L6-v2").mkdir(parents=True)
    write_jsonl(
        dataset / "corpus.jsonl",
        [{"_id": f"d{n}", "text": f"document {n}", "label": n % 2} for n in range(12)],
    )
    vectors = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.save(dataset / "embeddings" / "all-MiniLM-L6-v2" / "corpus.npy", vectors)
    (tmp_path / "README.md").write_text("# not a dataset\n", encoding="utf-8")
    script = (
        "import sys\n"
        "from exemplar_svm.cli import main\n"
        "try:\n"
        "    main(['search', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert main(['search', 'q', '-C', '-1']) == 2\n"
        "assert main(['search', '', '--compare']) == 2\n"
        "assert main(['eval', *sys.argv[1:], '--method', 'knn', '--queries', '6']) == 0\n"
        "heavy = {'sentence_transformers', 'torch', 'transformers'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    entries = sorted(str(path) for path in tmp_path.iterdir())  # README.md first
    result = subprocess.run(
        [sys.executable, "-c", script, *entries], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "| knn |" in result.stdout or "knn" in result.stdout
    assert f"note: skipping {tmp_path / 'README.md'}: a file, not a dataset folder" in result.stderr


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["README.md"], "no dataset folder among"),
        (["missing"], "missing does not exist"),
    ],
)
def test_eval_needs_a_dataset_folder(
    tmp_path: Path, entries: list[str], message: str, no_model: None, capsys
) -> None:
    (tmp_path / "README.md").write_text("# not a dataset\n", encoding="utf-8")
    code, _, err = run(capsys, "eval", *(str(tmp_path / entry) for entry in entries))
    assert code == 2 and message in err


def test_eval_checks_its_methods_before_loading_anything(
    tmp_path: Path, no_model: None, capsys
) -> None:
    code, _, err = run(capsys, "eval", str(tmp_path), "--method", 'bad={"C": -1}')
    assert code == 2 and "--method 'bad'" in err and "C must be a positive" in err


def test_the_eval_help_example_runs_on_the_shared_datasets(capsys) -> None:
    # `exemplar-svm eval ../shared/datasets/* --split test`: the shell passes the README too.
    root = dataset_path("cranfield").parent
    entries = sorted(str(path) for path in root.iterdir())
    code, out, err = run(
        capsys, "eval", *entries, "--split", "test", "--method", "knn", "--limit", "3"
    )
    assert code == 0
    assert "note: skipping" in err and "README.md" in err
    assert "cranfield" in out and out.count("| knn |") >= 3


# -- what --compare prints ------------------------------------------------------------------

LONG = "word " * 60


def ranking(mode: str, ids: list[str], k: int = 3) -> Ranking:
    hits = [Hit(id=doc, score=1.0 - rank / 10, similarity=0.5) for rank, doc in enumerate(ids)]
    return Ranking(mode, mode, hits[:k], {hit.id: rank for rank, hit in enumerate(hits, 1)})


def compare(left: Ranking, right: Ranking, notes: list[str] | None = None) -> str:
    records = {
        doc: Record(doc, f"Title {doc}\n{doc} {LONG}", {"title": f"Title {doc}"})
        for doc in {*left.ranks, *right.ranks}
    }
    scales = [scale(left.concrete, {}), scale(right.concrete, {"feedback": 50})]
    return side_by_side("q", "c", left, right, scales, notes or [], records, 100)


def test_identical_rankings_need_no_legend() -> None:
    out = compare(ranking("knn", ["a", "b", "c", "d"]), ranking("svm", ["a", "b", "c", "d"]))
    lines = out.splitlines()
    assert [line[-11:] for line in lines if line.startswith((" 1.", " 2.", " 3."))] == [
        "1.000  a  =",
        "0.900  b  =",
        "0.800  c  =",
    ]
    assert "places above" not in out and "#n" not in out  # nothing to explain
    # Each text wraps in its column over three lines, cut with '...' only at the end.
    start = next(number for number, line in enumerate(lines) if line.startswith(" 1."))
    left = [line[:50].strip() for line in lines[start + 1 : start + 4]]
    assert left[0].startswith("Title a: a word word") and left[2].endswith("...")
    assert sum(len(line) for line in left) > 120


def test_moves_and_newcomers_are_marked_and_explained() -> None:
    out = compare(
        ranking("knn", ["a", "b", "c", "d", "e"]), ranking("svm", ["b", "a", "e", "c", "d"])
    )
    rows = [line for line in out.splitlines() if line[:3].strip().rstrip(".").isdigit()]
    assert rows[0].endswith("b  +1") and rows[1].endswith("a  -1")
    assert rows[2].endswith("e  +2 (kNN #5)")  # kNN's 5th, beyond its top 3
    assert "c  (SVM #4)" in rows[2]  # kNN's 3rd left the SVM's top 3
    assert "+n / -n: n places above / below the document's kNN rank." in out
    assert "(kNN #n): its kNN rank, outside kNN's top 3." in out
    assert "(SVM #n): its SVM rank, outside SVM's top 3." in out
    assert "exemplar SVM score: decision value" in out and "its nearest documents" in out


def test_the_default_is_labelled_as_what_it_runs() -> None:
    default = Ranking("auto", "prf", [], {})
    assert default.label == "default (auto): dense PRF"
    assert Ranking("svm", "svm", [], {}).label == "exemplar SVM"


def test_compare_with_a_counter_example_says_how_knn_uses_it(words: WordEmbedder, capsys) -> None:
    code, out, _ = run(capsys, "search", "black holes", "--compare", "--negative", "astro-001")
    assert code == 0
    assert "kNN uses them for that only (its query is not moved: rocchio=0)" in " ".join(
        out.split()
    )
    assert "astro-001" not in out.split("kNN score")[0]  # named documents are left out


def test_tune_reads_an_index_folder_without_embedding_the_documents(
    indexed: Path, words: WordEmbedder, capsys
) -> None:
    embedded = words.documents
    code, out, _ = run(capsys, "tune", "--corpus", str(indexed), "--json", "--max-queries", "5")
    assert code == 0 and json.loads(out)["n_queries"] == 5
    assert words.documents == embedded and words.queries == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-o", "/nonexistent/folder/index"], "its folder /nonexistent/folder does not exist"),
        (["/nonexistent/notes.jsonl", "-o", "{tmp}/index"], "does not exist"),
        (["{tmp}", "-o", "{tmp}/index"], "is a folder; 'index' reads a corpus file"),
        (["-o", "{tmp}/index", "--settings", "{tmp}/missing.json"], "does not exist"),
        (["-o", "{tmp}/index", "--dimensions", "8"], "--dimensions applies to --openai-model"),
    ],
)
def test_index_checks_everything_before_loading_a_model(
    argv: list[str], message: str, tmp_path: Path, no_model: None, capsys
) -> None:
    code, out, err = run(capsys, "index", *(arg.format(tmp=tmp_path) for arg in argv))
    assert code == 2 and out == "" and message in err
    assert not (tmp_path / "index").exists()
