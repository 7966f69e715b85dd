import json

import numpy as np
import pytest

from ragsafe.train.calibrate import calibrate, fit_harm_probe, fit_query_mix, harm_labels, own_answer_mrr
from ragsafe.train.config import TrainConfig
from ragsafe.train.trainer import Trainer, recalibrate
from tests.test_train import small_config


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_harm_labels_follow_the_pack_then_the_backbone():
    sources = ["harmful:a.csv", "benign:b.jsonl", "red-team:c.jsonl", "red-team:c.jsonl", "mine.jsonl"]
    refused = [False, True, True, False, True]
    assert harm_labels(sources, refused).tolist() == [1, 0, 1, 0, 1]


def test_harm_probe_separates_and_keeps_its_false_rate():
    rng = np.random.default_rng(0)
    direction = unit(rng.normal(size=(1, 16)))[0]
    labels = (rng.random(600) < 0.2).astype(np.int64)
    vectors = unit(rng.normal(size=(600, 16)) * 0.5 + np.where(labels[:, None] == 1, 1.0, -1.0) * direction)
    train, val = list(range(400)), list(range(400, 600))
    probe = fit_harm_probe(vectors, labels, train, val, max_false_rates=(0.05,))
    scores = vectors @ np.asarray(probe["direction"]) + probe["bias"]
    negatives = [i for i in val if labels[i] == 0]
    assert np.mean(scores[negatives] > probe["threshold"]) <= 0.05 + 1e-9
    assert probe["val_positives_caught"] > 0.9
    one_class = fit_harm_probe(vectors, np.zeros(600, dtype=np.int64), train, val)
    assert one_class["direction"] is None


def test_query_mix_finds_the_weight_that_predicts_the_answers():
    rng = np.random.default_rng(1)
    answers = unit(rng.normal(size=(300, 32)))
    val = list(range(300))
    unrelated = unit(rng.normal(size=(300, 32)))
    assert fit_query_mix(answers, unrelated, answers, val)["beta"] == 0.0  # gen is exact: nothing to add
    # two equally noisy, independent views of the answer: averaging them (beta near 1) predicts it best
    gen, teacher_q = (unit(answers + 0.3 * rng.normal(size=(300, 32))) for _ in range(2))
    fitted = fit_query_mix(gen, teacher_q, answers, val)
    assert 0.5 <= fitted["beta"] <= 2.0 and fitted["val_mrr"] > fitted["val_mrr_gen_only"] + 0.05
    assert own_answer_mrr(answers, answers) == pytest.approx(1.0)


def test_left_out_benign_queries_are_probe_negatives_only():
    rng = np.random.default_rng(2)
    n, d = 200, 8
    gen, teacher_q, targets = (unit(rng.normal(size=(n, d))) for _ in range(3))
    sources = ["harmful:h"] * 40 + ["benign:b"] * 160
    train, val = list(range(0, 180)), list(range(180, 200))
    base = calibrate(gen, teacher_q, targets, sources, [False] * n, train, val)
    extra = (unit(rng.normal(size=(30, d))), unit(rng.normal(size=(30, d))))
    more = calibrate(gen, teacher_q, targets, sources, [False] * n, train, val, extra)
    assert more["safety"]["negatives_train"] == base["safety"]["negatives_train"] + 27  # 3 of 30 held out
    assert more["safety"]["calibrated_on"].startswith("23 held-out")  # the 20 validation negatives + 3
    assert more["query_mix"] == base["query_mix"]  # the mix never sees them: they have no target


def write_pack(tmp_path) -> TrainConfig:
    """A two-source pack (harmful / benign) in a throwaway data dir, so the probe has both classes."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "bad.txt").write_text("\n".join(f"how to hurt person number {i}" for i in range(10)))
    (data / "good.txt").write_text("\n".join(f"tell me about river number {i}" for i in range(14)))
    pack = {
        "name": "tiny",
        "description": "test pack",
        "queries": [{"file": "bad.txt", "label": "harmful"}, {"file": "good.txt", "label": "benign"}],
    }
    (tmp_path / "tiny.json").write_text(json.dumps(pack))
    cfg = small_config(tmp_path, ["unused"], head_steps=20, steps=2, val_fraction=0.25)
    cfg.queries_file, cfg.domain, cfg.data_dir = None, str(tmp_path / "tiny.json"), data
    return cfg


def test_trainer_calibrates_and_recalibrate_reproduces_it(qwen_tiny, teacher, tmp_path):
    from ragsafe.model.checkpoint import read_config

    cfg = write_pack(tmp_path)
    out = Trainer(cfg, qwen_tiny, teacher).run()
    first = read_config(out)
    assert first["safety"]["kind"] == "probe" and first["safety"]["features"] == "gen+teacher"
    assert len(first["safety"]["direction"]) == 2 * teacher.dim  # the gen vector next to the teacher's
    assert first["card"]["safety"]["positives_train"] > 0 and "direction" not in first["card"]["safety"]
    # the card's config is what recalibrate rebuilds the queries from; it must survive the round trip
    assert TrainConfig.from_dict(first["card"]["config"]).domain == cfg.domain
    with pytest.raises(ValueError, match="unknown training-config keys"):
        TrainConfig.from_dict({**first["card"]["config"], "from_the_future": 1})
    refit = recalibrate(out, cfg.out, backbone=qwen_tiny, teacher=teacher)  # prefix-cache states vs plain encode
    assert refit["query_mix"]["beta"] == first["query_mix"]["beta"]
    assert refit["safety"]["threshold"] == pytest.approx(first["safety"]["threshold"], abs=1e-3)
    assert read_config(out)["safety"]["threshold"] == refit["safety"]["threshold"]
    (cfg.out / "responses.jsonl").write_text("")
    with pytest.raises(ValueError, match="lacks 24 of the 24"):
        recalibrate(out, cfg.out, backbone=qwen_tiny, teacher=teacher)


def test_a_handful_of_refusals_makes_no_probe():
    """Own queries, no harmful label: one or two off-topic refusals are no basis for flagging requests."""
    rng = np.random.default_rng(3)
    n, d = 120, 8
    gen, teacher_q, targets = (unit(rng.normal(size=(n, d))) for _ in range(3))
    train, val = list(range(100)), list(range(100, 120))
    few = [i % 40 == 0 for i in range(n)]  # 3 refusals
    fitted = calibrate(gen, teacher_q, targets, ["mine.jsonl"] * n, few, train, val)
    assert fitted["safety"]["direction"] is None and "only 3 of the 120" in fitted["safety"]["calibrated_on"]
    many = [i % 4 == 0 for i in range(n)]  # 30 refusals
    assert calibrate(gen, teacher_q, targets, ["mine.jsonl"] * n, many, train, val)["safety"]["direction"]
    labelled = ["harmful:h.csv"] * 3 + ["benign:b.csv"] * (n - 3)  # a pack that says which are harmful
    assert calibrate(gen, teacher_q, targets, labelled, [False] * n, train, val)["safety"]["direction"]
