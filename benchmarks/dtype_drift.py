"""How far the gen embeddings move between bfloat16 and float32 backbones.

The shipped tokens were trained on a bf16 backbone (a GPU); CPUs without native bf16 run the backbone
in float32 (`default_dtype`). This embeds the same queries under both and reports their cosine, and
whether the gate (gen_hybrid) decides each query alike. Queries: XQuAD questions and AdvBench goals.

    python benchmarks/dtype_drift.py [--per-set 25]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import typer

from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.registry import build_embedders
from ragsafe.evaluation.results import write_results
from ragsafe.evaluation.tasks import advbench_queries, xquad_queries
from ragsafe.model.backbone import load_backbone

RESULTS = Path(__file__).parent / "results"


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main(per_set: int = 25, data_dir: str | None = None, threads: int = 2) -> None:
    torch.set_num_threads(threads)
    sets = {"XQuAD": xquad_queries(data_dir, per_set).queries, "AdvBench": advbench_queries(data_dir, per_set).queries}
    [teacher] = build_embedders(["teacher"])
    vectors: dict[str, dict[str, np.ndarray]] = {}
    gated: dict[str, dict[str, np.ndarray]] = {}
    for dtype in (torch.float32, torch.bfloat16):
        backbone = load_backbone("default", dtype=dtype)
        asym = GenEmbedder.load(None, backbone, "teacher", teacher)
        hybrid = GenEmbedder.load(None, backbone, "teacher", teacher, hybrid=True)
        for name, queries in sets.items():
            gen = asym.encode_queries(queries)
            vectors.setdefault(name, {})[str(dtype)] = gen
            gated.setdefault(name, {})[str(dtype)] = hybrid.query_gate.blocks(
                hybrid.probe_view(queries, gen, asym.query_instruction), queries, teacher.encode_queries(queries)
            )
        del backbone, asym, hybrid
    rows = []
    for name in sets:
        f32, bf16 = vectors[name]["torch.float32"], vectors[name]["torch.bfloat16"]
        c = cosines(f32, bf16)
        gate = gated[name]
        rows.append(
            {
                "queries": name,
                "n": len(c),
                "gen cosine fp32 vs bf16: min": float(c.min()),
                "mean": float(c.mean()),
                "gate flags (fp32)": int(gate["torch.float32"].sum()),
                "gate flags (bf16)": int(gate["torch.bfloat16"].sum()),
                "gate decisions that differ": int((gate["torch.float32"] != gate["torch.bfloat16"]).sum()),
            }
        )
        typer.echo(rows[-1])
    meta = {"checkpoint": "shipped default (trained on a bf16 backbone)", "sample": f"{per_set} queries per set"}
    write_results(RESULTS, "dtype_drift", rows, meta)


if __name__ == "__main__":
    typer.run(main)
