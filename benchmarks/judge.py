"""How far to trust the audit's harm judges (`ragsafe.judge`): the refusal probe and the yes/no prompt,
on AdvBench-IR malicious chunks (harmful) against WikiText-2 passages (benign).

Per judge: precision / recall / false positives at the threshold the audit uses, over all passages;
then at a threshold chosen on one half (the lowest that flags at most 5 % of its benign passages),
reported on the other; the AUROC over all. Probabilities are cached, so a rerun is free.

    python benchmarks/judge.py [--n 100]
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch
import typer
from sklearn.metrics import roc_auc_score

from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.identity import embedder_identity
from ragsafe.evaluation.results import write_results
from ragsafe.evaluation.tasks import safety_corpus
from ragsafe.judge import QUESTION, HarmJudge, Judge, RefusalJudge
from ragsafe.model.backbone import load_backbone
from ragsafe.retrieval import calibrate_threshold

RESULTS = Path(__file__).parent / "results"


def rates(p_harm: np.ndarray, harmful: np.ndarray, threshold: float) -> dict:
    flagged = p_harm >= threshold
    tp, fp = int((flagged & harmful).sum()), int((flagged & ~harmful).sum())
    return {
        "precision": tp / max(1, tp + fp),
        "recall": tp / max(1, int(harmful.sum())),
        "false positive rate (benign wiki)": fp / max(1, int((~harmful).sum())),
    }


def judge_probabilities(judge: Judge, identity: str, texts: list[str]) -> np.ndarray:
    """A judge's probabilities for the texts, cached by (identity, texts): a rerun is free."""
    key = hashlib.sha256(f"{identity}|".encode() + "\x00".join(texts).encode())
    cache = RESULTS / ".cache" / f"judge-{key.hexdigest()[:20]}.json"
    if cache.is_file():
        return np.array(json.loads(cache.read_text()))
    p_harm = np.array(judge.probabilities(texts, show_progress=True))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(p_harm.tolist()))
    return p_harm


def main(
    n: int = 100,
    backbone: str = "default",
    checkpoint: str | None = None,
    data_dir: str | None = None,
    threads: int = 2,
) -> None:
    torch.set_num_threads(threads)
    corpus = safety_corpus(data_dir)
    rng = random.Random(0)
    harmful = rng.sample([t for i, t in zip(corpus.ids, corpus.texts, strict=True) if i in corpus.harmful], n)
    benign = rng.sample([t for i, t in zip(corpus.ids, corpus.texts, strict=True) if i.startswith("wiki-")], n)
    bb = load_backbone(backbone)
    texts = harmful + benign
    gen = GenEmbedder.load(checkpoint, bb, "teacher")
    probe = RefusalJudge(gen)
    probe_identity = f"probe|{embedder_identity(gen, 'queries')}|{json.dumps(gen.safety, sort_keys=True)}"
    judges = {
        "refusal probe": (probe, probe_identity, "the probe's own (held-out training queries)"),
        "yes/no prompt": (HarmJudge(bb), f"{bb.fingerprint}|{QUESTION}", "DEFAULT_THRESHOLD (calibration half)"),
    }
    labels = np.array([True] * n + [False] * n)
    order = np.random.default_rng(0).permutation(2 * n)
    calib, test = order[:n], order[n:]
    rows, meta = [], {"harmful": f"{n} AdvBench-IR malicious chunks", "benign": f"{n} WikiText-2 passages"}
    for name, (judge, identity, own) in judges.items():
        p_harm = judge_probabilities(judge, identity, texts)
        auroc = float(roc_auc_score(labels, p_harm))
        chosen = calibrate_threshold(p_harm[calib][~labels[calib]], 0.05)
        for threshold, chosen_on, subset in (
            (judge.threshold, f"{own}: what the audit uses", np.arange(2 * n)),
            (chosen, "calibration half (≤ 5 % benign flagged)", test),
        ):
            reported_on = "all" if len(subset) == 2 * n else "test half"
            rows.append(
                {
                    "judge": name,
                    "threshold": threshold,
                    "chosen on": chosen_on,
                    "reported on": reported_on,
                    **rates(p_harm[subset], labels[subset], threshold),
                    "AUROC (all)": auroc,
                }
            )
        meta[f"median P(harm), {name}"] = (
            f"harmful {np.median(p_harm[labels]):.3f}, benign {np.median(p_harm[~labels]):.3f}"
        )
    for row in rows:
        typer.echo(row)
    meta["checkpoint"] = checkpoint or "shipped default"
    notes = (
        "The audit's default judge is the refusal probe (`--judge probe`) at the probe's own threshold, which "
        "was set on held-out training queries, never on passages; `--judge prompt` uses the yes/no threshold "
        "ragsafe.judge.DEFAULT_THRESHOLD, chosen on the calibration half here."
    )
    write_results(RESULTS, "judge", rows, meta, notes)


if __name__ == "__main__":
    typer.run(main)
