"""LlamaIndex drop-ins: `RagsafeEmbedding` (a BaseEmbedding) and `RagsafeRetriever` (a BaseRetriever).

RagsafeEmbedding keeps ragsafe's two sides: LlamaIndex's query embedding is the predicted-response
embedding, its text (node) embedding is the document encoding. Pass it explicitly as `embed_model`
(LlamaIndex's fallback is a hosted model that needs a key and the network).

RagsafeRetriever searches a ragsafe `Index` directly, with the safety modes of `SafeRetriever` for
calibrated gen embedders ("flag" puts the refusal score in each node's metadata; "suppress" returns
no nodes for a query the harm probe flags). `RagsafeSafetyFilter` brings the same two modes to
any LlamaIndex retriever, as a node postprocessor.

Model calls and the embedded Qdrant client are not made for concurrent use, so every call on one
embedder (or one index) is serialised by a lock that belongs to that object, whichever wrappers
share it; the async methods run in a worker thread, so an event loop is never blocked and
concurrent retrievals return exactly what serial ones would.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import weakref
from typing import Any, Literal

from llama_index.core.bridge.pydantic import ConfigDict, PrivateAttr
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters
from qdrant_client import models

from ragsafe.embedders.base import Embedder
from ragsafe.embedders.bm25 import BM25Embedder
from ragsafe.embedders.identity import embedder_identity
from ragsafe.index import Index, check_k, storage_name
from ragsafe.retrieval import SAFETY_METADATA, Mode, RefusalScorer, SafeRetriever, check_mode, mark

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


def _check_embedder(embedder: Any) -> None:
    if isinstance(embedder, (list, tuple)):
        raise TypeError("pass one embedder, not a list (build_embedders returns a list: take its [0])")
    if not isinstance(embedder, Embedder):
        raise TypeError(
            f"expected a ragsafe embedder (build_embedders / GenEmbedder.load), got {type(embedder).__name__}"
        )


def model_name(embedder: Embedder) -> str:
    """A name that changes with anything that changes the vectors (weights, tokens, instructions, β, the
    gate's threshold): LlamaIndex's ingestion cache keys stored vectors by it."""
    digest = hashlib.sha256()
    for side in ("queries", "documents"):
        digest.update(embedder_identity(embedder, side).encode())
    gate = getattr(embedder, "query_gate", None)
    digest.update(repr((getattr(embedder, "query_mix", None), None if gate is None else gate.threshold)).encode())
    return f"ragsafe-{embedder.name}-{digest.hexdigest()[:12]}"


# LlamaIndex keys its embeddings cache by the text alone, while ragsafe's query and document vectors of
# one text differ: a cached document vector would come back as the query's, and the safety with it
NO_CACHE = "embeddings_cache is not supported: it cannot tell a query from a document"


class RagsafeEmbedding(BaseEmbedding):
    _embedder: Any = PrivateAttr()

    def __init__(self, embedder: Embedder, **kwargs: Any) -> None:
        _check_embedder(embedder)
        if embedder.sparse:
            raise ValueError(f"'{embedder.name}' is sparse; LlamaIndex embeddings must be dense.")
        if kwargs.get("embeddings_cache") is not None:
            raise ValueError(NO_CACHE)
        kwargs.setdefault("model_name", model_name(embedder))
        super().__init__(**kwargs)
        self._embedder = embedder

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "embeddings_cache" and value is not None:
            raise ValueError(NO_CACHE)
        super().__setattr__(name, value)

    @property
    def _lock(self) -> threading.Lock:
        # looked up, not stored: a lock cannot be pickled, and a copy must share its embedder's lock
        return lock_for(self._embedder)

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


# bookkeeping in a node's metadata, not content: kept out of the LLM's prompt and of re-embedding
INTERNAL_METADATA = {"corpus", "chunk", *SAFETY_METADATA}


class RagsafeSafetyFilter(BaseNodePostprocessor):
    """Flag or suppress for any LlamaIndex retriever (a `VectorStoreIndex` over Qdrant, say): scores the
    query with the gen embedder's harm probe and marks each node (`flag`) or returns no nodes for a
    query above the threshold (`suppress`). It runs its own gen pass on the query; `RagsafeRetriever`
    over a ragsafe `Index` shares one pass between retrieval and score."""

    # checked on assignment too: `mode = "bogus"` set later would otherwise act as flag, unsaid
    model_config = ConfigDict(validate_assignment=True)
    mode: Literal["flag", "suppress"] = "flag"
    _scorer: Any = PrivateAttr()

    def __init__(self, embedder: Embedder, mode: Mode = "flag", **kwargs: Any) -> None:
        _check_embedder(embedder)
        check_mode(mode)
        if mode == "off":
            raise ValueError("a safety filter that is off filters nothing: leave it out instead")
        scorer = RefusalScorer.for_embedder(embedder)
        if scorer is None:
            raise ValueError(f"safety '{mode}' needs a gen embedder with calibrated tokens, not '{embedder.name}'")
        super().__init__(mode=mode, **kwargs)
        self._scorer = scorer

    @classmethod
    def class_name(cls) -> str:
        return "RagsafeSafetyFilter"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("the safety filter scores the query: pass query_str or query_bundle")
        with lock_for(self._scorer.embedder):
            score = float(self._scorer.scores([query_bundle.query_str])[0])
        if self.mode == "suppress" and score > self._scorer.threshold:
            return []
        marked = []
        for item in nodes:  # copies: a retriever may hand out its stored nodes, shared between queries
            metadata = dict(item.node.metadata)
            mark(metadata, score, self._scorer.threshold)
            hidden = {
                key: [*keys, *(k for k in SAFETY_METADATA if k not in keys)]
                for key, keys in (
                    ("excluded_llm_metadata_keys", item.node.excluded_llm_metadata_keys),
                    ("excluded_embed_metadata_keys", item.node.excluded_embed_metadata_keys),
                )
            }
            node = item.node.model_copy(update={"metadata": metadata, **hidden})
            marked.append(NodeWithScore(node=node, score=item.score))
        return marked


def qdrant_filter(filters: MetadataFilters) -> models.Filter:
    """LlamaIndex metadata filters as a Qdrant filter on the passages' payload: ==, !=, in, nin and the
    ranges, nested, under and / or / not. Other operators are refused rather than ignored."""
    clauses = [qdrant_filter(f) if isinstance(f, MetadataFilters) else _clause(f) for f in filters.filters]
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.OR:
        return models.Filter(should=clauses)
    if condition == FilterCondition.NOT:
        return models.Filter(must_not=clauses)
    return models.Filter(must=clauses)


def _clause(f: MetadataFilter) -> models.Condition:
    op, key, value = f.operator, f.key, f.value
    if op in (FilterOperator.EQ, FilterOperator.NE):
        match = models.FieldCondition(key=key, match=models.MatchValue(value=value))
        return match if op == FilterOperator.EQ else models.Filter(must_not=[match])
    if op in (FilterOperator.IN, FilterOperator.NIN):
        # one value is a list of one: list("a.txt") would be its letters
        values = [value] if isinstance(value, (str, int, float)) else list(value)
        match = models.FieldCondition(key=key, match=models.MatchAny(any=values))
        return match if op == FilterOperator.IN else models.Filter(must_not=[match])
    bounds = {FilterOperator.GT: "gt", FilterOperator.GTE: "gte", FilterOperator.LT: "lt", FilterOperator.LTE: "lte"}
    if op in bounds:
        return models.FieldCondition(key=key, range=models.Range(**{bounds[op]: value}))
    raise ValueError(f"metadata filter operator {op.value!r} is not supported here (==, !=, in, nin, <, <=, >, >=)")


class _LockedIndex:
    """An index whose searches take its lock, so a slow query encoding never holds the index."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def search(self, *args: Any, **kwargs: Any) -> Any:
        with lock_for(self.index.client):  # Index objects on one embedded folder share their client
            return self.index.search(*args, **kwargs)


class RagsafeRetriever(BaseRetriever):
    """Nodes carry the passage's metadata; with a safety mode also `refusal_score`, `refusal_threshold`
    and `flagged` (score above the threshold), kept out of what the LLM and embedders read."""

    def __init__(
        self,
        index: Index,
        embedder: Embedder,
        k: int | None = None,
        safety: Mode = "off",
        similarity_top_k: int | None = None,
        filters: MetadataFilters | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(index, Index):
            raise TypeError(f"index must be a ragsafe Index (Index(name, ...)), got {type(index).__name__}")
        _check_embedder(embedder)
        if k is not None and similarity_top_k is not None and k != similarity_top_k:
            raise ValueError(f"k ({k}) and similarity_top_k ({similarity_top_k}) disagree; give one")
        k = k if k is not None else similarity_top_k if similarity_top_k is not None else 5
        check_k(k)
        if isinstance(embedder, BM25Embedder):
            # the index's own statistics, always: a BM25 fitted elsewhere (or unhashed against a hashed
            # index) numbers its terms differently and would find nothing
            embedder = index.load_bm25()
        check_mode(safety)
        self.where = None if filters is None else qdrant_filter(filters)  # now: a bad operator fails here
        index.require()  # now, not at the first query
        self.vector = storage_name(embedder)  # once: gen documents' name hashes the weights
        index.check_vectors({self.vector})
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
                hits = self.safe.search(query_bundle.query_str, self.k, where=self.where).hits
            else:
                vector = self.embedder.encode_queries([query_bundle.query_str])[0]
                hits = self.locked.search(vector, self.vector, self.k, where=self.where)
        nodes = []
        for hit in hits:
            internal = [key for key in hit.metadata if key in INTERNAL_METADATA]
            node = TextNode(
                id_=hit.id,
                text=hit.text,
                metadata=hit.metadata,
                excluded_llm_metadata_keys=internal,
                excluded_embed_metadata_keys=internal,
            )
            nodes.append(NodeWithScore(node=node, score=hit.score))
        return nodes

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)
