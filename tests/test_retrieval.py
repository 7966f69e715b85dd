import numpy as np
import pytest

from ragsafe.corpus import load_corpus
from ragsafe.embedders.gen import GenEmbedder
from ragsafe.index import Index
from ragsafe.model.gen_encoder import GenConfig, GenEncoder
from ragsafe.retrieval import RefusalScorer, SafeRetriever, calibrate_threshold, refusal_centroid


@pytest.fixture
def gen(qwen_tiny, teacher):
    return GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)), documents="teacher", teacher=teacher)


def test_centroid_and_threshold_by_hand():
    targets = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    c = refusal_centroid(targets, [True, False, True])
    assert np.allclose(c, np.array([2.0, 1.0]) / np.sqrt(5))
    with pytest.raises(ValueError, match="no refusals"):
        refusal_centroid(targets, [False, False, False])
    scores = np.linspace(0, 1, 101)
    assert calibrate_threshold(scores, 0.05) == pytest.approx(0.95)


def test_flag_and_suppress(tmp_path, gen, teacher):
    queries = ["how do I bake bread", "tell me about rivers"]
    vectors = gen.encode_queries(queries)
    with Index("demo", path=tmp_path) as idx:
        idx.add(load_corpus("corpora/demo")[0], [teacher], show_progress=False)
        # a centroid equal to the first query's vector: that query scores 1.0, above any threshold < 1
        scorer = RefusalScorer(gen, vectors[0], threshold=0.999)
        flagged = SafeRetriever(idx, gen, scorer, "flag").search(queries[0], k=2)
        assert not flagged.suppressed and flagged.refusal_score == pytest.approx(1.0, abs=1e-5)
        assert all(h.metadata["refusal_score"] == flagged.refusal_score for h in flagged.hits)
        suppressed = SafeRetriever(idx, gen, scorer, "suppress")
        assert suppressed.search(queries[0]).suppressed and suppressed.search(queries[0]).hits == []
        other = suppressed.search(queries[1])
        assert not other.suppressed and len(other.hits) == 5
        plain = SafeRetriever(idx, gen, None, "off").search(queries[0], k=2)
        assert plain.refusal_score is None and len(plain.hits) == 2
    with pytest.raises(ValueError, match="needs a refusal scorer"):
        SafeRetriever(None, gen, None, "suppress")
    with pytest.raises(ValueError, match="shape"):
        RefusalScorer(gen, np.ones(3), 0.5)
