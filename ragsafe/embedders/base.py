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


@runtime_checkable
class Embedder(Protocol):
    name: str
    sparse: bool

    @property
    def dim(self) -> int: ...

    def encode_queries(self, texts: Sequence[str], instruction: str | None = None) -> Vectors: ...

    def encode_documents(self, texts: Sequence[str]) -> Vectors: ...


def scores(queries: Vectors, documents: Vectors) -> np.ndarray:
    """(Nq, Nd) dot-product scores for dense or sparse vectors."""
    out = queries @ documents.T
    return np.asarray(out.todense() if sp.issparse(out) else out, dtype=np.float32)


def document_side(name: str) -> str:
    """Which encoder embeds an embedder's documents: the asymmetric and hybrid ones use the teacher's."""
    return "teacher" if "asym" in name or "hybrid" in name else "gen"


def stored_vector(name: str) -> str:
    """The index's named vector an embedder searches, known from its name alone (nothing is loaded)."""
    return "teacher" if document_side(name) == "teacher" else name
