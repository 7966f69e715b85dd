import asyncio
import dataclasses
import sys
from pathlib import Path

import pytest
from llama_index.core.schema import QueryBundle

from ragsafe.corpus import load_corpus
from ragsafe.embedders.bm25 import BM25Embedder
from ragsafe.embedders.gen import GenEmbedder
from ragsafe.index import Index, IndexStoreError
from ragsafe.llamaindex import RagsafeEmbedding, RagsafeRetriever, lock_for
from ragsafe.model.backbone import quantize_int8
from ragsafe.model.gen_encoder import GenConfig, GenEncoder
from ragsafe.retrieval import RefusalScorer
from ragsafe.testing import tiny_backbone

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


class CountingEmbedder:
    """The teacher, recording the size of every document batch it is asked for."""

    def __init__(self, teacher):
        self.teacher, self.name, self.dim, self.sparse, self.batches = teacher, "counting", teacher.dim, False, []

    def encode_queries(self, texts):
        return self.teacher.encode_queries(texts)

    def encode_documents(self, texts):
        self.batches.append(len(texts))
        return self.teacher.encode_documents(texts)


def test_async_documents_are_embedded_in_batches_under_one_lock_per_model(teacher):
    counting = CountingEmbedder(teacher)
    emb = RagsafeEmbedding(counting)
    vectors = asyncio.run(emb.aget_text_embedding_batch(QUERIES))
    assert len(vectors) == len(QUERIES) and counting.batches == [len(QUERIES)]
    # two wrappers around one model share its lock
    assert RagsafeEmbedding(counting)._lock is emb._lock is lock_for(counting)
    assert lock_for(teacher) is not lock_for(counting)


@dataclasses.dataclass
class DataclassEmbedder:  # eq=True makes it unhashable, as many embedder classes are
    teacher: object
    name: str = "dataclass"
    sparse: bool = False

    @property
    def dim(self):
        return self.teacher.dim

    def encode_queries(self, texts):
        return self.teacher.encode_queries(texts)

    def encode_documents(self, texts):
        return self.teacher.encode_documents(texts)


def test_an_unhashable_embedder_gets_its_lock_too(teacher):
    embedder = DataclassEmbedder(teacher)
    emb = RagsafeEmbedding(embedder)
    assert len(emb.get_query_embedding("bread")) == teacher.dim and emb._lock is lock_for(embedder)


def test_retriever_safety_modes_and_bm25_statistics(tmp_path, qwen_tiny, teacher):
    gen = GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)), documents="teacher", teacher=teacher)
    refused, other = "how do I bake bread", "tell me about rivers"
    # a refusal centroid equal to the first query's own vector: that query scores 1.0, over the threshold
    gen.safety = {"refusal_centroid": gen.encode_queries([refused])[0].tolist(), "threshold": 0.999}
    with Index("demo", path=tmp_path) as idx:
        idx.add(load_corpus("corpora/demo")[0], [teacher, BM25Embedder()], show_progress=False)
        suppress = RagsafeRetriever(idx, gen, k=2, safety="suppress")
        assert suppress.retrieve(refused) == [] and len(suppress.retrieve(other)) == 2
        flagged = RagsafeRetriever(idx, gen, k=2, safety="flag").retrieve(refused)
        assert len(flagged) == 2 and all(n.node.metadata["refusal_score"] > 0.999 for n in flagged)
        assert all(n.node.metadata["flagged"] and n.node.metadata["refusal_threshold"] == 0.999 for n in flagged)
        passed = RagsafeRetriever(idx, gen, similarity_top_k=2, safety="flag").retrieve(other)
        assert len(passed) == 2 and not any(n.node.metadata["flagged"] for n in passed)
        # the scores and the folder mark are bookkeeping: not shown to the LLM, not re-embedded
        shown = passed[0].node.get_content(metadata_mode="llm")
        assert "source" in shown and "refusal_score" not in shown and "corpus" not in shown
        with pytest.raises(ValueError, match="disagree"):
            RagsafeRetriever(idx, gen, k=2, similarity_top_k=3)
        with pytest.raises(ValueError, match="calibrated tokens"):
            RagsafeRetriever(idx, teacher, safety="flag")
        with pytest.raises(ValueError, match="off, flag, suppress"):
            RagsafeRetriever(idx, gen, safety="block")
        with pytest.raises(ValueError, match="k must be at least 1"):
            RagsafeRetriever(idx, gen, k=0)
        for k in (2.5, "3"):
            with pytest.raises(TypeError, match="whole number"):
                RagsafeRetriever(idx, gen, k=k)
        with pytest.raises(TypeError, match="ragsafe Index"):
            RagsafeRetriever("demo", gen)
        with pytest.raises(TypeError, match=r"take its \[0\]"):
            RagsafeRetriever(idx, [gen])
    with Index("bm25_only", path=tmp_path / "other") as idx:
        idx.add(load_corpus("corpora/demo")[0], [BM25Embedder()], show_progress=False)
        with pytest.raises(IndexStoreError, match=r"not \['teacher'\]"):  # at construction, not the first query
            RagsafeRetriever(idx, gen)
    with Index("demo", path=tmp_path) as idx:
        bm25 = RagsafeRetriever(idx, BM25Embedder(), k=1)  # unfitted: the index's statistics are used
        assert bm25.retrieve("capital of France")[0].node.metadata["source"] == "paris.txt"
        # fitted elsewhere (its own vocabulary numbering): still the index's statistics, so it still finds
        fitted = BM25Embedder().fit(["capital of France Paris", "rivers"])
        assert (
            RagsafeRetriever(idx, fitted, k=1).retrieve("capital of France")[0].node.metadata["source"] == "paris.txt"
        )


def test_embedding_names_its_vectors_refuses_a_side_blind_cache_and_pickles(qwen_tiny, teacher):
    import pickle

    from llama_index.core.storage.kvstore import SimpleKVStore

    def gen(seed: int, mix: float | None = None) -> GenEmbedder:
        encoder = GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim, seed=seed))
        return GenEmbedder(encoder, documents="teacher", teacher=teacher, query_mix=mix)

    gated = gen(0, 0.3)
    gated.safety = {"direction": [0.0] * teacher.dim, "bias": 0.0, "threshold": 1.0}
    stricter = gen(0, 0.3)
    stricter.safety = dict(gated.safety, threshold=2.0)
    for e in (gated, stricter):
        e.query_gate = RefusalScorer.for_embedder(e)
        assert e.query_gate is not None
    variants = (gen(0), gen(1), gen(0, 0.3), gen(0, 0.6), gated, stricter)
    names = {RagsafeEmbedding(e).model_name for e in variants}
    assert len(names) == len(variants)  # an ingestion cache keyed by model_name never mixes them up
    assert RagsafeEmbedding(gen(0)).model_name == RagsafeEmbedding(gen(0)).model_name
    quantized = quantize_int8(tiny_backbone("qwen2"))
    int8 = GenEmbedder(GenEncoder(quantized, GenConfig(out_dim=teacher.dim)), documents="teacher", teacher=teacher)
    assert RagsafeEmbedding(int8).model_name not in names
    with pytest.raises(ValueError, match="cannot tell a query from a document"):
        RagsafeEmbedding(gen(0), embeddings_cache=SimpleKVStore())
    later = RagsafeEmbedding(gen(0))
    with pytest.raises(ValueError, match="cannot tell a query from a document"):
        later.embeddings_cache = SimpleKVStore()
    with pytest.raises(TypeError, match="ragsafe embedder"):
        RagsafeEmbedding("gen_asym")
    for emb in (RagsafeEmbedding(teacher, model_name="mine"), RagsafeEmbedding(gen(0))):
        copy = pickle.loads(pickle.dumps(emb))
        assert copy.model_name == emb.model_name and copy.get_query_embedding("bread") == pytest.approx(
            emb.get_query_embedding("bread"), abs=1e-5
        )


def test_index_add_refuses_what_is_not_a_passage_or_no_embedder(tmp_path, teacher):
    passages = load_corpus("corpora/demo")[0]
    with Index("demo", path=tmp_path) as idx:
        with pytest.raises(ValueError, match="at least one embedder"):
            idx.add(passages, [])
        with pytest.raises(TypeError, match="passage 0 is a str"):
            idx.add(["a", "b"], [teacher])
        assert idx.add(passages, [teacher], show_progress=False) == len(passages)  # the name is still usable


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

    for _ in range(2):  # a rerun overwrites the same nodes instead of adding copies
        sources = main(
            Path("corpora/demo"), embedder="teacher", query="treating a small burn", qdrant_path=tmp_path, k=3
        )
    assert sources[0] == "burns.md" and len(set(sources)) == 3


def test_safety_filter_brings_flag_and_suppress_to_a_llamaindex_retriever(qwen_tiny, teacher):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.llms.mock import MockLLM
    from llama_index.core.schema import TextNode

    from ragsafe.llamaindex import RagsafeSafetyFilter

    gen = GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)), documents="teacher", teacher=teacher)
    refused, other = "how do I bake bread", "tell me about rivers"
    gen.safety = {"refusal_centroid": gen.encode_queries([refused])[0].tolist(), "threshold": 0.999}
    nodes = [TextNode(text=p.text, metadata=p.metadata) for p in load_corpus("corpora/demo")[0]]
    index = VectorStoreIndex(nodes, embed_model=RagsafeEmbedding(gen))
    retriever = index.as_retriever(similarity_top_k=2)
    suppress, flag = RagsafeSafetyFilter(gen, "suppress"), RagsafeSafetyFilter(gen)
    assert suppress.postprocess_nodes(retriever.retrieve(refused), query_str=refused) == []
    kept = suppress.postprocess_nodes(retriever.retrieve(other), query_str=other)
    assert len(kept) == 2 and not any(n.node.metadata["flagged"] for n in kept)
    given = retriever.retrieve(refused)
    marked = flag.postprocess_nodes(given, query_str=refused)
    assert len(marked) == 2 and all(n.node.metadata["flagged"] for n in marked)
    assert "refusal_score" not in marked[0].node.get_content(metadata_mode="llm")
    # the retriever's own nodes stay unmarked: another query must not see this one's score
    assert not any("flagged" in n.node.metadata or n.node.excluded_llm_metadata_keys for n in given)
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=2, node_postprocessors=[suppress])
    assert engine.query(refused).source_nodes == [] and len(engine.query(other).source_nodes) == 2
    with pytest.raises(ValueError, match="calibrated tokens"):
        RagsafeSafetyFilter(teacher)
    with pytest.raises(ValueError, match="leave it out"):
        RagsafeSafetyFilter(gen, "off")
    with pytest.raises(ValueError, match="suppress"):  # a mode set later is checked as well
        flag.mode = "bogus"
    suppress.mode = "flag"
    assert suppress.postprocess_nodes(retriever.retrieve(refused), query_str=refused) != []


def test_retriever_filters_on_passage_metadata(tmp_path, teacher):
    from llama_index.core.vector_stores.types import FilterCondition, MetadataFilter, MetadataFilters

    def sources(filters, k=20, query="how do I treat a burn"):
        return {n.node.metadata["source"] for n in RagsafeRetriever(idx, teacher, k, filters=filters).retrieve(query)}

    with Index("demo", path=tmp_path) as idx:
        idx.add(load_corpus("corpora/demo")[0], [teacher], show_progress=False)
        every = sources(None)
        assert len(every) > 3
        assert sources(MetadataFilters(filters=[MetadataFilter(key="source", value="paris.txt")])) == {"paris.txt"}
        not_burns = MetadataFilters(filters=[MetadataFilter(key="source", value="burns.md", operator="!=")])
        assert sources(not_burns) == every - {"burns.md"}
        two = MetadataFilters(filters=[MetadataFilter(key="source", value=["paris.txt", "burns.md"], operator="in")])
        assert sources(two) == {"paris.txt", "burns.md"}
        one = MetadataFilters(filters=[MetadataFilter(key="source", value="paris.txt", operator="in")])
        assert sources(one) == {"paris.txt"}  # one value is a list of one, not of its letters
        nin = MetadataFilters(filters=[MetadataFilter(key="source", value="paris.txt", operator="nin")])
        assert sources(nin) == every - {"paris.txt"}
        either = MetadataFilters(
            filters=[MetadataFilter(key="source", value="paris.txt"), MetadataFilter(key="source", value="burns.md")],
            condition=FilterCondition.OR,
        )
        assert sources(either) == {"paris.txt", "burns.md"}
        neither = MetadataFilters(filters=[two], condition=FilterCondition.NOT)
        assert sources(neither) == every - {"paris.txt", "burns.md"}
        with pytest.raises(ValueError, match="text_match"):
            RagsafeRetriever(
                idx,
                teacher,
                filters=MetadataFilters(filters=[MetadataFilter(key="source", value="p", operator="text_match")]),
            )


def test_a_retriever_over_an_index_that_does_not_exist_fails_when_built(tmp_path, teacher):
    idx = Index("nothing-here", path=tmp_path / "q")
    try:
        with pytest.raises(IndexStoreError, match="No index named 'nothing-here'"):
            RagsafeRetriever(idx, teacher, k=2)
    finally:
        idx.close()
