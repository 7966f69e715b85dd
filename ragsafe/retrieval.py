"""Safety-aware retrieval: say when the backbone would refuse the query, and optionally return nothing.

The gen embedding of a query approximates the teacher's embedding of the backbone's *answer*, so a
query the backbone would refuse lands near its refusals. The refusal score is linear in the query's
gen embedding: `e · direction + bias`. Checkpoints calibrated by `ragsafe.train.calibrate` store a
logistic harm probe fitted on the training queries; older ones store the centroid of the teacher
vectors of the backbone's refusals (bias 0, a cosine). One forward pass, no decoding.

Modes: "off" (plain search), "flag" (every hit carries the query's refusal_score), "suppress"
(no hits when the score is above the threshold). The threshold is calibrated on held-out
training-side queries (see `calibrate_threshold`), never on an evaluation set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from ragsafe.embedders.gen import GenEmbedder

if TYPE_CHECKING:  # the trainer imports this module; it must not need Qdrant
    from ragsafe.index import Hit, Index

Mode = Literal["off", "flag", "suppress"]


class RefusalScorer:
    def __init__(self, embedder: GenEmbedder, direction: np.ndarray, threshold: float, bias: float = 0.0) -> None:
        direction = np.asarray(direction, dtype=np.float32)
        if direction.shape != (embedder.dim,):
            raise ValueError(f"refusal direction has shape {direction.shape}, expected ({embedder.dim},)")
        self.embedder = embedder
        self.direction, self.bias, self.threshold = direction, float(bias), float(threshold)

    @classmethod
    def from_safety(cls, embedder: GenEmbedder, safety: dict | None) -> RefusalScorer:
        """From a checkpoint's "safety" entry: a harm probe, or (older checkpoints) a refusal centroid."""
        safety = safety or {}
        if safety.get("direction") is not None:
            return cls(embedder, safety["direction"], safety["threshold"], safety.get("bias", 0.0))
        if safety.get("refusal_centroid") is not None:
            centroid = np.asarray(safety["refusal_centroid"], dtype=np.float32)
            return cls(embedder, centroid / np.linalg.norm(centroid), safety["threshold"])
        raise ValueError("this checkpoint has no refusal calibration: run `ragsafe calibrate` on it")

    @classmethod
    def for_embedder(cls, embedder) -> RefusalScorer | None:
        """The scorer a gen embedder's checkpoint carries; None for other embedders or uncalibrated tokens."""
        if not isinstance(embedder, GenEmbedder) or not embedder.safety:
            return None
        try:
            return cls.from_safety(embedder, embedder.safety)
        except ValueError:
            return None

    def scores_for(self, gen_vectors: np.ndarray) -> np.ndarray:
        """Scores of pure gen query vectors (`GenEmbedder.encode_gen_queries`, not the hybrid mix)."""
        return np.asarray(gen_vectors, dtype=np.float32) @ self.direction + self.bias

    def blocks(self, gen_vectors: np.ndarray) -> np.ndarray:
        """Which queries suppress mode returns nothing for (score above the threshold)."""
        return self.scores_for(gen_vectors) > self.threshold

    def scores(self, queries: list[str]) -> np.ndarray:
        return self.scores_for(self.embedder.encode_gen_queries(queries))


def calibrate_threshold(benign_scores: np.ndarray, max_false_rate: float = 0.05) -> float:
    """The score above which at most `max_false_rate` of benign queries fall."""
    return float(np.quantile(benign_scores, 1 - max_false_rate, method="higher"))  # "at most": no interpolation


@dataclass
class SafeResult:
    query: str
    refusal_score: float | None
    suppressed: bool
    hits: list[Hit] = field(default_factory=list)


class SafeRetriever:
    def __init__(self, index: Index, embedder: GenEmbedder, scorer: RefusalScorer | None, mode: Mode = "flag"):
        if mode != "off" and scorer is None:
            raise ValueError(f"mode '{mode}' needs a refusal scorer")
        self.index, self.embedder, self.scorer, self.mode = index, embedder, scorer, mode

    def search(self, query: str, k: int = 5) -> SafeResult:
        from ragsafe.index import storage_name

        gen_vector = self.embedder.encode_gen_queries([query])
        score = float(self.scorer.scores_for(gen_vector)[0]) if self.scorer and self.mode != "off" else None
        if self.mode == "suppress" and self.scorer.blocks(gen_vector)[0]:
            return SafeResult(query, score, True, [])
        vector = self.embedder.mix_query(gen_vector, [query])[0]
        hits = self.index.search(vector, storage_name(self.embedder), k)
        if score is not None:
            for hit in hits:
                hit.metadata["refusal_score"] = score
        return SafeResult(query, score, False, hits)
