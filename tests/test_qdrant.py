"""Hybrid search in a real vector database: qdrant-client in local mode indexes ovembed's dense, sparse and
multi-vectors of one corpus (bge-m3's three outputs, from one request per text list) and finds, for each query,
the documents FlagEmbedding's own scores rank first.

Qdrant stores the sparse vectors as `{indices, values}` (dot product, as bge-m3's lexical score) and the token
vectors as a multi-vector with MAX_SIM (FlagEmbedding's colbert_score divided by the query's vector count,
which does not change the order).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from starlette.testclient import TestClient

from tests.conftest import serving, store_models
from tests.test_convert import FIXTURES

M3 = FIXTURES / "xlm-roberta-m3"
TEXTS: list[str] = json.loads((M3 / "texts.json").read_text(encoding="utf-8"))
QUERIES: list[str] = json.loads((M3 / "queries.json").read_text(encoding="utf-8"))


def _embed(client: TestClient, texts: list[str]) -> dict[str, Any]:
    body = {"model": "m3", "input": texts, "sparse": True, "multivector": True}
    response = client.post("/api/embed", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[QdrantClient, dict[str, Any]]]:
    """The corpus indexed in Qdrant with ovembed's vectors (fp32 weights); the queries' outputs beside it."""
    root = tmp_path_factory.mktemp("qdrant")
    store_models(root, {"m3": M3}, weights="fp32")
    with serving(root) as client:
        documents, queries = _embed(client, TEXTS), _embed(client, QUERIES)
    qdrant = QdrantClient(":memory:")
    width = len(documents["embeddings"][0])
    qdrant.create_collection(
        "corpus",
        vectors_config={
            "dense": models.VectorParams(size=width, distance=models.Distance.COSINE),
            "colbert": models.VectorParams(
                size=len(documents["multivector_embeddings"][0][0]),
                distance=models.Distance.DOT,
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            ),
        },
        sparse_vectors_config={"lexical": models.SparseVectorParams()},
    )
    qdrant.upsert(
        "corpus",
        [
            models.PointStruct(
                id=index,
                vector={
                    "dense": dense,
                    "lexical": models.SparseVector(indices=sparse["indices"], values=sparse["values"]),
                    "colbert": tokens,
                },
                payload={"text": TEXTS[index]},
            )
            for index, (dense, sparse, tokens) in enumerate(
                zip(
                    documents["embeddings"],
                    documents["sparse_embeddings"],
                    documents["multivector_embeddings"],
                    strict=True,
                )
            )
        ],
    )
    yield qdrant, queries
    qdrant.close()


def _found(qdrant: QdrantClient, using: str, query: Any) -> list[int]:
    points = qdrant.query_points("corpus", query=query, using=using, limit=len(TEXTS)).points
    return [int(point.id) for point in points]


def _ranked(scores: np.ndarray) -> list[int]:
    """Documents best first, those scoring nothing left out (a sparse search finds no document without a shared
    token)."""
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order if scores[i] > 0]


@pytest.mark.parametrize("query", range(len(QUERIES)))
def test_qdrant_ranks_by_sparse_and_multi_vectors_as_flagembedding_scores(
    collection: tuple[QdrantClient, dict[str, Any]], query: int
) -> None:
    qdrant, queries = collection
    scores = np.load(M3 / "scores.npz")
    sparse = queries["sparse_embeddings"][query]
    lexical = _found(qdrant, "lexical", models.SparseVector(indices=sparse["indices"], values=sparse["values"]))
    assert lexical == _ranked(scores["lexical"][query])
    assert lexical, "every query shares a token with some document"
    assert _found(qdrant, "colbert", queries["multivector_embeddings"][query]) == _ranked(scores["maxsim"][query])
    expected_dense = np.load(M3 / "reference.npy") @ np.load(M3 / "query-dense.npy")[query]
    assert _found(qdrant, "dense", queries["embeddings"][query]) == _ranked(expected_dense + 1.0)  # cosines > -1


def test_a_hybrid_query_fuses_all_three_in_one_call(collection: tuple[QdrantClient, dict[str, Any]]) -> None:
    """Qdrant's own hybrid search (reciprocal rank fusion) over the three outputs in one call: the document it
    puts first for the first query ("why is the sky blue?") leads one of the three lists as the peers rank them."""
    qdrant, queries = collection
    sparse = queries["sparse_embeddings"][0]
    fused = qdrant.query_points(
        "corpus",
        prefetch=[
            models.Prefetch(query=queries["embeddings"][0], using="dense"),
            models.Prefetch(
                query=models.SparseVector(indices=sparse["indices"], values=sparse["values"]), using="lexical"
            ),
            models.Prefetch(query=queries["multivector_embeddings"][0], using="colbert"),
        ],
        query=models.FusionQuery(fusion=models.Fusion.RRF),
        limit=3,
    ).points
    scores = np.load(M3 / "scores.npz")
    dense = np.load(M3 / "reference.npy") @ np.load(M3 / "query-dense.npy")[0]
    leaders = {_ranked(scores["lexical"][0])[0], _ranked(scores["maxsim"][0])[0], _ranked(dense + 1.0)[0]}
    assert len(fused) == 3 and int(fused[0].id) in leaders
