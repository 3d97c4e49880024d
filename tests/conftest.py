"""Shared fixtures: the real local embedding model (offline) and the shared datasets."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Prove the local model loads without the network: any hub access fails instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Torch's OpenMP threads spin while they wait; on two cores with anything else busy (numpy's
# BLAS threads after a solve, another process) one short embedding then takes 0.3 s instead of
# 0.04 s. Set before torch is first imported (by the local model), here and in subprocesses.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("EXEMPLAR_SVM_DATASETS", ROOT.parent / "shared" / "datasets"))
EMBEDDINGS = "embeddings/all-MiniLM-L6-v2"
README = ROOT / "README.md"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Any:
    """A test left in the README's command (marked neither ``slow`` nor ``dev``) fails, rather
    than skips, when it needs a package the ``[test]`` extra does not install: the fast tests
    then never pass by skipping, and every other test runs in CI."""
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or item.get_closest_marker("slow") or item.get_closest_marker("dev"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
    if reason.removeprefix("Skipped: ").startswith("could not import"):  # importorskip's words
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} needs a package the [test] extra does not install ({reason}): mark "
            "it @pytest.mark.dev (CI runs it after installing [dev]) or add the package to [test]"
        )


def dataset_path(name: str) -> Path:
    """The folder of a shared dataset, or skip the test with a clear message."""
    path = DATASETS / name
    if not (path / EMBEDDINGS / "corpus.npy").is_file():
        pytest.skip(f"shared dataset {name!r} not found under {DATASETS}")
    return path


def corpus_embeddings(name: str) -> np.ndarray:
    return np.load(dataset_path(name) / EMBEDDINGS / "corpus.npy", allow_pickle=False)


def query_embeddings(name: str) -> np.ndarray:
    return np.load(dataset_path(name) / EMBEDDINGS / "queries.npy", allow_pickle=False)


def corpus_texts(name: str, limit: int | None = None) -> list[dict[str, str]]:
    rows = []
    with open(dataset_path(name) / "corpus.jsonl", encoding="utf-8") as file:
        for line in file:
            rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def python_block(heading: str) -> str:
    """The first ```python block under the README heading ``heading``."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)
    assert len(section) == 2, f"README has no heading {heading!r}"
    match = re.search(r"```python\n(.*?)```", section[1], re.DOTALL)
    assert match, f"README section {heading!r} has no python example"
    return match.group(1)


@pytest.fixture(scope="session")
def local_embedder():
    """The real all-MiniLM-L6-v2, loaded once per test session from the bundled package."""
    pytest.importorskip("sentence_transformers")
    from exemplar_svm import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(show_progress=False)
    embedder.model  # noqa: B018 - load now, so a failure points here
    return embedder


# -- vector database engines, shared by the tests that need them ---------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_chroma(folder: Path, port: int):
    """A ``chroma run`` server (from this venv) on ``port`` of loopback, storing in ``folder``,
    once it answers its heartbeat; its output goes to ``folder / "server.log"``."""
    import subprocess
    import sys
    import time
    import urllib.request

    executable = Path(sys.executable).parent / "chroma"
    if not executable.is_file():
        pytest.skip(f"no chroma executable next to {sys.executable}")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "server.log", "ab") as log:  # the server keeps its own descriptor
        command = [str(executable), "run", "--path", str(folder / "data"), "--host", "127.0.0.1"]
        server = subprocess.Popen(
            [*command, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1):
                return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                stop_chroma(server)
                pytest.fail(
                    "chroma run did not start:\n"
                    + (folder / "server.log").read_text(errors="replace")[-2000:]
                )
            time.sleep(0.2)


def stop_chroma(server) -> None:
    import signal
    import subprocess

    server.send_signal(signal.SIGCONT)  # a stopped server cannot handle SIGTERM
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@pytest.fixture(scope="session")
def chroma_client(tmp_path_factory: pytest.TempPathFactory):
    """A ``chroma run`` server on a free loopback port for the session, and an HTTP client to
    it."""
    chromadb = pytest.importorskip("chromadb")
    port = free_port()
    server = start_chroma(tmp_path_factory.mktemp("chroma"), port)
    try:
        yield chromadb.HttpClient(host="127.0.0.1", port=port)
    finally:
        stop_chroma(server)


@pytest.fixture
def milvus_uri(tmp_path: Path) -> str:
    """A Milvus Lite database file (the same client API as a Milvus cluster), one per test:
    a Milvus Lite daemon left idle for about a minute stops answering while pymilvus still holds
    its connection (milvus-lite issue #334), so a database shared by tests minutes apart fails
    the later ones with "Fail connecting to server"."""
    pytest.importorskip("milvus_lite")
    return str(tmp_path / "stores.db")


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory):
    """A PostgreSQL server with pgvector (the ``pgserver`` package: no root, no network) on a
    temporary data directory for the session, as a SQLAlchemy URL (psycopg 3)."""
    pgserver = pytest.importorskip("pgserver")
    pytest.importorskip("pgvector")
    server = pgserver.get_server(tmp_path_factory.mktemp("postgres"), cleanup_mode="stop")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    server.cleanup()
