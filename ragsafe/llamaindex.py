"""LlamaIndex drop-ins: `RagsafeEmbedding` (a BaseEmbedding) and `RagsafeRetriever` (a BaseRetriever).

RagsafeEmbedding keeps ragsafe's two sides: LlamaIndex's query embedding is the predicted-response
embedding, its text (node) embedding is the document encoding. Pass it explicitly as `embed_model`
(LlamaIndex's fallback is a hosted model that needs a key and the network).

RagsafeRetriever searches a ragsafe `Index` directly. Model calls and the embedded Qdrant client are
not made for concurrent use, so calls are serialised by a lock; the async methods run them in a
worker thread, so an event loop is never blocked and concurrent retrievals return exactly what
serial ones would.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from ragsafe.embedders.base import Embedder
from ragsafe.index import Index, storage_name


class RagsafeEmbedding(BaseEmbedding):
    _embedder: Any = PrivateAttr()
    _lock: Any = PrivateAttr()

    def __init__(self, embedder: Embedder, **kwargs: Any) -> None:
        if embedder.sparse:
            raise ValueError(f"'{embedder.name}' is sparse; LlamaIndex embeddings must be dense.")
        super().__init__(model_name=f"ragsafe-{embedder.name}", **kwargs)
        self._embedder = embedder
        self._lock = threading.Lock()

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


class RagsafeRetriever(BaseRetriever):
    def __init__(self, index: Index, embedder: Embedder, k: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index, self.embedder, self.k = index, embedder, k
        self._lock = threading.Lock()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        with self._lock:
            vector = self.embedder.encode_queries([query_bundle.query_str])[0]
            hits = self.index.search(vector, storage_name(self.embedder), self.k)
        return [
            NodeWithScore(node=TextNode(id_=hit.id, text=hit.text, metadata=hit.metadata), score=hit.score)
            for hit in hits
        ]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)
