"""Medical retrieval: MedQuAD questions must find their own answer among 2,000 answers.

Compares the teacher, BM25, the default gen checkpoint and a domain checkpoint (trained with
`ragsafe train --domain medical`) side by side; gen runs asymmetric (teacher-embedded answers).

    python benchmarks/medical.py --medical runs/medical/checkpoint
"""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.registry import build_embedders
from ragsafe.evaluation.doc_cache import encode_documents_cached, encode_queries_cached
from ragsafe.evaluation.metrics import hit_rate_at_k, mrr, ndcg_at_k
from ragsafe.evaluation.ranking import rank
from ragsafe.evaluation.results import write_results
from ragsafe.evaluation.tasks import medquad
from ragsafe.model.backbone import load_backbone

RESULTS = Path(__file__).parent / "results"


def main(medical: str | None = None, data_dir: str | None = None, queries: int = 300, threads: int = 2) -> None:
    torch.set_num_threads(threads)
    corpus, qs = medquad(data_dir, queries=queries)
    teacher, bm25 = build_embedders(["teacher", "bm25"])
    backbone = load_backbone("default")
    embedders = [bm25, teacher]
    for tokens, checkpoint in (("default", None), ("medical", medical)):
        if tokens == "medical" and not medical:
            continue
        for hybrid in (False, True):
            try:
                emb = GenEmbedder.load(checkpoint, backbone, "teacher", teacher, hybrid=hybrid)
            except ValueError as err:  # tokens calibrated before gen_hybrid existed
                typer.echo(f"skipped: {err}")
                continue
            emb.name = f"{emb.name} ({tokens} tokens)"
            embedders.append(emb)
    rows = []
    cache = RESULTS / ".cache"
    for emb in embedders:
        docs, _ = encode_documents_cached(emb, corpus.texts, cache)
        q, _ = encode_queries_cached(emb, qs.queries, cache)
        ranked = rank(q, docs, corpus.ids, 10)
        rows.append(
            {
                "embedder": emb.name,
                "recall@5": hit_rate_at_k(ranked, qs.gold, 5),
                "nDCG@10": ndcg_at_k(ranked, [{next(iter(g)): 1} for g in qs.gold], 10),
                "MRR@10": mrr(ranked, qs.gold),
            }
        )
        typer.echo(rows[-1])
    base = next(r for r in rows if r["embedder"] == "teacher")
    for r in rows:
        r["nDCG@10 vs teacher"] = r["nDCG@10"] / base["nDCG@10"] - 1
    meta = {
        "task": f"MedQuAD answered: {len(qs.queries)} questions, {len(corpus.ids)} answers (first 200 words)",
        "medical checkpoint": medical or "(none given)",
        "note": "training used MedQuAD's unanswered questions (other collections); their templated questions can "
        "repeat answered ones word for word, so the medical pack now drops every answered question",
    }
    write_results(RESULTS, "medical", rows, meta)


if __name__ == "__main__":
    typer.run(main)
