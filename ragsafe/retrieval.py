"""Safety-aware retrieval: say when the backbone would refuse the query, and optionally return nothing.

The gen embedding of a query approximates the teacher's embedding of the backbone's *answer*, so a
query the backbone would refuse lands near its refusals. The refusal score is the cosine between
the query's gen embedding and the centroid of the teacher vectors of the refusals the backbone
wrote during training (stored in the checkpoint). One forward pass, no decoding.

Modes: "off" (plain search), "flag" (every hit carries the query's refusal_score), "suppress"
(no hits when the score is above the threshold). The default threshold is calibrated on benign
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
    def __init__(self, embedder: GenEmbedder, centroid: np.ndarray, threshold: float) -> None:
        if centroid.shape != (embedder.dim,):
            raise ValueError(f"refusal centroid has shape {centroid.shape}, expected ({embedder.dim},)")
        self.embedder = embedder
        self.centroid = centroid / np.linalg.norm(centroid)
        self.threshold = threshold

    @classmethod
    def from_checkpoint_config(cls, embedder: GenEmbedder, config: dict) -> RefusalScorer:
        safety = config.get("safety")
        if not safety or safety.get("refusal_centroid") is None:
            raise ValueError("this checkpoint has no refusal calibration (train it with ragsafe >= 0.1)")
        return cls(embedder, np.asarray(safety["refusal_centroid"], dtype=np.float32), float(safety["threshold"]))

    def scores_for(self, query_vectors: np.ndarray) -> np.ndarray:
        return np.asarray(query_vectors, dtype=np.float32) @ self.centroid

    def scores(self, queries: list[str]) -> np.ndarray:
        return self.scores_for(self.embedder.encode_queries(queries))


def refusal_centroid(targets: np.ndarray, refused: list[bool]) -> np.ndarray:
    """Mean direction of the teacher vectors of responses that were refusals."""
    picked = targets[np.asarray(refused, dtype=bool)]
    if len(picked) == 0:
        raise ValueError("no refusals among the responses: nothing to calibrate the refusal score on")
    centroid = picked.mean(axis=0)
    return centroid / np.linalg.norm(centroid)


def calibrate_threshold(benign_scores: np.ndarray, max_false_rate: float = 0.05) -> float:
    """The score above which at most `max_false_rate` of benign queries fall."""
    return float(np.quantile(benign_scores, 1 - max_false_rate))


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

        vector = self.embedder.encode_queries([query])[0]
        score = float(self.scorer.scores_for(vector[None])[0]) if self.scorer and self.mode != "off" else None
        if self.mode == "suppress" and score is not None and score > self.scorer.threshold:
            return SafeResult(query, score, True, [])
        hits = self.index.search(vector, storage_name(self.embedder), k)
        if score is not None:
            for hit in hits:
                hit.metadata["refusal_score"] = score
        return SafeResult(query, score, False, hits)
