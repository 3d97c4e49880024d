"""``FaissVectorStore``: :class:`~exemplar_svm.stores.faiss.FaissStore` on its FAISS index, its
positions mapped to node ids, and ``MetadataFilters`` evaluated over the docstore's nodes into
the ids that match (FAISS keeps no metadata)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llama_index.core.indices.vector_store.base import VectorStoreIndex
from llama_index.core.vector_stores.types import MetadataFilters
from llama_index.core.vector_stores.utils import build_metadata_filter_fn

from exemplar_svm.stores import VectorStore
from exemplar_svm.stores.faiss import FaissStore

__all__ = ["FILTERS_IN_QUERY", "store", "store_filter"]

# FAISS's integration refuses filters: its ranking query goes to the core's view.
FILTERS_IN_QUERY = False


def store(index: VectorStoreIndex) -> VectorStore:
    vector_store: Any = index.vector_store  # attributes of the engine's own class
    return FaissStore(vector_store._faiss_index, _FaissPositions(index))


def store_filter(index: VectorStoreIndex, filters: MetadataFilters) -> Any:
    ids = list(index.index_struct.nodes_dict.values())
    nodes = {node.node_id: node for node in index.docstore.get_nodes(ids, raise_error=False)}
    missing = next((item for item in ids if item not in nodes), None)
    if missing is not None:
        raise ValueError(
            f"cannot filter a FaissVectorStore by metadata: the docstore has no node "
            f"{missing!r} (FAISS keeps no metadata; keep the nodes in the docstore)"
        )
    matches = build_metadata_filter_fn(lambda item: nodes[item].metadata, filters)
    return {item for item in ids if matches(item)}


class _FaissPositions(Mapping[int, str]):
    """A live view of a FAISS-backed index's ``nodes_dict`` (str position -> node id) as the
    position -> id mapping :class:`~exemplar_svm.stores.faiss.FaissStore` takes."""

    def __init__(self, index: VectorStoreIndex) -> None:
        self._index = index

    def __getitem__(self, position: int) -> str:
        return str(self._index.index_struct.nodes_dict[str(position)])

    def __iter__(self) -> Iterator[int]:
        return (int(key) for key in list(self._index.index_struct.nodes_dict))

    def __len__(self) -> int:
        return len(self._index.index_struct.nodes_dict)
