"""How far could better tokens go? The ceiling of gen_hybrid on the two retrieval bars it misses.

gen_hybrid's query is normalise(gen(q) + β · teacher(q)), where gen(q) is trained to predict the
teacher's vector of the backbone's own answer. HyDE computes that vector exactly (it generates the
answer), so normalise(hyde(q) + β · teacher(q)) is what gen_hybrid would score if the tokens predicted
the answer perfectly: an upper bound for any training of the tokens on this backbone. This script
scores that bound next to the teacher, HyDE and the shipped tokens, on the same questions, for a grid
of β; the best β in hindsight is an oracle (chosen on the very questions it is scored on).

Tasks: TheoremQA question -> theorem (as reasoning.py) and the general family's retrieval tasks
(NFCorpus, ArguAna, MED, subsampled as general.py does; gen's queries carry the same task
instructions). The harm gate is left out: it changes only the queries it flags (4.5 % of the general
queries), and it can only lower these scores.

    python benchmarks/hybrid_ceiling.py [--theorem-n 200] [--general-n 50]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import typer
from general import RETRIEVAL, task_instructions

from ragsafe.embedders.gen import fitted_query_mix, mix_vectors
from ragsafe.embedders.registry import build_embedders
from ragsafe.evaluation.doc_cache import encode_documents_cached, encode_queries_cached
from ragsafe.evaluation.family import query_instruction
from ragsafe.evaluation.metrics import ndcg_at_k
from ragsafe.evaluation.ranking import rank
from ragsafe.evaluation.results import write_plot, write_results
from ragsafe.evaluation.tasks import RetrievalTask, theoremqa

RESULTS = Path(__file__).parent / "results"
BETAS = (0.25, 0.5, 1.0, 2.0, 4.0)


def ndcg(queries: np.ndarray, docs: np.ndarray, task: RetrievalTask, n: int) -> float:
    return ndcg_at_k(rank(queries, docs, task.corpus.ids, 10), task.qrels[:n], 10)


def score_task(task: RetrievalTask, n: int, instruction: str | None, embedders: dict, cache: Path) -> dict[str, float]:
    """nDCG@10 of every row on the task's first n queries (one entry per row name)."""
    teacher, gen, hyde = embedders["teacher"], embedders["gen_asym"], embedders["hyde"]
    n = min(n, len(task.queries))
    queries = task.queries[:n]
    docs, _ = encode_documents_cached(teacher, task.corpus.texts, cache)
    t, _ = encode_queries_cached(teacher, queries, cache)
    h, _ = encode_queries_cached(hyde, queries, cache)
    with query_instruction(gen, instruction):
        g, _ = encode_queries_cached(gen, queries, cache)
    out = {"teacher": ndcg(t, docs, task, n), "hyde": ndcg(h, docs, task, n), "gen_asym": ndcg(g, docs, task, n)}
    for beta in BETAS:
        out[f"hyde ⊕ teacher, β={beta:g}"] = ndcg(mix_vectors(h, t, beta), docs, task, n)
        out[f"gen_asym ⊕ teacher, β={beta:g}"] = ndcg(mix_vectors(g, t, beta), docs, task, n)
    out["queries"] = n
    return out


def main(
    checkpoint: str | None = None,
    data_dir: str | None = None,
    theorem_n: int = 200,
    general_n: int = 50,
    threads: int = 2,
    out: Path = RESULTS,
) -> None:
    """theorem_n / general_n: questions per task (HyDE generates an answer for each)."""
    torch.set_num_threads(threads)
    cache = out / ".cache"
    built = build_embedders(["teacher", "gen_asym", "hyde"], checkpoint)
    embedders = {e.name: e for e in built}
    instructions = task_instructions(data_dir)
    # the same subsamples as reasoning.py and general.py (their defaults)
    tasks = {"TheoremQA": (theoremqa(data_dir, 120).subsample(200, None), theorem_n, None)}
    for name, load in RETRIEVAL.items():
        tasks[name] = (load(data_dir, 96).subsample(50, 200), general_n, instructions.get(name))
    scored = {}
    for name, (task, n, instruction) in tasks.items():
        scored[name] = score_task(task, n, instruction, embedders, cache)
        typer.echo(f"{name}: {scored[name]}")
    general = [n for n in tasks if n != "TheoremQA"]
    rows = []
    for row_name in [k for k in scored["TheoremQA"] if k != "queries"]:
        row = {"row": row_name, **{task: scored[task][row_name] for task in tasks}}
        row["general retrieval avg"] = float(np.mean([row[t] for t in general]))
        rows.append(row)
    teacher = rows[0]
    for row in rows:
        row["TheoremQA / teacher"] = row["TheoremQA"] / teacher["TheoremQA"]
        row["general avg - teacher"] = row["general retrieval avg"] - teacher["general retrieval avg"]
    meta = {
        "questions": ", ".join(f"{t}: {scored[t]['queries']}" for t in tasks),
        "TheoremQA": "as reasoning.py (200 sampled questions, theorems cut to 120 words); its first questions here",
        "general": "as general.py (50 queries, 200 documents cut to 96 words); its first queries here",
        "shipped β": fitted_query_mix(checkpoint),
        "checkpoint": checkpoint or "shipped default",
    }
    notes = (
        "'hyde ⊕ teacher' = normalise(teacher(answer) + β · teacher(query)): gen_hybrid with tokens that "
        "predict the backbone's answer perfectly, an upper bound for training the tokens on this backbone. "
        "The best β per column is an oracle (picked on the scored questions). The issue's bars: TheoremQA "
        "≥ 1.3 × the teacher; general average ≥ the teacher (this table covers its retrieval tasks only)."
    )
    write_results(out, "hybrid_ceiling", rows, meta, notes)
    write_plot(out, "hybrid_ceiling", rows, [*tasks, "general retrieval avg"], "gen_hybrid's ceiling (nDCG@10)", "row")


if __name__ == "__main__":
    typer.run(main)
