import pytest
import torch

from ragsafe.model.tokens import (
    init_token_vectors,
    position_ids,
    token_vectors_from_text,
    tokenize_texts,
)
from ragsafe.texts import check_texts


def test_left_padding_and_truncation(qwen_tiny):
    tok = qwen_tiny.tokenizer
    batch = tokenize_texts(tok, ["short", "a much longer text with many more words in it"], max_text_tokens=8)
    assert batch.input_ids.shape[1] <= 8
    # left padding: the shorter row starts with pads, and both rows end with real tokens
    assert batch.attention_mask[0, 0] == 0 and batch.attention_mask[0, -1] == 1
    assert batch.attention_mask[1].all()


def test_long_text_is_cut_to_budget(qwen_tiny):
    batch = tokenize_texts(qwen_tiny.tokenizer, ["word " * 50_000], max_text_tokens=30)
    assert batch.input_ids.shape == (1, 30)


def test_all_empty_texts_keep_a_valid_shape(qwen_tiny):
    batch = tokenize_texts(qwen_tiny.tokenizer, ["", ""], max_text_tokens=10)
    assert batch.input_ids.shape[0] == 2 and batch.attention_mask.sum() == 0


def test_check_texts_rejects_non_strings_with_index():
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        check_texts(["ok", 3])
    with pytest.raises(TypeError, match="list of strings"):
        check_texts(42)
    assert check_texts("one") == ["one"]
    assert check_texts([]) == []


def test_position_ids_skip_left_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_token_init_is_per_token_distinct_and_seeded(qwen_tiny):
    table = qwen_tiny.model.get_input_embeddings().weight
    a, b = init_token_vectors(table, 10, seed=0), init_token_vectors(table, 10, seed=0)
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert torch.cdist(a, a)[~torch.eye(10, dtype=torch.bool)].min() > 0
    assert not torch.equal(a, init_token_vectors(table, 10, seed=1))


def test_token_vectors_from_text_take_the_phrase_embeddings():
    table = torch.arange(20, dtype=torch.float32).reshape(10, 2)
    assert token_vectors_from_text(table, [1, 2, 3, 4], 2).tolist() == [[6.0, 7.0], [8.0, 9.0]]  # the last ids
    assert token_vectors_from_text(table, [5], 3).tolist() == [[10.0, 11.0]] * 3  # cycled when short
    with pytest.raises(ValueError, match="nothing"):
        token_vectors_from_text(table, [], 3)
