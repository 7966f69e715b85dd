"""The Embedder protocol: the one interface benchmarks, audit, index and LlamaIndex adapters accept.

Queries and documents are encoded by separate methods because several embedders treat them
differently (gen: predicted response vs. summary; HyDE: generated answer vs. plain text).
Dense embedders return (N, dim) float32 arrays, L2-normalised, so a dot product is a cosine.
Sparse embedders (BM25) set `sparse = True` and return scipy CSR matrices whose dot product is the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

Vectors = np.ndarray | sp.csr_matrix

# here, not in the registry, so the CLI can check names without importing torch
NAMES = {
    "bm25": "BM25 as sparse vectors (rank-bm25 statistics in memory; hashed terms and the index's idf in Qdrant)",
    "teacher": "the teacher sentence-transformer (MiniLM) on the text itself",
    "llm_mean": "mean of the backbone's last-layer states over the text",
    "gen": "LLM2Vec-Gen, queries and documents through the gen encoder",
    "gen_asym": "LLM2Vec-Gen queries against teacher-embedded documents",
    "gen_hybrid": "gen_asym with the teacher's query vector mixed in (weight fitted on training answers), "
    "except for queries the checkpoint's harm probe reads as refused",
    "gen_hybrid_ungated": "gen_hybrid's mix on every query, the harm probe ignored",
    "gen_untrained": "gen with freshly initialised (untrained) tokens",
    "gen_asym_untrained": "gen_asym with untrained tokens",
    "gen_hybrid_untrained": "gen_hybrid's query mix (the checkpoint's β) over untrained tokens: what training adds",
    "hyde": "the backbone writes an answer, the teacher embeds it",
    "hyde_policy": "HyDE with the answer written under the response policy",
}


@runtime_checkable
class Embedder(Protocol):
    name: str
    sparse: bool

    @property
    def dim(self) -> int: ...

    def encode_queries(self, texts: Sequence[str], instruction: str | None = None) -> Vectors: ...

    def encode_documents(self, texts: Sequence[str]) -> Vectors: ...


def embedder_names(spec: str | Sequence[str]) -> list[str]:
    """'teacher, bm25' or a list -> ['teacher', 'bm25']; unknown or no names are a ValueError."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f"unknown embedder(s) {unknown}; known: {', '.join(NAMES)}")
    if not names:
        raise ValueError("no embedder named")
    return names


def scores(queries: Vectors, documents: Vectors) -> np.ndarray:
    """(Nq, Nd) dot-product scores for dense or sparse vectors."""
    if sp.issparse(documents) and documents.shape[1] >= 2**32:
        # scipy would allocate the 2**32-wide product, and the idf is missing: Qdrant applies it
        raise ValueError("hashed BM25 vectors carry no idf: they are scored by the index (Index.search)")
    # lists of lists are vectors too (a user's own, or .tolist() from LlamaIndex)
    queries = queries if sp.issparse(queries) else np.asarray(queries, dtype=np.float32)
    documents = documents if sp.issparse(documents) else np.asarray(documents, dtype=np.float32)
    out = queries @ documents.T
    return np.asarray(out.todense() if sp.issparse(out) else out, dtype=np.float32)


def document_side(name: str) -> str:
    """Which encoder embeds an embedder's documents: the asymmetric and hybrid ones use the teacher's."""
    return "teacher" if "asym" in name or "hybrid" in name else "gen"


def stored_vector(name: str) -> str:
    """The index's named vector an embedder searches, known from its name alone (nothing is loaded)."""
    return "teacher" if document_side(name) == "teacher" else name
