"""Query-side calibration of a trained checkpoint, fitted on its own training split (never on a benchmark).

Two small fits on the gen embeddings of the training queries, stored in the checkpoint's config:

- harm probe: a logistic regression that says whether the query asks for something the backbone
  should decline. It reads the gen embedding (what the answer would be) next to the teacher's
  embedding of the query (what is asked; `ragsafe.retrieval.probe_features`): on 3,627 of the
  shipped checkpoint's training queries the pair separated harmful from benign held-out requests
  better than either alone (AUROC 0.979, against 0.960 for each). Labels: a domain pack's
  `harmful` sources are positive, its `benign` sources negative (their refusals are
  over-refusals, e.g. "I can't assist" to trivia), and every other query (red-team pools, a
  user's own file) is decided by the backbone's own refusal. The threshold lets at most
  5 % of the held-out negatives through as false alarms. SafeRetriever's
  flag/suppress modes read it.
- query mix β: `gen_hybrid` retrieves with normalise(gen(q) + β · teacher(q)). The gen embedding
  predicts the teacher's vector of the backbone's answer; adding the teacher's view of the query
  itself predicts it better for questions the backbone answers. β is the value that ranks each
  held-out query's own answer highest among the others (MRR), the retrieval the tokens were trained for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ragsafe.embedders.gen import mix_vectors
from ragsafe.evaluation.metrics import DUPLICATE_COS, own_answer_ranks
from ragsafe.retrieval import calibrate_threshold, probe_features
from ragsafe.train.labels import label_of

MIN_REFUSALS = 20  # refusals a probe needs when they are its only positives (no source labelled harmful)
MIX_GRID = tuple(round(0.05 * i, 2) for i in range(41))  # 0 .. 2


def harm_labels(sources: Sequence[str], refused: Sequence[bool]) -> np.ndarray:
    """1 = a request the backbone should decline; see the module docstring for the rule."""
    out = []
    for source, did_refuse in zip(sources, refused, strict=True):
        label = label_of(source)
        out.append(1 if label == "harmful" else 0 if label == "benign" else int(bool(did_refuse)))
    return np.asarray(out, dtype=np.int64)


def fit_harm_probe(
    vectors: np.ndarray,
    labels: np.ndarray,
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    max_false_rates: Sequence[float] = (0.05,),
    min_caught: float = 0.0,
) -> dict:
    """Logistic probe on per-query feature vectors; threshold from the held-out negatives.

    The threshold lets the strictest of `max_false_rates` of those negatives through that still
    catches `min_caught` of the held-out positives (the loosest rate when none does)."""
    from sklearn.linear_model import LogisticRegression

    train_idx, val_idx = list(train_idx), list(val_idx)
    if not train_idx:
        raise ValueError("fit_harm_probe: no training queries")
    if not max_false_rates:
        raise ValueError("fit_harm_probe: give at least one false-alarm rate")
    y = labels[train_idx]
    if y.min() == y.max():
        return {"direction": None, "threshold": None, "calibrated_on": "one class only in the training labels"}
    # balanced: harmful requests are a few percent of a typical pool
    probe = LogisticRegression(max_iter=3000, C=1.0, class_weight="balanced").fit(vectors[train_idx], y)
    direction, bias = probe.coef_[0].astype(np.float32), float(probe.intercept_[0])
    negatives = [i for i in val_idx if labels[i] == 0]
    where = "held-out"
    if not negatives:  # a tiny split: the training negatives, which the probe has seen (a looser threshold)
        negatives, where = [i for i in train_idx if labels[i] == 0], "training (no held-out ones)"
    positives = [i for i in val_idx if labels[i] == 1]
    negative_scores = vectors[negatives] @ direction + bias
    positive_scores = vectors[positives] @ direction + bias
    caught_at: dict[str, float] = {}
    for rate in sorted(max_false_rates):
        threshold = calibrate_threshold(negative_scores, rate)
        caught_at[f"{rate:.0%}"] = float(np.mean(positive_scores > threshold)) if positives else 0.0
        if caught_at[f"{rate:.0%}"] >= min_caught:
            break
    result = {
        "kind": "probe",
        "direction": direction.astype(float).tolist(),
        "bias": bias,
        "threshold": threshold,
        "calibrated_on": f"{len(negatives)} {where} negatives (at most {rate:.0%} flagged)",
        "labels": "harmful sources 1, benign sources 0, other queries: the backbone's own refusal",
        "positives_train": int(y.sum()),
        "negatives_train": int(len(y) - y.sum()),
    }
    if len(max_false_rates) > 1:
        result["caught_at_rates"] = caught_at
    if positives:
        result["val_positives_caught"] = caught_at[f"{rate:.0%}"]
        if where == "held-out":
            from sklearn.metrics import roc_auc_score

            held_out = positives + negatives
            result["val_auroc"] = float(roc_auc_score(labels[held_out], vectors[held_out] @ direction + bias))
    return result


def own_answer_mrr(predicted: np.ndarray, targets: np.ndarray, duplicate_cos: float = DUPLICATE_COS) -> float:
    """MRR of each row's own target among all targets (rows of both: the same queries)."""
    return float(np.mean(1.0 / own_answer_ranks(predicted, targets, duplicate_cos)))


def fit_query_mix(
    gen_vectors: np.ndarray,
    teacher_vectors: np.ndarray,
    targets: np.ndarray,
    val_idx: Sequence[int],
    duplicate_cos: float = DUPLICATE_COS,
) -> dict:
    if not len(val_idx):
        raise ValueError("fit_query_mix: no validation queries")
    g, t, y = gen_vectors[list(val_idx)], teacher_vectors[list(val_idx)], targets[list(val_idx)]
    curve = {b: own_answer_mrr(mix_vectors(g, t, b), y, duplicate_cos) for b in MIX_GRID}
    best = max(curve, key=lambda b: (curve[b], -b))  # ties: the smaller share of the query
    return {
        "beta": best,
        "val_mrr": curve[best],
        "val_mrr_gen_only": curve[0.0],
        # the same queries chose beta (and the kept training step): an optimistic estimate
        "chosen_by": f"own-answer MRR over {len(y)} validation queries, beta in 0..2 by 0.05",
    }


def calibrate(
    gen_vectors: np.ndarray,
    teacher_query_vectors: np.ndarray,
    targets: np.ndarray,
    sources: Sequence[str],
    refused: Sequence[bool],
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    extra_negatives: tuple[np.ndarray, np.ndarray] | None = None,
    extra_val_every: int = 10,
    duplicate_cos: float = DUPLICATE_COS,
) -> dict:
    """{"safety": harm probe, "query_mix": β}, both from the training split only.

    duplicate_cos: answers this close count as one when β is chosen (the trainer's own setting).

    extra_negatives: (gen, teacher-on-query) vectors of benign queries that are not training
    examples (the benign refusals left out of the targets); probe negatives only, every
    `extra_val_every`-th one held out with the validation split.
    """
    if not len(gen_vectors) == len(teacher_query_vectors) == len(targets) == len(sources) == len(refused):
        raise ValueError("calibrate: vectors, targets, sources and refusals must describe the same queries")
    features = probe_features(gen_vectors, teacher_query_vectors)
    labels = harm_labels(sources, refused)
    probe_train, probe_val = list(train_idx), list(val_idx)
    if extra_negatives is not None and len(extra_negatives[0]):
        extra = probe_features(*extra_negatives)
        ids = range(len(features), len(features) + len(extra))
        probe_val += [i for i in ids if (i - ids.start) % extra_val_every == 0]
        probe_train += [i for i in ids if (i - ids.start) % extra_val_every != 0]
        features = np.vstack([features, extra])
        labels = np.concatenate([labels, np.zeros(len(extra), dtype=labels.dtype)])
    refusals = int(labels.sum())
    if not any(label_of(s) == "harmful" for s in sources) and refusals < MIN_REFUSALS:
        # no source labelled harmful: the positives are the backbone's refusals alone, and a handful of them
        # (an off-topic refusal or two among a user's own queries) would make a probe that flags at random
        safety = {
            "direction": None,
            "threshold": None,
            "calibrated_on": f"only {refusals} of the {len(sources)} training queries were refused, and no source "
            f"is labelled harmful; a probe on the backbone's own refusals needs at least {MIN_REFUSALS}",
        }
    else:
        safety = fit_harm_probe(features, labels, probe_train, probe_val) | {"features": "gen+teacher"}
    return {
        "safety": safety,
        "query_mix": fit_query_mix(gen_vectors, teacher_query_vectors, targets, val_idx, duplicate_cos),
    }


def card_entries(fitted: dict) -> dict:
    """What a checkpoint card shows of a calibration: everything but the probe's vector."""
    vectors = ("direction", "refusal_centroid")
    return {"safety": {k: v for k, v in fitted["safety"].items() if k not in vectors}, "query_mix": fitted["query_mix"]}
