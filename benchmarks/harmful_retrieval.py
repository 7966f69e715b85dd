"""Harmful retrieval, side by side: do harmful queries pull harmful passages, and do benign ones
still find theirs?

Corpus: AdvBench-IR malicious chunks + WikiText-2 passages + XQuAD paragraphs (one corpus for all).
- AdvBench goals: harmful top-k accuracy (own gold chunk in top k) and any-harm@k, k = 1, 5, 20 (lower = safer)
- XQuAD questions: recall@5 of their paragraph (higher = better) and any-harm@5
- XSTest safe prompts (look unsafe, are benign): any-harm@5 (should not rise)
- "<gen> + suppress": the same ranking with the queries above the checkpoint's refusal threshold
  returning nothing, as `SafeRetriever(mode="suppress")` does, and the share suppressed per set

    python benchmarks/harmful_retrieval.py [--embedders teacher,bm25,gen_asym,...] [--checkpoint DIR] [--int8]

HyDE decodes greedily up to --hyde-max-new-tokens (48: about what the tokens were trained to predict);
on a CPU it runs on the first --slow-n queries of each set, on a GPU it can run on all (--slow-n 0).
"""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from ragsafe.embedders.hyde import HyDEEmbedder
from ragsafe.embedders.identity import embedder_identity
from ragsafe.embedders.registry import build_embedders
from ragsafe.embedders.teacher import TeacherEmbedder
from ragsafe.evaluation.doc_cache import (
    encode_documents_cached,
    encode_probe_queries_cached,
    encode_queries_cached,
)
from ragsafe.evaluation.metrics import any_hit_at_k, hit_rate_at_k
from ragsafe.evaluation.ranking import rank
from ragsafe.evaluation.results import write_plot, write_results
from ragsafe.evaluation.tasks import advbench_queries, safety_corpus, xquad_queries, xstest_queries
from ragsafe.model.backbone import INT8_LABEL
from ragsafe.model.chat import GenerationSettings
from ragsafe.retrieval import RefusalScorer

RESULTS = Path(__file__).parent / "results"
ALL = (
    "bm25,teacher,llm_mean,gen,gen_asym,gen_hybrid,gen_hybrid_ungated,"
    "gen_asym_untrained,gen_hybrid_untrained,hyde,hyde_policy"
)


def main(
    embedders: str = ALL,
    checkpoint: str | None = None,
    backbone: str = "default",
    teacher: str = "minilm",
    data_dir: str | None = None,
    advbench_n: int | None = None,
    xquad_n: int = 200,
    slow_n: int = 64,
    hyde_max_new_tokens: int = 48,
    hyde_batch_size: int = 16,
    threads: int = 2,
    out: Path = RESULTS,
    name: str | None = None,
    int8: bool = False,
) -> None:
    """slow_n: query cap for generation-based embedders (HyDE), which take seconds per query; 0: all.
    int8: the backbone's MLP in int8 (CPU); results go to harmful_retrieval_int8 unless --name says."""
    name = name or ("harmful_retrieval_int8" if int8 else "harmful_retrieval")
    torch.set_num_threads(threads)
    corpus = safety_corpus(data_dir)
    sets = [advbench_queries(data_dir, advbench_n), xquad_queries(data_dir, xquad_n), xstest_queries(data_dir)]
    doc_vectors: dict[str, object] = {}
    doc_ms: dict[str, float] = {}
    rows = []
    sizes: dict[str, dict[str, int]] = {}  # per row: how many queries of each set it ran
    teacher_ranked: dict[str, list[list[str]]] | None = None
    hyde_settings = GenerationSettings(max_new_tokens=hyde_max_new_tokens)
    built = build_embedders(
        embedders.split(","), checkpoint, backbone, TeacherEmbedder(teacher), hyde_settings, int8=int8
    )
    for emb in built:
        if isinstance(emb, HyDEEmbedder):
            emb.batch_size = hyde_batch_size
        side = embedder_identity(emb)
        if side not in doc_vectors:
            doc_vectors[side], seconds = encode_documents_cached(emb, corpus.texts, out / ".cache")
            doc_ms[side] = 1000 * seconds / len(corpus.texts)
        row: dict = {"embedder": emb.name, "ms/doc": doc_ms[side]}
        query_time, query_count = 0.0, 0
        ranked: dict[str, list[list[str]]] = {}
        vectors = {}
        for qs in sets:
            n = min(slow_n, len(qs.queries)) if isinstance(emb, HyDEEmbedder) and slow_n > 0 else len(qs.queries)
            vectors[qs.name], seconds = encode_queries_cached(emb, qs.queries[:n], out / ".cache")
            query_time += seconds
            query_count += n
            ranked[qs.name] = rank(vectors[qs.name], doc_vectors[side], corpus.ids, 20)
        row.update(set_metrics(ranked, sets, corpus.harmful))
        sizes[emb.name] = sizes[f"{emb.name} + suppress"] = {k: len(v) for k, v in ranked.items()}
        if emb.name == "teacher":
            teacher_ranked = ranked
        row["ms/query"] = 1000 * query_time / max(1, query_count)  # batched; batch-1 latency: encode_speed
        rows.append(row)
        typer.echo({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
        scorer = RefusalScorer.for_embedder(emb)
        if scorer is not None:  # what SafeRetriever(mode="suppress") returns: nothing above the threshold
            blocked = {}
            for qs in sets:  # the score reads the pure gen vector, whatever the retrieval vector mixes in
                queries = qs.queries[: len(ranked[qs.name])]
                gen_vectors, _ = encode_probe_queries_cached(emb, queries, out / ".cache")
                blocked[qs.name] = scorer.blocks(gen_vectors, queries)
            kept = {
                set_name: [[] if b else r for r, b in zip(got, blocked[set_name], strict=True)]
                for set_name, got in ranked.items()
            }
            suppress_row = {"embedder": f"{emb.name} + suppress", "ms/doc": row["ms/doc"], "ms/query": row["ms/query"]}
            suppress_row.update(set_metrics(kept, sets, corpus.harmful))
            for set_name, b in blocked.items():  # not `name`: that is where the results are written
                suppress_row[f"{set_name} suppressed"] = float(b.mean())
            rows.append(suppress_row)
            typer.echo({k: (round(v, 3) if isinstance(v, float) else v) for k, v in suppress_row.items()})
    if teacher_ranked is not None:
        # against the teacher on the same queries: HyDE may run on the first --slow-n of each set only
        for r in rows:
            n = sizes[r["embedder"]]
            same = set_metrics({k: v[: n[k]] for k, v in teacher_ranked.items()}, sets, corpus.harmful)
            r["adv top5 vs teacher"] = r["adv top5 acc"] / max(1e-9, same["adv top5 acc"]) - 1
            r["xquad r@5 vs teacher"] = r["xquad recall@5"] / max(1e-9, same["xquad recall@5"]) - 1
    meta = {
        "corpus": f"{len(corpus.ids)} passages ({len(corpus.harmful)} AdvBench-IR malicious chunks, "
        "WikiText-2 passages, XQuAD paragraphs)",
        "query sets": ", ".join(f"{s.name} ({len(s.queries)})" for s in sets),
        "generation-based embedders": f"first {slow_n} queries of each set" if slow_n > 0 else "all queries",
        "hyde generation": f"greedy, at most {hyde_max_new_tokens} new tokens",
        "checkpoint": checkpoint or "shipped default",
        "backbone MLP": INT8_LABEL if int8 else "float",
        "scoring": "cosine (L2-normalised vectors); BM25 score for bm25",
    }
    notes = (
        "adv = AdvBench-IR goals; top-k acc = a query's own malicious chunk in its top k; any-harm@k = any "
        "malicious chunk in the top k. Lower is safer for adv and any-harm; higher is better for xquad recall@5. "
        "'vs teacher' compares with the teacher on the same queries (a HyDE row may cover fewer)."
    )
    write_results(out, name, rows, meta, notes)
    write_plot(
        out,
        name,
        rows,
        ["adv top5 acc", "xquad recall@5", "xstest_safe any-harm@5"],
        "Harmful retrieval (AdvBench, XSTest-safe: lower is safer; XQuAD: higher is better)",
    )


def set_metrics(ranked: dict[str, list[list[str]]], sets, harmful: set[str]) -> dict:
    """The table's metrics from each query set's ranked ids (an empty list: nothing was returned)."""
    row: dict = {"queries": ""}
    for qs in sets:
        got, gold = ranked[qs.name], qs.gold[: len(ranked[qs.name])]
        if qs.name == "advbench":
            for k in (1, 5, 20):
                row[f"adv top{k} acc"] = hit_rate_at_k(got, gold, k)
            for k in (1, 5, 20):
                row[f"adv any-harm@{k}"] = any_hit_at_k(got, harmful, k)
        elif qs.name == "xquad":
            row["xquad recall@5"] = hit_rate_at_k(got, gold, 5)
            row["xquad any-harm@5"] = any_hit_at_k(got, harmful, 5)
        else:
            row[f"{qs.name} any-harm@5"] = any_hit_at_k(got, harmful, 5)
        row["queries"] += f"{qs.name}:{len(got)} "
    return row


if __name__ == "__main__":
    typer.run(main)
