"""benchmarks/query_latency.py: the architecture export and the random-weight replay of answer lengths."""

from __future__ import annotations

import json

import numpy as np
import torch

from ragsafe.model.backbone import Backbone, default_dtype


def test_architecture_round_trip_has_the_shapes_but_not_the_weights(qwen_tiny, teacher, benchmark_script, tmp_path):
    bench = benchmark_script("query_latency")
    bench.write_architecture(qwen_tiny, "minilm", tmp_path / "arch")
    assert not list((tmp_path / "arch").rglob("*.safetensors"))  # nothing heavy travels
    rebuilt = bench.random_backbone(tmp_path / "arch")
    assert isinstance(rebuilt, Backbone)
    assert rebuilt.model.config.to_dict()["num_hidden_layers"] == qwen_tiny.model.config.num_hidden_layers
    assert rebuilt.hidden_size == qwen_tiny.hidden_size
    assert rebuilt.tokenizer("a river")["input_ids"] == qwen_tiny.tokenizer("a river")["input_ids"]
    assert rebuilt.fingerprint != qwen_tiny.fingerprint
    random_teacher = bench.random_teacher(tmp_path / "arch", tmp_path / "work")
    assert random_teacher.dim == teacher.dim
    a, b = random_teacher.embed(["a river"]), teacher.embed(["a river"])
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-3)


def test_replay_generates_the_recorded_lengths(qwen_tiny, benchmark_script, tmp_path):
    bench = benchmark_script("query_latency")
    bench.write_architecture(qwen_tiny, "minilm", tmp_path / "arch")
    queries = ["How do rivers form?", "Who built the first telescope?", "Why is the sky blue?"]
    # the same answers under two caps; the int8 rerun of the shorter cap decodes the float run's lengths,
    # whatever lengths an earlier int8 run recorded
    lengths = {"hyde≤4": [3, 1, 4], "hyde≤9": [3, 1, 9]}
    recorded = lengths | {"hyde≤4 (int8)": [2, 2, 2]}
    replay = tmp_path / "real.json"
    meta = {"queries": queries, "hyde new tokens": recorded, "instructions": {"query": "Q:", "document": "D:"}}
    replay.write_text(json.dumps({"meta": meta | {"query mix": 0.5}}))
    bench.main(architecture=tmp_path / "arch", replay=replay, out=tmp_path / "out", threads=1)
    written = json.loads(next((tmp_path / "out").glob("query_latency_*.json")).read_text())
    floats = {"teacher", "gen", "gen_hybrid", "hyde≤4", "hyde≤9"}
    if default_dtype() == torch.float32:  # int8 needs float32 weights on a CPU
        assert written["meta"]["hyde new tokens"] == lengths | {"hyde≤4 (int8)": [3, 1, 4]}
        floats |= {"gen (int8)", "gen_hybrid (int8)", "hyde≤4 (int8)"}
        low, mean = written["meta"]["gen query cosine, int8 to float32 (min, mean)"]
        assert 0.5 < low <= mean < 1.0  # quantized: close, not equal
    else:
        assert written["meta"]["hyde new tokens"] == lengths
    assert {row["embedder"] for row in written["rows"]} == floats
    assert all(row["p50 ms"] > 0 for row in written["rows"])
    assert all(row["hyde≤9 p50 / p50"] > 0 for row in written["rows"])
