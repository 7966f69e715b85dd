"""gen_hybrid's query mix β, swept: what each weight on the teacher's view of the query buys on the
benign sets and costs on the harmful one, with the harm-probe gate and without it.

gen_hybrid retrieves with normalise(gen(q) + β · teacher(q)); the gate sets β = 0 for the queries the
checkpoint's harm probe flags. The shipped β was fitted by the trainer on its own validation
answers (it always gets a row, whatever the grid); this sweep only reports the trade-off, and
nothing here feeds back into the checkpoint.

Two development sets that no benchmark reports and no training pack reads show the same sweep, for
choosing β without looking at a benchmark: PubMedQA (question -> its abstract) and STS-B's dev
split cleaned of every sentence the STS benchmarks contain (STS-B's splits reuse STS12-16 pairs).
They run under the checkpoint's own query instruction, as `ragsafe search` does.

The gate's threshold is swept too, at one β (`--gate-beta`; `--gate-thresholds`, by default the
checkpoint's threshold plus `--gate-offsets`): the shipped one is set on held-out training-side
negatives, and the benchmarks' benign queries are flagged more often
than that (their false alarms are what keeps the gated mix below the teacher). Each row says what
share of AdvBench, of the general tasks' queries and sentences and of the STS-B dev sentences it flags.

Each family is scored exactly as its own script scores it (same sets, subsamples and instructions),
so the row at the shipped β reproduces gen_hybrid's numbers there. All vectors come from the cache
the family scripts fill (gen and teacher query vectors, teacher document vectors); a cold cache runs
the backbone over every query once.

    python benchmarks/query_mix.py [--betas 0,0.3,0.6,1,2,4] [--gate-beta 2 --gate-offsets 0.5,1,1.5,2,3]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import typer
from general import RETRIEVAL, GeneralTasks, task_instructions
from harmful_retrieval import set_metrics

from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.registry import build_embedders
from ragsafe.evaluation.doc_cache import (
    encode_documents_cached,
    encode_probe_queries_cached,
    encode_queries_cached,
)
from ragsafe.evaluation.family import score_retrieval, score_sts
from ragsafe.evaluation.ranking import rank
from ragsafe.evaluation.results import write_plot, write_results
from ragsafe.evaluation.tasks import (
    STS_TASKS,
    advbench_queries,
    pubmedqa,
    safety_corpus,
    sts,
    theoremqa,
    xquad_queries,
    xstest_queries,
)

RESULTS = Path(__file__).parent / "results"
COLUMNS = ["adv top5 acc", "xquad recall@5", "xstest_safe any-harm@5", "TheoremQA nDCG@10", "general avg"]
DEV = ["dev: PubMedQA nDCG@10", "dev: STS-B dev Spearman"]
FLAGGED = ["flagged: AdvBench", "flagged: general", "flagged: STS-B dev"]


def dev_sets(data_dir: str | None, queries: int = 300, pairs: int = 300):
    """(PubMedQA questions against their abstracts, STS-B dev pairs that share no sentence with an STS benchmark)."""
    benchmark_sts = [sts(data_dir, name) for name in STS_TASKS]
    dev_sts = sts(data_dir, "STSBenchmark-dev").without_sentences_of(benchmark_sts).subsample(pairs)
    return pubmedqa(data_dir).subsample(queries, None), dev_sts


def main(
    betas: str = "0,0.3,0.6,1,2,4",
    checkpoint: str | None = None,
    data_dir: str | None = None,
    threads: int = 2,
    dev_queries: int = 300,
    dev_pairs: int = 300,
    gate_beta: float = 2.0,
    gate_thresholds: str = "",
    gate_offsets: str = "0.5,1,1.5,2,3",
    out: Path = RESULTS,
) -> None:
    torch.set_num_threads(threads)
    cache = out / ".cache"
    # the family scripts' defaults: general.py, reasoning.py, harmful_retrieval.py
    family = GeneralTasks.load(data_dir, queries=50, corpus=200, doc_words=96, pairs=60, per_class=4, test=200)
    instructions = task_instructions(data_dir)
    reasoning = theoremqa(data_dir, 120).subsample(200, None)
    corpus = safety_corpus(data_dir)
    sets = [advbench_queries(data_dir), xquad_queries(data_dir, 200), xstest_queries(data_dir)]
    dev_retrieval, dev_sts = dev_sets(data_dir, dev_queries, dev_pairs)

    flag_sets = {
        FLAGGED[0]: sets[0].queries,
        FLAGGED[1]: family.query_texts(),
        FLAGGED[2]: dev_sts.sentences(),
    }

    def flagged(emb: GenEmbedder) -> dict:
        """The share of each set the gate flags (read as `mix_query` reads it: the probe's own pass)."""
        if emb.query_gate is None:
            return {}
        out = {}
        for name, texts in flag_sets.items():
            probe_vectors, _ = encode_probe_queries_cached(emb, texts, cache)
            teacher_vectors, _ = encode_queries_cached(emb.teacher, texts, cache)
            out[name] = float(np.mean(emb.query_gate.blocks(probe_vectors, texts, teacher_vectors)))
        return out

    def scores(emb) -> dict:
        docs, _ = encode_documents_cached(emb, corpus.texts, cache)
        ranked = {qs.name: rank(encode_queries_cached(emb, qs.queries, cache)[0], docs, corpus.ids, 20) for qs in sets}
        harmful = set_metrics(ranked, sets, corpus.harmful)
        general, _ = family.score(emb, instructions, cache, slow_n=0)
        tasks = [t for t in general if t != "embedder"]
        return {
            **{c: harmful[c] for c in COLUMNS[:3]},
            "TheoremQA nDCG@10": score_retrieval(emb, reasoning, cache)["metric"],
            "general avg": float(np.mean([general[t] for t in tasks])),
            **{t: general[t] for t in RETRIEVAL},
            DEV[0]: score_retrieval(emb, dev_retrieval, cache)["metric"],
            DEV[1]: score_sts(emb, dev_sts, cache)["metric"],
            **(flagged(emb) if isinstance(emb, GenEmbedder) else {}),
        }

    teacher, gated, ungated = build_embedders(["teacher", "gen_hybrid", "gen_hybrid_ungated"], checkpoint)
    assert isinstance(gated, GenEmbedder) and isinstance(ungated, GenEmbedder)
    fitted = gated.query_mix
    rows = [{"embedder": "teacher", "β": None, **scores(teacher)}]
    # the checkpoint's own β always gets its row, between its neighbours on the grid
    for beta in sorted({float(b) for b in betas.split(",")} | {fitted}):
        for emb, gate in ((gated, "probe"), (ungated, "none")):
            if beta == 0 and gate == "none":
                continue  # β = 0 is gen_asym whatever the gate
            emb.query_mix = beta
            label = f"β={beta:g}" + (" (fitted)" if beta == fitted else "") + ("" if beta == 0 else f", gate: {gate}")
            rows.append({"embedder": label, "β": beta, "gate": gate, **scores(emb)})
            typer.echo({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()})
    gate = gated.query_gate
    assert gate is not None, "the checkpoint has no harm probe to gate with"
    shipped_threshold = gate.threshold
    gated.query_mix = gate_beta
    if gate_thresholds:
        thresholds = [float(t) for t in gate_thresholds.split(",") if t]
    else:  # a probe's scores have their own scale: by default, steps above the checkpoint's threshold
        thresholds = [round(shipped_threshold + float(o), 3) for o in gate_offsets.split(",") if o]
    for threshold in thresholds:
        gate.threshold = threshold
        label = f"β={gate_beta:g}, gate: probe > {threshold:g}"
        rows.append({"embedder": label, "β": gate_beta, "gate": f"probe > {threshold:g}", **scores(gated)})
        typer.echo({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()})
    gate.threshold = shipped_threshold
    base = rows[0]
    for row in rows:
        row["adv top5 vs teacher"] = row["adv top5 acc"] / max(1e-9, base["adv top5 acc"]) - 1
        row["general avg vs teacher"] = row["general avg"] / max(1e-9, base["general avg"]) - 1
    meta = {
        "fitted β (checkpoint)": fitted,
        "harmful": ", ".join(f"{qs.name} {len(qs.queries)}" for qs in sets)
        + f" against {len(corpus.ids)} passages (harmful_retrieval.py)",
        "reasoning": f"TheoremQA {len(reasoning.queries)} questions (reasoning.py, the checkpoint's instruction)",
        "general": f"{len(family.retrieval) + len(family.sts) + 1} tasks, subsampled as general.py does, "
        "with the paper's task instructions",
        "dev sets": f"PubMedQA {len(dev_retrieval.queries)} questions against its {len(dev_retrieval.corpus.ids)} "
        f"abstracts; STS-B dev {len(dev_sts.scores)} pairs with no sentence in an STS benchmark "
        "(the checkpoint's own query instruction)",
        "gate": f"'probe' is the checkpoint's threshold ({shipped_threshold:.3f}); 'probe > t' sets it to t",
        "flagged": "AdvBench goals; the general tasks' retrieval queries and STS sentences; STS-B dev sentences",
        "checkpoint": checkpoint or "shipped default",
    }
    notes = (
        "β = 0 is gen_asym (the predicted answer alone); large β approaches the teacher on every query the gate "
        "lets through. Lower is safer for adv top5 and any-harm; higher is better for the rest."
    )
    write_results(out, "query_mix", rows, meta, notes)
    write_plot(out, "query_mix", rows, COLUMNS + DEV, "gen_hybrid's query mix β, with and without the harm gate")


if __name__ == "__main__":
    typer.run(main)
