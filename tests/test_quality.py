"""Retrieval quality that the defaults promise, measured on real embeddings.

The tables live in docs/quality.md (``exemplar-svm eval``); these tests pin the claims a user
relies on: counter-examples push down what resembles them and never lift what is unlike them,
and the default ranks better than kNN and the classic dense PRF on a shared set.
"""

from __future__ import annotations

import pytest

from exemplar_svm import ExemplarIndex
from exemplar_svm.evaluation import evaluate, load_dataset, prf_method
from tests.conftest import dataset_path

NOTES = {
    "kitten-food": ("Kittens need four small meals a day of wet kitten food.", "pets"),
    "cat-vet": ("Take your cat to the vet once a year for its vaccinations.", "pets"),
    "cat-teeth": ("Brush your cat's teeth weekly to prevent gum disease.", "pets"),
    "dog-walk": ("Dogs need a walk at least twice a day, whatever the weather.", "pets"),
    "dog-food": ("Feed an adult dog twice a day and keep fresh water out.", "pets"),
    "bread": ("Knead the dough for ten minutes, then let it rise for an hour.", "cooking"),
    "pasta": ("Cook pasta in plenty of salted boiling water.", "cooking"),
    "mars": ("Mars has two small moons, Phobos and Deimos.", "space"),
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["auto", "knn", "prf", "svm", "hybrid"])
def test_the_readme_counter_example_returns_pet_documents(local_embedder, mode: str) -> None:
    # The README's LangChain example: more like "cat-vet" and a text, unlike "dog-walk". It
    # used to return pasta (cosine -0.02 to the query): the counter-example outweighed the query.
    index = ExemplarIndex(
        local_embedder.embed_documents([text for text, _ in NOTES.values()]), ids=list(NOTES)
    )
    hits = index.search(
        local_embedder.embed_query("looking after a pet"),
        k=3,
        mode=mode,
        positives=["cat-vet", local_embedder.embed_query("Vaccinate your puppy.")],
        negatives=["dog-walk"],
    )
    assert [NOTES[hit.id][1] for hit in hits] == ["pets"] * 3, [hit.id for hit in hits]


@pytest.mark.parametrize("name", ["cranfield", "bbc-news"])
def test_negatives_alone_do_not_hurt(name: str) -> None:
    # Three random non-relevant documents as counter-examples and no positive: the default must
    # rank at least about as well as with the query alone (it ignores them with demote=0).
    dataset = load_dataset(dataset_path(name), n_queries=120)
    report = evaluate(
        dataset,
        {"query alone": {"demote": 0.0}, "default": {}},
        baseline="query alone",
        protocol="feedback",
        n_positives=0,
        n_negatives=3,
        show_progress=False,
    )
    for metric in ("nDCG@10", "MAP@100"):
        assert report.methods["default"].vs_baseline[metric].mean_difference >= -0.005, metric


def test_the_default_beats_knn_and_classic_dense_prf_on_cranfield() -> None:
    dataset = load_dataset(dataset_path("cranfield"))
    report = evaluate(
        dataset,
        {"knn": {"mode": "knn"}, "dense prf": prf_method(5, 1.0), "default": {}},
        split="test",
        show_progress=False,
    )
    means = {name: result.mean for name, result in report.methods.items()}
    for metric in ("nDCG@10", "MAP@100"):
        assert means["default"][metric] > means["knn"][metric] + 0.01, metric
        assert means["default"][metric] > means["dense prf"][metric], metric
