"""The general (MTEB-style) family side by side: retrieval (NFCorpus original, ArguAna original, MED;
nDCG@10), STS (STS-B, STS12-16, BIOSSES; Spearman) and classification (Banking77; accuracy).

A CPU cannot run the 0.5B backbone over every document of every task, so each task is subsampled the
same way for every embedder (`--queries`, `--corpus`, `--pairs`, `--per-class`; the relevant documents
of the sampled queries always stay in the corpus). gen's queries carry the paper's task instruction
where it ships one (`--task-instructions`, read from the data dir); STS and classification embed
both sides as queries, so gen_asym equals gen there and bm25 / HyDE (no meaningful symmetric
vector / seconds per sentence) run on the retrieval tasks only.

    python benchmarks/general.py [--queries 50] [--corpus 200] [--pairs 60]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import typer

from ragsafe.datadir import data_file
from ragsafe.embedders.base import Embedder
from ragsafe.embedders.hyde import HyDEEmbedder
from ragsafe.embedders.registry import build_embedders
from ragsafe.evaluation.family import query_instruction, score_classification, score_retrieval, score_sts
from ragsafe.evaluation.results import write_plot, write_results
from ragsafe.evaluation.tasks import (
    STS_TASKS,
    ClassificationTask,
    PairTask,
    RetrievalTask,
    arguana,
    banking77,
    med,
    nfcorpus,
    sts,
)
from ragsafe.model.backbone import INT8_LABEL

RESULTS = Path(__file__).parent / "results"
ALL = "bm25,teacher,llm_mean,gen,gen_asym,gen_hybrid,hyde"
RETRIEVAL = {"NFCorpus": nfcorpus, "ArguAna": arguana, "MED": med}
# tasks without their own entry in the paper's instruction file borrow a sibling's
INSTRUCTION_KEYS = {"MED": "NFCorpus", "STS16": "STS15", "Banking77": "Banking77Classification"}


def task_instructions(data_dir: str | None) -> dict[str, str]:
    table = json.loads(data_file(data_dir, "llm2vec_gen_task_instructions/generative.json").read_text())
    names = [*RETRIEVAL, *STS_TASKS, "Banking77"]
    return {n: table[INSTRUCTION_KEYS.get(n, n)] for n in names if INSTRUCTION_KEYS.get(n, n) in table}


@dataclass
class GeneralTasks:
    """The family's subsampled tasks; every embedder is scored on the same ones."""

    retrieval: dict[str, RetrievalTask]
    sts: dict[str, PairTask]
    classification: ClassificationTask

    @classmethod
    def load(
        cls, data_dir: str | None, queries: int, corpus: int, doc_words: int, pairs: int, per_class: int, test: int
    ) -> GeneralTasks:
        return cls(
            {n: load(data_dir, doc_words).subsample(queries, corpus) for n, load in RETRIEVAL.items()},
            {n: sts(data_dir, n).subsample(pairs) for n in STS_TASKS},
            banking77(data_dir, per_class, test),
        )

    def query_texts(self) -> list[str]:
        """The retrieval queries and the STS sentences, each once: the texts a query embedder reads here
        (Banking77's aside)."""
        queries = [q for t in self.retrieval.values() for q in t.queries]
        return list(dict.fromkeys(queries + [s for t in self.sts.values() for s in t.sentences()]))

    def score(self, emb: Embedder, instructions: dict[str, str], cache: Path, slow_n: int) -> tuple[dict, list[dict]]:
        """(the embedder's row: one metric per task it runs, the per-task details)."""
        row: dict = {"embedder": emb.name}
        details = []
        # gen_asym's symmetric tasks reuse gen's cached query vectors: both sides are queries there
        symmetric = not (emb.sparse or isinstance(emb, HyDEEmbedder))
        jobs = [
            (n, lambda e, t=t: score_retrieval(e, t, cache, slow_n if isinstance(e, HyDEEmbedder) else None))
            for n, t in self.retrieval.items()
        ]
        if symmetric:
            jobs += [(n, lambda e, t=t: score_sts(e, t, cache)) for n, t in self.sts.items()]
            jobs.append(("Banking77", lambda e: score_classification(e, self.classification, cache)))
        for name, job in jobs:
            with query_instruction(emb, instructions.get(name)):
                scored = job(emb)
            row[name] = scored["metric"]
            details.append({"embedder": emb.name, "task": name, **scored})
            typer.echo(details[-1])
        return row, details


def main(
    embedders: str = ALL,
    checkpoint: str | None = None,
    data_dir: str | None = None,
    queries: int = 50,
    corpus: int = 200,
    doc_words: int = 96,
    pairs: int = 60,
    per_class: int = 4,
    test: int = 200,
    slow_n: int = 12,
    task_instructions_on: bool = typer.Option(True, "--task-instructions/--no-task-instructions"),
    threads: int = 2,
    int8: bool = False,
    out: Path = RESULTS,
) -> None:
    """int8: the backbone's MLP in int8 (CPU); results go to general_int8. --no-task-instructions:
    gen's queries keep the checkpoint's own instruction; results go to general_own_instruction."""
    torch.set_num_threads(threads)
    name = "general" + ("_int8" if int8 else "") + ("" if task_instructions_on else "_own_instruction")
    cache = out / ".cache"
    instructions = task_instructions(data_dir) if task_instructions_on else {}
    family = GeneralTasks.load(data_dir, queries, corpus, doc_words, pairs, per_class, test)
    retrieval, sts_tasks, classification = family.retrieval, family.sts, family.classification
    rows, details = [], []
    for emb in build_embedders(embedders.split(","), checkpoint, int8=int8):
        row, scored = family.score(emb, instructions, cache, slow_n)
        rows.append(row)
        details.extend(scored)
    tasks = [*RETRIEVAL, *STS_TASKS, "Banking77"]
    teacher = next((r for r in rows if r["embedder"] == "teacher"), None)
    for row in rows:
        done = [t for t in tasks if isinstance(row.get(t), float)]
        row["average"] = float(np.mean([row[t] for t in done])) if done else None
        row["tasks run"] = len(done)
        if teacher and len(done) == len(tasks):
            row["avg vs teacher"] = row["average"] / teacher["average"] - 1
        mine = [d for d in details if d["embedder"] == row["embedder"]]
        row["ms/query"] = float(np.mean([d["ms/query"] for d in mine]))
        doc_ms = [d["ms/doc"] for d in mine if d["ms/doc"] is not None]
        row["ms/doc"] = float(np.mean(doc_ms)) if doc_ms else None
    meta = {
        "retrieval": ", ".join(
            f"{n}: {len(t.queries)} queries / {len(t.corpus.ids)} docs" for n, t in retrieval.items()
        )
        + f" (documents cut to {doc_words} words; HyDE: first {slow_n} queries)",
        "sts": ", ".join(f"{n}: {len(t.scores)} pairs" for n, t in sts_tasks.items()),
        "classification": f"Banking77: {per_class} training texts per intent ({len(classification.train_texts)}), "
        f"{len(classification.test_texts)} test texts, logistic regression",
        "gen query instructions": "paper's task instructions" if instructions else "the checkpoint's own",
        "checkpoint": checkpoint or "shipped default",
        "backbone MLP": INT8_LABEL if int8 else "float",
        "details": details,
    }
    notes = (
        "Metrics: nDCG@10 (retrieval), Spearman x1 of cosine (STS), accuracy (Banking77). 'average' is over the "
        "tasks an embedder ran; 'avg vs teacher' only where it ran all of them. Subsampled tasks: compare "
        "embedders with each other, not with published MTEB scores."
    )
    write_results(out, name, rows, meta, notes)
    write_plot(out, name, rows, tasks, "General family (subsampled): nDCG@10 / Spearman / accuracy")


if __name__ == "__main__":
    typer.run(main)
