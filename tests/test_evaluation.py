import math

import numpy as np
import pytest

from ragsafe.datadir import DataError, data_file
from ragsafe.evaluation.doc_cache import encode_documents_cached
from ragsafe.evaluation.metrics import any_hit_at_k, hit_rate_at_k, mrr, ndcg_at_k, spearman, top_k

RANKED = [["a", "b", "c"], ["x", "y", "a"]]


def test_top_k_orders_and_breaks_ties_by_index():
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, 2.0, 1.0, 0.0]])
    assert top_k(scores, 3).tolist() == [[1, 3, 2], [0, 1, 2]]
    assert top_k(scores, 10).shape == (2, 4)


def test_hit_rate_any_hit_mrr_by_hand():
    gold = [{"b"}, {"a"}]
    assert hit_rate_at_k(RANKED, gold, 1) == 0.0
    assert hit_rate_at_k(RANKED, gold, 2) == 0.5
    assert hit_rate_at_k(RANKED, gold, 3) == 1.0
    assert any_hit_at_k(RANKED, {"y", "c"}, 2) == 0.5
    assert mrr(RANKED, gold) == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_ndcg_by_hand():
    # query 1: gains 0, 2, 1 at ranks 1..3; ideal 2, 1
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k([RANKED[0]], [{"b": 2, "c": 1}], 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k([RANKED[0]], [{"zz": 1}], 10) == 0.0
    assert ndcg_at_k([["b", "c"]], [{"b": 2, "c": 1}], 10) == pytest.approx(1.0)


def test_spearman():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_missing_data_file_is_named(tmp_path):
    with pytest.raises(DataError, match="advbench_ir/nothing.csv"):
        data_file(tmp_path, "advbench_ir/nothing.csv")


def test_document_cache_reuses_vectors(teacher, tmp_path):
    texts = ["one passage", "another passage"]
    first, seconds = encode_documents_cached(teacher, texts, tmp_path)
    assert seconds > 0 and len(list(tmp_path.glob("*.npy"))) == 1
    again, seconds_again = encode_documents_cached(teacher, texts, tmp_path)
    assert seconds_again == seconds and np.array_equal(again, first)  # the original timing, from the cache
    encode_documents_cached(teacher, texts + ["third"], tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2
