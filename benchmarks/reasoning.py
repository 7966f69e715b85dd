"""Reasoning-intensive retrieval: a TheoremQA question must find the theorem it needs (BRIGHT's
TheoremQA-theorems task, built from the TheoremQA source), nDCG@10, every embedder side by side.

Besides the embedders, rows for the levers the issue names: the gen query instruction (the shipped
one vs a task instruction) and the response policy (HyDE with and without it).

    python benchmarks/reasoning.py [--queries 200] [--slow-n 32]
"""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from ragsafe.embedders.hyde import HyDEEmbedder
from ragsafe.embedders.registry import build_embedders
from ragsafe.evaluation.family import query_instruction, score_retrieval
from ragsafe.evaluation.results import write_plot, write_results
from ragsafe.evaluation.tasks import theoremqa

RESULTS = Path(__file__).parent / "results"
ALL = "bm25,teacher,llm_mean,gen,gen_asym,gen_hybrid,hyde,hyde_policy"
# A task instruction in the paper's style (it ships none for this task); written once, not tuned.
TASK_INSTRUCTION = "Name and explain the theorem needed to solve this problem:"


def result_row(name: str, scored: dict) -> dict:
    return {"embedder": name, "nDCG@10": scored["metric"], **{k: v for k, v in scored.items() if k != "metric"}}


def main(
    embedders: str = ALL,
    checkpoint: str | None = None,
    data_dir: str | None = None,
    queries: int = 200,
    doc_words: int = 120,
    slow_n: int = 32,
    threads: int = 2,
    out: Path = RESULTS,
) -> None:
    """doc_words: theorem descriptions are cut to their first words (the definition comes first)."""
    torch.set_num_threads(threads)
    task = theoremqa(data_dir, doc_words).subsample(queries, None)
    rows = []
    built = build_embedders(embedders.split(","), checkpoint)
    runs = [(emb, emb.name, None) for emb in built]
    runs += [(emb, f"{emb.name} + task instruction", TASK_INSTRUCTION) for emb in built if emb.name == "gen_asym"]
    hyde = next((e for e in built if isinstance(e, HyDEEmbedder) and e.name == "hyde"), None)
    if hyde is not None:  # the instruction asked of the backbone itself: what it does to a real answer
        instructed = HyDEEmbedder(
            hyde.backbone, hyde.teacher, settings=hyde.settings, query_instruction=TASK_INSTRUCTION
        )
        runs.append((instructed, "hyde + task instruction", None))
    for emb, name, instruction in runs:
        with query_instruction(emb, instruction):
            slow = isinstance(emb, HyDEEmbedder)
            scored = score_retrieval(emb, task, out / ".cache", slow_n if slow else None)
        rows.append(result_row(name, scored))
        typer.echo(rows[-1])
    teacher_emb = next((e for e in built if e.name == "teacher"), None)
    if teacher_emb is not None and any(isinstance(e, HyDEEmbedder) for e in built):
        # HyDE ran on fewer questions: the teacher on exactly those, for a fair comparison
        scored = score_retrieval(teacher_emb, task, out / ".cache", slow_n)
        rows.append(result_row(f"teacher (first {slow_n})", scored))
    teacher = next((r for r in rows if r["embedder"] == "teacher"), None)
    for r in rows:
        if teacher:
            r["vs teacher"] = r["nDCG@10"] / max(1e-9, teacher["nDCG@10"]) - 1
    meta = {
        "task": f"TheoremQA: {len(task.queries)} questions (no picture) -> {len(task.corpus.ids)} theorems "
        f"(first {doc_words} words each)",
        "generation-based embedders (HyDE)": f"first {slow_n} questions",
        "task instruction": TASK_INSTRUCTION,
        "checkpoint": checkpoint or "shipped default",
    }
    notes = (
        "nDCG@10 (one relevant theorem per question). HyDE rows cover fewer questions, so compare them with "
        "care. Levers: '+ task instruction' replaces the shipped query instruction (for HyDE: is put in front of "
        "the question the backbone answers); hyde vs hyde_policy shows the response policy."
    )
    write_results(out, "reasoning", rows, meta, notes)
    write_plot(out, "reasoning", rows, ["nDCG@10"], "TheoremQA question -> theorem (nDCG@10)")


if __name__ == "__main__":
    typer.run(main)
