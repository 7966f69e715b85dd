"""BM25 (Okapi) as sparse vectors, so it plugs into the same Embedder interface as dense models.

A document vector holds, per term, idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen));
a query vector holds term counts. Their dot product is exactly the BM25 score that rank-bm25
computes (tested), and a Qdrant sparse vector can store it.

Corpus statistics (idf, average length, vocabulary) come from `fit(corpus)`; `encode_documents` fits
on its input when nothing was fitted yet, which is the usual "index this corpus" case.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from rank_bm25 import BM25Okapi

from ragsafe.texts import check_texts

_TOKEN = re.compile(r"\w+", re.UNICODE)


def bm25_tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class BM25Embedder:
    name = "bm25"
    sparse = True

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.vocab: dict[str, int] = {}
        self.idf: np.ndarray | None = None
        self.avgdl = 0.0

    @property
    def dim(self) -> int:
        return len(self.vocab)

    @property
    def fitted(self) -> bool:
        return self.idf is not None

    def fit(self, corpus: Sequence[str]) -> BM25Embedder:
        docs = [bm25_tokenize(t) for t in check_texts(corpus)]
        if not any(docs):
            raise ValueError("BM25 needs at least one document with a word in it to fit.")
        # rank-bm25 computes Okapi's idf (with its epsilon floor for very common terms) and avgdl.
        model = BM25Okapi([d or [""] for d in docs], k1=self.k1, b=self.b)
        self.vocab = {term: i for i, term in enumerate(sorted(model.idf))}
        self.idf = np.array([model.idf[t] for t in sorted(model.idf)], dtype=np.float32)
        self.avgdl = float(model.avgdl)
        return self

    def state(self) -> dict:
        """The fitted statistics as JSON-able values (what an index stores beside its sparse vectors)."""
        assert self.idf is not None, "fit first"
        return {"vocab": self.vocab, "idf": self.idf.tolist(), "avgdl": self.avgdl, "k1": self.k1, "b": self.b}

    def load_state(self, state: dict) -> BM25Embedder:
        self.k1, self.b, self.vocab, self.avgdl = state["k1"], state["b"], state["vocab"], state["avgdl"]
        self.idf = np.array(state["idf"], dtype=np.float32)
        return self

    def _rows(self, token_lists: list[list[str]], weight) -> sp.csr_matrix:
        indptr, indices, data = [0], [], []
        for tokens in token_lists:
            counts = Counter(t for t in tokens if t in self.vocab)
            for term, tf in sorted(counts.items(), key=lambda kv: self.vocab[kv[0]]):
                indices.append(self.vocab[term])
                data.append(weight(term, tf, len(tokens)))
            indptr.append(len(indices))
        return sp.csr_matrix(
            (np.array(data, dtype=np.float32), np.array(indices, dtype=np.int64), np.array(indptr)),
            shape=(len(token_lists), self.dim),
        )

    def encode_documents(self, texts: Sequence[str]) -> sp.csr_matrix:
        texts = check_texts(texts)
        if not self.fitted:
            self.fit(texts)
        assert self.idf is not None
        idf, k1, b, avgdl = self.idf, self.k1, self.b, self.avgdl

        def weight(term: str, tf: int, length: int) -> float:
            return float(idf[self.vocab[term]] * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl)))

        return self._rows([bm25_tokenize(t) for t in texts], weight)

    def encode_queries(self, texts: Sequence[str], instruction: str | None = None) -> sp.csr_matrix:
        if not self.fitted:
            raise RuntimeError("BM25 has no corpus statistics yet: call fit(corpus) or encode_documents first.")
        return self._rows([bm25_tokenize(t) for t in check_texts(texts)], lambda term, tf, length: float(tf))
