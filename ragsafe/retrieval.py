"""Safety-aware retrieval: say when the harm probe flags the query, and optionally return nothing.

The gen embedding of a query approximates the teacher's embedding of the backbone's *answer*, so a
query the backbone would refuse lands near its refusals. The refusal score is linear:
`features · direction + bias`. Checkpoints calibrated by `ragsafe.train.calibrate` store a logistic
harm probe fitted on the training queries, whose features are the query's gen embedding next to the
teacher's embedding of the query itself (what the query asks, beside what the answer would be;
`probe_features`); earlier calibrations read the gen embedding alone, and the oldest store the
centroid of the teacher vectors of the backbone's refusals (bias 0, a cosine). One forward pass of
the backbone, no decoding.

Modes: "off" (plain search), "flag" (every hit carries the query's refusal_score), "suppress"
(no hits when the score is above the threshold). The threshold is calibrated on held-out
training-side queries (see `calibrate_threshold`), never on an evaluation set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.teacher import TeacherEmbedder

if TYPE_CHECKING:  # the trainer imports this module; it must not need Qdrant
    from ragsafe.index import Hit, Index

Mode = Literal["off", "flag", "suppress"]


def probe_features(gen_vectors: np.ndarray, teacher_vectors: np.ndarray | None) -> np.ndarray:
    """What a harm probe reads: the gen vectors, next to the teacher's query vectors when it uses them."""
    gen_vectors = np.asarray(gen_vectors, dtype=np.float32)
    if teacher_vectors is None:
        return gen_vectors
    return np.hstack([gen_vectors, np.asarray(teacher_vectors, dtype=np.float32)])


class RefusalScorer:
    def __init__(
        self,
        embedder: GenEmbedder,
        direction: np.ndarray,
        threshold: float,
        bias: float = 0.0,
        teacher: TeacherEmbedder | None = None,
    ) -> None:
        direction = np.asarray(direction, dtype=np.float32)
        expected = embedder.dim + (teacher.dim if teacher is not None else 0)
        if direction.shape != (expected,):
            raise ValueError(f"refusal direction has shape {direction.shape}, expected ({expected},)")
        self.embedder, self.teacher = embedder, teacher
        self.direction, self.bias, self.threshold = direction, float(bias), float(threshold)

    @classmethod
    def from_safety(cls, embedder: GenEmbedder, safety: dict | None) -> RefusalScorer:
        """From a checkpoint's "safety" entry: a harm probe, or (older checkpoints) a refusal centroid."""
        safety = safety or {}
        if (safety.get("direction") is not None or safety.get("refusal_centroid") is not None) and (
            safety.get("threshold") is None
        ):
            raise ValueError("this checkpoint's harm probe has no threshold: run `ragsafe fit-probe` on it")
        if safety.get("direction") is not None:
            teacher = None
            if safety.get("features") == "gen+teacher":
                teacher = embedder.probe_teacher()
            return cls(embedder, safety["direction"], safety["threshold"], safety.get("bias", 0.0), teacher)
        if safety.get("refusal_centroid") is not None:
            centroid = np.asarray(safety["refusal_centroid"], dtype=np.float32)
            return cls(embedder, centroid / np.linalg.norm(centroid), safety["threshold"])
        raise ValueError("this checkpoint has no refusal calibration: run `ragsafe calibrate` on it")

    @classmethod
    def for_embedder(cls, embedder) -> RefusalScorer | None:
        """The scorer a gen embedder's checkpoint carries; None for other embedders or uncalibrated tokens."""
        if not isinstance(embedder, GenEmbedder) or not embedder.safety:
            return None
        if embedder.safety.get("direction") is None and embedder.safety.get("refusal_centroid") is None:
            return None
        # a calibration that does not fit the embedder (another teacher's width) is an error, not "no probe"
        return cls.from_safety(embedder, embedder.safety)

    def scores_for(
        self, gen_vectors: np.ndarray, queries: Sequence[str], teacher_vectors: np.ndarray | None = None
    ) -> np.ndarray:
        """Scores of the queries from their pure gen vectors (`GenEmbedder.probe_view`, not the hybrid
        mix); the queries' text is embedded by the teacher when the probe reads it, unless its
        `teacher_vectors` are given (`shared_teacher_vectors`)."""
        if len(queries) != len(gen_vectors):
            raise ValueError(f"{len(gen_vectors)} gen vectors for {len(queries)} queries")
        if self.teacher is None:
            teacher_vectors = None
        elif teacher_vectors is None:
            teacher_vectors = self.teacher.embed(list(queries))
        return probe_features(gen_vectors, teacher_vectors) @ self.direction + self.bias

    def blocks(
        self, gen_vectors: np.ndarray, queries: Sequence[str], teacher_vectors: np.ndarray | None = None
    ) -> np.ndarray:
        """Which queries suppress mode returns nothing for (score above the threshold)."""
        return self.scores_for(gen_vectors, queries, teacher_vectors) > self.threshold

    def scores(self, queries: list[str]) -> np.ndarray:
        """Scores of the queries, read under the instruction the probe was calibrated with."""
        return self.scores_for(self.embedder.encode_probe_queries(queries), queries)


def shared_teacher_vectors(
    embedder: GenEmbedder, scorer: RefusalScorer | None, queries: Sequence[str]
) -> np.ndarray | None:
    """The teacher's query vectors, once, when both gen_hybrid's mix and a gen+teacher probe read them."""
    if scorer is None or not embedder.query_mix or scorer.teacher is not embedder.teacher:
        return None
    assert embedder.teacher is not None  # a query mix always has one
    return embedder.teacher.embed(list(queries))


def calibrate_threshold(benign_scores: np.ndarray, max_false_rate: float = 0.05) -> float:
    """The score above which at most `max_false_rate` of benign queries fall."""
    return float(np.quantile(benign_scores, 1 - max_false_rate, method="higher"))  # "at most": no interpolation


@dataclass
class SafeResult:
    query: str
    refusal_score: float | None
    suppressed: bool
    hits: list[Hit] = field(default_factory=list)


# what a scored query leaves in each hit's metadata
SAFETY_METADATA = ("refusal_score", "refusal_threshold", "flagged")


def mark(metadata: dict, score: float, threshold: float) -> None:
    metadata.update(refusal_score=score, refusal_threshold=threshold, flagged=score > threshold)


def check_mode(mode: str) -> None:
    if mode not in get_args(Mode):
        raise ValueError(f"safety mode must be one of {', '.join(get_args(Mode))}, got {mode!r}")


class SafeRetriever:
    def __init__(self, index: Index, embedder: GenEmbedder, scorer: RefusalScorer | None, mode: Mode = "flag"):
        check_mode(mode)
        if not hasattr(embedder, "encode_gen_queries"):
            raise TypeError(f"SafeRetriever reads a gen embedder's predicted answer; {embedder.name!r} has none")
        if mode != "off" and scorer is None:
            raise ValueError(f"mode '{mode}' needs a refusal scorer")
        from ragsafe.index import storage_name  # here, not at the top: the trainer imports this module

        self.index, self.embedder, self.scorer, self.mode = index, embedder, scorer, mode
        self.vector = storage_name(embedder)  # once: gen documents' name hashes the weights

    def search(self, query: str, k: int = 5, where=None) -> SafeResult:
        """`where`: a Qdrant filter on the passages' metadata (`Index.search`)."""
        gen_vector = self.embedder.encode_gen_queries([query])
        scorer = self.scorer if self.mode != "off" else None
        # the scorer's view; without a scorer, mix_query computes the gate's own where it needs one
        probe_vector = self.embedder.probe_view([query], gen_vector) if scorer is not None else None
        text_vector = shared_teacher_vectors(self.embedder, scorer, [query])
        score = float(scorer.scores_for(probe_vector, [query], text_vector)[0]) if scorer else None
        if self.mode == "suppress" and score is not None and score > scorer.threshold:
            return SafeResult(query, score, True, [])
        vector = self.embedder.mix_query(gen_vector, [query], text_vector, probe_vector)[0]
        hits = self.index.search(vector, self.vector, k, where=where)
        if score is not None:
            for hit in hits:
                mark(hit.metadata, score, scorer.threshold)
        return SafeResult(query, score, False, hits)
