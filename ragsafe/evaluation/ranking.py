"""Rank a corpus for a set of query vectors: the step every retrieval benchmark shares."""

from __future__ import annotations

from ragsafe.embedders.base import Vectors, scores
from ragsafe.evaluation.metrics import top_k


def rank(queries: Vectors, documents: Vectors, ids: list[str], k: int = 20, chunk: int = 256) -> list[list[str]]:
    """Top-k document ids per query, best first (scored in chunks to bound memory)."""
    out: list[list[str]] = []
    for start in range(0, queries.shape[0], chunk):
        best = top_k(scores(queries[start : start + chunk], documents), k)
        out.extend([ids[j] for j in row] for row in best)
    return out
