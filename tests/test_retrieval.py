import numpy as np
import pytest

from ragsafe.corpus import load_corpus
from ragsafe.embedders.gen import GenEmbedder
from ragsafe.index import Index
from ragsafe.model.gen_encoder import GenConfig, GenEncoder
from ragsafe.retrieval import RefusalScorer, SafeRetriever, calibrate_threshold


@pytest.fixture
def gen(qwen_tiny, teacher):
    return GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)), documents="teacher", teacher=teacher)


def test_threshold_by_hand():
    scores = np.linspace(0, 1, 101)
    assert calibrate_threshold(scores, 0.05) == pytest.approx(0.95)


def test_flag_and_suppress(tmp_path, gen, teacher):
    queries = ["how do I bake bread", "tell me about rivers"]
    vectors = gen.encode_queries(queries)
    with Index("demo", path=tmp_path) as idx:
        idx.add(load_corpus("corpora/demo")[0], [teacher], show_progress=False)
        # a direction equal to the first query's vector: that query scores 1.0, above any threshold < 1
        scorer = RefusalScorer(gen, vectors[0], threshold=0.999)
        flagged = SafeRetriever(idx, gen, scorer, "flag").search(queries[0], k=2)
        assert not flagged.suppressed and flagged.refusal_score == pytest.approx(1.0, abs=1e-5)
        assert all(h.metadata["refusal_score"] == flagged.refusal_score for h in flagged.hits)
        assert all(h.metadata["flagged"] and h.metadata["refusal_threshold"] == 0.999 for h in flagged.hits)
        suppressed = SafeRetriever(idx, gen, scorer, "suppress")
        assert suppressed.search(queries[0]).suppressed and suppressed.search(queries[0]).hits == []
        other = suppressed.search(queries[1])
        assert not other.suppressed and len(other.hits) == 5
        plain = SafeRetriever(idx, gen, None, "off").search(queries[0], k=2)
        assert plain.refusal_score is None and len(plain.hits) == 2
    with pytest.raises(ValueError, match="needs a refusal scorer"):
        SafeRetriever(None, gen, None, "suppress")
    with pytest.raises(ValueError, match="safety mode must be one of"):
        SafeRetriever(None, gen, None, "bogus")
    with pytest.raises(TypeError, match="predicted answer"):
        SafeRetriever(None, teacher, None, "off")
    with pytest.raises(ValueError, match="shape"):
        RefusalScorer(gen, np.ones(3), 0.5)


def test_scorer_from_a_probe_a_legacy_centroid_or_nothing(gen):
    v = np.zeros(gen.dim, dtype=np.float32)
    v[0] = 2.0
    probe = RefusalScorer.from_safety(gen, {"direction": v.tolist(), "bias": -0.5, "threshold": 0.1})
    assert probe.scores_for(np.eye(gen.dim, dtype=np.float32)[:2], ["a", "b"]).tolist() == [1.5, -0.5]
    with pytest.raises(ValueError, match="2 gen vectors for 1 queries"):
        probe.scores_for(np.eye(gen.dim, dtype=np.float32)[:2], ["a"])
    legacy = RefusalScorer.from_safety(gen, {"refusal_centroid": v.tolist(), "threshold": 0.3})
    assert legacy.scores_for(np.eye(gen.dim, dtype=np.float32)[:1], ["a"]).tolist() == [1.0]  # unit centroid: a cosine
    with pytest.raises(ValueError, match="no refusal calibration"):
        RefusalScorer.from_safety(gen, {"threshold": 0.3})


def test_hybrid_retrieves_with_the_mix_but_scores_the_pure_gen_vector(tmp_path, qwen_tiny, teacher):
    hybrid = GenEmbedder(
        GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)), documents="teacher", teacher=teacher, query_mix=0.5
    )
    assert hybrid.name == "gen_hybrid"
    query = "how do I bake bread"
    pure = hybrid.encode_gen_queries([query])
    mixed = hybrid.encode_queries([query])
    expected = pure + 0.5 * teacher.embed([query])
    assert np.allclose(mixed, expected / np.linalg.norm(expected), atol=1e-5)
    with Index("demo", path=tmp_path) as idx:
        idx.add(load_corpus("corpora/demo")[0], [teacher], show_progress=False)
        scorer = RefusalScorer(hybrid, pure[0], threshold=0.999)
        result = SafeRetriever(idx, hybrid, scorer, "flag").search(query, k=3)
        assert result.refusal_score == pytest.approx(1.0, abs=1e-5)  # the pure vector, not the mix (< 1)
        top = idx.search(mixed[0], "teacher", 3)
        assert [h.text for h in result.hits] == [h.text for h in top]
    with pytest.raises(ValueError, match="documents='teacher'"):
        GenEmbedder(hybrid.encoder, query_mix=0.5)
    zero = GenEmbedder(hybrid.encoder, documents="teacher", teacher=teacher, query_mix=0.0)
    assert zero.name == "gen_hybrid" and np.allclose(zero.encode_queries([query]), pure, atol=1e-6)


def test_a_gen_and_teacher_probe_reads_the_query_text_too(tmp_path, qwen_tiny, teacher):
    asym = GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)), documents="teacher", teacher=teacher)
    queries = ["how do I bake bread", "who wrote hamlet"]
    gen_vectors = asym.encode_gen_queries(queries)
    text_vectors = teacher.embed(queries)
    # a direction on the teacher half only: the score is the cosine of the query text to the first query
    direction = np.concatenate([np.zeros(asym.dim, dtype=np.float32), text_vectors[0]])
    safety = {"direction": direction.tolist(), "bias": 0.0, "threshold": 0.99, "features": "gen+teacher"}
    scorer = RefusalScorer.from_safety(asym, safety)
    assert scorer.teacher is teacher
    scores = scorer.scores_for(gen_vectors, queries)
    assert scores[0] == pytest.approx(1.0, abs=1e-5) and scores[1] < 0.99
    assert scorer.blocks(gen_vectors, queries).tolist() == [True, False]
    with pytest.raises(ValueError, match="expected"):  # a gen-only direction under a gen+teacher probe
        RefusalScorer.from_safety(asym, safety | {"direction": direction[: asym.dim].tolist()})
    with Index("demo", path=tmp_path) as idx:
        idx.add(load_corpus("corpora/demo")[0], [teacher], show_progress=False)
        retriever = SafeRetriever(idx, asym, scorer, "suppress")
        assert retriever.search(queries[0]).suppressed and not retriever.search(queries[1]).suppressed


def test_hybrid_and_a_gen_teacher_probe_embed_the_query_text_once(tmp_path, qwen_tiny, teacher, monkeypatch):
    hybrid = GenEmbedder(
        GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)), documents="teacher", teacher=teacher, query_mix=0.5
    )
    query = "how do I bake bread"
    direction = np.concatenate([np.zeros(hybrid.dim, dtype=np.float32), teacher.embed([query])[0]])
    safety = {"direction": direction.tolist(), "bias": 0.0, "threshold": 2.0, "features": "gen+teacher"}
    scorer = RefusalScorer.from_safety(hybrid, safety)
    expected_score = scorer.scores_for(hybrid.encode_gen_queries([query]), [query])[0]
    expected_vector = hybrid.encode_queries([query])[0]
    with Index("demo", path=tmp_path) as idx:
        idx.add(load_corpus("corpora/demo")[0], [teacher], show_progress=False)
        calls, embed = [], teacher.embed

        def counting(texts, *args, **kwargs):
            calls.append(list(texts))
            return embed(texts, *args, **kwargs)

        monkeypatch.setattr(teacher, "embed", counting)
        result = SafeRetriever(idx, hybrid, scorer, "flag").search(query, k=3)
        assert calls == [[query]]  # one teacher pass serves the probe and the mix
        assert result.refusal_score == pytest.approx(float(expected_score), abs=1e-5)
        top = idx.search(expected_vector, "teacher", 3)
        assert [h.text for h in result.hits] == [h.text for h in top]


def test_explain_reads_the_response_the_lens_and_the_probe(qwen_tiny, teacher):
    from ragsafe import explain

    gen = GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)), documents="teacher", teacher=teacher)
    plain = explain(gen, "how do I bake bread", max_new_tokens=4, top_k=2)
    assert plain.harm is None and len(plain.lens) == gen.encoder.config.num_compress
    assert all(len(entry.tokens) == 2 for entry in plain.lens) and isinstance(plain.response, str)
    direction = gen.encode_gen_queries(["how do I bake bread"])[0]
    gen.safety = {"direction": direction.tolist(), "threshold": 0.5, "features": "gen"}
    flagged = explain(gen, "how do I bake bread", max_new_tokens=4)
    assert flagged.harm is not None and flagged.harm.flagged and abs(flagged.harm.score - 1.0) < 1e-4
    with pytest.raises(ValueError, match="non-empty query"):
        explain(gen, "  ")
    with pytest.raises(TypeError, match="whole numbers"):
        explain(gen, "bread", top_k=True)


def test_scorers_over_a_teacherless_gen_embedder_share_one_probe_teacher(qwen_tiny, teacher):
    gen = GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)))  # symmetric: no teacher attached
    gen.safety = {"direction": [0.01] * (2 * teacher.dim), "threshold": 0.0, "features": "gen+teacher"}
    first, second = RefusalScorer.for_embedder(gen), RefusalScorer.for_embedder(gen)
    assert first.teacher is second.teacher is gen.probe_teacher() and first.teacher.spec == "minilm"
    assert first.scores(["how do I bake bread"]).shape == (1,)
