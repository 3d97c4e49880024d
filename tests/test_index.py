"""ExemplarIndex: rankings against independent computations, bad input, persistence."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from exemplar_svm import MODES, ExemplarIndex, fit
from exemplar_svm.index import MANIFEST
from tests.conftest import corpus_embeddings, query_embeddings
from tests.test_svm import clustered


@pytest.fixture(scope="module")
def cranfield() -> tuple[ExemplarIndex, np.ndarray, np.ndarray]:
    corpus = corpus_embeddings("cranfield")
    return ExemplarIndex(corpus), corpus, query_embeddings("cranfield")


def order(hits) -> list[str]:
    return [hit.id for hit in hits]


def test_knn_is_cosine_ranking(cranfield) -> None:
    index, corpus, queries = cranfield
    hits = index.search(queries[0], k=10, mode="knn")
    cosine = corpus @ queries[0] / np.linalg.norm(corpus, axis=1) / np.linalg.norm(queries[0])
    assert order(hits) == [str(row) for row in np.argsort(-cosine, kind="stable")[:10]]
    np.testing.assert_allclose([hit.score for hit in hits], np.sort(cosine)[::-1][:10], atol=1e-6)
    assert all(abs(hit.score - hit.similarity) < 1e-6 for hit in hits)


def test_svm_is_the_exemplar_svm_ranking(cranfield) -> None:
    index, corpus, queries = cranfield
    hits = index.search(queries[1], k=10, mode="svm", C=0.1, feedback=0)
    model = fit(queries[1], corpus, C=0.1)
    scores = model.decision_function(corpus)
    assert order(hits) == [str(row) for row in np.argsort(-scores, kind="stable")[:10]]
    np.testing.assert_allclose([hit.score for hit in hits], np.sort(scores)[::-1][:10], rtol=1e-5)
    cosine = corpus @ queries[1] / np.linalg.norm(queries[1])
    np.testing.assert_allclose(
        [hit.similarity for hit in hits], cosine[[int(h.id) for h in hits]], atol=1e-6
    )
    # The SVM ranks differently from kNN here, or the test would not tell the modes apart.
    assert order(hits) != order(index.search(queries[1], k=10, mode="knn"))


def test_hybrid_is_mean_of_z_scores(cranfield) -> None:
    index, corpus, queries = cranfield
    svm = fit(queries[2], corpus).decision_function(corpus)
    knn = corpus.astype(np.float64) @ (queries[2] / np.linalg.norm(queries[2]))
    fused = ((svm - svm.mean()) / svm.std() + (knn - knn.mean()) / knn.std()) / 2
    hits = index.search(queries[2], k=10, mode="hybrid", C=0.1, feedback=0, hybrid_weight=0.5)
    assert order(hits) == [str(row) for row in np.argsort(-fused, kind="stable")[:10]]
    np.testing.assert_allclose([hit.score for hit in hits], np.sort(fused)[::-1][:10], atol=1e-5)


def exemplar_lda(corpus: np.ndarray, positives: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Hariharan et al.'s exemplar LDA scores, computed directly: the difference between the
    positives' mean and the negatives' weighted mean, times the inverse of the corpus's
    covariance with the library's ridge (1e-2) on its diagonal."""
    rows = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    cov = np.cov(rows.astype(np.float64), rowvar=False, bias=True) + 1e-2 * np.eye(rows.shape[1])
    units = positives / np.linalg.norm(positives, axis=1, keepdims=True)
    contrast = units.mean(axis=0) - weights @ rows / weights.sum()
    scores: np.ndarray = rows @ np.linalg.solve(cov, contrast)
    return scores


def test_lda_is_the_exemplar_lda_ranking(cranfield) -> None:
    index, corpus, queries = cranfield
    scores = exemplar_lda(corpus, queries[3:4], np.ones(len(corpus)))
    hits = index.search(queries[3], k=10, mode="lda", feedback=0)
    assert order(hits) == [str(row) for row in np.argsort(-scores, kind="stable")[:10]]
    # The whitener is kept in float32: scores agree to about 1e-6 of their scale.
    scale = float(np.abs(scores).max())
    np.testing.assert_allclose(
        [h.score for h in hits], np.sort(scores)[::-1][:10], atol=1e-5 * scale
    )
    # A named positive leaves the results and joins the positives' mean; a named negative
    # counts negative_weight times in the negatives' mean.
    weights = np.ones(len(corpus))
    weights[[5, 6]] = [0.0, 40.0]
    scores = exemplar_lda(corpus, np.vstack([queries[3], corpus[5]]), weights)
    scores[[5, 6]] = -np.inf
    hits = index.search(
        queries[3],
        k=10,
        mode="lda",
        feedback=0,
        positives=["5"],
        negatives=["6"],
        negative_weight=40,
    )
    assert order(hits) == [str(row) for row in np.argsort(-scores, kind="stable")[:10]]
    # It approximates the SVM: most of the top 10 are the same, not all.
    svm = set(order(index.search(queries[3], k=10, mode="svm", C=0.1, feedback=0)))
    lda = set(order(index.search(queries[3], k=10, mode="lda", feedback=0)))
    assert 5 <= len(svm & lda) < 10


def test_several_query_vectors_are_all_positives(cranfield) -> None:
    index, corpus, queries = cranfield
    hits = index.search(queries[:2], k=5, mode="svm", C=0.1, feedback=0)
    scores = fit(queries[:2], corpus).decision_function(corpus)
    assert order(hits) == [str(row) for row in np.argsort(-scores, kind="stable")[:5]]


def test_positives_and_negatives_by_id_and_vector(cranfield) -> None:
    index, corpus, queries = cranfield
    hits = index.search(
        queries[0],
        k=20,
        mode="svm",
        positives=["5", queries[3]],
        negatives=["7", "9"],
        negative_weight=4.0,
        C=0.1,
        feedback=0,
    )
    keep = np.ones(len(corpus), dtype=bool)
    keep[5] = False
    weights = np.ones(len(corpus))[keep]
    weights[[7 - 1, 9 - 1]] = 4.0  # rows 7 and 9 shift down by one once row 5 is dropped
    model = fit(
        np.vstack([queries[0], queries[3], corpus[5]]), corpus[keep], negative_weights=weights
    )
    scores = model.decision_function(corpus)
    scores[[5, 7, 9]] = -np.inf
    assert order(hits) == [str(row) for row in np.argsort(-scores, kind="stable")[:20]]
    assert not {"5", "7", "9"} & set(order(hits))


def test_named_negative_pushes_its_neighbours_down() -> None:
    data = clustered(600, 16, seed=11)
    index = ExemplarIndex(data)
    query = data[0]
    plain = {hit.id: hit.score for hit in index.search(query, k=600, mode="svm")}
    # The document nearest to the query, named as a counter-example: its twin should drop.
    near = np.argsort(-(data @ query))[1:3]
    twin, named = str(near[0]), str(near[1])
    pushed = {
        hit.id: hit.score
        for hit in index.search(query, k=600, negatives=[named], negative_weight=50.0)
    }
    assert named not in pushed
    assert pushed[twin] - pushed["0"] < plain[twin] - plain["0"]


def test_k_larger_than_corpus_returns_everything_else() -> None:
    index = ExemplarIndex(clustered(12, 8, seed=1))
    assert len(index.search(index.vector("0"), k=100)) == 12
    assert len(index.search(index.vector("0"), k=100, negatives=["3"], positives=["4"])) == 10


def test_everything_named_returns_nothing() -> None:
    index = ExemplarIndex(clustered(3, 8, seed=1))
    assert index.search(index.vector("0"), positives=["0"], negatives=["1", "2"]) == []


def test_ties_break_by_row_and_runs_repeat() -> None:
    vectors = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    index = ExemplarIndex(vectors, ids=["a", "b", "c", "d", "e"])
    for mode in ("knn", "svm", "hybrid"):
        first = index.search([0.1, 1, 0.1], k=2, mode=mode)
        assert order(first) == ["b", "c"]
        assert first == index.search([0.1, 1, 0.1], k=2, mode=mode)


def test_add_appends_and_failed_add_changes_nothing() -> None:
    data = clustered(20, 8, seed=2)
    index = ExemplarIndex(data[:10], ids=[f"d{i}" for i in range(10)])
    assert index.add(data[10:12], ids=["x", "y"]) == ["x", "y"]
    assert index.search(data[11], k=1, mode="knn")[0].id == "y"
    for bad_ids, bad_vectors in [
        (["d1", "z"], data[12:14]),
        (["z", "z"], data[12:14]),
        (["z", "w"], np.vstack([data[12], np.zeros(8)])),
    ]:
        with pytest.raises(ValueError):
            index.add(bad_vectors, ids=bad_ids)
    assert len(index) == 12 and index.vectors.shape == (12, 8) and "z" not in index


def test_vectors_are_normalised_and_read_only() -> None:
    index = ExemplarIndex(np.array([[3.0, 4.0], [0.0, 2.0]]))
    np.testing.assert_allclose(index.vectors, [[0.6, 0.8], [0, 1]], rtol=1e-6)
    assert index.vectors.dtype == np.float32
    with pytest.raises(ValueError):
        index.vectors[0, 0] = 1.0


BAD_CORPORA = [
    (np.empty((0, 4)), None, "vectors is empty"),
    (np.array([[1.0, np.nan]]), None, "NaN or infinite"),
    (np.array([[1.0, np.inf]]), None, "NaN or infinite"),
    (np.array([[1.0, 1.0], [0.0, 0.0]]), None, "all-zero vector"),
    (np.eye(2), ["a", "a"], "duplicate id 'a'"),
    (np.eye(2), ["a"], "got 1 ids for 2 vectors"),
    (np.eye(2), ["a", 2], "ids must be non-empty strings"),
    (np.ones((2, 2, 2)), None, "1-D vector or a 2-D array"),
]


@pytest.mark.parametrize(("vectors", "ids", "message"), BAD_CORPORA)
def test_bad_corpus(vectors, ids, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExemplarIndex(vectors, ids=ids)


BAD_SEARCHES = [
    ({"k": 0}, "k must be at least 1"),
    ({"k": 2.5}, "k must be a whole number"),
    ({"mode": "cosine"}, "unknown mode 'cosine'"),
    ({"C": -1}, "C must be a positive"),
    ({"negative_weight": 0}, "negative_weight must be a positive"),
    ({"query": np.ones(5)}, "dimension mismatch: query has 5"),
    ({"query": np.array([np.nan, 1, 1, 1])}, "query row 0 contains NaN"),
    ({"query": np.zeros(4)}, "query row 0 is an all-zero vector"),
    ({"positives": ["nope"]}, "unknown id 'nope' in positives"),
    ({"negatives": "nope"}, "unknown id 'nope' in negatives"),
    ({"positives": [np.ones(3)]}, "dimension mismatch: positives has 3"),
    ({"negatives": np.zeros((1, 4))}, "negatives row 0 is an all-zero"),
    ({"positives": ["a"], "negatives": ["a"]}, "'a' is named both"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_SEARCHES)
def test_bad_search(kwargs: dict, message: str) -> None:
    index = ExemplarIndex(np.eye(4) + 0.1, ids=["a", "b", "c", "d"])
    args = {"query": np.ones(4)} | kwargs
    with pytest.raises(ValueError, match=message):
        index.search(**args)


def test_every_document_a_positive_leaves_nothing_to_rank() -> None:
    index = ExemplarIndex(np.eye(2) + 0.1)
    assert index.search(np.ones(2), positives=["0", "1"], mode="svm") == []


def test_plain_list_is_one_vector_and_ids_mix_with_vectors() -> None:
    index = ExemplarIndex(np.eye(4) + 0.1, ids=["a", "b", "c", "d"])
    one = index.search([1.0, 0, 0, 0], k=4, positives=[0.0, 1.0, 0.0, 0.0], mode="knn")
    mixed = index.search([1.0, 0, 0, 0], k=4, positives=["c", [0.0, 1.0, 0.0, 0.0]], mode="knn")
    assert len(one) == 4 and order(mixed) == ["a", "b", "d"]


# -- persistence --------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path, cranfield) -> None:
    index, _, queries = cranfield
    index.save(tmp_path / "idx")
    loaded = ExemplarIndex.load(tmp_path / "idx")
    assert loaded.ids == index.ids
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    assert loaded.search(queries[0], k=10) == index.search(queries[0], k=10)


def test_resave_replaces_array_and_leaves_no_stale_files(tmp_path: Path) -> None:
    index = ExemplarIndex(clustered(10, 4), ids=[f"d{i}" for i in range(10)])
    index.save(tmp_path)
    index.add(clustered(1, 4, seed=9), ids=["new"])
    index.save(tmp_path)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert len(names) == 3 and MANIFEST in names  # the manifest, the vectors and the ids
    assert ExemplarIndex.load(tmp_path).ids[-1] == "new"


def test_crash_while_saving_keeps_the_old_index(tmp_path: Path, monkeypatch) -> None:
    index = ExemplarIndex(clustered(10, 4), ids=[f"d{i}" for i in range(10)])
    index.save(tmp_path)
    index.add(clustered(1, 4, seed=9), ids=["new"])
    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if str(dst).endswith(MANIFEST):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(OSError, match="disk full"):
        index.save(tmp_path)
    monkeypatch.undo()
    loaded = ExemplarIndex.load(tmp_path)
    assert len(loaded) == 10 and "new" not in loaded
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".tmp")]


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def _file(folder: Path, role: str) -> Path:
    return folder / _manifest(folder)["files"][role]["name"]


def _rewrite(folder: Path, role: str, payload: bytes) -> None:
    """Replace a file's content and its entry's size and checksum, as a tamperer would."""
    import hashlib

    manifest = _manifest(folder)
    entry = manifest["files"][role]
    (folder / entry["name"]).write_bytes(payload)
    entry |= {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_missing_foreign_or_newer_manifest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"index\.json is missing"):
        ExemplarIndex.load(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ExemplarIndex.load(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not an exemplar-svm index"):
        ExemplarIndex.load(tmp_path)
    with pytest.raises(ValueError, match="not an exemplar-svm index"):
        ExemplarIndex(np.eye(3)).save(tmp_path)  # never overwrites a file it did not write
    assert json.loads((tmp_path / MANIFEST).read_text()) == {"format": "something-else"}
    assert sorted(path.name for path in tmp_path.iterdir()) == [MANIFEST]
    tmp_path = tmp_path / "fresh"
    ExemplarIndex(np.eye(3)).save(tmp_path)
    manifest = _manifest(tmp_path) | {"version": 99}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="format version 99"):
        ExemplarIndex.load(tmp_path)


def test_corrupt_array_is_detected(tmp_path: Path) -> None:
    ExemplarIndex(np.eye(3)).save(tmp_path)
    array = _file(tmp_path, "vectors")
    data = bytearray(array.read_bytes())
    data[-1] ^= 0xFF
    array.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum does not match"):
        ExemplarIndex.load(tmp_path)


def test_path_in_manifest_cannot_escape_the_folder(tmp_path: Path) -> None:
    ExemplarIndex(np.eye(3)).save(tmp_path / "idx")
    manifest = _manifest(tmp_path / "idx")
    manifest["files"]["vectors"]["name"] = "../elsewhere.npy"
    (tmp_path / "idx" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"bad 'vectors' file name '\.\./elsewhere\.npy'"):
        ExemplarIndex.load(tmp_path / "idx")


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["EXPLOIT_MARKER"]),))


def test_pickled_payload_is_refused_not_executed(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARKER", str(marker))
    ExemplarIndex(np.eye(3)).save(tmp_path / "idx")
    evil = tmp_path / "evil.npy"
    # Padded to the size of the saved array, so only the header can give it away.
    np.save(evil, np.array([_Exploit(), "x" * 200], dtype=object), allow_pickle=True)
    assert b"pwned" not in pickle.dumps(1)  # sanity: the marker path only lives in the payload
    payload = evil.read_bytes()
    size = _file(tmp_path / "idx", "vectors").stat().st_size
    _rewrite(tmp_path / "idx", "vectors", payload[:size].ljust(size, b" "))
    with pytest.raises(ValueError, match=r"not a readable \.npy array: it holds Python objects"):
        ExemplarIndex.load(tmp_path / "idx")
    assert not marker.exists()
    _rewrite(tmp_path / "idx", "vectors", payload)  # the whole pickle, of another size
    with pytest.raises(ValueError, match=r"not a readable \.npy array"):
        ExemplarIndex.load(tmp_path / "idx")
    assert not marker.exists()


def test_wrong_shape_or_ids_are_refused(tmp_path: Path) -> None:
    ExemplarIndex(np.eye(3)).save(tmp_path)
    manifest = _manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps(manifest | {"count": 4}))
    with pytest.raises(ValueError, match="is corrupt"):
        ExemplarIndex.load(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    _rewrite(tmp_path, "ids", json.dumps(["a", "a", "b"]).encode())
    with pytest.raises(ValueError, match="duplicate id"):
        ExemplarIndex.load(tmp_path)


def test_empty_example_lists_and_a_matrix_inside_a_list() -> None:
    data = clustered(30, 8, seed=3)
    index = ExemplarIndex(data)
    plain = index.search(data[0], k=5)
    assert index.search(data[0], k=5, positives=[], negatives=np.empty((0, 8))) == plain
    as_list = index.search(data[0], k=5, positives=[data[1:3]], negatives=["4", data[5:7]])
    as_matrix = index.search(data[0], k=5, positives=data[1:3], negatives=["4", data[5], data[6]])
    assert as_list == as_matrix


def test_add_while_searching_from_other_threads() -> None:
    import threading

    data = clustered(400, 8, seed=4)
    index = ExemplarIndex(data[:100])
    errors: list[BaseException] = []

    def keep_adding() -> None:
        try:
            for start in range(100, 400, 10):
                index.add(data[start : start + 10], ids=[str(i) for i in range(start, start + 10)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    writer = threading.Thread(target=keep_adding)
    writer.start()
    while writer.is_alive():
        hits = index.search(data[0], k=3, mode="hybrid", negatives=["1"])
        assert hits and hits[0].id in index
    writer.join()
    assert not errors and len(index) == 400
    assert index.search(data[399], k=1, mode="knn")[0].id == "399"


def test_solver_statistics_are_kept_current_and_saved(tmp_path: Path) -> None:
    data = clustered(300, 12, seed=8)
    index = ExemplarIndex(data[:200])
    index.search(data[0], k=3, mode="svm")  # computes the second moment that seeds the solver
    index.add(data[200:], ids=[f"new{i}" for i in range(100)])
    stats = index._corpus.stats
    assert stats.gram is not None and stats.count == 300
    full = index.vectors.astype(np.float64)
    np.testing.assert_allclose(stats.gram, full.T @ full, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats.total, full.sum(axis=0), rtol=1e-9, atol=1e-9)
    index.save(tmp_path)
    loaded = ExemplarIndex.load(tmp_path)
    np.testing.assert_array_equal(loaded._corpus.stats.gram, stats.gram)
    assert loaded.search(data[5], k=5) == index.search(data[5], k=5)
    # A tampered statistics file is refused like a tampered corpus.
    moment = _file(tmp_path, "second_moment")
    moment.write_bytes(moment.read_bytes()[:-4] + b"junk")
    with pytest.raises(ValueError, match="checksum does not match"):
        ExemplarIndex.load(tmp_path)


@pytest.mark.parametrize("mode", MODES)
def test_search_batch_equals_one_at_a_time(mode: str) -> None:
    data = clustered(500, 16, seed=12)
    index = ExemplarIndex(data[5:])
    queries = [data[0], data[1], data[2:4]]  # the last one: two vectors, one shared concept
    batch = index.search_batch(queries, k=7, mode=mode)
    single = [index.search(query, k=7, mode=mode) for query in queries]
    assert [order(hits) for hits in batch] == [order(hits) for hits in single]
    for got, expected in zip(batch, single, strict=True):
        np.testing.assert_allclose([h.score for h in got], [h.score for h in expected], atol=1e-6)
    # Groups of queries whose solves share their first pass (one matrix product), with a prior
    # (a second direction each) and named examples.
    many = [*list(data[:11]), data[11:13]]
    options = {"prior": 0.5, "negatives": [index.ids[3]], "positives": [index.ids[4]]}
    batch = index.search_batch(many, k=5, mode=mode, **options)
    single = [index.search(query, k=5, mode=mode, **options) for query in many]
    assert [order(hits) for hits in batch] == [order(hits) for hits in single]
    for got, expected in zip(batch, single, strict=True):
        np.testing.assert_allclose([h.score for h in got], [h.score for h in expected], atol=1e-6)
    knn_only = index.search_batch(list(data[:3]), k=4, mode="knn")
    assert [order(hits) for hits in knn_only] == [
        order(index.search(query, k=4, mode="knn")) for query in data[:3]
    ]
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search_batch(list(data[:3]), k=0, mode="knn")


def test_search_batch_spreads_its_groups_over_the_blas_threads(monkeypatch) -> None:
    from threadpoolctl import threadpool_limits

    import exemplar_svm.index as index_module
    from exemplar_svm._blas import blas_threads

    data = clustered(400, 16, seed=13)
    index = ExemplarIndex(data[20:])
    queries = list(data[:20])
    groups: list[tuple[int, int]] = []  # (queries, BLAS threads) of each group's solves
    rankings = index_module._rankings

    def spy(plans, *rest):
        groups.append((len(plans), blas_threads()))
        return rankings(plans, *rest)

    monkeypatch.setattr(index_module, "_rankings", spy)
    with threadpool_limits(limits=2, user_api="blas"):
        two = index.search_batch(queries, k=5, mode="svm")
        # Groups of 8 at most, two at a time, each on one BLAS thread; the limit is lifted
        # after the batch.
        assert sorted(groups) == [(4, 1), (8, 1), (8, 1)]
        assert blas_threads() == 2
    groups.clear()
    with threadpool_limits(limits=1, user_api="blas"):
        one = index.search_batch(queries, k=5, mode="svm")
    assert groups == [(8, 1), (8, 1), (4, 1)]  # one after the other
    assert [order(hits) for hits in two] == [order(hits) for hits in one]
    for got, expected in zip(two, one, strict=True):
        np.testing.assert_allclose([h.score for h in got], [h.score for h in expected], atol=1e-6)


# -- quality modes ------------------------------------------------------------------------------


def test_hybrid_weight_spans_knn_to_svm() -> None:
    data = clustered(400, 16, seed=13)
    index = ExemplarIndex(data[1:])
    options = {"k": 15, "C": 0.1, "feedback": 0}
    svm = order(index.search(data[0], mode="svm", **options))
    knn = order(index.search(data[0], mode="knn", k=15))
    assert svm != knn
    assert order(index.search(data[0], mode="hybrid", hybrid_weight=1.0, **options)) == svm
    assert order(index.search(data[0], mode="hybrid", hybrid_weight=0.0, **options)) == knn


def test_prior_with_tiny_c_ranks_like_knn_and_no_prior_like_the_svm() -> None:
    data = clustered(400, 16, seed=14)
    index = ExemplarIndex(data[1:])
    knn = order(index.search(data[0], mode="knn", k=15))
    svm = order(index.search(data[0], mode="svm", k=15, C=0.1, feedback=0))
    assert order(index.search(data[0], mode="svm", k=15, C=0.1, feedback=0, prior=0.0)) == svm
    near_knn = index.search(data[0], mode="svm", k=15, C=1e-7, feedback=0, prior=1.0)
    assert order(near_knn) == knn


def test_feedback_documents_are_weighted_positives_that_stay_in_the_results() -> None:
    from exemplar_svm._solver import solve

    data = clustered(300, 16, seed=15)
    index = ExemplarIndex(data[1:])
    query = data[0] / np.linalg.norm(data[0])
    hits = index.search(
        query,
        k=299,
        mode="svm",
        C=0.1,
        feedback=4,
        feedback_weight=0.25,
        feedback_threshold=0,
    )
    top = np.argsort(-(index.vectors @ query), kind="stable")[:4]
    weights = np.ones(299)
    weights[top] = 0.0
    positives = np.vstack([query, index.vectors[top]]).astype(np.float64)
    _, _, scores, _ = solve(
        positives,
        index.vectors,
        weights,
        np.empty((0, 16)),
        np.empty(0),
        0.1,
        positive_weights=np.r_[1.0, np.full(4, 0.25)],
    )
    assert order(hits) == [str(row) for row in np.argsort(-scores, kind="stable")]
    assert {str(row) for row in top} <= set(order(hits)[:10])


def test_rocchio_moves_the_knn_centroid_away_from_counter_examples() -> None:
    data = clustered(200, 8, seed=16)
    index = ExemplarIndex(data)
    vectors = index.vectors.astype(np.float64)
    centroid = vectors[[0, 1]].mean(axis=0)
    centroid /= np.linalg.norm(centroid)
    direction = centroid - 0.7 * vectors[[2, 3]].mean(axis=0)
    expected = np.argsort(-(vectors @ direction), kind="stable")
    expected = [str(row) for row in expected if row not in (1, 2, 3)][:10]
    hits = index.search(
        vectors[0], k=10, mode="knn", positives=["1"], negatives=["2", "3"], rocchio=0.7
    )
    assert order(hits) == expected
    plain = index.search(
        vectors[0], k=10, mode="knn", positives=["1"], negatives=["2", "3"], rocchio=0.0
    )
    assert order(plain) != order(hits)


def test_tiny_corpus_keeps_negatives_with_the_default_feedback() -> None:
    index = ExemplarIndex(np.eye(3) + 0.05)
    assert len(index.search(np.ones(3), k=3)) == 3  # 5 feedback documents wanted, 1 used


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prior": -1}, "prior must be a finite number >= 0"),
        ({"feedback": -2}, "feedback must be a whole number >= 0"),
        ({"feedback": 1.5}, "feedback must be a whole number >= 0"),
        ({"feedback_weight": 0}, "feedback_weight must be a positive"),
        ({"hybrid_weight": 1.5}, "hybrid_weight must be between 0 and 1"),
        ({"rocchio": float("inf")}, "rocchio must be a finite number >= 0"),
    ],
)
def test_bad_quality_options(kwargs: dict, message: str) -> None:
    index = ExemplarIndex(np.eye(4) + 0.1)
    with pytest.raises(ValueError, match=message):
        index.search(np.ones(4), **kwargs)


def test_hard_negatives_reweight_the_nearest_documents_after_feedback() -> None:
    from exemplar_svm._solver import solve

    data = clustered(300, 16, seed=18)
    index = ExemplarIndex(data[1:])
    query = data[0] / np.linalg.norm(data[0])
    hits = index.search(
        query, k=299, mode="svm", C=0.1, feedback=2, hard_negatives=6, hard_negative_weight=3.0
    )
    ranked = np.argsort(-(index.vectors @ query), kind="stable")
    weights = np.ones(299)
    weights[ranked[:2]] = 0.0  # feedback documents: positives
    weights[ranked[2:8]] = 3.0  # the next six: hard negatives
    positives = np.vstack([query, index.vectors[ranked[:2]]]).astype(np.float64)
    _, _, scores, _ = solve(
        positives,
        index.vectors,
        weights,
        np.empty((0, 16)),
        np.empty(0),
        0.1,
        positive_weights=np.r_[1.0, 0.5, 0.5],
    )
    assert order(hits) == [str(row) for row in np.argsort(-scores, kind="stable")]
    unlabeled = index.search(query, k=299, mode="svm", C=0.1, feedback=0, hard_negatives=6)
    assert len(unlabeled) == 299  # left out of the negatives, not out of the results


def test_prior_direction_contrast_uses_the_corpus_mean() -> None:
    data = clustered(300, 16, seed=19)
    index = ExemplarIndex(data[1:])
    options = {"k": 20, "mode": "svm", "C": 1e-7, "feedback": 0, "prior": 1.0}
    contrast = index.search(data[0], prior_direction="contrast", **options)
    vectors = index.vectors.astype(np.float64)
    query = data[0] / np.linalg.norm(data[0])
    direction = query - vectors.mean(axis=0)
    expected = [str(row) for row in np.argsort(-(vectors @ direction), kind="stable")[:20]]
    assert order(contrast) == expected  # C -> 0: ranks along the prior's direction
    with pytest.raises(ValueError, match="unknown prior_direction 'sideways'"):
        index.search(data[0], prior_direction="sideways")
    with pytest.raises(ValueError, match="hard_negative_weight must be a finite number >= 0"):
        index.search(data[0], hard_negatives=3, hard_negative_weight=-1)


# -- dense pseudo-relevance feedback, "auto", and negatives that only demote --------------------


def test_prf_is_knn_after_moving_the_query_towards_its_nearest_documents() -> None:
    data = clustered(400, 16, seed=21)
    index = ExemplarIndex(data[1:])
    vectors = index.vectors.astype(np.float64)
    query = data[0] / np.linalg.norm(data[0])
    # Classic dense PRF: q + beta * mean(top m), equal weights (feedback_threshold=0).
    hits = index.search(query, k=50, mode="prf", feedback=5, feedback_threshold=0, prf_weight=1.5)
    top = np.argsort(-(vectors @ query), kind="stable")[:5]
    moved = query + 1.5 * vectors[top].mean(axis=0)
    expected = np.argsort(-(vectors @ moved), kind="stable")[:50]
    assert order(hits) == [str(row) for row in expected]
    assert [hit.score for hit in hits] == pytest.approx(
        list(vectors[expected] @ (moved / np.linalg.norm(moved))), abs=1e-5
    )
    # prf_weight=0 is kNN.
    assert order(index.search(query, k=20, mode="prf", prf_weight=0)) == order(
        index.search(query, k=20, mode="knn")
    )


def test_adaptive_feedback_takes_the_documents_far_above_the_corpus() -> None:
    from exemplar_svm.index import _feedback

    rng = np.random.default_rng(3)
    scores = rng.normal(0, 0.05, size=1000)
    scores[:12] = 0.9  # twelve clear neighbours, far above the rest
    everything = np.ones(1000, dtype=bool)
    rows, weights = _feedback(scores, everything, 50, 4.0)
    assert sorted(rows.tolist()) == list(range(12))
    assert weights.sum() == pytest.approx(1.0) and (weights > 0).all()
    rows, _ = _feedback(scores, everything, 5, 4.0)  # at most `feedback`
    assert len(rows) == 5
    flat = rng.normal(0, 0.05, size=1000)  # no clear neighbour: the minimum of 3
    assert len(_feedback(flat, everything, 50, 4.0)[0]) == 3
    rows, weights = _feedback(flat, everything, 7, 0.0)  # threshold 0: exactly 7, equal
    assert len(rows) == 7 and np.allclose(weights, 1 / 7)


def test_auto_is_prf_for_a_query_and_hybrid_with_positives() -> None:
    data = clustered(300, 16, seed=22)
    index = ExemplarIndex(data)
    query = data[0] + 0.1 * data[1]
    assert order(index.search(query, k=20)) == order(index.search(query, k=20, mode="prf"))
    with_negative = index.search(query, k=20, negatives=["7"])
    assert order(with_negative) == order(index.search(query, k=20, mode="prf", negatives=["7"]))
    with_positive = index.search(query, k=20, positives=["5"])
    assert order(with_positive) == order(index.search(query, k=20, mode="hybrid", positives=["5"]))


@pytest.mark.parametrize("mode", ["knn", "prf", "svm", "hybrid", "lda"])
def test_named_negatives_only_demote(mode: str) -> None:
    data = clustered(300, 16, seed=23)
    index = ExemplarIndex(data)
    query = data[0] + 0.05 * data[1]
    negative = data[2]
    plain = {hit.id: hit.score for hit in index.search(query, k=300, mode=mode, demote=0)}
    demoted = index.search(query, k=300, mode=mode, negatives=[negative], demote=1)
    vectors = index.vectors.astype(np.float64)
    centroid = query / np.linalg.norm(query)
    unit = negative / np.linalg.norm(negative)
    for hit in demoted:
        row = int(hit.id)
        if mode in ("knn", "prf"):  # the ranking itself does not use the negative
            if vectors[row] @ unit <= vectors[row] @ centroid:
                assert hit.score == pytest.approx(plain[hit.id], abs=1e-6)
            else:
                assert hit.score < plain[hit.id]
    # The document the negative was taken from falls out of the top 10.
    assert "2" not in order(demoted[:10])


def test_a_counter_example_does_not_outweigh_the_query_on_a_small_corpus() -> None:
    # Three documents near the query, one near the counter-example, and one opposite to it,
    # unrelated to the query: the counter-example must not lift that one above the others.
    rng = np.random.default_rng(5)
    base = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    topic, other, unrelated = base[0], base[1], base[2]
    docs = np.vstack(
        [
            topic + 0.3 * other,  # near the counter-example, still on topic
            topic + 0.1 * base[3],
            topic + 0.1 * base[4],
            topic + 0.1 * base[5],
            unrelated - 0.6 * other,  # unlike the counter-example, off topic
            unrelated + 0.1 * base[6],
        ]
    )
    index = ExemplarIndex(docs, ids=["near-neg", "a", "b", "c", "opposite", "off"])
    negative = other + 0.2 * topic
    for mode in ("auto", "knn", "prf", "svm", "hybrid"):
        hits = index.search(topic, k=4, mode=mode, negatives=[negative])
        assert set(order(hits)[:3]) == {"a", "b", "c"}, mode
        assert "opposite" not in order(hits)[:3], mode


@pytest.mark.parametrize("mode", ["svm", "hybrid"])
def test_a_search_ranks_as_if_every_score_were_computed(monkeypatch, mode: str) -> None:
    # A plain SVM search asks the solver for its top k only (a verification may bound rows
    # instead of scoring them); the hybrid takes every score. Both rank as with every row scored.
    import exemplar_svm._solver as solver
    from tests.test_svm import clustered

    corpus = clustered(20_000, 32, seed=31)
    index = ExemplarIndex(corpus, ids=[f"d{i}" for i in range(len(corpus))])
    query = corpus[5] + 0.05 * np.random.default_rng(0).normal(size=32)
    options = {"mode": mode, "C": 0.1, "feedback": 0}
    seen = []
    solve_many = solver.solve_many

    def recorded(problems):
        solutions = solve_many(problems)
        seen.extend(solution[3] for solution in solutions)
        return solutions

    monkeypatch.setattr("exemplar_svm.index.solve_many", recorded)
    hits = index.search(query, 10, **options)
    monkeypatch.setattr(solver, "_bounded_scores", lambda *args: None)
    every = index.search(query, 10, **options)
    assert [hit.id for hit in hits] == [hit.id for hit in every]
    np.testing.assert_allclose([h.score for h in hits], [h.score for h in every], atol=1e-6)
    assert seen[0].passes == seen[1].passes - (mode == "svm")
