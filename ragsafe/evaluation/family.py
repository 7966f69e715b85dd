"""Score one embedder on one task of the reasoning and general families: retrieval (nDCG@10), STS
(Spearman of cosine) and classification (logistic-regression accuracy), with its timings.

Vectors go through the on-disk cache, so a rerun or a second embedder with the same document side
does not pay for the corpus pass again (the stored timings stay those of the real pass).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ragsafe.embedders.base import Embedder
from ragsafe.embedders.hyde import HyDEEmbedder
from ragsafe.evaluation.doc_cache import encode_documents_cached, encode_queries_cached
from ragsafe.evaluation.metrics import logistic_accuracy, ndcg_at_k, pair_cosines, spearman
from ragsafe.evaluation.ranking import rank
from ragsafe.evaluation.tasks import ClassificationTask, PairTask, RetrievalTask


@contextmanager
def query_instruction(emb: Embedder, instruction: str | None) -> Iterator[None]:
    """Put a task's instruction in front of the gen encoder's queries for the duration of one task.

    Only embedders that take one (gen) are touched: the cache identity of their query side includes
    the instruction, so cached vectors never mix instructions.
    """
    if instruction is None or not hasattr(emb, "query_instruction") or isinstance(emb, HyDEEmbedder):
        yield
        return
    before = emb.query_instruction
    emb.query_instruction = instruction
    try:
        yield
    finally:
        emb.query_instruction = before


def score_retrieval(
    emb: Embedder, task: RetrievalTask, cache: Path | None, max_queries: int | None = None, k: int = 10
) -> dict:
    """nDCG@k over the task's queries (the first `max_queries` for slow embedders such as HyDE)."""
    docs, doc_seconds = encode_documents_cached(emb, task.corpus.texts, cache)
    n = min(len(task.queries), max_queries or len(task.queries))
    queries, query_seconds = encode_queries_cached(emb, task.queries[:n], cache)
    ranked = rank(queries, docs, task.corpus.ids, k)
    return {
        "metric": ndcg_at_k(ranked, task.qrels[:n], k),
        "queries": n,
        "ms/query": 1000 * query_seconds / max(1, n),
        "ms/doc": 1000 * doc_seconds / max(1, len(task.corpus.texts)),
    }


def score_sts(emb: Embedder, task: PairTask, cache: Path | None) -> dict:
    """Spearman of the pair cosines against the gold scores; both sentences are embedded as queries
    (a symmetric task: neither side is a document)."""
    vectors, seconds = encode_queries_cached(emb, task.first + task.second, cache)
    return {
        "metric": spearman(pair_cosines(vectors[: len(task.first)], vectors[len(task.first) :]), task.scores),
        "queries": len(task.scores),
        "ms/query": 1000 * seconds / max(1, 2 * len(task.scores)),
        "ms/doc": None,
    }


def score_classification(emb: Embedder, task: ClassificationTask, cache: Path | None) -> dict:
    train, train_s = encode_queries_cached(emb, task.train_texts, cache)
    test, test_s = encode_queries_cached(emb, task.test_texts, cache)
    return {
        "metric": logistic_accuracy(train, task.train_labels, test, task.test_labels),
        "queries": len(task.test_texts),
        "ms/query": 1000 * (train_s + test_s) / max(1, len(task.train_texts) + len(task.test_texts)),
        "ms/doc": None,
    }
