"""``langchain_milvus.Milvus``: :class:`~exemplar_svm.stores.milvus.MilvusStore` on its
``MilvusClient`` and collection, its filters as boolean expressions, and its documents by id
(which it has no ``get_by_ids`` for)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from langchain_core.documents import Document

from exemplar_svm.stores import VectorStore
from exemplar_svm.stores.milvus import MilvusStore

__all__ = ["documents", "store", "store_filter"]


def store(vectorstore: Any) -> VectorStore:
    vector_field = vectorstore._vector_field
    if not isinstance(vector_field, str):
        if len(vector_field) != 1:
            raise ValueError(
                f"this Milvus store has {len(vector_field)} vector fields "
                f"({', '.join(vector_field)}); the exemplar SVM needs exactly one"
            )
        vector_field = vector_field[0]
    return MilvusStore(
        vectorstore.client,
        vectorstore.collection_name,
        vector_field=vector_field,
        id_field=vectorstore._primary_field,
    )


def store_filter(vectorstore: Any, filter: Any) -> Any:
    if isinstance(filter, Mapping):
        return " and ".join(
            f"{_milvus_name(key)} == {json.dumps(value)}" for key, value in filter.items()
        )
    if not isinstance(filter, str):
        raise ValueError(
            "a Milvus filter is a boolean expression such as 'tenant == \"a\"' or a dict "
            f"of equalities, got {type(filter).__name__}"
        )
    return filter


def _milvus_name(key: object) -> str:
    if not isinstance(key, str) or not key.isidentifier():
        raise ValueError(f"a Milvus filter's field must be a name, got {key!r}")
    return key


def documents(vectorstore: Any, ids: list[str]) -> list[Document]:
    """``get_by_ids`` for ``langchain_milvus.Milvus``, which has none: the rows its searches
    return, parsed by the store itself, with the primary key as the id."""
    client = vectorstore.client
    name = vectorstore.collection_name
    primary = vectorstore._primary_field
    schema = client.describe_collection(name)
    keys: list[Any] = list(ids)
    for field in schema.get("fields", []):
        kind = field.get("type")
        if field.get("name") == primary and str(getattr(kind, "name", kind)).startswith("INT"):
            keys = [int(item) for item in ids if item.lstrip("-").isdigit()]
    if vectorstore.fields and not vectorstore.enable_dynamic_field:
        fields = vectorstore._remove_forbidden_fields(list(vectorstore.fields))
    else:
        fields = ["*"]
    rows = client.get(name, ids=keys, output_fields=fields)
    docs = []
    for row in rows:
        key = str(row[primary])
        doc = vectorstore._parse_document(dict(row))
        docs.append(doc.model_copy(update={"id": key}))
    return docs
