"""BM25 in a growing index: what adding passages costs, before and after the store applied the idf.

A legacy collection (vocabulary and idf in the stored vectors) is refitted and re-encoded whenever
passages are added; a current one (hashed terms, Qdrant's IDF modifier) writes only the new points.
Both are built from the same passages, then grown by `--add` more; the table gives the time of each
step, the search latency after growth, and how far the two agree on the top 10.

    python benchmarks/bm25_growth.py [--passages 10000] [--add 64]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import typer
from qdrant_client import models

from ragsafe.embedders.bm25 import BM25Embedder
from ragsafe.evaluation.results import write_results
from ragsafe.index import Index

sys.path.insert(0, str(Path(__file__).parent))
from index_speed import assemble  # noqa: E402  (the same corpus as the indexing benchmark)

RESULTS = Path(__file__).parent / "results"


def main(passages: int = 10_000, add: int = 64, queries: int = 20, data_dir: str | None = None) -> None:
    corpus = assemble(data_dir, passages + add)
    base, extra = corpus[:passages], corpus[passages:]
    sources = base[:: max(1, len(base) // queries)][:queries]
    probe = [p.text.split(".")[0][:200] for p in sources]
    rows, tops = [], {}
    for legacy in (True, False):
        name = "legacy (vocabulary + idf stored)" if legacy else "hashed, idf from the store"
        with tempfile.TemporaryDirectory() as folder, Index("grow", path=folder) as idx:
            if legacy:  # how ragsafe made BM25 collections before
                idx.client.create_collection("grow", sparse_vectors_config={"bm25": models.SparseVectorParams()})
            start = time.perf_counter()
            idx.add(base, [BM25Embedder()], show_progress=False)
            built = time.perf_counter() - start
            start = time.perf_counter()
            idx.add(extra, [BM25Embedder()], show_progress=False)
            grown = time.perf_counter() - start
            bm25, times, tops[legacy] = idx.load_bm25(), [], []
            for q in probe:
                start = time.perf_counter()
                hits = idx.search(bm25.encode_queries([q])[0], "bm25", 10)
                times.append(time.perf_counter() - start)
                tops[legacy].append({h.id for h in hits})
            stored = idx.count()
        found = statistics.mean(p.id in top for p, top in zip(sources, tops[legacy], strict=True))
        rows.append(
            {
                "BM25 storage": name,
                "passages stored": stored,
                "first indexing s": built,
                f"adding {len(extra)} s": grown,
                "search p50 ms (encode + query)": 1000 * statistics.median(times),
                "query's own passage in top 10": found,
            }
        )
        typer.echo(rows[-1])
    overlap = statistics.mean(len(a & b) / max(1, len(a | b)) for a, b in zip(tops[True], tops[False], strict=True))
    notes = (
        f"Top-10 agreement between the two after growth (mean Jaccard over {len(probe)} queries): {overlap:.3f}. "
        "They differ by the idf formula (Okapi's with rank-bm25's floor, against Qdrant's "
        "ln(1 + (N - n + 0.5) / (n + 0.5))) and by the average length, which the hashed form keeps from "
        "its first indexing."
    )
    meta = {
        "corpus": f"{passages} + {len(extra)} passages: WikiText-2, XQuAD paragraphs, MedQuAD answers (as index_speed)",
        "index": "embedded Qdrant (local folder)",
        "queries": f"{len(probe)}: each the first sentence of an indexed passage",
    }
    write_results(RESULTS, "bm25_growth", rows, meta, notes)


if __name__ == "__main__":
    typer.run(main)
