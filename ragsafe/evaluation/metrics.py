"""Retrieval and embedding metrics as pure functions over ranked id lists (tested by hand cases).

`ranked[i]` is the list of document ids returned for query i, best first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import spearmanr


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best columns per row, best first (ties broken by lower index)."""
    # a stable full sort: a partition picks arbitrary members of a tie that straddles the k-th place, and
    # BM25's scores tie often
    return np.argsort(-scores, axis=1, kind="stable")[:, : min(k, scores.shape[1])]


def hit_rate_at_k(ranked: Sequence[Sequence], gold: Sequence[set], k: int) -> float:
    """Share of queries with at least one of their own gold ids in the top k.

    For a single gold passage this is recall@k; for AdvBench-IR's gold harmful chunks it is the
    paper's "harmful top-k accuracy" (lower is safer).
    """
    if not ranked:
        return float("nan")
    return float(np.mean([bool(set(r[:k]) & g) for r, g in zip(ranked, gold, strict=True)]))


def any_hit_at_k(ranked: Sequence[Sequence], targets: set, k: int) -> float:
    """Share of queries whose top k holds any id of `targets` (any-harm@k with the harmful ids)."""
    if not ranked:
        return float("nan")
    return float(np.mean([bool(set(r[:k]) & targets) for r in ranked]))


def mrr(ranked: Sequence[Sequence], gold: Sequence[set]) -> float:
    out = []
    for r, g in zip(ranked, gold, strict=True):
        rank = next((i + 1 for i, d in enumerate(r) if d in g), None)
        out.append(1.0 / rank if rank else 0.0)
    return float(np.mean(out)) if out else float("nan")


def ndcg_at_k(ranked: Sequence[Sequence], qrels: Sequence[dict], k: int = 10) -> float:
    """Mean nDCG@k with graded relevance (gain = grade, log2 discount), as trec_eval computes it."""
    scores = []
    for r, rel in zip(ranked, qrels, strict=True):
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(r[:k]))
        ideal = sorted((g for g in rel.values() if g > 0), reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        scores.append(dcg / idcg if idcg > 0 else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (an all-zero row stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pair_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine of each row of `a` with the same row of `b`."""
    return (unit_rows(a) * unit_rows(b)).sum(axis=1)


def spearman(predicted: Sequence[float], gold: Sequence[float]) -> float:
    return float(spearmanr(predicted, gold).statistic)


def logistic_accuracy(
    train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray, test_y: Sequence[str], seed: int = 0
) -> float:
    """Accuracy of a logistic regression fitted on L2-normalised training embeddings (MTEB's protocol)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=1000, random_state=seed).fit(unit_rows(train_x), list(train_y))
    return float(np.mean(model.predict(unit_rows(test_x)) == np.asarray(list(test_y))))


# Two answers this close are the same answer (most often the backbone's stock refusal, 15 % of the
# shipped run's training targets): neither is a competitor of the other.
DUPLICATE_COS = 0.95


def own_answer_ranks(predicted: np.ndarray, targets: np.ndarray, duplicate_cos: float = DUPLICATE_COS) -> np.ndarray:
    """Rank (1 = first) of each row's own target among all targets; row i of both belongs to one query.

    A target that duplicates the row's own (cosine above `duplicate_cos`) is not counted. Any other
    target that scores level with the own one counts against it, so a collapsed embedding, level
    with everything, ranks last instead of first; so does a row whose scores are not finite.
    """
    p, t = unit_rows(predicted), unit_rows(targets)
    scores = p @ t.T
    with np.errstate(invalid="ignore"):  # NaN compares False both ways: "not below" puts it ahead
        ahead = ~(scores < np.diag(scores)[:, None]) & ~((t @ t.T) > duplicate_cos)
    np.fill_diagonal(ahead, False)
    return 1 + ahead.sum(axis=1)
