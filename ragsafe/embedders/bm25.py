"""BM25 (Okapi) as sparse vectors, so it plugs into the same Embedder interface as dense models.

A document vector holds, per term, idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen));
a query vector holds term counts. Their dot product is exactly the BM25 score that rank-bm25
computes (tested), and a Qdrant sparse vector can store it.

Corpus statistics (idf, average length, vocabulary) come from `fit(corpus)`; `encode_documents` fits
on its input when nothing was fitted yet, which is the usual "index this corpus" case.

`hashed=True` is the form an index stores: terms are numbered by a stable hash instead of a
vocabulary and the documents carry no idf, which the vector store applies at query time from its own
live document frequencies (Qdrant's IDF modifier: ln(1 + (N - n + 0.5) / (n + 0.5))). Only the
average length is fitted, so adding passages never changes a stored vector.
"""

from __future__ import annotations

import hashlib
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


def term_index(term: str) -> int:
    """A term's number in the hashed form: 32 bits, the width of a Qdrant sparse index."""
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little")


class BM25Embedder:
    name = "bm25"
    sparse = True

    def __init__(self, k1: float = 1.5, b: float = 0.75, hashed: bool = False) -> None:
        self.k1, self.b, self.hashed = k1, b, hashed
        self.vocab: dict[str, int] = {}
        self.idf: np.ndarray | None = None
        self.avgdl = 0.0

    @property
    def dim(self) -> int:
        return 2**32 if self.hashed else len(self.vocab)

    @property
    def fitted(self) -> bool:
        return self.avgdl > 0 if self.hashed else self.idf is not None

    def fit(self, corpus: Sequence[str]) -> BM25Embedder:
        docs = [bm25_tokenize(t) for t in check_texts(corpus)]
        if not any(docs):
            raise ValueError("BM25 needs at least one document with a word in it to fit.")
        if self.hashed:
            self.vocab, self.idf = {}, None
            self.avgdl = float(np.mean([len(d) for d in docs]))
            return self
        # rank-bm25 computes Okapi's idf (with its epsilon floor for very common terms) and avgdl.
        model = BM25Okapi([d or [""] for d in docs], k1=self.k1, b=self.b)
        self.vocab = {term: i for i, term in enumerate(sorted(model.idf))}
        self.idf = np.array([model.idf[t] for t in sorted(model.idf)], dtype=np.float32)
        self.avgdl = float(model.avgdl)
        return self

    def state(self) -> dict:
        """The fitted statistics as JSON-able values (what an index stores beside its sparse vectors)."""
        assert self.fitted, "fit first"
        common = {"avgdl": self.avgdl, "k1": self.k1, "b": self.b}
        if self.hashed:
            return {"hashed": True, **common}
        assert self.idf is not None
        return {"vocab": self.vocab, "idf": self.idf.tolist(), **common}

    def load_state(self, state: dict) -> BM25Embedder:
        self.k1, self.b, self.avgdl = state["k1"], state["b"], state["avgdl"]
        self.hashed = bool(state.get("hashed", False))
        self.vocab = state.get("vocab", {})
        self.idf = None if self.hashed else np.array(state["idf"], dtype=np.float32)
        return self

    def _rows(self, token_lists: list[list[str]], weight) -> sp.csr_matrix:
        indptr, indices, data = [0], [], []
        for tokens in token_lists:
            if self.hashed:
                counts = Counter(tokens)
                numbered = sorted((term_index(term), term, tf) for term, tf in counts.items())
            else:
                counts = Counter(t for t in tokens if t in self.vocab)
                numbered = sorted((self.vocab[term], term, tf) for term, tf in counts.items())
            for number, term, tf in numbered:
                indices.append(number)
                data.append(weight(term, tf, len(tokens)))
            indptr.append(len(indices))
        rows = sp.csr_matrix(
            (np.array(data, dtype=np.float32), np.array(indices, dtype=np.int64), np.array(indptr)),
            shape=(len(token_lists), self.dim),
        )
        rows.sum_duplicates()  # two terms hashed to one number share it (a Qdrant vector repeats no index)
        return rows

    def encode_documents(self, texts: Sequence[str]) -> sp.csr_matrix:
        texts = check_texts(texts)
        if not texts:
            return sp.csr_matrix((0, self.dim), dtype=np.float32)
        if not self.fitted:
            self.fit(texts)
        idf, k1, b, avgdl = self.idf, self.k1, self.b, self.avgdl

        def weight(term: str, tf: int, length: int) -> float:
            scale = 1.0 if idf is None else idf[self.vocab[term]]  # hashed: the store applies idf
            return float(scale * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl)))

        return self._rows([bm25_tokenize(t) for t in texts], weight)

    def encode_queries(self, texts: Sequence[str], instruction: str | None = None) -> sp.csr_matrix:
        if not self.fitted:
            raise RuntimeError("BM25 has no corpus statistics yet: call fit(corpus) or encode_documents first.")
        return self._rows([bm25_tokenize(t) for t in check_texts(texts)], lambda term, tf, length: float(tf))
