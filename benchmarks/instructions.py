"""Do a checkpoint's tokens carry a task instruction they were not trained with?

The tokens read the query behind an instruction. The shipped ones were trained under one
("Write a passage that answers this request:"); the paper trains on bare prompts and puts a task
instruction in front of the query only at inference. `ragsafe train --query-instructions varied`
trains under a pool of instructions instead. This script compares checkpoints on their pure answer
embedding (gen_asym: predicted answer against teacher-embedded documents) with the task
instructions and with each checkpoint's own, on:

- the general family (general.py's sets and subsamples; the paper's task instructions);
- TheoremQA (reasoning.py's set; its task instruction);
- two dev sets that no benchmark reports (query_mix.py's PubMedQA and STS-B dev, own instruction);
- the harmful family (harmful_retrieval.py's sets, own instruction): a recipe that gains on the
  benign side by losing the safety side is not a gain.

    python benchmarks/instructions.py --checkpoints shipped=default,mine=runs/mine/checkpoint
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import typer
from general import GeneralTasks, task_instructions
from harmful_retrieval import set_metrics
from query_mix import dev_sets
from reasoning import TASK_INSTRUCTION

from ragsafe.embedders.registry import build_embedders
from ragsafe.evaluation.doc_cache import encode_documents_cached, encode_queries_cached
from ragsafe.evaluation.family import query_instruction, score_retrieval, score_sts
from ragsafe.evaluation.ranking import rank
from ragsafe.evaluation.results import write_plot, write_results
from ragsafe.evaluation.tasks import advbench_queries, safety_corpus, theoremqa, xquad_queries, xstest_queries

RESULTS = Path(__file__).parent / "results"
COLUMNS = [
    "general avg, task instructions",
    "general avg, own instruction",
    "TheoremQA, task instruction",
    "TheoremQA, own instruction",
    "dev: PubMedQA nDCG@10",
    "dev: STS-B dev Spearman",
    "adv top5 acc",
    "xquad recall@5",
    "xstest_safe any-harm@5",
]


def main(
    checkpoints: str = "shipped=default",
    data_dir: str | None = None,
    threads: int = 2,
    out: Path = RESULTS,
    name: str = "instructions",
) -> None:
    """checkpoints: comma-separated label=path ('default': the shipped checkpoint)."""
    torch.set_num_threads(threads)
    pairs = [item.split("=", 1) for item in checkpoints.split(",")]
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise typer.BadParameter("give label=path pairs, e.g. shipped=default,mine=runs/mine/checkpoint")
    cache = out / ".cache"
    family = GeneralTasks.load(data_dir, queries=50, corpus=200, doc_words=96, pairs=60, per_class=4, test=200)
    instructions = task_instructions(data_dir)
    reasoning = theoremqa(data_dir, 120).subsample(200, None)
    dev_retrieval, dev_sts = dev_sets(data_dir)
    corpus = safety_corpus(data_dir)
    sets = [advbench_queries(data_dir), xquad_queries(data_dir, 200), xstest_queries(data_dir)]

    def general_avg(emb, given: dict[str, str]) -> float:
        scored, _ = family.score(emb, given, cache, slow_n=0)
        return float(np.mean([v for task, v in scored.items() if task != "embedder"]))

    def own_instruction(emb) -> dict:
        """The columns measured under the embedder's own instruction."""
        docs, _ = encode_documents_cached(emb, corpus.texts, cache)
        ranked = {qs.name: rank(encode_queries_cached(emb, qs.queries, cache)[0], docs, corpus.ids, 20) for qs in sets}
        harmful = set_metrics(ranked, sets, corpus.harmful)
        return {
            COLUMNS[1]: general_avg(emb, {}),
            COLUMNS[3]: score_retrieval(emb, reasoning, cache)["metric"],
            COLUMNS[4]: score_retrieval(emb, dev_retrieval, cache)["metric"],
            COLUMNS[5]: score_sts(emb, dev_sts, cache)["metric"],
            **{c: harmful[c] for c in COLUMNS[6:]},
        }

    (teacher,) = build_embedders(["teacher"])
    teacher_row = {"checkpoint": "teacher", **own_instruction(teacher)}
    teacher_row |= {COLUMNS[0]: teacher_row[COLUMNS[1]], COLUMNS[2]: teacher_row[COLUMNS[3]]}
    rows = [{"checkpoint": "teacher", **{c: teacher_row[c] for c in COLUMNS}}]
    for label, path in pairs:
        (emb,) = build_embedders(["gen_asym"], None if path == "default" else path)
        row = {"checkpoint": label, COLUMNS[0]: general_avg(emb, instructions)}
        with query_instruction(emb, TASK_INSTRUCTION):
            row[COLUMNS[2]] = score_retrieval(emb, reasoning, cache)["metric"]
        row |= own_instruction(emb)
        rows.append({"checkpoint": label, **{c: row[c] for c in COLUMNS}})
        typer.echo(rows[-1])
    meta = {
        "embedder": "gen_asym of each checkpoint (the teacher row: MiniLM on the query, no instruction)",
        "checkpoints": dict(pairs),
        "general": "general.py's 11 tasks and subsamples; task instructions: the paper's",
        "reasoning": f"TheoremQA 200 questions; task instruction: {TASK_INSTRUCTION}",
        "dev sets": "PubMedQA 300 questions against their abstracts; STS-B dev 300 pairs with no STS-benchmark "
        "sentence (own instruction)",
        "harmful": f"advbench {len(sets[0].queries)}, xquad {len(sets[1].queries)}, xstest_safe "
        f"{len(sets[2].queries)} against {len(corpus.ids)} passages (own instruction)",
    }
    notes = (
        "gen_asym per checkpoint. 'task' columns put the benchmark's task instruction in front of each query "
        "in place of the checkpoint's own; 'own' keeps the checkpoint's. Lower is safer for adv top5 and "
        "any-harm; higher is better for the rest."
    )
    write_results(out, name, rows, meta, notes)
    write_plot(out, name, rows, COLUMNS, "gen_asym by checkpoint", label="checkpoint")


if __name__ == "__main__":
    typer.run(main)
