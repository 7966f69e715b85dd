"""What a query's gen embedding represents, read three ways: the response the frozen LM decodes from its
soft prompt, the logit lens at each compression position, and the harm probe's score (what the gate
and suppress mode act on). `ragsafe explain` prints it; this is the same reading as data."""

from __future__ import annotations

from dataclasses import dataclass

from ragsafe.embedders.gen import GenEmbedder
from ragsafe.model.chat import GenerationSettings
from ragsafe.model.gen_encoder import LensEntry
from ragsafe.retrieval import RefusalScorer


@dataclass(frozen=True)
class HarmReading:
    score: float
    threshold: float

    @property
    def flagged(self) -> bool:
        """Above the threshold: suppress returns nothing, gen_hybrid retrieves with the answer alone."""
        return self.score > self.threshold


@dataclass(frozen=True)
class Explanation:
    query: str
    response: str  # a short greedy sample of the prediction, not the retrieval decision: it can be wrong
    lens: list[LensEntry]
    harm: HarmReading | None  # None: the checkpoint carries no harm probe (`ragsafe fit-probe` fits one)


def explain(gen: GenEmbedder, query: str, max_new_tokens: int = 48, top_k: int = 5) -> Explanation:
    """Decode what `gen` embeds `query` as, under its query instruction."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"explain needs a non-empty query, got {query!r}")
    if any(isinstance(n, bool) or not isinstance(n, int) for n in (max_new_tokens, top_k)):
        raise TypeError(f"max_new_tokens and top_k are whole numbers, got {max_new_tokens!r} and {top_k!r}")
    if max_new_tokens < 1 or top_k < 1:
        raise ValueError(f"max_new_tokens and top_k must be at least 1, got {max_new_tokens} and {top_k}")
    scorer = RefusalScorer.for_embedder(gen)  # first: a probe that does not fit fails before the decoding
    encoder = gen.encoder
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    response = encoder.decode([query], gen.query_instruction, settings)[0]
    lens = encoder.logit_lens([query], gen.query_instruction, top_k=top_k)[0]
    harm = None if scorer is None else HarmReading(float(scorer.scores([query])[0]), scorer.threshold)
    return Explanation(query, response, lens, harm)
