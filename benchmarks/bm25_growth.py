"""BM25 in a growing index: what adding passages costs, before and after the store applied the idf.

A legacy collection (vocabulary and idf in the stored vectors) is refitted and re-encoded whenever
passages are added; a current one (hashed terms, Qdrant's IDF modifier) writes only the new points.
Both are built from the same passages, then grown by `--add` more; the table gives the time of each
step, the search latency after growth (the two collections' searches interleaved, so both see the
same machine), and how far the two agree on the top 10.

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
KINDS = {True: "legacy (vocabulary + idf stored)", False: "hashed, idf from the store"}


def timed_add(idx: Index, passages: list) -> float:
    start = time.perf_counter()
    idx.add(passages, [BM25Embedder()], show_progress=False)
    return time.perf_counter() - start


def main(
    passages: int = 10_000, add: int = 64, queries: int = 20, rounds: int = 3, data_dir: str | None = None
) -> None:
    corpus = assemble(data_dir, passages + add)
    base, extra = corpus[:passages], corpus[passages:]
    sources = base[:: max(1, len(base) // queries)][:queries]
    probe = [p.text.split(".")[0][:200] for p in sources]
    with tempfile.TemporaryDirectory() as folder_a, tempfile.TemporaryDirectory() as folder_b:
        indexes = {True: Index("grow", path=folder_a), False: Index("grow", path=folder_b)}
        # how ragsafe made BM25 collections before
        indexes[True].client.create_collection("grow", sparse_vectors_config={"bm25": models.SparseVectorParams()})
        rows = {legacy: {"BM25 storage": KINDS[legacy]} for legacy in indexes}
        for legacy, idx in indexes.items():
            rows[legacy]["first indexing s"] = timed_add(idx, base)
            rows[legacy][f"adding {len(extra)} s"] = timed_add(idx, extra)
            rows[legacy]["passages stored"] = idx.count()
        encoders = {legacy: idx.load_bm25() for legacy, idx in indexes.items()}
        times: dict[bool, list[float]] = {True: [], False: []}
        tops: dict[bool, list[set[str]]] = {True: [], False: []}
        for round_ in range(rounds):
            for q in probe:
                for legacy, idx in indexes.items():
                    start = time.perf_counter()
                    hits = idx.search(encoders[legacy].encode_queries([q])[0], "bm25", 10)
                    times[legacy].append(time.perf_counter() - start)
                    if round_ == 0:
                        tops[legacy].append({h.id for h in hits})
        for legacy, idx in indexes.items():
            rows[legacy]["search p50 ms (encode + query)"] = 1000 * statistics.median(times[legacy])
            found = statistics.mean(p.id in top for p, top in zip(sources, tops[legacy], strict=True))
            rows[legacy]["query's own passage in top 10"] = found
            idx.close()
    for row in rows.values():
        typer.echo(row)
    overlap = statistics.mean(len(a & b) / max(1, len(a | b)) for a, b in zip(tops[True], tops[False], strict=True))
    notes = (
        f"Top-10 agreement between the two after growth (mean Jaccard over {len(probe)} queries): {overlap:.3f}. "
        "They differ by the idf formula (Okapi's with rank-bm25's floor, against Qdrant's "
        "ln(1 + (N - n + 0.5) / (n + 0.5))) and by the average length, which the hashed form keeps from "
        "its first indexing. Search latency: the median of "
        f"{rounds * len(probe)} searches per collection, the two collections' searches interleaved."
    )
    meta = {
        "corpus": f"{passages} + {len(extra)} passages: WikiText-2, XQuAD paragraphs, MedQuAD answers (as index_speed)",
        "index": "embedded Qdrant (local folder)",
        "queries": f"{len(probe)}: each the first sentence of an indexed passage",
    }
    write_results(RESULTS, "bm25_growth", list(rows.values()), meta, notes)


if __name__ == "__main__":
    typer.run(main)
