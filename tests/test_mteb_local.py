"""The mteb adapter of benchmarks/mteb_local.py on a tiny in-memory STS task (skipped without mteb)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("mteb")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "mteb_local.py"

PAIRS = [
    ("A man is playing a guitar.", "A person plays the guitar.", 4.8),
    ("The cat sleeps on the sofa.", "A cat is sleeping on a couch.", 4.2),
    ("Paris is the capital of France.", "France's capital city is Paris.", 4.9),
    ("The stock market fell sharply today.", "A child is eating an apple.", 0.2),
    ("She is baking bread in the kitchen.", "Someone is cooking in a kitchen.", 2.6),
]


def load_script() -> ModuleType:
    # benchmarks/ is a folder of scripts, not a package, so import the file by path.
    spec = importlib.util.spec_from_file_location("mteb_local", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mteb_score_matches_our_spearman_on_the_same_vectors(teacher) -> None:
    bench = load_script()

    class TinySTS(bench.LocalSTSTask):
        metadata = bench.sts_metadata("RagsafeTinySTS", "Five hand-written pairs for a unit test.", "in memory")

    s1, s2, gold = zip(*PAIRS, strict=True)
    task = TinySTS(s1, s2, gold, min_score=0, max_score=5)
    row = bench.evaluate_sts(teacher, task)

    assert row["embedder"] == "teacher" and row["dim"] == teacher.dim
    assert row["mteb main score (cosine_spearman)"] == pytest.approx(row["ragsafe spearman"], abs=1e-6)
    # The teacher ranks these obvious pairs right: a wiring bug (swapped or shuffled sides) would not.
    assert row["ragsafe spearman"] > 0.5


def test_sparse_embedders_are_refused() -> None:
    bench = load_script()
    from ragsafe.embedders.bm25 import BM25Embedder

    with pytest.raises(ValueError, match="sparse"):
        bench.RagsafeEncoder(BM25Embedder())
