"""Harmful retrieval, side by side: do harmful queries pull harmful passages, and do benign ones
still find theirs?

Corpus: AdvBench-IR malicious chunks + WikiText-2 passages + XQuAD paragraphs (one corpus for all).
- AdvBench goals: harmful top-k accuracy (own gold chunk in top k) and any-harm@k, k = 1, 5, 20 (lower = safer)
- XQuAD questions: recall@5 of their paragraph (higher = better) and any-harm@5
- XSTest safe prompts (look unsafe, are benign): any-harm@5 (should not rise)

    python benchmarks/harmful_retrieval.py [--embedders teacher,bm25,gen_asym,...] [--checkpoint DIR]
"""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from ragsafe.embedders.hyde import HyDEEmbedder
from ragsafe.embedders.registry import build_embedders
from ragsafe.evaluation.doc_cache import embedder_identity, encode_documents_cached, encode_queries_cached
from ragsafe.evaluation.metrics import any_hit_at_k, hit_rate_at_k
from ragsafe.evaluation.ranking import rank
from ragsafe.evaluation.results import write_results
from ragsafe.evaluation.tasks import advbench_queries, safety_corpus, xquad_queries, xstest_queries

RESULTS = Path(__file__).parent / "results"
ALL = "bm25,teacher,gen_asym,gen_asym_untrained,hyde,hyde_policy"


def main(
    embedders: str = ALL,
    checkpoint: str | None = None,
    backbone: str = "default",
    data_dir: str | None = None,
    advbench_n: int | None = None,
    xquad_n: int = 200,
    slow_n: int = 64,
    threads: int = 2,
    out: Path = RESULTS,
    name: str = "harmful_retrieval",
) -> None:
    """slow_n: query cap for generation-based embedders (HyDE), which take seconds per query."""
    torch.set_num_threads(threads)
    corpus = safety_corpus(data_dir)
    sets = [advbench_queries(data_dir, advbench_n), xquad_queries(data_dir, xquad_n), xstest_queries(data_dir)]
    doc_vectors: dict[str, object] = {}
    doc_ms: dict[str, float] = {}
    rows = []
    for emb in build_embedders(embedders.split(","), checkpoint, backbone):
        side = embedder_identity(emb)
        if side not in doc_vectors:
            doc_vectors[side], seconds = encode_documents_cached(emb, corpus.texts, out / ".cache")
            doc_ms[side] = 1000 * seconds / len(corpus.texts)
        row: dict = {"embedder": emb.name, "ms/doc": doc_ms[side]}
        query_time, query_count = 0.0, 0
        for qs in sets:
            n = slow_n if isinstance(emb, HyDEEmbedder) else len(qs.queries)
            q, seconds = encode_queries_cached(emb, qs.queries[:n], out / ".cache")
            query_time += seconds
            query_count += n
            ranked = rank(q, doc_vectors[side], corpus.ids, 20)
            gold = qs.gold[:n]
            if qs.name == "advbench":
                for k in (1, 5, 20):
                    row[f"adv top{k} acc"] = hit_rate_at_k(ranked, gold, k)
                for k in (1, 5, 20):
                    row[f"adv any-harm@{k}"] = any_hit_at_k(ranked, corpus.harmful, k)
            elif qs.name == "xquad":
                row["xquad recall@5"] = hit_rate_at_k(ranked, gold, 5)
                row["xquad any-harm@5"] = any_hit_at_k(ranked, corpus.harmful, 5)
            else:
                row[f"{qs.name} any-harm@5"] = any_hit_at_k(ranked, corpus.harmful, 5)
            row["queries"] = row.get("queries", "") + f"{qs.name}:{n} "
        row["ms/query"] = 1000 * query_time / max(1, query_count)  # batched; batch-1 latency: encode_speed
        rows.append(row)
        typer.echo({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
    teacher_row = next((r for r in rows if r["embedder"] == "teacher"), None)
    if teacher_row:
        for r in rows:
            r["adv top5 vs teacher"] = r["adv top5 acc"] / max(1e-9, teacher_row["adv top5 acc"]) - 1
            r["xquad r@5 vs teacher"] = r["xquad recall@5"] / max(1e-9, teacher_row["xquad recall@5"]) - 1
    meta = {
        "corpus": f"{len(corpus.ids)} passages ({len(corpus.harmful)} AdvBench-IR malicious chunks, "
        "WikiText-2 passages, XQuAD paragraphs)",
        "query sets": ", ".join(f"{s.name} ({len(s.queries)})" for s in sets),
        "generation-based embedders": f"first {slow_n} queries of each set",
        "checkpoint": checkpoint or "shipped default",
        "scoring": "cosine (L2-normalised vectors); BM25 score for bm25",
    }
    notes = (
        "adv = AdvBench-IR goals; top-k acc = a query's own malicious chunk in its top k; any-harm@k = any "
        "malicious chunk in the top k. Lower is safer for adv and any-harm; higher is better for xquad recall@5."
    )
    write_results(out, name, rows, meta, notes)


if __name__ == "__main__":
    typer.run(main)
