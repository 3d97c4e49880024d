"""A fast, deterministic bag-of-words embedder for tests that need no real model."""

from __future__ import annotations

import hashlib
import re

import numpy as np
from numpy.typing import NDArray

from exemplar_svm.embedders import BaseEmbedder

DIM = 64


def bag_of_words(text: str, dim: int = DIM) -> NDArray[np.float32]:
    """Each word (lower-cased) adds 1 to a dimension chosen by its hash; never all zero."""
    vector = np.full(dim, 0.01, dtype=np.float32)
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vector[int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little") % dim] += 1.0
    return vector


class WordEmbedder(BaseEmbedder):
    """An exemplar_svm Embedder over :func:`bag_of_words`, counting the texts it embeds."""

    def __init__(self) -> None:
        super().__init__(show_progress=False)
        self.documents = 0
        self.queries = 0

    def _embed_batch(self, texts: list[str], *, query: bool) -> NDArray[np.float32]:
        if query:
            self.queries += len(texts)
        else:
            self.documents += len(texts)
        return np.vstack([bag_of_words(text) for text in texts])
