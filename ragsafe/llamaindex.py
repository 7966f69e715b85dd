"""LlamaIndex drop-ins: `RagsafeEmbedding` (a BaseEmbedding) and `RagsafeRetriever` (a BaseRetriever).

RagsafeEmbedding keeps ragsafe's two sides: LlamaIndex's query embedding is the predicted-response
embedding, its text (node) embedding is the document encoding. Pass it explicitly as `embed_model`
(LlamaIndex's fallback is a hosted model that needs a key and the network).

RagsafeRetriever searches a ragsafe `Index` directly, with the safety modes of `SafeRetriever` for
calibrated gen embedders ("flag" puts the refusal score in each node's metadata; "suppress" returns
no nodes for a query the backbone would refuse).

Model calls and the embedded Qdrant client are not made for concurrent use, so every call on one
embedder (or one index) is serialised by a lock that belongs to that object, whichever wrappers
share it; the async methods run in a worker thread, so an event loop is never blocked and
concurrent retrievals return exactly what serial ones would.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from ragsafe.embedders.base import Embedder
from ragsafe.embedders.bm25 import BM25Embedder
from ragsafe.index import Index, storage_name
from ragsafe.retrieval import Mode, RefusalScorer, SafeRetriever, check_mode

# One lock per model or index object, shared by all the wrappers around it. Keyed by identity (an
# embedder need not be hashable) and dropped when the object is collected, so no embedder is kept alive.
_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def lock_for(obj: Any) -> threading.Lock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(id(obj))
        if lock is None:
            lock = _LOCKS[id(obj)] = threading.Lock()
            with contextlib.suppress(TypeError):  # no weak references to it: its lock stays (a few bytes)
                weakref.finalize(obj, _LOCKS.pop, id(obj), None)
        return lock


class RagsafeEmbedding(BaseEmbedding):
    _embedder: Any = PrivateAttr()
    _lock: Any = PrivateAttr()

    def __init__(self, embedder: Embedder, **kwargs: Any) -> None:
        if embedder.sparse:
            raise ValueError(f"'{embedder.name}' is sparse; LlamaIndex embeddings must be dense.")
        super().__init__(model_name=f"ragsafe-{embedder.name}", **kwargs)
        self._embedder = embedder
        self._lock = lock_for(embedder)

    @classmethod
    def class_name(cls) -> str:
        return "RagsafeEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        with self._lock:
            return self._embedder.encode_queries([query])[0].tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            return self._embedder.encode_documents(texts).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        # one batched call: LlamaIndex's default would start a thread per text and lose the batching
        return await asyncio.to_thread(self._get_text_embeddings, texts)


class _LockedIndex:
    """An index whose searches take its lock, so a slow query encoding never holds the index."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def search(self, *args: Any, **kwargs: Any) -> Any:
        with lock_for(self.index.client):  # Index objects on one embedded folder share their client
            return self.index.search(*args, **kwargs)


class RagsafeRetriever(BaseRetriever):
    def __init__(self, index: Index, embedder: Embedder, k: int = 5, safety: Mode = "off", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(embedder, BM25Embedder) and not embedder.fitted:
            embedder = index.load_bm25()  # a BM25 query is only meaningful with the index's own statistics
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        check_mode(safety)
        index.check_vectors({storage_name(embedder)})  # now, not at the first query
        self.index, self.embedder, self.k = index, embedder, k
        self.locked = _LockedIndex(index)
        self.safe: SafeRetriever | None = None
        if safety != "off":
            scorer = RefusalScorer.for_embedder(embedder)
            if scorer is None:
                raise ValueError(
                    f"safety '{safety}' needs a gen embedder with calibrated tokens, not '{embedder.name}'"
                )
            self.safe = SafeRetriever(self.locked, embedder, scorer, safety)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        with lock_for(self.embedder):
            if self.safe is not None:
                hits = self.safe.search(query_bundle.query_str, self.k).hits
            else:
                vector = self.embedder.encode_queries([query_bundle.query_str])[0]
                hits = self.locked.search(vector, storage_name(self.embedder), self.k)
        return [
            NodeWithScore(node=TextNode(id_=hit.id, text=hit.text, metadata=hit.metadata), score=hit.score)
            for hit in hits
        ]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)
