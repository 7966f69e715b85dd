"""Suppress mode: how many harmful queries it catches and how many benign look-alikes it wrongly blocks.

- false suppression: XSTest safe prompts (benign requests that look unsafe) and XQuAD questions
  above the threshold
- catch rate: XSTest unsafe prompts and AdvBench goals above the threshold

The threshold is the checkpoint's own (calibrated on training-side validation queries); a sweep of
other thresholds shows the trade-off.

    python benchmarks/safety_filter.py [--checkpoint DIR]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import typer

from ragsafe.embedders.gen import GenEmbedder
from ragsafe.evaluation.doc_cache import encode_probe_queries_cached
from ragsafe.evaluation.results import write_results
from ragsafe.evaluation.tasks import advbench_queries, xquad_queries, xstest_queries
from ragsafe.model.checkpoint import default_checkpoint_dir
from ragsafe.retrieval import RefusalScorer

RESULTS = Path(__file__).parent / "results"
SCORES = {
    "probe": "logistic harm probe on the query's gen embedding",
    "probe gen+teacher": "logistic harm probe on the query's gen embedding next to the teacher's embedding "
    "of the query",
    "centroid": "cosine between the query's gen embedding and the centroid of the backbone's refusals",
}


def main(checkpoint: str | None = None, backbone: str = "default", data_dir: str | None = None, threads: int = 2):
    torch.set_num_threads(threads)
    path = Path(checkpoint) if checkpoint else default_checkpoint_dir()
    if path is None:
        raise typer.BadParameter("no checkpoint: train one or pass --checkpoint")
    gen = GenEmbedder.load(path, backbone)
    scorer = RefusalScorer.for_embedder(gen)
    if scorer is None:
        raise typer.BadParameter(f"{path} has no refusal calibration: run `ragsafe calibrate` on it")
    sets = {
        "xstest safe (benign look-alikes)": xstest_queries(data_dir, "safe").queries,
        "xquad questions": xquad_queries(data_dir, 200).queries,
        "xstest unsafe": xstest_queries(data_dir, "unsafe").queries,
        "advbench goals": advbench_queries(data_dir).queries,
    }
    scores = {
        name: scorer.scores_for(encode_probe_queries_cached(gen, queries, RESULTS / ".cache")[0], queries)
        for name, queries in sets.items()
    }
    benign = scores["xstest safe (benign look-alikes)"]
    thresholds = [scorer.threshold] + [float(np.quantile(benign, q)) for q in (0.8, 0.9, 0.95, 0.99)]
    rows = []
    for i, t in enumerate(thresholds):
        row = {"threshold": t, "chosen by": "checkpoint default" if i == 0 else "sweep (xstest-safe quantile)"}
        for name, s in scores.items():
            key = "caught" if "unsafe" in name or "advbench" in name else "false suppression"
            row[f"{name}: {key}"] = float((s > t).mean())
        rows.append(row)
        typer.echo(row)
    kind = " ".join(filter(None, [gen.safety.get("kind", "centroid"), gen.safety.get("features")]))
    meta = {
        "checkpoint": str(path),
        "score": SCORES.get(kind, "?") + (f" (labels: {gen.safety['labels']})" if "labels" in gen.safety else ""),
        "default threshold": gen.safety.get("calibrated_on", "?"),
        "queries": ", ".join(f"{k} ({len(v)})" for k, v in sets.items()),
    }
    write_results(RESULTS, "safety_filter", rows, meta, "Suppress mode returns no passages above the threshold.")


if __name__ == "__main__":
    typer.run(main)
