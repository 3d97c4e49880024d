"""A helper process for tests/test_persistence.py: writers that save in turns and get killed.

``python -m tests.crash_helper KIND REF_A REF_B TARGET`` loads two versions (an
``ExemplarIndex`` for KIND ``index``, a LlamaIndex retriever for ``llama``) from the folders
REF_A and REF_B, then answers commands on stdin, one per line:

``time``
    Save A then B into TARGET a few times; print the mean seconds one save takes.
``kill SECONDS``
    Fork a writer that saves A, B, A, B, ... into TARGET; after SECONDS kill it with SIGKILL
    (wherever it is in a save); print ``killed``.
``race``
    Fork such a writer and print ``racing``; on the next line (``stop``), kill it and print
    ``stopped``.

Forking a writer per trial keeps each trial cheap: the imports and the versions are loaded
once, and the test process loads TARGET after each kill.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from exemplar_svm.embedders import BaseEmbedder


class HashEmbedder(BaseEmbedder):
    """Unit vectors drawn from a generator seeded by the text (no model is loaded)."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__(show_progress=False)
        self.dim = dim

    def _embed_batch(self, texts: list[str], *, query: bool) -> NDArray[np.float32]:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).normal(size=self.dim)
            rows.append(vector / np.linalg.norm(vector))
        return np.asarray(rows, dtype=np.float32)


def _savers(kind: str, first: Path, second: Path) -> list[Callable[[Path], None]]:
    if kind == "index":
        from exemplar_svm import ExemplarIndex

        return [ExemplarIndex.load(first).save, ExemplarIndex.load(second).save]
    from exemplar_svm.llama_index import ExemplarSVMRetriever

    return [
        ExemplarSVMRetriever.from_persist_dir(folder, HashEmbedder()).persist
        for folder in (first, second)
    ]


def _writer(saves: list[Callable[[Path], None]], target: Path) -> int:
    pid = os.fork()
    if pid == 0:  # the writer: save in turns until killed
        try:
            for save in itertools.cycle(saves):
                save(target)
        finally:
            os._exit(1)
    return pid


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def main(kind: str, first: str, second: str, target: str) -> None:
    saves = _savers(kind, Path(first), Path(second))
    folder = Path(target)
    while line := sys.stdin.readline():
        command, *arguments = line.split()
        if command == "time":
            start = time.perf_counter()
            for _ in range(3):
                for save in saves:
                    save(folder)
            print(f"{(time.perf_counter() - start) / 6:.6f}", flush=True)
        elif command == "kill":
            pid = _writer(saves, folder)
            time.sleep(float(arguments[0]))
            _kill(pid)
            print("killed", flush=True)
        elif command == "race":
            pid = _writer(saves, folder)
            print("racing", flush=True)
            sys.stdin.readline()
            _kill(pid)
            print("stopped", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
