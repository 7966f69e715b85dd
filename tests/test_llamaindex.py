import asyncio
import sys
from pathlib import Path

import pytest
from llama_index.core.schema import QueryBundle

from ragsafe.corpus import load_corpus
from ragsafe.embedders.bm25 import BM25Embedder
from ragsafe.index import Index
from ragsafe.llamaindex import RagsafeEmbedding, RagsafeRetriever

QUERIES = [
    "how do I bake bread",
    "treating a burn",
    "capital of France",
    "chess endgame technique",
    "longest river",
    "protect my passwords",
    "how plants make sugar",
    "why do assistants refuse",
]


def test_embedding_sides_and_async(teacher):
    emb = RagsafeEmbedding(teacher)
    q = emb.get_query_embedding("bread")
    docs = emb.get_text_embedding_batch(["bread recipe", "chess"])
    assert len(q) == 384 and len(docs) == 2
    assert asyncio.run(emb.aget_query_embedding("bread")) == pytest.approx(q, abs=1e-6)
    with pytest.raises(ValueError, match="sparse"):
        RagsafeEmbedding(BM25Embedder())


def test_concurrent_async_retrievals_equal_serial(tmp_path, teacher):
    with Index("demo", path=tmp_path) as idx:
        idx.add(load_corpus("corpora/demo")[0], [teacher], show_progress=False)
        retriever = RagsafeRetriever(idx, teacher, k=3)
        serial = [[(n.node.node_id, round(n.score, 6)) for n in retriever.retrieve(q)] for q in QUERIES]

        async def together():
            return await asyncio.gather(*(retriever.aretrieve(QueryBundle(q)) for q in QUERIES))

        concurrent = [[(n.node.node_id, round(n.score, 6)) for n in r] for r in asyncio.run(together())]
    assert concurrent == serial
    assert serial[0] != serial[1]


def test_llamaindex_example_runs_over_the_demo_corpus(tmp_path):
    sys.path.insert(0, str(Path("examples").resolve()))
    from llamaindex_rag import main

    sources = main(Path("corpora/demo"), embedder="teacher", query="treating a small burn", qdrant_path=tmp_path, k=2)
    assert sources[0] == "burns.md"
