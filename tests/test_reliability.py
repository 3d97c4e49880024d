"""Fault injection: concurrent writers, and an embedding server that misbehaves.

Writers run in real threads against the core and both framework adapters, with readers
searching meanwhile; the embedding server is the real loopback server of
``tests/openai_server.py``, told to send broken replies, drop connections or fail. Vectors come
from a hash of the text, so no model is loaded and every document's vector is its own.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import math
import pickle
import re
import socket
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from numpy.typing import NDArray

from exemplar_svm import EmbeddingError, ExemplarIndex, OpenAIEmbedder
from exemplar_svm.embedders import BaseEmbedder
from tests.openai_server import OpenAICompatibleServer

DIM = 24
THREADS = 3


def hash_vector(text: str, dim: int = DIM) -> NDArray[np.float32]:
    """A unit vector drawn from a generator seeded by the text: distinct texts, distinct
    vectors (the nearest neighbour of a text's vector is that text's document)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).normal(size=dim)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def hash_vectors(texts: list[str]) -> NDArray[np.float32]:
    return np.vstack([hash_vector(text) for text in texts])


class HashEmbedder(BaseEmbedder):
    """An exemplar_svm Embedder over :func:`hash_vector` (queries as documents)."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__(show_progress=False)
        self.dim = dim

    def _embed_batch(self, texts: list[str], *, query: bool) -> NDArray[np.float32]:
        return np.vstack([hash_vector(text, self.dim) for text in texts])


def run_threads(targets: list[Callable[[], None]], timeout: float = 60) -> list[BaseException]:
    """Start ``targets`` together (behind a barrier), join them; the exceptions they raised."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def run(target: Callable[[], None]) -> None:
        barrier.wait()
        try:
            target()
        except BaseException as exc:  # reported to the test, which fails on it
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return errors


class Reader:
    """Searches in a loop until stopped (at least once); ``search`` asserts on each result."""

    def __init__(self, search: Callable[[], None]) -> None:
        self.search = search
        self.stop = threading.Event()
        self.calls = 0

    def __call__(self) -> None:
        while True:
            self.search()
            self.calls += 1
            if self.stop.is_set():
                return


def writers_and_reader(writers: list[Callable[[], None]], reader: Reader) -> list[BaseException]:
    """Run the writers with the reader searching until they are done."""

    def stop_after(writer: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                writer()
            finally:
                done.append(None)
                if len(done) == len(writers):
                    reader.stop.set()

        return run

    done: list[None] = []
    errors = run_threads([*map(stop_after, writers), reader])
    assert reader.calls > 0
    return errors


# -- the core ------------------------------------------------------------------------------


def test_concurrent_adds_keep_every_row() -> None:
    rng = np.random.default_rng(0)
    index = ExemplarIndex(rng.normal(size=(50, DIM)))
    adds, rows = 150, 5
    blocks = rng.normal(size=(THREADS, adds, rows, DIM)).astype(np.float32)
    returned: list[list[tuple[list[str], NDArray[np.float32]]]] = [[] for _ in range(THREADS)]

    def writer(thread: int) -> Callable[[], None]:
        def run() -> None:
            for add in range(adds):
                block = blocks[thread, add]
                # Thread 0 names its rows, the others take the default (row number) ids.
                ids = [f"t0-{add}-{row}" for row in range(rows)] if thread == 0 else None
                returned[thread].append((index.add(block, ids=ids), block))

        return run

    def search() -> None:
        hits = index.search(blocks[1, 0, 0], k=3, mode="knn")
        assert len(hits) == 3

    assert writers_and_reader([writer(thread) for thread in range(THREADS)], Reader(search)) == []

    assert len(index) == 50 + THREADS * adds * rows
    assert len(set(index.ids)) == len(index)
    added = [(ids, block) for part in returned for ids, block in part]
    all_ids = [item for ids, _ in added for item in ids]
    vectors = np.vstack([block for _, block in added])
    assert len(set(all_ids)) == len(all_ids) == THREADS * adds * rows
    expected = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(index.fetch(all_ids), expected, atol=1e-6)
    # Searchable: each added vector finds its own row first.
    top = [hits[0].id for hits in index.search_batch(list(vectors), k=1, mode="knn")]
    assert top == all_ids


def test_default_ids_never_clash_with_chosen_ones() -> None:
    index = ExemplarIndex(np.eye(4)[:3])  # ids "0", "1", "2"
    index.add(np.eye(4)[3:], ids=["4"])  # row 3 named "4" by the caller

    with pytest.raises(ValueError, match=r"default id '4' of new row 4 .* pass ids="):
        index.add(np.ones((2, 4)))
    assert index.ids == ["0", "1", "2", "4"]  # nothing added

    assert index.add(np.ones((1, 4)), ids=["x"]) == ["x"]
    assert index.add(np.ones((1, 4))) == ["5"]  # row 5: free again
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        index.add(np.ones((1, 4)), ids=["x"])


def test_copies_and_pickles_get_a_lock_of_their_own() -> None:
    index = ExemplarIndex(np.random.default_rng(1).normal(size=(20, 8)))
    with index._write_lock:  # a writer is busy: the copies must not inherit a held lock
        copies = [copy.deepcopy(index), pickle.loads(pickle.dumps(index))]

    def add_to_copies() -> None:
        for number, clone in enumerate(copies):
            clone.add(np.ones((1, 8)), ids=[f"copy{number}"])

    assert run_threads([add_to_copies], timeout=10) == []
    assert [clone.ids[-1] for clone in copies] == ["copy0", "copy1"]
    assert len(index) == 20  # the original is unchanged
    index.add(np.ones((1, 8)))
    assert len(index) == 21


# -- LangChain -----------------------------------------------------------------------------


@pytest.fixture
def lc_retriever() -> Any:
    pytest.importorskip("langchain_core")
    from exemplar_svm.langchain import ExemplarSVMRetriever

    texts = [f"seed document {number}" for number in range(20)]
    ids = [f"seed-{number}" for number in range(20)]
    return ExemplarSVMRetriever.from_texts(texts, HashEmbedder(), ids=ids, k=3, mode="knn")


def test_langchain_concurrent_add_texts_keep_every_document(lc_retriever: Any) -> None:
    adds, per_add = 120, 5
    added: list[list[str]] = [[] for _ in range(THREADS)]

    def writer(thread: int) -> Callable[[], None]:
        def run() -> None:
            for add in range(adds):
                texts = [f"thread {thread} add {add} text {row}" for row in range(per_add)]
                # Thread 0 lets the retriever choose the ids (UUIDs), the others name them.
                ids = None if thread == 0 else [f"{thread}-{add}-{row}" for row in range(per_add)]
                added[thread] += lc_retriever.add_texts(texts, ids=ids)

        return run

    def search() -> None:
        # Every ranked document must come back whole: a KeyError here means a document was
        # searchable before it was stored.
        for doc in lc_retriever.invoke("thread 1 add 0 text 0"):
            assert doc.page_content == lc_retriever.documents[doc.id].page_content

    assert writers_and_reader([writer(t) for t in range(THREADS)], Reader(search)) == []

    new_ids = [item for part in added for item in part]
    assert len(set(new_ids)) == len(new_ids) == THREADS * adds * per_add
    assert set(lc_retriever.documents) == set(lc_retriever.index.ids)
    assert len(lc_retriever.index) == 20 + len(new_ids)
    texts = [lc_retriever.documents[item].page_content for item in new_ids]
    top = lc_retriever.index.search_batch(list(hash_vectors(texts)), k=1, mode="knn")
    assert [hits[0].id for hits in top] == new_ids
    for item, text in list(zip(new_ids, texts, strict=True))[::97]:  # and through invoke
        doc = lc_retriever.invoke(text, k=1)[0]
        assert (doc.id, doc.page_content) == (item, text)


def test_langchain_concurrent_adds_of_one_id_add_it_once(lc_retriever: Any) -> None:
    rounds = 40
    refused: list[str] = []
    refused_lock = threading.Lock()

    def writer(thread: int) -> Callable[[], None]:
        def run() -> None:
            for number in range(rounds):
                try:
                    lc_retriever.add_texts([f"contested {number} by {thread}"], ids=[f"c{number}"])
                except ValueError as exc:
                    assert f"duplicate id 'c{number}'" in str(exc)
                    # A refusal means the document is there already, searchable.
                    assert f"c{number}" in lc_retriever.index
                    with refused_lock:
                        refused.append(f"c{number}")

        return run

    assert run_threads([writer(t) for t in range(THREADS)]) == []

    assert len(refused) == rounds * (THREADS - 1)  # each id added exactly once
    assert set(lc_retriever.documents) == set(lc_retriever.index.ids)
    for number in range(rounds):
        doc = lc_retriever.documents[f"c{number}"]
        assert lc_retriever.invoke(doc.page_content, k=1)[0].id == f"c{number}"


def test_langchain_failed_add_leaves_nothing_behind(lc_retriever: Any) -> None:
    embedding = lc_retriever.embedding
    lc_retriever.embedding = HashEmbedder(dim=DIM + 1)  # vectors the index refuses
    with pytest.raises(ValueError, match="dimension mismatch"):
        lc_retriever.add_texts(["a document that fails"], ids=["late"])
    assert "late" not in lc_retriever.documents
    assert "late" not in lc_retriever.index

    lc_retriever.embedding = embedding  # the same id is not refused: it was never searchable
    assert lc_retriever.add_texts(["a document that fails"], ids=["late"]) == ["late"]
    assert lc_retriever.invoke("a document that fails", k=1)[0].id == "late"


def test_langchain_copies_get_a_lock_of_their_own(lc_retriever: Any) -> None:
    with lc_retriever._write_lock:
        copies = [
            copy.deepcopy(lc_retriever),
            lc_retriever.model_copy(deep=True),
            pickle.loads(pickle.dumps(lc_retriever)),
        ]

    def add_to_copies() -> None:
        for clone in copies:
            clone.add_texts(["only in the copy"], ids=["copied"])

    assert run_threads([add_to_copies], timeout=10) == []
    for clone in copies:
        assert clone.invoke("only in the copy", k=1)[0].id == "copied"
    assert "copied" not in lc_retriever.documents
    assert "copied" not in lc_retriever.index


# -- LlamaIndex ----------------------------------------------------------------------------


def llama_nodes(texts: list[str], ids: list[str] | None = None) -> list[Any]:
    from llama_index.core.schema import TextNode

    if ids is None:
        return [TextNode(text=text) for text in texts]
    return [TextNode(text=text, id_=item) for text, item in zip(texts, ids, strict=True)]


@pytest.fixture
def li_retriever() -> Any:
    pytest.importorskip("llama_index.core")
    from exemplar_svm.llama_index import ExemplarSVMRetriever

    nodes = llama_nodes([f"seed node {n}" for n in range(20)], [f"seed-{n}" for n in range(20)])
    return ExemplarSVMRetriever.from_defaults(
        nodes=nodes, embed_model=HashEmbedder(), similarity_top_k=3, mode="knn"
    )


def test_llama_index_concurrent_inserts_keep_every_node(li_retriever: Any) -> None:
    adds, per_add = 120, 5
    added: list[list[str]] = [[] for _ in range(THREADS)]

    def writer(thread: int) -> Callable[[], None]:
        def run() -> None:
            for add in range(adds):
                texts = [f"thread {thread} insert {add} node {row}" for row in range(per_add)]
                nodes = llama_nodes(texts)
                if thread == 1:  # nodes with their own embeddings are not embedded again
                    for node, text in zip(nodes, texts, strict=True):
                        node.embedding = hash_vector(text).tolist()
                added[thread] += li_retriever.insert_nodes(nodes)

        return run

    def search() -> None:
        for result in li_retriever.retrieve("thread 2 insert 0 node 0"):
            assert result.node.get_content() == li_retriever._nodes[result.node.node_id].text

    assert writers_and_reader([writer(t) for t in range(THREADS)], Reader(search)) == []

    new_ids = [item for part in added for item in part]
    assert len(set(new_ids)) == len(new_ids) == THREADS * adds * per_add
    nodes = {node.node_id: node for node in li_retriever.nodes}
    assert set(nodes) == set(li_retriever.index.ids)
    assert len(nodes) == 20 + len(new_ids)
    texts = [nodes[item].text for item in new_ids]
    top = li_retriever.index.search_batch(list(hash_vectors(texts)), k=1, mode="knn")
    assert [hits[0].id for hits in top] == new_ids
    for item, text in list(zip(new_ids, texts, strict=True))[::97]:
        result = li_retriever.retrieve(text)[0]
        assert (result.node.node_id, result.node.get_content()) == (item, text)


def test_llama_index_concurrent_inserts_of_one_id_insert_it_once(li_retriever: Any) -> None:
    rounds = 40
    refused: list[str] = []
    refused_lock = threading.Lock()

    def writer(thread: int) -> Callable[[], None]:
        def run() -> None:
            for number in range(rounds):
                nodes = llama_nodes([f"contested {number} by {thread}"], [f"c{number}"])
                try:
                    li_retriever.insert_nodes(nodes)
                except ValueError as exc:
                    assert f"duplicate node id 'c{number}'" in str(exc)
                    assert f"c{number}" in li_retriever.index
                    with refused_lock:
                        refused.append(f"c{number}")

        return run

    assert run_threads([writer(t) for t in range(THREADS)]) == []

    assert len(refused) == rounds * (THREADS - 1)
    nodes = {node.node_id: node for node in li_retriever.nodes}
    assert set(nodes) == set(li_retriever.index.ids)
    for number in range(rounds):
        assert li_retriever.retrieve(nodes[f"c{number}"].text)[0].node.node_id == f"c{number}"


def test_llama_index_insert_refuses_bad_nodes_and_keeps_nothing(li_retriever: Any) -> None:
    with pytest.raises(ValueError, match="duplicate node id 'seed-3'"):
        li_retriever.insert_nodes(llama_nodes(["new", "again"], ["fresh", "seed-3"]))
    with pytest.raises(ValueError, match="duplicate node id 'twice'"):
        li_retriever.insert_nodes(llama_nodes(["one", "two"], ["twice", "twice"]))
    with pytest.raises(TypeError, match=r"nodes\[0\] is a str"):
        li_retriever.insert_nodes(["not a node"])
    wrong = llama_nodes(["too wide"], ["wide"])
    wrong[0].embedding = [0.5] * (DIM + 1)
    with pytest.raises(ValueError, match="dimension mismatch"):
        li_retriever.insert_nodes(wrong)
    assert len(li_retriever.nodes) == len(li_retriever.index) == 20
    assert li_retriever.insert_nodes([]) == []

    assert li_retriever.insert_nodes(llama_nodes(["too wide"], ["wide"])) == ["wide"]
    assert li_retriever.retrieve("too wide")[0].node.node_id == "wide"


def test_llama_index_persist_during_inserts_is_consistent(
    li_retriever: Any, tmp_path: Path
) -> None:
    from exemplar_svm.llama_index import ExemplarSVMRetriever

    loaded: list[int] = []

    def writer() -> None:
        for add in range(60):
            li_retriever.insert_nodes(llama_nodes([f"insert {add} a", f"insert {add} b"]))

    def persister() -> None:
        for number in range(6):
            li_retriever.persist(tmp_path / str(number))
            # The nodes and the index were saved as one state, so the folder loads.
            again = ExemplarSVMRetriever.from_persist_dir(tmp_path / str(number), HashEmbedder())
            loaded.append(len(again.nodes))

    assert run_threads([writer, persister]) == []
    assert len(loaded) == 6
    assert loaded == sorted(loaded)


def test_llama_index_copies_get_a_lock_of_their_own(li_retriever: Any) -> None:
    with li_retriever._write_lock:
        copies = [copy.deepcopy(li_retriever), pickle.loads(pickle.dumps(li_retriever))]

    def insert_into_copies() -> None:
        for clone in copies:
            clone.insert_nodes(llama_nodes(["only in the copy"], ["copied"]))

    assert run_threads([insert_into_copies], timeout=10) == []
    for clone in copies:
        assert clone.retrieve("only in the copy")[0].node.node_id == "copied"
    assert "copied" not in li_retriever.index


# -- a misbehaving embedding server --------------------------------------------------------

TEXTS = ["the first text", "the second text", "the third text"]


@pytest.fixture
def server() -> Any:
    with OpenAICompatibleServer(hash_vectors) as server:
        yield server


def make_embedder(server: OpenAICompatibleServer, **options: Any) -> OpenAIEmbedder:
    options.setdefault("max_retries", 0)
    return OpenAIEmbedder("hash-model", base_url=server.base_url, api_key="sk-test", **options)


def embedding_error(call: Callable[[], Any], match: str) -> EmbeddingError:
    with pytest.raises(EmbeddingError, match=match) as excinfo:
        call()
    return excinfo.value


def edit_item(position: int, **changes: Any) -> Callable[[dict[str, Any]], Any]:
    """A reply edit: item ``position`` of ``data`` with ``changes`` (None deletes a field)."""

    def edit(reply: dict[str, Any]) -> Any:
        item = {**reply["data"][position], **changes}
        item = {key: value for key, value in item.items() if value is not None}
        data = [*reply["data"][:position], item, *reply["data"][position + 1 :]]
        return {**reply, "data": data}

    return edit


def indices(*values: int) -> Callable[[dict[str, Any]], Any]:
    """A reply edit: the ``index`` fields of ``data`` set to ``values``, in order."""

    def edit(reply: dict[str, Any]) -> Any:
        data = [{**item, "index": value} for item, value in zip(reply["data"], values, strict=True)]
        return {**reply, "data": data}

    return edit


def test_correct_replies_in_any_order_give_the_texts_vectors(server: Any) -> None:
    server.reply_next(lambda reply: {**reply, "data": [reply["data"][i] for i in (2, 0, 1)]})
    np.testing.assert_allclose(make_embedder(server).embed_documents(TEXTS), hash_vectors(TEXTS))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        # The right count, index 0 twice and index 1 missing: row 1 would be text 0's vector.
        (edit_item(1, index=0), "index 0 appears twice and index 1 is missing"),
        (edit_item(0, index=2), "index 2 appears twice and index 0 is missing"),
        (indices(0, 0, 1), "index 0 appears twice and index 2 is missing"),
        (indices(1, 1, 1), r"index 1 appears twice and indices \[0, 2\] are missing"),
        (edit_item(2, index=3), r"data\[2\] has index 3; the indices must be 0 to 2"),
        (edit_item(0, index=-1), r"data\[0\] has index -1"),
        (edit_item(0, index="0"), r"data\[0\] has index '0'"),
        (edit_item(0, index=True), r"data\[0\] has index True"),
        (edit_item(1, index=None), r"data\[1\] has index None"),
    ],
)
def test_reply_indices_must_be_exactly_0_to_n_minus_1(server: Any, edit: Any, match: str) -> None:
    server.reply_next(edit)
    error = embedding_error(lambda: make_embedder(server).embed_documents(TEXTS), match)
    assert server.base_url + "/embeddings" in str(error)
    assert isinstance(error.__cause__, ValueError)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "the body is not JSON"),
        (b"", "the body is not JSON"),
        (b'{"data": [', "the body is not JSON"),
        (lambda reply: [reply], "no 'data' list"),
        (lambda reply: {"object": "list"}, "no 'data' list"),
        (lambda reply: {**reply, "data": {"0": reply["data"][0]}}, "no 'data' list"),
        (lambda reply: {**reply, "data": reply["data"][:2]}, "2 embeddings for 3 texts"),
        (lambda reply: {**reply, "data": [*reply["data"], reply["data"][0]]}, "4 embeddings"),
        (lambda reply: {**reply, "data": [1, 2, 3]}, r"data\[0\] is 1, not an object"),
        (edit_item(1, embedding=None), r"data\[1\]\.embedding is None, not a list of numbers"),
        (edit_item(0, embedding="AAAAAA=="), r"data\[0\]\.embedding is 'AAAAAA==', not a list"),
        (edit_item(0, embedding=[]), r"data\[0\]\.embedding is \[\]"),
        (edit_item(2, embedding=[0.1, "0.2"]), r"data\[2\]\.embedding holds '0.2'"),
        (edit_item(2, embedding=[0.1, None]), r"data\[2\]\.embedding holds None"),
        (edit_item(2, embedding=[0.1, [0.2]]), r"data\[2\]\.embedding holds \[0.2\]"),
        (edit_item(1, embedding=[0.5] * (DIM - 1)), rf"different lengths \[{DIM - 1}, {DIM}\]"),
    ],
)
def test_malformed_replies_raise_embedding_error(server: Any, body: Any, match: str) -> None:
    server.reply_next(body)
    embedder = make_embedder(server)
    error = embedding_error(lambda: embedder.embed_documents(TEXTS), match)
    assert str(error).startswith(f"embedding server {server.base_url}/embeddings ")
    assert isinstance(error.__cause__, ValueError)  # JSONDecodeError is one too
    # The embedder is not left broken: the next, correct reply is used.
    np.testing.assert_allclose(embedder.embed_documents(TEXTS), hash_vectors(TEXTS))


def test_a_body_that_is_not_json_keeps_the_parser_error_as_cause(server: Any) -> None:
    server.reply_next(b"Service Unavailable")
    error = embedding_error(lambda: make_embedder(server).embed_query("hi"), "not JSON")
    assert isinstance(error.__cause__, json.JSONDecodeError)
    assert "Service Unavailable" in str(error)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e39])
def test_non_finite_values_are_refused(server: Any, value: float) -> None:
    def poison(reply: dict[str, Any]) -> Any:
        reply["data"][1]["embedding"][5] = value  # sent as NaN, Infinity or an overflow
        return reply

    server.reply_next(poison)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a float32 overflow warns when cast unchecked
        embedding_error(
            lambda: make_embedder(server).embed_documents(TEXTS),
            rf"the embedding of text 1 holds {re.escape(repr(value))} at 5: embeddings must be",
        )


def test_vectors_must_match_dimensions_and_earlier_replies(server: Any) -> None:
    shortened = make_embedder(server, dimensions=8)
    assert shortened.embed_query("fine").shape == (8,)
    server.reply_next(lambda reply: {**reply, "data": [{**reply["data"][0], "embedding": [1.0]}]})
    embedding_error(lambda: shortened.embed_query("hi"), "1-dimensional vectors for dimensions=8")

    # A server that answers the second batch of a corpus with another model's width.
    server.reply_next(lambda reply: reply)
    server.reply_next(edit_item(0, embedding=[0.5] * 7))
    embedder = make_embedder(server, batch_size=2)
    embedding_error(
        lambda: embedder.embed_documents(TEXTS),
        f"7-dimensional vectors for model 'hash-model', which gave {DIM}-dimensional ones",
    )
    assert server.batch_sizes[-2:] == [2, 1]


async def test_async_malformed_replies_raise_embedding_error(server: Any) -> None:
    server.reply_next(edit_item(1, index=0))
    with pytest.raises(EmbeddingError, match="index 0 appears twice and index 1 is missing"):
        await make_embedder(server).aembed_documents(TEXTS)
    server.reply_next(b"not json")
    with pytest.raises(EmbeddingError, match="not JSON"):
        await make_embedder(server).aembed_query("hi")


# -- connection and HTTP failures ----------------------------------------------------------


def _dead_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_raises_embedding_error() -> None:
    url = f"http://127.0.0.1:{_dead_port()}/v1"
    embedder = OpenAIEmbedder("m", base_url=url, max_retries=0)
    error = embedding_error(lambda: embedder.embed_query("hi"), "connection failed")
    assert f"{url}/embeddings" in str(error)
    assert "Connection refused" in str(error)
    assert isinstance(error.__cause__, openai.APIConnectionError)


async def test_unreachable_server_raises_embedding_error_async() -> None:
    url = f"http://127.0.0.1:{_dead_port()}/v1"
    with pytest.raises(EmbeddingError, match="connection failed") as excinfo:
        await OpenAIEmbedder("m", base_url=url, max_retries=0).aembed_query("hi")
    assert isinstance(excinfo.value.__cause__, openai.APIConnectionError)


def test_dropped_connections_are_retried_then_raise(server: Any) -> None:
    server.drop_next(times=2)
    error = embedding_error(
        lambda: make_embedder(server, max_retries=1).embed_query("hi"),
        r"connection failed \(after 1 retry\)",
    )
    assert isinstance(error.__cause__, openai.APIConnectionError)
    assert server.request_count == 2

    server.reset()
    server.drop_next()  # one drop, then an answer: the retry succeeds
    vector = make_embedder(server, max_retries=1).embed_query("hi")
    np.testing.assert_allclose(vector, hash_vector("hi"))
    assert server.request_count == 2


def test_timeout_raises_embedding_error(server: Any) -> None:
    server.delay_next(30)
    error = embedding_error(
        lambda: make_embedder(server, timeout=0.3).embed_query("hi"), r"no answer within 0\.3 s"
    )
    assert isinstance(error.__cause__, openai.APITimeoutError)


def test_http_errors_keep_their_retries_and_raise_embedding_error(server: Any) -> None:
    server.fail_next(429, times=2, retry_after=0.01)  # rate limited twice, then answered
    vector = make_embedder(server, max_retries=2).embed_query("hi")
    np.testing.assert_allclose(vector, hash_vector("hi"))
    assert server.request_count == 3

    server.reset()
    server.fail_next(500, times=3, retry_after=0.01)
    error = embedding_error(
        lambda: make_embedder(server, max_retries=2).embed_query("hi"),
        r"HTTP 500 \(after 2 retries\): scripted failure 500",
    )
    assert isinstance(error.__cause__, openai.InternalServerError)
    assert server.request_count == 3

    server.reset()
    server.fail_next(400, message="input is too long")
    error = embedding_error(
        lambda: make_embedder(server, max_retries=2).embed_query("hi"),
        r"HTTP 400: input is too long",
    )
    assert isinstance(error.__cause__, openai.BadRequestError)
    assert server.request_count == 1  # not retried


def test_cli_prints_an_unreachable_server_on_one_line(capsys: Any) -> None:
    from exemplar_svm.cli import main

    url = f"http://127.0.0.1:{_dead_port()}/v1"
    code = main(["search", "plants", "--openai-model", "m", "--base-url", url, "--no-progress"])

    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"exemplar-svm: error: embedding server {url}/embeddings: connection")


# -- event loops -----------------------------------------------------------------------------


def test_repeated_asyncio_run_with_one_embedder(server: Any) -> None:
    embedder = make_embedder(server)
    for attempt in range(4):  # every second call used to fail: "Event loop is closed"
        vector = asyncio.run(embedder.aembed_query(f"query {attempt}"))
        np.testing.assert_allclose(vector, hash_vector(f"query {attempt}"))
        documents = asyncio.run(embedder.aembed_documents(TEXTS))
        np.testing.assert_allclose(documents, hash_vectors(TEXTS))
    assert server.request_count == 8


def test_event_loops_in_threads_share_one_embedder(server: Any) -> None:
    embedder = make_embedder(server, batch_size=1)
    results: dict[int, NDArray[np.float32]] = {}

    def worker(number: int) -> Callable[[], None]:
        async def many() -> NDArray[np.float32]:
            vectors = await asyncio.gather(*(embedder.aembed_query(t) for t in TEXTS))
            return np.vstack(vectors)

        def run() -> None:
            for _ in range(3):
                results[number] = asyncio.run(many())

        return run

    assert run_threads([worker(number) for number in range(THREADS)]) == []
    for number in range(THREADS):
        np.testing.assert_allclose(results[number], hash_vectors(TEXTS))
    assert server.request_count == THREADS * 3 * len(TEXTS)


# -- absurd options and inputs -------------------------------------------------------------


@pytest.fixture
def small_index() -> ExemplarIndex:
    texts = [f"document {number}" for number in range(200)]
    return ExemplarIndex(hash_vectors(texts), [f"d{number}" for number in range(200)])


ABSURD = [
    ("C", 1e15),
    ("C", math.inf),
    ("C", 0.0),
    ("C", True),
    ("C", "0.5"),
    ("negative_weight", 1e15),
    ("prior", 1e39),
    ("prior", -1.0),
    ("rocchio", 1e155),
    ("prf_weight", 1e9),
    ("feedback", 10**9),
    ("feedback", 1.5),
    ("feedback_weight", 1e9),
    ("feedback_threshold", math.nan),
    ("hard_negatives", 10**9),
    ("hard_negative_weight", 1e15),
    ("hybrid_weight", 2.0),
    ("demote", 1e9),
]


@pytest.mark.parametrize(("name", "value"), ABSURD, ids=[f"{n}={v!r}" for n, v in ABSURD])
def test_absurd_option_values_are_refused_naming_the_option(
    small_index: ExemplarIndex, name: str, value: Any
) -> None:
    query = small_index.vector("d0")
    for search in (
        lambda: small_index.search(query, **{name: value}),
        lambda: small_index.search_batch([query, query], mode="svm", **{name: value}),
    ):
        with pytest.raises(ValueError, match=rf"^{name} must be"):
            search()
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        small_index.settings = {name: value}


def test_options_at_their_bounds_still_rank(small_index: ExemplarIndex) -> None:
    from exemplar_svm.index import OPTION_BOUNDS

    query = small_index.vector("d0")
    for name, most in OPTION_BOUNDS.items():
        for mode in ("svm", "hybrid", "lda", "prf"):
            hits = small_index.search(query, k=5, mode=mode, negatives=["d7"], **{name: most})
            assert len(hits) == 5 and all(math.isfinite(hit.score) for hit in hits), (name, mode)


def test_too_many_query_rows_or_examples_are_refused(small_index: ExemplarIndex) -> None:
    from exemplar_svm.index import MAX_EXAMPLES, MAX_QUERY_ROWS

    vectors = small_index.vectors
    small_index.search(vectors[:MAX_QUERY_ROWS], k=3)  # the caps themselves pass
    small_index.search(vectors[0], k=3, positives=small_index.ids[1 : MAX_EXAMPLES["positives"]])
    with pytest.raises(ValueError, match=rf"query has 65 vectors; at most {MAX_QUERY_ROWS}"):
        small_index.search(vectors[:65], k=3)
    with pytest.raises(ValueError, match="positives has more than 64 examples"):
        small_index.search(vectors[0], k=3, positives=small_index.ids[100:165])
    with pytest.raises(ValueError, match="positives has more than 64 examples"):
        small_index.search(vectors[0], k=3, positives=[*small_index.ids[100:140], vectors[1:30]])
    with pytest.raises(ValueError, match="negatives has more than 1000 examples"):
        small_index.search(vectors[0], k=3, negatives=np.tile(vectors[1:2], (1001, 1)))


def test_search_batch_of_nothing_is_empty(small_index: ExemplarIndex) -> None:
    assert small_index.search_batch([]) == []
    assert small_index.search_batch([], mode="svm", positives=["d1"]) == []
    with pytest.raises(ValueError, match="k must be"):
        small_index.search_batch([], k=0)  # the options are still checked
    with pytest.raises(TypeError, match="not a string"):
        small_index.search_batch("d1")


def test_complex_and_string_vectors_are_errors_not_warnings(small_index: ExemplarIndex) -> None:
    query = small_index.vector("d0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy would warn and drop the imaginary part
        with pytest.raises(ValueError, match="query must be numeric vectors of real numbers"):
            small_index.search(query + 1j, k=3)
        with pytest.raises(ValueError, match="positives must be numeric vectors of real"):
            small_index.search(query, k=3, positives=[query * (1 + 1j)])
        with pytest.raises(ValueError, match="vectors must be numeric vectors of real"):
            ExemplarIndex(np.eye(3) * (1 + 0j))
        with pytest.raises(ValueError, match="vectors must be numeric vectors of real"):
            small_index.add(query * (1 + 1j), ids=["complex"])
    numeric_strings = [str(float(x)) for x in query]
    with pytest.raises(ValueError, match="query must be numeric vectors; it holds strings"):
        small_index.search(numeric_strings, k=3)
    with pytest.raises(ValueError, match="vectors must be numeric vectors; it holds strings"):
        small_index.add(numeric_strings, ids=["strings"])
    with pytest.raises(ValueError, match="unknown id"):  # strings among examples are ids
        small_index.search(query, k=3, positives=numeric_strings[:2])
    assert "complex" not in small_index and "strings" not in small_index


def test_ids_must_be_a_sequence_of_strings_not_one_string() -> None:
    with pytest.raises(TypeError, match="not one string 'abc'"):
        ExemplarIndex(hash_vectors(["x", "y", "z"]), ids="abc")
    index = ExemplarIndex(hash_vectors(["x", "y", "z"]), ids=["x", "y", "z"])
    with pytest.raises(TypeError, match="not one string 'w'"):
        index.add(hash_vectors(["w"]), ids="w")
    assert index.ids == ["x", "y", "z"]


def test_a_large_knn_batch_is_answered_in_chunks(small_index: ExemplarIndex) -> None:
    # d = 24: at most 6 queries per matrix product (their scores: a quarter of the corpus).
    queries = [small_index.vector(f"d{number}") for number in range(20)]
    batch = small_index.search_batch(queries, k=4, mode="knn")
    single = [small_index.search(query, k=4, mode="knn") for query in queries]
    assert [[hit.id for hit in hits] for hits in batch] == [
        [hit.id for hit in hits] for hits in single
    ]
    scores = [[hit.score for hit in hits] for hits in batch]
    np.testing.assert_allclose(scores, [[hit.score for hit in hits] for hits in single], atol=1e-6)


def test_a_batch_keeps_its_queries_in_flight_within_the_budget(monkeypatch: Any) -> None:
    from threadpoolctl import threadpool_limits

    import exemplar_svm.index as index_module
    from exemplar_svm._blas import blas_threads

    texts = [f"document {number}" for number in range(300)]
    index = ExemplarIndex(HashEmbedder(512).embed_documents(texts))
    groups: list[tuple[int, int]] = []  # (queries, BLAS threads) of each group
    rankings = index_module._rankings

    def spy(plans: Any, *rest: Any) -> Any:
        groups.append((len(plans), blas_threads()))
        return rankings(plans, *rest)

    monkeypatch.setattr(index_module, "_rankings", spy)
    queries = [index.vector(str(number)) for number in range(10)]
    with threadpool_limits(limits=1, user_api="blas"):
        free = index.search_batch(queries, k=5, mode="svm")
        assert groups == [(8, 1), (2, 1)]  # a small corpus: groups of 8
    groups.clear()
    # Without the floor for small corpora: a quarter of 300 x 512 floats holds one query's
    # arrays (320 bytes per row), so two BLAS threads answer one query at a time, both on it.
    monkeypatch.setattr(index_module, "_BATCH_MEMORY_FLOOR", 0)
    with threadpool_limits(limits=2, user_api="blas"):
        bounded = index.search_batch(queries, k=5, mode="svm")
    assert groups == [(1, 2)] * 10
    assert [[hit.id for hit in hits] for hits in bounded] == [
        [hit.id for hit in hits] for hits in free
    ]


def test_many_negatives_demote_in_passes_of_a_quarter_of_the_corpus() -> None:
    from exemplar_svm.index import _demotion

    vectors = hash_vectors([f"document {number}" for number in range(300)])
    centroid = hash_vector("the positives").astype(np.float64)
    negatives = hash_vectors([f"negative {number}" for number in range(30)])  # 4 passes of 8
    scores, excess = _demotion(vectors, centroid, negatives)
    products = vectors.astype(np.float64) @ np.vstack([centroid, negatives]).T
    np.testing.assert_allclose(scores, products[:, 0], atol=1e-6)
    expected = np.maximum(products[:, 1:].max(axis=1) - products[:, 0], 0.0)
    np.testing.assert_allclose(excess, expected, atol=1e-6)


def test_langchain_refuses_bad_k_and_c_when_built(lc_retriever: Any) -> None:
    from exemplar_svm.langchain import ExemplarSVMRetriever

    texts = ["one", "two", "three"]
    for options, match in (
        ({"k": True}, "k must be a whole number"),
        ({"k": 0}, "k must be at least 1"),
        ({"C": math.inf}, "C must be a finite number > 0"),
        ({"C": 1e15}, "C must be at most"),
        ({"negative_weight": 1e15}, "negative_weight must be at most"),
        ({"search_kwargs": {"prior": 1e39}}, "prior must be at most"),
    ):
        with pytest.raises(ValueError, match=match):  # before anything is embedded
            ExemplarSVMRetriever.from_texts(texts, HashEmbedder(), **options)
        with pytest.raises(ValueError, match=match):
            ExemplarSVMRetriever(
                embedding=HashEmbedder(),
                index=lc_retriever.index,
                documents=lc_retriever.documents,
                **options,
            )
    with pytest.raises(ValueError, match="k must be a whole number"):
        lc_retriever.invoke("seed document 1", k=True)
    with pytest.raises(TypeError, match="not one string"):
        lc_retriever.add_texts(["another"], ids="another")


def test_llama_index_refuses_bad_options_when_built(li_retriever: Any) -> None:
    from exemplar_svm.llama_index import ExemplarSVMRetriever

    nodes = li_retriever.nodes
    for options, match in (
        ({"C": math.inf}, "C must be a finite number > 0"),
        ({"negative_weight": 1e15}, "negative_weight must be at most"),
        ({"similarity_top_k": True}, "k must be a whole number"),
        ({"search_kwargs": {"rocchio": 1e155}}, "rocchio must be at most"),
    ):
        with pytest.raises(ValueError, match=match):
            ExemplarSVMRetriever(li_retriever.index, nodes, HashEmbedder(), **options)


# -- ties ------------------------------------------------------------------------------------


def test_byte_identical_documents_tie_in_row_order_on_any_thread_count() -> None:
    """Copies of a document (a repeated chunk) get exactly one score and rank in row order,
    on one and two BLAS threads, through search and search_batch: a BLAS product alone scores
    equal rows differently in the last bits, by where a thread's block starts."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(3)
    vectors = (
        rng.normal(size=(6000, 48)) + 2.0 * rng.normal(size=(30, 48))[rng.integers(30, size=6000)]
    )
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    originals = rng.choice(3000, 60, replace=False)
    copies = 3000 + rng.choice(3000, 60, replace=False)
    vectors[copies] = vectors[originals]
    index = ExemplarIndex(vectors)
    queries = vectors[originals[:4]] + 0.3 * rng.normal(size=(4, 48)).astype(np.float32)
    settings: list[dict[str, Any]] = [
        {},
        {"mode": "svm"},
        {"mode": "hybrid", "positives": [str(originals[5])]},
        {"mode": "knn"},
    ]
    for threads in (1, 2):
        with threadpool_limits(threads):
            for options in settings:
                answers = [index.search(query, 6000, **options) for query in queries]
                answers += index.search_batch(list(queries), 6000, **options)
                for hits in answers:
                    score = {hit.id: hit.score for hit in hits}
                    rank = {hit.id: place for place, hit in enumerate(hits)}
                    for first, second in zip(originals, copies, strict=True):
                        a, b = str(first), str(second)
                        if a in score and b in score:
                            assert score[a] == score[b], (options, a, b)
                            assert rank[a] < rank[b], (options, a, b)  # the lower row first
    index.add(vectors[originals[:2]], ids=["late-0", "late-1"])  # copies added later tie too
    hits = index.search(vectors[originals[0]], 5, mode="svm")
    score = {hit.id: hit.score for hit in hits}
    assert score[str(originals[0])] == score[str(copies[0])] == score["late-0"]
    assert [hit.id for hit in hits][:3] == sorted(
        [str(originals[0]), str(copies[0]), "late-0"], key=lambda item: index.ids.index(item)
    )


@pytest.mark.parametrize("scale", [1e31, 1e200])
def test_fit_refuses_values_its_float32_arithmetic_cannot_hold(scale: float) -> None:
    from exemplar_svm import fit

    rows = np.random.default_rng(0).normal(size=(50, 8))
    assert np.isfinite(fit(rows[0] * 1e29, rows[1:] * 1e29).coef).all()  # still solved
    with pytest.raises(ValueError, match=r"negatives has values up to .*rescale the vectors"):
        fit(rows[0], rows[1:] * scale)
    with pytest.raises(ValueError, match=r"positives has values up to .*rescale the vectors"):
        fit(rows[0] * scale, rows[1:])


# -- a store server that hangs, dies and comes back -----------------------------------------


@pytest.mark.slow
def test_chroma_server_stopped_killed_and_restarted_under_a_running_index(
    tmp_path: Path,
) -> None:
    """A stopped server (SIGSTOP: it accepts connections and never answers) raises StoreError
    after the timeout instead of blocking the search forever; a killed one raises StoreError
    at once; once it runs again, on the same data, the same search gives the same ranking."""
    import signal
    import time

    chromadb = pytest.importorskip("chromadb")
    from exemplar_svm import StoreIndex
    from exemplar_svm.stores import StoreError
    from exemplar_svm.stores.chroma import ChromaStore
    from tests.conftest import free_port, start_chroma, stop_chroma

    port = free_port()
    server = start_chroma(tmp_path, port)
    try:
        client = chromadb.HttpClient(host="127.0.0.1", port=port)
        collection = client.create_collection("docs", configuration={"hnsw": {"space": "cosine"}})
        vectors = hash_vectors([f"document {number}" for number in range(300)])
        collection.add(ids=[f"d{number}" for number in range(300)], embeddings=vectors)
        index = StoreIndex(ChromaStore(collection), background=100, timeout=2.0)
        query = vectors[7] + 0.5 * vectors[8]
        expected = [hit.id for hit in index.search(query, 5)]
        assert expected[0] in ("d7", "d8")

        server.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"did not answer .* within 2 s") as stopped:
            index.search(query, 5)
        assert time.monotonic() - started < 10
        assert "ChromaStore" in str(stopped.value)
        server.send_signal(signal.SIGCONT)
        assert [hit.id for hit in index.search(query, 5)] == expected

        server.kill()
        server.wait()
        with pytest.raises(StoreError, match="failed to answer") as killed:
            index.search(query, 5)
        assert killed.value.__cause__ is not None  # the client's own error

        server = start_chroma(tmp_path, port)  # the same data folder
        assert [hit.id for hit in index.search(query, 5)] == expected
    finally:
        stop_chroma(server)
