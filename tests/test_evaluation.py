import json
import math

import numpy as np
import pytest

from ragsafe.datadir import DataError, data_file
from ragsafe.evaluation.doc_cache import encode_documents_cached
from ragsafe.evaluation.metrics import (
    any_hit_at_k,
    hit_rate_at_k,
    mrr,
    ndcg_at_k,
    own_answer_ranks,
    pair_cosines,
    spearman,
    top_k,
)

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


def test_own_answer_ranks_by_hand():
    targets = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.6, 0.8]])
    # row 0: own 1.0 beats 0.6. Row 1: own 0.96; target 2 duplicates it (not counted), target 3 scores
    # 0.936. Row 2: target 3 scores 1.0 over its own 0.8. Row 3: targets 1 and 2 score 1.0 over its own 0.8.
    predicted = np.array([[1.0, 0.0], [0.28, 0.96], [0.6, 0.8], [0.0, 1.0]])
    assert own_answer_ranks(predicted, targets).tolist() == [1, 1, 2, 3]
    # a collapsed prediction, level with every target, ranks last
    assert own_answer_ranks(np.ones((3, 2)), np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]), 1.5).tolist() == [3, 3, 3]
    # so does a diverged one: NaN must never pass for a perfect score (rows 1 and 2 share a target)
    assert own_answer_ranks(np.full((4, 2), np.nan), targets).tolist() == [4, 3, 3, 4]


def test_ndcg_by_hand():
    # query 1: gains 0, 2, 1 at ranks 1..3; ideal 2, 1
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k([RANKED[0]], [{"b": 2, "c": 1}], 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k([RANKED[0]], [{"zz": 1}], 10) == 0.0
    assert ndcg_at_k([["b", "c"]], [{"b": 2, "c": 1}], 10) == pytest.approx(1.0)


def test_pair_cosines_by_hand():
    a = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    b = np.array([[6.0, 8.0], [0.0, 2.0], [1.0, 1.0]])
    assert pair_cosines(a, b) == pytest.approx([1.0, 0.0, 0.0])  # an all-zero row: 0, not NaN
    assert pair_cosines(a[:1], -b[:1]) == pytest.approx([-1.0])


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


def test_logistic_accuracy_by_hand():
    from ragsafe.evaluation.metrics import logistic_accuracy

    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    test = np.array([[0.8, 0.2], [0.2, 0.8]])
    assert logistic_accuracy(train, ["a", "a", "b", "b"], test, ["a", "b"]) == 1.0
    assert logistic_accuracy(train, ["a", "a", "b", "b"], test, ["b", "a"]) == 0.0


def test_subsample_keeps_every_relevant_document():
    from ragsafe.evaluation.tasks import Corpus, RetrievalTask

    ids = [f"d{i}" for i in range(50)]
    task = RetrievalTask(
        "t", Corpus(ids, ids), [f"q{i}" for i in range(10)], [{f"d{i}": 1, "d40": 2} for i in range(10)]
    )
    sub = task.subsample(queries=3, corpus=8, seed=1)
    relevant = {d for rel in sub.qrels for d in rel}
    assert len(sub.queries) == 3 and len(sub.corpus.ids) == 8 and relevant <= set(sub.corpus.ids)
    small = task.subsample(queries=3, corpus=2, seed=1)  # fewer slots than relevant documents: qrels are cut
    assert len(small.corpus.ids) == 2 and set(small.corpus.ids) <= relevant
    assert all(rel and set(rel) <= set(small.corpus.ids) for rel in small.qrels)
    assert len(small.queries) == len(small.qrels) <= 3


def test_sts_reader_skips_withheld_subsets(tmp_path):
    from ragsafe.evaluation.tasks import sts

    folder = tmp_path / "sts/sts12-16/STS13-en-test"
    folder.mkdir(parents=True)
    (folder / "STS.input.news.txt").write_text("a cat\ta dog\nrain\tsun\nx\ty\n")
    (folder / "STS.gs.news.txt").write_text("4.0\n1.5\n\n")  # third pair unscored
    (folder / "STS.gs.SMT.txt").write_text("3.0\n")  # its input file is withheld upstream
    task = sts(tmp_path, "STS13")
    assert task.first == ["a cat", "rain"] and task.scores == [4.0, 1.5]
    with pytest.raises(DataError, match="STS14-en-test"):
        sts(tmp_path, "STS14")


def test_dev_sets_read_pubmedqa_and_the_stsb_dev_split(tmp_path):
    from ragsafe.evaluation.tasks import PairTask, pubmedqa, sts

    (tmp_path / "medical/pubmedqa").mkdir(parents=True)
    rows = {
        "11": {"QUESTION": "Do cats purr?", "CONTEXTS": ["Cats purr.", "Often when content."]},
        "12": {"QUESTION": "Is rain wet?", "CONTEXTS": ["Rain is water."]},
    }
    (tmp_path / "medical/pubmedqa/ori_pqal.json").write_text(json.dumps(rows))
    task = pubmedqa(tmp_path)
    assert task.queries == ["Do cats purr?", "Is rain wet?"]
    assert task.corpus.texts == ["Cats purr. Often when content.", "Rain is water."]
    assert task.qrels == [{"pmid-11": 1}, {"pmid-12": 1}] and task.corpus.ids == ["pmid-11", "pmid-12"]
    (tmp_path / "sts/stsbenchmark").mkdir(parents=True)
    (tmp_path / "sts/stsbenchmark/sts-dev.csv").write_text("g\tf\t2012\t1\t3.5\ta cat\ta dog\nshort line\n")
    dev = sts(tmp_path, "STSBenchmark-dev")
    assert (dev.first, dev.second, dev.scores) == (["a cat"], ["a dog"], [3.5])
    with pytest.raises(DataError, match="sts-test.csv"):  # the test split is another file
        sts(tmp_path, "STSBenchmark")
    # case, spacing and tokenised punctuation do not hide a reused sentence
    benchmark = PairTask("b", ["A  Cat"], ["the sun is out ."], [1.0])
    dev = PairTask("dev", ["a cat", "rain", "The sun is out.", "snow"], ["a dog", "sun", "fog", "ice"], [3.5, 1, 2, 0])
    clean = dev.without_sentences_of([benchmark])
    assert (clean.first, clean.second, clean.scores) == (["rain", "snow"], ["sun", "ice"], [1, 0])
    assert PairTask("p", ["a", "b", "a"], ["b", "c", "d"], [1, 2, 3]).sentences() == ["a", "b", "c", "d"]


def test_family_scores_with_the_teacher(teacher, tmp_path):
    from ragsafe.evaluation.family import score_retrieval, score_sts
    from ragsafe.evaluation.tasks import Corpus, PairTask, RetrievalTask

    corpus = Corpus(
        ["bake", "tax", "moon"], ["How to bake sourdough bread", "Filing income taxes", "Phases of the moon"]
    )
    task = RetrievalTask("t", corpus, ["bread baking at home", "when is the full moon"], [{"bake": 1}, {"moon": 1}])
    assert score_retrieval(teacher, task, tmp_path)["metric"] == pytest.approx(1.0)
    pairs = PairTask(
        "s",
        ["a man plays guitar", "a dog runs", "stocks fell"],
        ["a man plays a guitar", "a cat sleeps", "the weather is nice"],
        [5.0, 2.0, 0.0],
    )
    assert score_sts(teacher, pairs, tmp_path)["metric"] == pytest.approx(1.0)


def test_write_results_and_a_plot_with_more_embedders_than_colours(tmp_path):
    import re

    import matplotlib.image

    from ragsafe.evaluation.results import write_plot, write_results

    rows = [{"embedder": f"e{i}", "a": i / 12, "b": 1 - i / 12, "note": "text"} for i in range(12)]
    write_results(tmp_path, "demo", rows, {"corpus": "tiny"}, "a note")
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert [r["embedder"] for r in saved["rows"]] == [f"e{i}" for i in range(12)]
    md = (tmp_path / "demo.md").read_text()
    assert re.search(r"\|\s*e11\s*\|", md) and "a note" in md and "Machine:" in md
    image = matplotlib.image.imread(write_plot(tmp_path, "demo", rows, ["a", "b"], "demo"))
    assert image.ndim == 3 and image.shape[1] > image.shape[0]


def test_top_k_breaks_ties_at_the_cutoff_by_the_lower_index():
    from ragsafe.evaluation.metrics import top_k

    assert top_k(np.array([[0.0, 0, 0, 0, 1]]), 3).tolist() == [[4, 0, 1]]
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(200, 30)).astype(float)
    expected = [sorted(range(30), key=lambda j, row=row: (-row[j], j))[:5] for row in scores]
    assert top_k(scores, 5).tolist() == expected
    assert top_k(scores, 0).shape == (200, 0) and top_k(scores, 99).shape == (200, 30)
