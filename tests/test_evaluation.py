"""Evaluation: metrics by hand, paired statistics, splits, protocols, the shared sets, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from exemplar_svm import ExemplarIndex, Hit
from exemplar_svm import evaluation as ev
from exemplar_svm.cli import build_parser, main
from exemplar_svm.evaluation import (
    METRICS,
    Dataset,
    Query,
    average_precision,
    capped_average_precision,
    evaluate,
    has_embeddings,
    load_beir,
    load_dataset,
    load_labelled,
    ndcg,
    paired_comparison,
    precision,
    query_split,
    ranking_metrics,
    recall,
    select_split,
    summary_markdown,
)
from tests.conftest import EMBEDDINGS, dataset_path

KNN = {"knn": {"mode": "knn"}}


# -- metrics, by hand --------------------------------------------------------------------------


def test_ndcg_with_graded_gains() -> None:
    relevant = {"a": 3, "c": 2, "e": 1, "z": 0}
    # DCG = 3/log2(2) + 2/log2(4) = 4; ideal = 3 + 2/log2(3) + 1/log2(4)
    assert ndcg(["a", "b", "c", "d"], relevant) == pytest.approx(4 / (3.5 + 2 / math.log2(3)))
    assert ndcg(["a", "c", "e"], relevant) == pytest.approx(1.0)
    # The cutoff: only rank 1 counts, against the ideal of one document (gain 3).
    assert ndcg(["c", "a"], relevant, k=1) == pytest.approx(2 / 3)
    assert ndcg(["z", "b"], relevant) == 0.0  # a gain of 0 is not relevant


def test_precision_recall_and_average_precision() -> None:
    relevant = {"a": 1, "c": 1, "e": 1}
    ranking = ["a", "x", "c", "y"]
    assert precision(ranking, relevant, k=10) == pytest.approx(0.2)  # fewer results than k
    assert precision(ranking, relevant, k=2) == pytest.approx(0.5)
    assert recall(ranking, relevant, k=100) == pytest.approx(2 / 3)
    assert recall(ranking, relevant, k=1) == pytest.approx(1 / 3)
    # Precision at each relevant rank in the top k (1/1 and 2/3), over the 3 relevant documents
    # (trec_eval's map_cut); the one never retrieved counts 0.
    assert average_precision(ranking, relevant, k=100) == pytest.approx((1 + 2 / 3) / 3)
    # Cut at 2: only "a" (precision 1/1) is in the top 2, still over all 3 relevant.
    assert average_precision(ranking, relevant, k=2) == pytest.approx(1 / 3)
    # The capped variant divides by min(3 relevant, k) instead.
    assert capped_average_precision(ranking, relevant, k=100) == pytest.approx((1 + 2 / 3) / 3)
    assert capped_average_precision(ranking, relevant, k=2) == pytest.approx(1 / 2)


def test_average_precision_divides_by_every_relevant_document() -> None:
    relevant = {str(i): 1.0 for i in range(150)}
    perfect = [str(i) for i in range(100)]
    # A perfect top 100 of 150 relevant: 100 precisions of 1, over 150 (trec_eval's map_cut_100).
    assert average_precision(perfect, relevant, k=100) == pytest.approx(100 / 150)
    assert ranking_metrics(perfect, relevant)["MAP@100"] == pytest.approx(100 / 150)
    assert recall(perfect, relevant, k=100) == pytest.approx(100 / 150)
    # Only the capped variant, which is not in METRICS, divides by min(150, 100).
    assert capped_average_precision(perfect, relevant, k=100) == pytest.approx(1.0)
    # Relevant at ranks 2 and 4 of 150 relevant: (1/2 + 2/4) / 150, capped (1/2 + 2/4) / 100.
    ranking = ["x", "0", "y", "1"]
    assert average_precision(ranking, relevant, k=100) == pytest.approx(1 / 150)
    assert capped_average_precision(ranking, relevant, k=100) == pytest.approx(1 / 100)


def test_metrics_without_relevant_documents_or_results() -> None:
    for relevant in ({}, {"a": 0.0}):
        assert ranking_metrics(["a", "b"], relevant) == dict.fromkeys(METRICS, 0.0)
    assert ranking_metrics([], {"a": 2.0}) == dict.fromkeys(METRICS, 0.0)
    with pytest.raises(ValueError, match="k must be"):
        ndcg(["a"], {"a": 1}, k=0)


def test_ranking_metrics_names_every_metric() -> None:
    values = ranking_metrics(["a", "b"], {"b": 1})
    assert list(values) == list(METRICS)
    assert values["P@10"] == pytest.approx(0.1)
    assert values["nDCG@10"] == pytest.approx(1 / math.log2(3))


# -- paired statistics -------------------------------------------------------------------------


def test_paired_comparison() -> None:
    result = paired_comparison([0.5, 0.7, 0.2, 0.4], [0.4, 0.7, 0.3, 0.1])
    differences = np.array([0.1, 0.0, -0.1, 0.3])
    assert result.n == 4
    assert result.mean_difference == pytest.approx(0.075)
    assert result.standard_error == pytest.approx(differences.std(ddof=1) / 2)
    assert result.standard_error == pytest.approx(math.sqrt(0.0875 / 3) / 2)
    assert (result.wins, result.losses, result.ties) == (2, 1, 1)
    single = paired_comparison([1.0], [0.0])
    assert math.isnan(single.standard_error) and single.to_json()["standard_error"] is None
    with pytest.raises(ValueError, match="same queries"):
        paired_comparison([1.0, 2.0], [1.0])


# -- splits ------------------------------------------------------------------------------------


def test_split_is_stable_disjoint_and_about_half() -> None:
    # Pinned: sha256 of the id, first byte even -> tune. Changing it would mix the halves.
    assert [query_split(item) for item in ("1", "2", "3", "4")] == ["test", "tune", "tune", "test"]
    queries = [Query(str(i), np.ones(2, dtype=np.float32), {"0": 1.0}) for i in range(1000)]
    tune = {query.id for query in select_split(queries, "tune")}
    test = {query.id for query in select_split(queries, "test")}
    assert not tune & test
    assert tune | test == {query.id for query in select_split(queries, "all")}
    assert 400 < len(tune) < 600
    assert tune == {query.id for query in select_split(reversed(queries), "tune")}
    with pytest.raises(ValueError, match="unknown split"):
        select_split(queries, "train")


# -- small labelled corpus: query by example and relevance feedback ----------------------------


def write_labelled(folder: Path, sizes: dict[str, int], seed: int = 0) -> list[str]:
    """A corpus of tight clusters, one per label; returns the labels in row order."""
    rng = np.random.default_rng(seed)
    centres = {label: rng.normal(size=16) for label in sizes}
    labels = [label for label, size in sizes.items() for _ in range(size)]
    vectors = np.array([centres[label] + 0.01 * rng.normal(size=16) for label in labels])
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as file:
        for row, label in enumerate(labels):
            record = {"_id": f"d{row}", "title": "", "text": f"doc {row}", "label": label}
            file.write(json.dumps(record) + "\n")
    (folder / EMBEDDINGS).mkdir(parents=True)
    np.save(folder / EMBEDDINGS / "corpus.npy", vectors.astype(np.float32))
    return labels


@pytest.fixture
def labelled(tmp_path: Path) -> tuple[Dataset, dict[str, str]]:
    labels = write_labelled(tmp_path / "toy", {"a": 5, "b": 4, "c": 20})
    dataset = load_dataset(tmp_path / "toy", n_queries=None)
    return dataset, {f"d{row}": label for row, label in enumerate(labels)}


def test_query_by_example_leaves_the_query_out(labelled) -> None:
    dataset, _ = labelled
    assert dataset.kind == "example" and len(dataset.queries) == 29
    query = dataset.queries[0]
    assert query.document == query.id == "d0"
    assert set(query.relevant) == {"d1", "d2", "d3", "d4"}
    report = evaluate(dataset, KNN)
    knn = report.methods["knn"]
    # Label a: 4 relevant; the clusters are tight, so they come first and the query never does.
    assert knn.scores["P@10"][0] == pytest.approx(0.4)
    assert np.allclose(knn.scores["nDCG@10"], 1.0) and np.allclose(knn.scores["MAP@100"], 1.0)
    assert report.skipped == [] and len(report.query_ids) == 29


def test_query_by_example_sample_reproduces_the_reference_sampling(tmp_path: Path) -> None:
    write_labelled(tmp_path / "toy", {"a": 30, "b": 30})
    dataset = load_labelled(tmp_path / "toy", n_queries=7, seed=3)
    rows = np.random.default_rng(3).choice(60, 7, replace=False)
    assert [query.id for query in dataset.queries] == [f"d{row}" for row in rows]


class SpyIndex(ExemplarIndex):
    """Records every search; returns the query document and the examples first, on purpose."""

    calls: ClassVar[list[dict[str, object]]] = []

    def search(self, query, k=10, **options):
        SpyIndex.calls.append(options)
        hits = super().search(query, k, **options)
        own = self.ids[int(np.argmax(self.vectors @ np.asarray(query, dtype=np.float32)))]
        named = [own, *options.get("positives", []), *options.get("negatives", [])]
        return [Hit(item, 99.0, 1.0) for item in named] + hits


def test_feedback_examples_are_drawn_right_and_never_judged(labelled, monkeypatch) -> None:
    dataset, label_of = labelled
    reference = evaluate(dataset, KNN, protocol="feedback")
    SpyIndex.calls = []
    monkeypatch.setattr(ev, "ExemplarIndex", SpyIndex)
    report = evaluate(dataset, KNN, protocol="feedback")
    # Even a method that returned the query and its examples would gain nothing from them.
    for metric in METRICS:
        assert np.array_equal(
            report.methods["knn"].scores[metric], reference.methods["knn"].scores[metric]
        )
    # Label b has 3 other documents: all of them are positives, nothing is left to judge.
    assert sorted(report.skipped) == sorted(doc for doc, label in label_of.items() if label == "b")
    timed = SpyIndex.calls[1:]  # the first call is the warm-up
    assert len(timed) == len(report.query_ids)
    for query_id, call in zip(report.query_ids, timed, strict=True):
        positives, negatives = call["positives"], call["negatives"]
        assert len(positives) == 3 and len(negatives) == 3
        assert query_id not in positives and query_id not in negatives
        assert all(label_of[doc] == label_of[query_id] for doc in positives)
        assert all(label_of[doc] != label_of[query_id] for doc in negatives)
    knn = report.methods["knn"]
    for column, query_id in enumerate(report.query_ids):
        if label_of[query_id] == "a":
            # 4 others, 3 taken as positives: one relevant document left, ranked first.
            assert knn.scores["P@10"][column] == pytest.approx(0.1)
            assert knn.scores["nDCG@10"][column] == pytest.approx(1.0)
            assert knn.scores["Recall@100"][column] == pytest.approx(1.0)
        else:
            assert knn.scores["P@10"][column] == pytest.approx(1.0)  # 16 relevant left
    # The same examples every run, and whatever the split.
    SpyIndex.calls = []
    evaluate(dataset, KNN, protocol="feedback", split="test")
    again = dict(zip(report.query_ids, timed, strict=True))
    for query_id, call in zip(
        [q.id for q in select_split(dataset.queries, "test") if label_of[q.id] != "b"],
        SpyIndex.calls[1:],
        strict=True,
    ):
        assert call == again[query_id]


def test_report_markdown_and_json(labelled) -> None:
    dataset, _ = labelled
    methods = {"knn": {"mode": "knn"}, "svm | C=1": {"mode": "svm", "C": 1.0}}
    report = evaluate(dataset, methods, split="tune")
    text = report.to_markdown()
    assert all(metric in text for metric in METRICS)
    assert "svm \\| C=1" in text and "ms/query" in text and "± " in text
    payload = json.loads(json.dumps(report.to_json(per_query=True), allow_nan=False))
    assert payload["queries"] == len(report.query_ids) and payload["split"] == "tune"
    svm = payload["methods"]["svm | C=1"]
    assert svm["options"] == {"mode": "svm", "C": 1.0}
    assert (
        set(svm["vs_baseline"]) == set(METRICS) and "vs_baseline" not in payload["methods"]["knn"]
    )
    assert len(svm["per_query"]["P@10"]) == len(payload["query_ids"])
    assert svm["latency_ms"]["median"] > 0
    summary = summary_markdown([report, evaluate(dataset, KNN)])
    assert summary.count("| toy |") == len(METRICS) + 1 and "(tune half)" in summary


def test_evaluate_refuses_bad_methods(labelled) -> None:
    dataset, _ = labelled
    with pytest.raises(ValueError, match="baseline 'knn' is not among"):
        evaluate(dataset, {"svm": {"mode": "svm"}})
    with pytest.raises(ValueError, match=r"method 'odd'.*unexpected keyword"):
        evaluate(dataset, {"knn": {"mode": "knn"}, "odd": {"mode": "knn", "colour": 1}})
    with pytest.raises(ValueError, match="method 'bad'"):
        evaluate(dataset, {"knn": {"mode": "knn"}, "bad": {"mode": "nope"}})
    with pytest.raises(ValueError, match="chooses itself"):
        evaluate(dataset, {"knn": {"mode": "knn", "positives": ["d1"]}}, protocol="feedback")
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate(dataset, KNN, protocol="rocchio")
    assert evaluate(dataset, {"svm": {"mode": "svm"}}, baseline=None).baseline is None


def test_progress_bar_on_request(labelled, capsys) -> None:
    dataset, _ = labelled
    evaluate(dataset, KNN, show_progress=True)
    assert "Evaluating toy" in capsys.readouterr().err
    evaluate(dataset, KNN, show_progress=False)
    assert capsys.readouterr().err == ""


# -- small BEIR folder: loading, qrels, embedding ----------------------------------------------


class HashEmbedder:
    """A deterministic stand-in model: words hashed into 32 dimensions."""

    def embed_documents(self, texts):
        return np.array([self.embed_query(text) for text in texts], dtype=np.float32)

    def embed_query(self, text):
        vector = np.zeros(32, dtype=np.float32)
        for word in text.split():
            vector[sum(word.encode()) % 32] += 1
        return vector

    async def aembed_documents(self, texts):
        return self.embed_documents(texts)

    async def aembed_query(self, text):
        return self.embed_query(text)


def write_beir(folder: Path) -> None:
    folder.mkdir()
    docs = ["apple pie recipe", "banana bread", "apple tart", "car engine", "engine oil"]
    docs += [f"filler text number {i}" for i in range(10)]
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as file:
        for row, text in enumerate(docs):
            file.write(json.dumps({"_id": f"d{row}", "title": "", "text": text}) + "\n")
    queries = [("q1", "apple"), ("q2", "engine"), ("q3", "unjudged")]
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as file:
        for query_id, text in queries:
            file.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td0\t2\nq1\td2\t1\nq1\td1\t0\nq2\td3\t1\nq2\td4\t1\n"
    )


def test_beir_folder_with_an_embedder(tmp_path: Path) -> None:
    write_beir(tmp_path / "mini")
    assert not has_embeddings(tmp_path / "mini")
    with pytest.raises(ValueError, match="no precomputed embeddings"):
        load_beir(tmp_path / "mini")
    dataset = load_beir(tmp_path / "mini", embedder=HashEmbedder())
    assert dataset.kind == "text" and dataset.ids == [f"d{i}" for i in range(15)]
    assert [query.id for query in dataset.queries] == ["q1", "q2", "q3"]
    assert dataset.queries[0].relevant == {"d0": 2.0, "d2": 1.0, "d1": 0.0}
    report = evaluate(dataset, {**KNN, "svm": {"mode": "svm"}}, k=3)
    assert report.skipped == ["q3"] and report.query_ids == ["q1", "q2"]
    assert report.methods["knn"].scores["Recall@100"].tolist() == [1.0, 1.0]
    # "apple tart" (gain 1) is nearer to "apple" than "apple pie recipe" (gain 2).
    ideal = 2 + 1 / math.log2(3)
    assert report.methods["knn"].scores["nDCG@10"].tolist() == pytest.approx(
        [(1 + 2 / math.log2(3)) / ideal, 1.0]
    )
    # Precomputed embeddings of the wrong length are refused.
    (tmp_path / "mini" / EMBEDDINGS).mkdir(parents=True)
    np.save(tmp_path / "mini" / EMBEDDINGS / "corpus.npy", np.ones((14, 8), dtype=np.float32))
    np.save(tmp_path / "mini" / EMBEDDINGS / "queries.npy", np.ones((3, 8), dtype=np.float32))
    assert has_embeddings(tmp_path / "mini")
    with pytest.raises(ValueError, match="expected one row each"):
        load_beir(tmp_path / "mini")


# -- the shared datasets: the README's reference figures ---------------------------------------


def test_cranfield_reproduces_the_reference_figures() -> None:
    dataset = load_dataset(dataset_path("cranfield"))
    report = evaluate(dataset, {**KNN, "cosine": {"mode": "knn"}})
    assert len(report.query_ids) == 225 and report.skipped == []
    assert report.methods["knn"].mean["nDCG@10"] == pytest.approx(0.382, abs=0.005)
    same = report.methods["cosine"].vs_baseline["nDCG@10"]
    assert (same.mean_difference, same.standard_error, same.ties) == (0.0, 0.0, 225)


def test_bbc_news_reproduces_the_reference_figures() -> None:
    dataset = load_dataset(dataset_path("bbc-news"))  # 300 query documents, seed 0
    assert dataset.kind == "example" and len(dataset.queries) == 300
    knn = evaluate(dataset, KNN).methods["knn"]
    assert knn.mean["P@10"] == pytest.approx(0.926, abs=0.01)
    # trec_eval's map_cut_100: hundreds of relevant documents a query, at most 100 of them found.
    assert knn.mean["MAP@100"] == pytest.approx(0.175, abs=0.01)


def test_msmarco_skips_unjudged_queries() -> None:
    report = evaluate(load_dataset(dataset_path("msmarco-dl19-subset")), KNN)
    assert (len(report.query_ids), len(report.skipped)) == (43, 7)
    assert report.methods["knn"].mean["nDCG@10"] == pytest.approx(0.798, abs=0.005)


#: ranx's name of each metric of METRICS (trec_eval's ndcg_cut_10, recall_100, P_10, map_cut_100).
RANX_METRICS = {
    "nDCG@10": "ndcg@10",
    "Recall@100": "recall@100",
    "P@10": "precision@10",
    "MAP@100": "map@100",
}


@pytest.mark.dev
@pytest.mark.filterwarnings("ignore:.*unsafe cast")  # numba, inside ranx's nDCG
@pytest.mark.parametrize(
    ("name", "n_queries"),
    [("cranfield", None), ("msmarco-dl19-subset", None), ("bbc-news", 20)],
)
def test_metrics_equal_ranx_on_a_real_run(name: str, n_queries: int | None) -> None:
    """Every metric, per query and on average, is ranx's (so trec_eval's) on a kNN run.

    cranfield and msmarco-dl19-subset have graded qrels (gains 1 to 4 and 1 to 3, nDCG with
    linear gains); msmarco-dl19-subset and bbc-news have queries with more than 100 relevant
    documents, where MAP@100 divides by all of them.
    """
    ranx = pytest.importorskip("ranx")
    folder = dataset_path(name)
    sample = {} if n_queries is None else {"n_queries": n_queries}  # query by example only
    dataset = load_dataset(folder, **sample)
    index = ExemplarIndex(dataset.vectors, dataset.ids)
    qrels, run, ours = {}, {}, {}
    for query in dataset.queries:
        if not any(gain > 0 for gain in query.relevant.values()):
            continue  # evaluate() skips these too
        # The query document of query by example is never judged: left out, as evaluate() does.
        hits = index.search(query.vector, 101 if query.document else 100, mode="knn")
        ranking = [hit.id for hit in hits if hit.id != query.document][:100]
        assert len(ranking) == 100
        ours[query.id] = ranking_metrics(ranking, query.relevant)
        qrels[query.id] = {doc: int(gain) for doc, gain in query.relevant.items()}
        # Scores by rank, distinct, so ranx's sort by score cannot reorder ties.
        run[query.id] = {doc: float(len(ranking) - rank) for rank, doc in enumerate(ranking)}
    most = max(sum(gain > 0 for gain in relevant.values()) for relevant in qrels.values())
    assert most > 100 if name != "cranfield" else most <= 100
    ranx_run = ranx.Run(run)
    means = ranx.evaluate(ranx.Qrels(qrels), ranx_run, list(RANX_METRICS.values()))
    for metric, ranx_name in RANX_METRICS.items():
        # ranx keeps the per-query values in the run, by query id.
        per_query = {query_id: float(ranx_run.scores[ranx_name][query_id]) for query_id in ours}
        assert {query_id: values[metric] for query_id, values in ours.items()} == pytest.approx(
            per_query, rel=0, abs=1e-9
        ), metric
        mean = float(np.mean([values[metric] for values in ours.values()]))
        assert mean == pytest.approx(float(means[ranx_name]), rel=0, abs=1e-9), metric


# -- the command line --------------------------------------------------------------------------


def test_eval_help_explains_every_option(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    command = build_parser()._subparsers._group_actions[0].choices["eval"]  # type: ignore[union-attr]
    for action in command._actions:
        for option in action.option_strings:
            assert option in text
        assert action.help, f"{action.dest} has no help text"
    assert "FOLDER" in text and '"mode": "hybrid"' in text


def test_eval_json_on_cranfield(capsys) -> None:
    folder = str(dataset_path("cranfield"))
    svm = 'svm C=0.01={"mode": "svm", "C": 0.01}'
    options = ["--split", "test", "--limit", "10", "--json"]
    code = main(["eval", folder, "--method", "knn", "--method", svm, *options])
    out, _ = capsys.readouterr()
    assert code == 0
    payload = json.loads(out)
    assert list(payload["methods"]) == ["knn", "svm C=0.01"]
    assert payload["methods"]["svm C=0.01"]["options"] == {"mode": "svm", "C": 0.01}
    assert payload["split"] == "test" and payload["queries"] == 10
    assert set(payload["methods"]["svm C=0.01"]["vs_baseline"]) == set(METRICS)


def test_eval_several_folders_prints_a_summary(capsys) -> None:
    folders = [str(dataset_path("cranfield")), str(dataset_path("msmarco-dl19-subset"))]
    code = main(["eval", *folders, "--method", 'cosine={"mode": "knn"}', "--no-progress"])
    out, _ = capsys.readouterr()
    assert code == 0
    # The baseline knn is added, then the summary table has both sets.
    assert "| knn | cosine |" in out
    assert "| cranfield | nDCG@10 | 0.382 |" in out
    assert "| msmarco-dl19-subset | nDCG@10 | 0.798 |" in out


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("svm={not json", "not valid JSON"),
        ('svm=["mode"]', "JSON object"),
        ('={"mode": "svm"}', "has no name"),
        ('odd={"mode": "knn", "colour": 1}', "method 'odd'"),
    ],
)
def test_eval_refuses_bad_methods(capsys, tmp_path: Path, argument: str, message: str) -> None:
    write_labelled(tmp_path / "toy", {"a": 5, "b": 5})
    assert main(["eval", str(tmp_path / "toy"), "--method", argument]) == 2
    assert message in capsys.readouterr().err
