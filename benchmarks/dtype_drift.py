"""How far the gen embeddings move between bfloat16 and float32 backbones.

The shipped tokens were trained on a bf16 backbone (a GPU); CPUs without native bf16 run the backbone
in float32 (`default_dtype`). This embeds the same queries under both and reports their cosine, and
whether the gate (gen_hybrid) decides each query alike: the probe's score change next to the
smallest distance of any score to the threshold. Queries: XQuAD questions and AdvBench goals.

    python benchmarks/dtype_drift.py [--per-set 25]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import typer

from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.registry import build_embedders
from ragsafe.evaluation.metrics import pair_cosines
from ragsafe.evaluation.results import write_results
from ragsafe.evaluation.tasks import advbench_queries, xquad_queries
from ragsafe.model.backbone import load_backbone

RESULTS = Path(__file__).parent / "results"


def main(per_set: int = 25, data_dir: str | None = None, threads: int = 2) -> None:
    torch.set_num_threads(threads)
    sets = {"XQuAD": xquad_queries(data_dir, per_set).queries, "AdvBench": advbench_queries(data_dir, per_set).queries}
    [teacher] = build_embedders(["teacher"])
    vectors: dict[str, dict[str, np.ndarray]] = {}
    scores: dict[str, dict[str, np.ndarray]] = {}
    threshold = 0.0
    for dtype in (torch.float32, torch.bfloat16):
        backbone = load_backbone("default", dtype=dtype)
        asym = GenEmbedder.load(None, backbone, "teacher", teacher)
        scorer = GenEmbedder.load(None, backbone, "teacher", teacher, hybrid=True).query_gate
        threshold = float(scorer.threshold)
        for name, queries in sets.items():
            gen = asym.encode_queries(queries)
            vectors.setdefault(name, {})[str(dtype)] = gen
            # the gate reads the queries' gen vectors and the teacher's view of them (as gen_hybrid does)
            scores.setdefault(name, {})[str(dtype)] = scorer.scores_for(gen, queries, teacher.embed(queries))
        del backbone, asym, scorer
    rows = []
    for name in sets:
        f32, bf16 = vectors[name]["torch.float32"], vectors[name]["torch.bfloat16"]
        c = pair_cosines(f32, bf16)
        s32, s16 = scores[name]["torch.float32"], scores[name]["torch.bfloat16"]
        rows.append(
            {
                "queries": name,
                "n": len(c),
                "gen cosine fp32 vs bf16: min": float(c.min()),
                "mean": float(c.mean()),
                "gate flags (fp32)": int((s32 > threshold).sum()),
                "gate flags (bf16)": int((s16 > threshold).sum()),
                "gate decisions that differ": int(((s32 > threshold) != (s16 > threshold)).sum()),
                "largest probe score change": float(np.abs(s32 - s16).max()),
                "smallest distance to threshold (fp32)": float(np.abs(s32 - threshold).min()),
            }
        )
        typer.echo(rows[-1])
    meta = {"checkpoint": "shipped default (trained on a bf16 backbone)", "sample": f"{per_set} queries per set"}
    write_results(RESULTS, "dtype_drift", rows, meta)


if __name__ == "__main__":
    typer.run(main)
