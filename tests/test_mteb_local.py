"""The mteb adapter of benchmarks/mteb_local.py on a tiny in-memory STS task (mteb is a dev dependency)."""

from __future__ import annotations

import pytest

PAIRS = [
    ("A man is playing a guitar.", "A person plays the guitar.", 4.8),
    ("The cat sleeps on the sofa.", "A cat is sleeping on a couch.", 4.2),
    ("Paris is the capital of France.", "France's capital city is Paris.", 4.9),
    ("The stock market fell sharply today.", "A child is eating an apple.", 0.2),
    ("She is baking bread in the kitchen.", "Someone is cooking in a kitchen.", 2.6),
]


def test_mteb_score_matches_our_spearman_on_the_same_vectors(teacher, benchmark_script) -> None:
    bench = benchmark_script("mteb_local")

    class TinySTS(bench.LocalSTSTask):
        metadata = bench.sts_metadata("RagsafeTinySTS", "Five hand-written pairs for a unit test.", "in memory")

    s1, s2, gold = zip(*PAIRS, strict=True)
    task = TinySTS(s1, s2, gold, min_score=0, max_score=5)
    row = bench.evaluate_sts(teacher, task)

    assert row["embedder"] == "teacher" and row["dim"] == teacher.dim
    assert row["mteb main score (cosine_spearman)"] == pytest.approx(row["ragsafe spearman"], abs=1e-6)
    # The teacher ranks these obvious pairs right: a wiring bug (swapped or shuffled sides) would not.
    assert row["ragsafe spearman"] > 0.5


def test_sparse_embedders_are_refused(benchmark_script) -> None:
    bench = benchmark_script("mteb_local")
    from ragsafe.embedders.bm25 import BM25Embedder

    with pytest.raises(ValueError, match="sparse"):
        bench.RagsafeEncoder(BM25Embedder())
