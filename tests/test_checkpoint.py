import json

import numpy as np
import pytest
import torch

from ragsafe.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ragsafe.model.gen_encoder import GenConfig, GenEncoder


def test_round_trip_gives_identical_embeddings(qwen_tiny, tmp_path):
    enc = GenEncoder(qwen_tiny, GenConfig(out_dim=24, seed=3))
    with torch.no_grad():
        enc.tokens.add_(0.1)
    save_checkpoint(enc, tmp_path / "ck", extra={"instructions": {"query": "Q:"}})
    loaded = load_checkpoint(tmp_path / "ck", qwen_tiny)
    assert loaded.config == enc.config
    texts = ["one text", "another, longer text"]
    assert np.array_equal(enc.encode(texts), loaded.encode(texts))
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["instructions"] == {"query": "Q:"}


def test_wrong_backbone_is_an_error(qwen_tiny, llama_tiny, tmp_path):
    save_checkpoint(GenEncoder(qwen_tiny, GenConfig(out_dim=8)), tmp_path / "ck")
    with pytest.raises(CheckpointError, match="trained on backbone"):
        load_checkpoint(tmp_path / "ck", llama_tiny)


def test_missing_or_corrupt_checkpoint(qwen_tiny, tmp_path):
    with pytest.raises(CheckpointError, match="not a ragsafe checkpoint"):
        load_checkpoint(tmp_path, qwen_tiny)
    save_checkpoint(GenEncoder(qwen_tiny, GenConfig(out_dim=8)), tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "ck", qwen_tiny)


def test_shipped_checkpoint_was_trained_under_the_default_policy():
    # `ragsafe train` with no --policy must reproduce the shipped recipe, so the two cannot drift apart
    from ragsafe.model.checkpoint import default_checkpoint_dir, read_config
    from ragsafe.train.generate import DEFAULT_POLICY

    path = default_checkpoint_dir()
    if path is None:
        pytest.skip("this build ships no default checkpoint")
    card = read_config(path)["card"]
    assert card["policy"] == card["config"]["policy"] == DEFAULT_POLICY
