"""Encoding speed per embedder: query latency at batch 1 and documents/s at batch 32.

Also the FLOP bound of the gen query pass: 2 x (non-embedding backbone parameters) x tokens, divided
by the matmul throughput measured on this machine, i.e. the fastest a dense forward could be here.

    python benchmarks/encode_speed.py [--backbone default] [--data-dir ../shared/data]
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
import typer

from ragsafe.datadir import data_file
from ragsafe.embedders.base import Embedder
from ragsafe.embedders.bm25 import BM25Embedder
from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.hyde import HyDEEmbedder
from ragsafe.embedders.llm_mean import LLMMeanEmbedder
from ragsafe.embedders.teacher import TeacherEmbedder
from ragsafe.evaluation.flops import matmul_gflops, non_embedding_params
from ragsafe.evaluation.results import write_results
from ragsafe.model.backbone import load_backbone
from ragsafe.model.chat import GenerationSettings

RESULTS = Path(__file__).parent / "results"


def wiki_texts(data_dir: str | None, count: int, words: int) -> list[str]:
    """`count` distinct texts of exactly `words` words (the first words of WikiText-2 passages)."""
    out = []
    with data_file(data_dir, "wiki_benign/wikitext2_test_passages_100w.jsonl").open() as f:
        for line in f:
            tokens = json.loads(line)["text"].split()
            if len(tokens) >= words:
                out.append(" ".join(tokens[:words]))
            if len(out) == count:
                break
    return out


def time_queries(embedder: Embedder, queries: list[str]) -> list[float]:
    embedder.encode_queries(queries[:1])  # warm-up
    times = []
    for query in queries:
        start = time.perf_counter()
        embedder.encode_queries([query])
        times.append(time.perf_counter() - start)
    return times


def main(
    backbone: str = "default",
    data_dir: str | None = None,
    queries: int = 20,
    hyde_queries: int = 5,
    docs: int = 64,
    threads: int = 2,
    only: str = "",
    out: Path = RESULTS,
) -> None:
    torch.set_num_threads(threads)
    bb = load_backbone(backbone)
    teacher = TeacherEmbedder()
    gen = GenEmbedder.load(backbone=bb)
    embedders: list[Embedder] = [
        BM25Embedder(),
        teacher,
        LLMMeanEmbedder(bb, batch_size=32),
        gen,
        GenEmbedder(gen.encoder, gen.query_instruction, gen.document_instruction, documents="teacher", teacher=teacher),
        HyDEEmbedder(bb, teacher, settings=GenerationSettings(max_new_tokens=64)),
    ]
    if only:
        embedders = [e for e in embedders if e.name in only.split(",")]
    query_texts = wiki_texts(data_dir, queries + 1, 30)
    doc_texts = wiki_texts(data_dir, docs + queries + 1, 100)[queries + 1 :]
    rows = []
    for emb in embedders:
        if isinstance(emb, GenEmbedder):
            emb.batch_size = 32
        emb.encode_documents(doc_texts[:2])
        start = time.perf_counter()
        emb.encode_documents(doc_texts)  # BM25 re-fits here: part of its indexing cost
        docs_per_s = len(doc_texts) / (time.perf_counter() - start)
        if isinstance(emb, GenEmbedder):
            emb.batch_size = 1
        times = time_queries(emb, query_texts[: (hyde_queries if emb.name == "hyde" else queries)])
        rows.append(
            {
                "embedder": emb.name,
                "query p50 ms (bs 1)": 1000 * statistics.median(times),
                "query p95 ms (bs 1)": 1000 * statistics.quantiles(times, n=20)[-1] if len(times) > 2 else None,
                "docs/s (bs 32)": docs_per_s,
            }
        )
        typer.echo(rows[-1])

    gflops = matmul_gflops(bb.dtype, bb.hidden_size)
    params = non_embedding_params(bb)
    instr = f"{gen.query_instruction} " if gen.query_instruction else ""
    tokens = [len(bb.tokenizer(instr + q)["input_ids"]) + gen.encoder.config.num_tokens for q in query_texts]
    mean_tokens = statistics.mean(tokens)
    bound_ms = 1000 * 2 * params * mean_tokens / (gflops * 1e9)
    meta = {
        "backbone": bb.name,
        "backbone dtype": str(bb.dtype),
        "queries": "30-word texts (first words of WikiText-2 passages), batch 1",
        "documents": f"{len(doc_texts)} WikiText-2 passages of 100 words, batch 32",
        "gen query tokens (instruction + text + special), mean": round(mean_tokens, 1),
        "backbone non-embedding parameters": params,
        "measured matmul throughput (GFLOPS, 1024xH @ Hx4H)": round(gflops, 1),
        "FLOP bound of one gen query pass (ms)": round(bound_ms, 1),
        "threads": threads,
    }
    notes = (
        "FLOP bound = 2 x non-embedding parameters x query tokens / measured matmul throughput: "
        "the best a dense forward pass can do on this machine."
    )
    write_results(out, "encode_speed", rows, meta, notes)
    typer.echo(json.dumps(meta, indent=2))


if __name__ == "__main__":
    typer.run(main)
