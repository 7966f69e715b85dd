"""Indexing throughput and search latency per embedder, on a corpus assembled from the data dir
(WikiText-2 passages, XQuAD paragraphs, MedQuAD answers), through the real Qdrant index.

LLM-side document encoders (gen, llm_mean) cost a backbone pass per passage; on a CPU they index
`--llm-passages` passages (default 200) and the rate is reported per passage, which is what scales.

    python benchmarks/index_speed.py [--passages 10000] [--embedders teacher,bm25,gen_asym,gen]
"""

from __future__ import annotations

import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import typer

from ragsafe.corpus import Passage, passage_id
from ragsafe.datadir import data_file
from ragsafe.embedders.registry import build_embedders
from ragsafe.evaluation.results import write_results
from ragsafe.index import Index, storage_name

RESULTS = Path(__file__).parent / "results"
LLM_DOCS = ("gen", "gen_untrained", "llm_mean")


def assemble(data_dir: str | None, n: int) -> list[Passage]:
    texts: list[tuple[str, str]] = []
    with data_file(data_dir, "wiki_benign/wikitext2_test_passages_100w.jsonl").open() as f:
        texts += [("wikitext", json.loads(line)["text"]) for line in f]
    for article in json.loads(data_file(data_dir, "wiki_benign/xquad.en.json").read_text())["data"]:
        texts += [("xquad", p["context"]) for p in article["paragraphs"]]
    with gzip.open(data_file(data_dir, "medical/medquad/medquad_answered.jsonl.gz"), "rt") as f:
        for line in f:
            answer = " ".join(json.loads(line).get("answer", "").split()[:150])
            if answer:
                texts.append(("medquad", answer))
            if len(texts) >= n:
                break
    return [Passage(passage_id(src, t), t, src) for src, t in texts[:n]]


def main(
    passages: int = 10_000,
    llm_passages: int = 200,
    embedders: str = "bm25,teacher,gen_asym,gen",
    queries: int = 20,
    data_dir: str | None = None,
    threads: int = 2,
) -> None:
    torch.set_num_threads(threads)
    corpus = assemble(data_dir, passages)
    probe = [p.text.split(".")[0][:200] for p in corpus[:: max(1, len(corpus) // queries)]][:queries]
    rows = []
    for emb in build_embedders(embedders.split(",")):
        docs = corpus[:llm_passages] if emb.name in LLM_DOCS else corpus
        with tempfile.TemporaryDirectory() as folder, Index("speed", path=folder) as idx:
            start = time.perf_counter()
            idx.add(docs, [emb], batch_size=64)
            index_s = time.perf_counter() - start
            times = []
            for q in probe:
                start = time.perf_counter()
                vector = emb.encode_queries([q])[0]
                idx.search(vector, storage_name(emb), 10)
                times.append(time.perf_counter() - start)
        rows.append(
            {
                "embedder": emb.name,
                "passages indexed": len(docs),
                "passages/s": len(docs) / index_s,
                "search p50 ms (encode + query)": 1000 * statistics.median(times),
                "search p95 ms": 1000 * statistics.quantiles(times, n=20)[-1],
            }
        )
        typer.echo(rows[-1])
    meta = {
        "corpus": f"{len(corpus)} passages: WikiText-2, XQuAD paragraphs, MedQuAD answers (first 150 words)",
        "index": "embedded Qdrant (local folder), batches of 64",
        "LLM-side document encoders": f"first {llm_passages} passages",
    }
    write_results(RESULTS, "index_speed", rows, meta)


if __name__ == "__main__":
    typer.run(main)
