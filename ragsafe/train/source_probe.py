"""A harm probe fitted from where each query comes from, not from what the backbone answered.

The probe fitted at training time (`calibrate.py`) labels red-team openings by the backbone's own
refusal, and its positives are instruction-style requests while its negatives are questions and tasks.
It learned the phrasing: it flags 99 % of AdvBench goals but 22.5 % of XSTest's unsafe prompts, and
"How do I make a pipe bomb at home?" passes. This fit removes that shortcut from both classes:

- every how-to request of every source also enters as a plain question under its source's label
  (`restyle.as_question`), so the form of a request says nothing about its class;
- the benign side gains look-alikes, consumer medical questions about drugs, poisons and overdoses,
  and declarative text (STS-B train sentences that no STS benchmark holds), so a statement does not
  pass for harmless just because it is not a request. The probe also judges passages for the audit
  (`RefusalJudge`), and declarative negatives are what passages look like;
- red-team openings are left out: their source does not say which way each one goes.

The features and the regression are the training-time probe's (`probe_features`, `fit_harm_probe`),
so checkpoints, the gate and suppress mode read it unchanged. No answer is generated: one encoder pass
per text. The threshold is the strictest held-out false-alarm rate that still catches `min_caught` of
the held-out harmful requests; only the pack's own split decides it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.teacher import TeacherEmbedder
from ragsafe.evaluation.tasks import STS_TASKS, sts
from ragsafe.model.backbone import Backbone, require_float
from ragsafe.retrieval import probe_features
from ragsafe.train.calibrate import fit_harm_probe
from ragsafe.train.domains import PROBE_PACK, DomainPack
from ragsafe.train.labels import label_of
from ragsafe.train.queries import normalise
from ragsafe.train.restyle import as_question


@dataclass
class SourceProbeConfig:
    pack: str = str(PROBE_PACK)
    declarative: int = 1500  # STS-B train sentences as negatives; 0: none
    val_fraction: float = 0.2
    false_rates: tuple[float, ...] = (0.01, 0.02, 0.05)  # tried strictest first
    min_caught: float = 0.9
    seed: int = 0


@dataclass
class ProbeExamples:
    texts: list[str]
    labels: np.ndarray  # 1 harmful, 0 benign
    groups: np.ndarray  # a text and its question copy share a group, so they share a split
    counts: dict[str, int] = field(default_factory=dict)


def probe_examples(cfg: SourceProbeConfig, data_dir: str | Path | None) -> ProbeExamples:
    """The pack's harmful and benign queries with their question copies, plus declarative negatives."""
    queries, _ = DomainPack.load(cfg.pack).collect(data_dir, cfg.seed)
    rng = random.Random(cfg.seed)
    texts: list[str] = []
    labels: list[int] = []
    groups: list[int] = []
    seen: set[str] = set()

    def add(text: str, label: int, group: int) -> None:
        key = normalise(text)
        if key and key not in seen:
            seen.add(key)
            texts.append(text)
            labels.append(label)
            groups.append(group)

    copies = 0
    for group, query in enumerate(queries):
        label = label_of(query.source)
        if label not in ("harmful", "benign"):
            continue
        add(query.text, int(label == "harmful"), group)
        question = as_question(query.text, rng)
        if question is not None:
            before = len(texts)
            add(question, int(label == "harmful"), group)
            copies += len(texts) - before
    start = len(queries)
    sentences = declarative_sentences(data_dir, cfg.declarative, cfg.seed)
    for offset, sentence in enumerate(sentences):
        add(sentence, 0, start + offset)
    y = np.asarray(labels, dtype=np.int64)
    counts = {
        "harmful requests": int(y.sum()),
        "benign queries and sentences": int(len(y) - y.sum()),
        "question copies": copies,
        "declarative sentences": len(sentences),
    }
    return ProbeExamples(texts, y, np.asarray(groups), counts)


def declarative_sentences(data_dir: str | Path | None, count: int, seed: int) -> list[str]:
    """STS-B train sentences that no STS benchmark holds (STS-B's splits reuse STS12-16 pairs)."""
    if count <= 0:
        return []
    benchmarks = [sts(data_dir, name) for name in STS_TASKS]
    sentences = sts(data_dir, "STSBenchmark-train").without_sentences_of(benchmarks).sentences()
    return random.Random(seed).sample(sentences, min(count, len(sentences)))


def split_groups(ex: ProbeExamples, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train / held-out indices: whole groups, the same share of each class (harmful requests are few)."""
    rng = np.random.RandomState(seed)
    held: set[int] = set()
    for label in (0, 1):
        groups = np.unique(ex.groups[ex.labels == label])
        rng.shuffle(groups)
        held.update(groups[: int(np.ceil(val_fraction * len(groups)))].tolist())
    val = [i for i, g in enumerate(ex.groups) if g in held]
    train = [i for i, g in enumerate(ex.groups) if g not in held]
    return train, val


def fit_source_probe(
    gen: GenEmbedder,
    data_dir: str | Path | None = None,
    cfg: SourceProbeConfig | None = None,
    features_of: Callable[[list[str]], np.ndarray] | None = None,
) -> dict:
    """A checkpoint "safety" entry (the schema `fit_harm_probe` writes), fitted on the pack's sources.

    features_of: the probe features of texts, when the caller has them (a benchmark's vector cache);
    by default the gen and teacher passes run here."""
    cfg = cfg or SourceProbeConfig()
    if gen.teacher is None:
        raise ValueError("fit_source_probe: the probe reads the teacher's view of the query; load gen with a teacher")
    if not 0 < cfg.min_caught <= 1:
        raise ValueError("fit_source_probe: min_caught must be in (0, 1]")
    ex = probe_examples(cfg, data_dir)
    if ex.labels.min() == ex.labels.max():
        raise ValueError(f"{cfg.pack}: the probe needs harmful and benign sources; found one class only")
    if features_of is None:
        teacher = gen.teacher

        def features_of(texts: list[str]) -> np.ndarray:
            return probe_features(gen.encode_probe_queries(texts), teacher.encode_queries(texts))

    features = features_of(ex.texts)
    train, val = split_groups(ex, cfg.val_fraction, cfg.seed)
    probe = fit_harm_probe(features, ex.labels, train, val, cfg.false_rates, cfg.min_caught)
    tried = probe.pop("caught_at_rates", {})
    return probe | {
        "features": "gen+teacher",
        "labels": "by source: harmful requests 1, benign queries and declarative sentences 0; question copies "
        "of how-to requests under their source's label; red-team openings left out",
        "threshold_rule": f"the strictest held-out false-alarm rate catching >= {cfg.min_caught:.0%} of held-out "
        f"harmful requests; caught at each rate tried: {tried}",
        "examples": ex.counts,
        "pack": Path(cfg.pack).name,
    }


def refit_probe(
    checkpoint: str | Path,
    data_dir: str | Path | None = None,
    cfg: SourceProbeConfig | None = None,
    backbone: Backbone | str | None = None,
    teacher: TeacherEmbedder | None = None,
) -> dict:
    """Fit the source probe for a checkpoint and write it into its config.json (`write_probe`)."""
    from ragsafe.model.checkpoint import read_config

    require_float(backbone if isinstance(backbone, Backbone) else None)
    read_config(checkpoint)  # first among the files: a folder that is no checkpoint is the error to report
    cfg = cfg or SourceProbeConfig()
    DomainPack.load(cfg.pack).check_files(data_dir)  # a wrong pack or data dir, before the models load
    gen = GenEmbedder.load(checkpoint, backbone, documents="teacher", teacher=teacher)
    fitted = fit_source_probe(gen, data_dir, cfg)
    write_probe(checkpoint, fitted)
    return fitted


def write_probe(checkpoint: str | Path, fitted: dict) -> None:
    """A fitted probe into a checkpoint's config.json; the card keeps all but the vector. The gen
    tokens and the query mix are untouched.

    The probe the checkpoint had before its first refit (the trainer's) is kept under
    "probe_before_refit": it is the baseline measured on these same tokens, and refitting it would
    need the training run's answers."""
    from ragsafe.model.checkpoint import read_config, write_config

    config = read_config(checkpoint)
    if config.get("safety") and "probe_before_refit" not in config:
        config["probe_before_refit"] = config["safety"]
    config["safety"] = fitted
    card = config.get("card") or {}
    card["safety"] = {k: v for k, v in fitted.items() if k != "direction"}
    config["card"] = card
    write_config(checkpoint, config)
