import json

import pytest

from ragsafe.model.checkpoint import read_config
from ragsafe.train.config import TrainConfig
from ragsafe.train.generate import looks_like_refusal, response_key
from ragsafe.train.labels import FALLBACK_REFUSAL, follow_labels, label_of, most_common_refusal
from ragsafe.train.trainer import Trainer, collect_queries, prepare_examples, recalibrate
from tests.test_calibrate import write_pack


def test_label_of_reads_the_pack_prefix_only():
    assert label_of("harmful:safety/x.csv") == "harmful"
    assert label_of("red-team:a.jsonl") == "red-team"
    assert label_of("my_queries.jsonl") == ""


def test_follow_labels_replaces_harmful_answers_and_drops_benign_refusals():
    sources = ["harmful:a", "harmful:a", "benign:b", "benign:b", "red-team:c", "red-team:c", "mine.txt"]
    responses = ["Step 1: buy", "I'm sorry, I can't help.", "Paris.", "I cannot do that.", "Sure", "No.", "Hi"]
    refused = [False, True, False, True, False, True, False]
    out = follow_labels(sources, responses, refused)
    assert out.keep == [0, 1, 2, 4, 5, 6] and out.left_out == [3]  # the benign refusal is left out
    assert out.responses == ["I'm sorry, I can't help.", "I'm sorry, I can't help.", "Paris.", "Sure", "No.", "Hi"]
    assert out.refused == [True, True, False, False, True, False]  # red-team and unlabeled keep the backbone's
    assert out.counts == {"harmful answers replaced by a refusal": 1, "benign refusals left out": 1}


def test_the_refusal_is_the_backbones_most_frequent_one_or_a_fallback():
    responses = ["I can't assist.", "I'm sorry, no.", "I can't assist. ", "ok"]
    assert most_common_refusal(responses, [True, True, True, False]) == "I can't assist."
    assert most_common_refusal(["ok", "fine"], [False, False]) == FALLBACK_REFUSAL
    assert looks_like_refusal(FALLBACK_REFUSAL)


def test_cards_from_before_the_option_read_as_raw_targets():
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "label_targets"}
    assert TrainConfig.from_dict(old).label_targets is False
    assert TrainConfig.from_dict(TrainConfig().to_dict()).label_targets is True


def test_training_examples_follow_the_labels(qwen_tiny, teacher, tmp_path):
    cfg = write_pack(tmp_path)  # 10 harmful + 14 benign queries
    collected = collect_queries(cfg)
    queries = collected[0]
    # a cached answer per query (nothing generated): harmful 0-4 answered, benign 0-2 refused
    rows, answered, refused_benign = [], 0, 0
    for q in queries:
        harmful = q.source.startswith("harmful")
        if harmful and answered < 5:
            text, answered = f"Here is how: {q.text}", answered + 1
        elif harmful:
            text = "I'm sorry, but I can't assist with that."
        elif refused_benign < 3:
            text, refused_benign = "I cannot answer off-topic questions.", refused_benign + 1
        else:
            text = f"A river: {q.text}"
        key = response_key(qwen_tiny, cfg.policy, cfg.generation, q.text)
        rows.append(
            {"key": key, "query": q.text, "response": text, "policy": cfg.policy, "refused": looks_like_refusal(text)}
        )
    cfg.out.mkdir(parents=True)
    (cfg.out / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    ex, _ = prepare_examples(cfg, qwen_tiny, teacher, collected)
    assert len(ex.queries) == 24 - 3 and len(ex.targets) == 21
    by_source = {"harmful": [], "benign": []}
    for q, r in zip(ex.queries, ex.responses, strict=True):
        by_source[q.source.split(":")[0]].append(r)
    assert by_source["harmful"] == ["I'm sorry, but I can't assist with that."] * 10
    assert all(r.startswith("A river") for r in by_source["benign"])
    assert ex.counts["harmful answers replaced by a refusal"] == 5
    assert ex.counts["benign refusals left out"] == 3
    assert len(ex.left_out) == 3 and all(q.source.startswith("benign") for q in ex.left_out)

    # the trainer's calibration and a later recalibration both keep the left-out refusals as negatives
    out = Trainer(cfg, qwen_tiny, teacher).run()
    fitted = read_config(out)["safety"]
    labelled_negatives = sum(q.source.startswith("benign") for q in ex.queries)  # 11
    assert fitted["negatives_train"] + int(fitted["calibrated_on"].split()[0]) == labelled_negatives + 3
    refit = recalibrate(out, cfg.out, backbone=qwen_tiny, teacher=teacher)["safety"]
    assert refit["negatives_train"] == fitted["negatives_train"]
    assert refit["threshold"] == pytest.approx(fitted["threshold"], abs=1e-3)

    cfg.label_targets = False
    raw, _ = prepare_examples(cfg, qwen_tiny, teacher, collect_queries(cfg))
    assert len(raw.queries) == 24 and sum(r.startswith("Here is how") for r in raw.responses) == 5
