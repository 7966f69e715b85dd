"""How far does the harm probe carry to conversational harmful questions, and what decides it?

The training-time probe (`ragsafe.train.calibrate`) caught 99.4 % of AdvBench goals but 22.5 % of
XSTest's unsafe prompts: its positives are instruction-style ("Write a tutorial on ..."), and the
conversational red-team queries of HH-RLHF are labelled by the backbone's own refusal, so the many it
answers count as benign. The shipped probe is now fitted by source instead (`ragsafe fit-probe`,
`ragsafe.train.source_probe`: question copies of how-to requests, benign look-alikes, declarative
negatives, red-team left out). This script measures it beside the earlier labelling rules, refitted
here on the broad pack's queries with the same features (gen embedding next to the teacher's
embedding of the query) and the same logistic regression: harmful sources 1, benign sources 0, and
the red-team queries left out, all 1, or all 0 (benign sources subsampled to 2,000 queries); a last
rule labels the red-team queries harmful and adds 1,500 STS-B train sentences that no STS benchmark
contains as negatives. The probe the trainer fitted on the same tokens, which `ragsafe fit-probe` keeps
in config.json as "probe_before_refit", is the baseline row. (A probe from another checkpoint's
config.json would read these tokens' vectors with weights fitted on other ones, so none is taken.)

Two readings per probe:
- the share of each set flagged at the probe's threshold (the refits: 5 % of held-out benign-source
  queries flagged, the last rule 5 % or 1 % of its held-out negatives);
- AUROC between a harmful and a benign set, independent of any threshold.

Evaluation sets, none of them in a training pack: AdvBench goals, XSTest unsafe and safe prompts, the
project's audit probes, two Safety-tuned LLaMAs sets (Q-Harm, MaliciousInstructions; CC BY-NC, for
evaluation only), XQuAD questions, and the general family's retrieval queries and STS sentences.

    python benchmarks/probe_labels.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
import typer
from general import GeneralTasks
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ragsafe.audit import load_probes
from ragsafe.datadir import data_file
from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.registry import build_embedders
from ragsafe.evaluation.doc_cache import encode_probe_queries_cached, encode_queries_cached
from ragsafe.evaluation.results import write_plot, write_results
from ragsafe.evaluation.tasks import STS_TASKS, advbench_queries, sts, xquad_queries, xstest_queries
from ragsafe.model.checkpoint import default_checkpoint_dir, read_config
from ragsafe.retrieval import calibrate_threshold, probe_features
from ragsafe.train.domains import DomainPack
from ragsafe.train.labels import label_of

RESULTS = Path(__file__).parent / "results"
RULES = {"left out": None, "all harmful": 1, "all benign": 0}
PAIRS = [
    ("xstest unsafe", "xstest safe"),
    ("audit probes", "general"),
    ("Q-Harm", "general"),
    ("advbench", "general"),
]


def evaluation_sets(data_dir: str | None) -> dict[str, list[str]]:
    """The harmful and benign query sets a probe is read on; none of them is in a training pack."""

    def stl(name: str) -> list[str]:
        path = data_file(data_dir, f"safety/safety_tuned_llamas/evaluation/{name}.json")
        return json.loads(path.read_text())["instructions"]

    family = GeneralTasks.load(data_dir, queries=50, corpus=200, doc_words=96, pairs=60, per_class=4, test=200)
    return {
        "advbench": advbench_queries(data_dir).queries,
        "xstest unsafe": xstest_queries(data_dir, "unsafe").queries,
        "audit probes": [probe["query"] for probe in load_probes(None)],
        "Q-Harm": stl("Q-Harm"),
        "MaliciousInstructions": stl("I-MaliciousInstructions"),
        "xstest safe": xstest_queries(data_dir, "safe").queries,
        "xquad": xquad_queries(data_dir, 200).queries,
        "general": family.query_texts(),
    }


def score_row(name: str, scores: dict[str, np.ndarray], threshold: float) -> dict:
    """One probe's row: the share of each set above the threshold, and the AUROC of each pair."""
    out = {"probe": name, "threshold": threshold}
    out |= {f"flagged: {k}": float(np.mean(s > threshold)) for k, s in scores.items()}
    for pos, neg in PAIRS:
        y = [1] * len(scores[pos]) + [0] * len(scores[neg])
        out[f"AUROC {pos} / {neg}"] = float(roc_auc_score(y, np.concatenate([scores[pos], scores[neg]])))
    typer.echo({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()})
    return out


def write_probe_table(out: Path, name: str, rows: list[dict], meta: dict, notes: str, title: str) -> None:
    """`name`.json/.md and a plot of the AUROC columns."""
    write_results(out, name, rows, meta, notes)
    write_plot(out, name, rows, [f"AUROC {p} / {n}" for p, n in PAIRS], title, label="probe")


def main(
    data_dir: str | None = None,
    benign: int = 2000,
    declarative: int = 1500,
    c: float = 1.0,
    threads: int = 2,
    out: Path = RESULTS,
):
    torch.set_num_threads(threads)
    cache = out / ".cache"
    (gen,) = build_embedders(["gen_hybrid"], None)
    assert isinstance(gen, GenEmbedder) and gen.teacher is not None and gen.safety

    def features(texts: list[str]) -> np.ndarray:
        probe_vectors, _ = encode_probe_queries_cached(gen, texts, cache)
        teacher_vectors, _ = encode_queries_cached(gen.teacher, texts, cache)
        return probe_features(probe_vectors, teacher_vectors)

    queries, _ = DomainPack.load("broad").collect(data_dir)
    benign_queries = [q for q in queries if label_of(q.source) == "benign"]
    kept = {id(q) for q in random.Random(0).sample(benign_queries, min(benign, len(benign_queries)))}
    queries = [q for q in queries if label_of(q.source) != "benign" or id(q) in kept]
    labels = np.array([label_of(q.source) for q in queries])
    x = features([q.text for q in queries])
    held_out = np.random.RandomState(0).rand(len(queries)) < 0.2

    sets = evaluation_sets(data_dir)
    evaluation = {name: features(texts) for name, texts in sets.items()}

    def row(name: str, direction: np.ndarray, bias: float, threshold: float) -> dict:
        return score_row(name, {k: v @ direction + bias for k, v in evaluation.items()}, threshold)

    def stored(name: str, safety: dict) -> dict:
        if safety.get("features") != "gen+teacher":
            raise ValueError(f"{name}: not a gen+teacher harm probe")
        return row(name, np.array(safety["direction"]), safety["bias"], safety["threshold"])

    rows = []
    before = read_config(default_checkpoint_dir()).get("probe_before_refit")
    if before:
        rows.append(stored(f"before the refit ({before.get('labels', 'training-time')})", before))
    rows.append(stored("shipped: by source (ragsafe fit-probe)", gen.safety))
    for rule, value in RULES.items():
        y = np.where(labels == "harmful", 1, np.where(labels == "benign", 0, -1 if value is None else value))
        train = ~held_out & (y >= 0)
        probe = LogisticRegression(max_iter=3000, C=c, class_weight="balanced").fit(x[train], y[train])
        direction, bias = probe.coef_[0], float(probe.intercept_[0])
        threshold = calibrate_threshold(x[held_out & (labels == "benign")] @ direction + bias, 0.05)
        rows.append(row(f"refit, red-team {rule}", direction, bias, threshold))

    # red-team harmful, plus declarative benign text the pack lacks (held out like the queries)
    benchmark_sts = [sts(data_dir, name) for name in STS_TASKS]
    train_sts = sts(data_dir, "STSBenchmark-train").without_sentences_of(benchmark_sts)
    sentences = train_sts.sentences()
    sentences = random.Random(0).sample(sentences, min(declarative, len(sentences)))
    x_all = np.vstack([x, features(sentences)])
    y = np.concatenate([np.where(labels == "benign", 0, 1), np.zeros(len(sentences), dtype=int)])
    held = np.concatenate([held_out, np.random.RandomState(1).rand(len(sentences)) < 0.2])
    negatives = held & (y == 0)
    probe = LogisticRegression(max_iter=3000, C=c, class_weight="balanced").fit(x_all[~held], y[~held])
    direction, bias = probe.coef_[0], float(probe.intercept_[0])
    for rate in (0.05, 0.01):
        threshold = calibrate_threshold(x_all[negatives] @ direction + bias, rate)
        rows.append(
            row(
                f"refit, red-team all harmful, + STS-B train sentences ({rate:.0%} threshold)",
                direction,
                bias,
                threshold,
            )
        )

    counts = {k: int((labels == k).sum()) for k in ("harmful", "benign", "red-team")}
    meta = {
        "training queries": f"broad pack by source: {counts} (benign subsampled, seed 0); 20 % held out",
        "refit": f"logistic regression, C={c}, balanced; threshold: 5 % of held-out benign-source queries flagged "
        "(the last rule: 5 % or 1 % of its held-out negatives, STS-B train sentences included)",
        "declarative negatives": f"{len(sentences)} STS-B train sentences in no STS benchmark (seed 0)",
        "evaluation": ", ".join(f"{k} {len(v)}" for k, v in sets.items()),
        "checkpoint": "shipped default (its probe and the one it replaced, each at its own threshold)",
    }
    notes = (
        "The refit rules are explorations, not shipped. Each probe's threshold comes from its own held-out "
        "negatives, so flag rates compare only at similar false alarms on the benign sets; the AUROC columns "
        "compare directly."
    )
    write_probe_table(out, "probe_labels", rows, meta, notes, "harm probe: red-team labelling rules")


if __name__ == "__main__":
    typer.run(main)
