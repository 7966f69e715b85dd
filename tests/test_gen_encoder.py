import numpy as np
import pytest
import torch

from ragsafe.model.chat import GenerationSettings
from ragsafe.model.gen_encoder import GenConfig, GenEncoder

TEXTS = ["hello world", "The capital of France is Paris, a city on the Seine. " * 3, "bread"]


@pytest.fixture
def enc(tiny):
    return GenEncoder(tiny, GenConfig(out_dim=32, max_length=64))


def test_shapes(enc, tiny):
    batch = enc.tokenize(TEXTS)
    h = enc.compression_states(batch)
    s, e = enc(batch)
    assert h.shape == (3, 10, tiny.hidden_size) and h.dtype == torch.float32
    assert s.shape == (3, 10, tiny.hidden_size)
    assert e.shape == (3, 32)


def test_affine_identity(enc):
    h = enc.compression_states(enc.tokenize(TEXTS))
    e = enc.pool(enc.soft_prompts(h))
    assert torch.allclose(e, enc.A(enc.R(h.mean(1))), atol=1e-5)


def test_kv_split_equals_single_pass(enc):
    batch = enc.tokenize(TEXTS)
    full = enc.compression_states(batch, grad=False)
    split = enc.compression_states(batch, grad=True)
    assert torch.allclose(full, split, atol=1e-5)


def test_padding_does_not_change_a_row(enc):
    together = enc.encode(TEXTS)
    alone = np.concatenate([enc.encode([t]) for t in TEXTS])
    assert np.allclose(together, alone, atol=1e-5)


def test_last_positions_are_the_tokens_even_for_overlong_input(enc):
    # Changing the trainable tokens must change the output of an over-long text: its states are read
    # at the token positions, not at truncated text positions.
    long = "word " * 20_000
    before = enc.encode([long])
    with torch.no_grad():
        enc.tokens.add_(torch.randn_like(enc.tokens))
    after = enc.encode([long])
    assert not np.allclose(before, after)
    assert enc.tokenize([long]).input_ids.shape[1] == enc.config.max_length - enc.config.num_tokens


def test_gradients_reach_only_tokens_R_A(enc, tiny):
    s, e = enc(enc.tokenize(TEXTS))
    (e.pow(2).sum() + s.pow(2).mean()).backward()
    assert {n for n, p in enc.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0} == {
        "tokens",
        "R.weight",
        "R.bias",
        "A.weight",
        "A.bias",
    }
    assert all(p.grad is None for p in tiny.model.parameters())
    assert all(not p.requires_grad for p in tiny.model.parameters())
    assert set(enc.state_dict()) == {"tokens", "R.weight", "R.bias", "A.weight", "A.bias"}


def test_v1_layout_uses_last_k_of_more_tokens(tiny):
    enc = GenEncoder(tiny, GenConfig(out_dim=16, num_tokens=20, num_compress=10, max_length=64))
    assert enc.compression_states(enc.tokenize(TEXTS)).shape[1] == 10
    with pytest.raises(ValueError):
        GenConfig(num_tokens=5, num_compress=10)


def test_encode_normalised_float32_and_raw(enc):
    e = enc.encode(TEXTS)
    assert e.dtype == np.float32 and e.shape == (3, 32)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    raw = enc.encode(TEXTS, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    assert np.allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), e, atol=1e-5)


def test_instruction_changes_embedding(enc):
    assert not np.allclose(enc.encode(["bread"]), enc.encode(["bread"], instruction="Summarize:"))


def test_bad_inputs(enc):
    assert enc.encode([]).shape == (0, 32)
    empty = enc.encode([""])
    assert empty.shape == (1, 32) and np.isfinite(empty).all()
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        enc.encode(["ok", None])
    with pytest.raises(TypeError):
        enc.encode(123)
    huge = enc.encode(["x" * 100_000])
    assert huge.shape == (1, 32) and np.isfinite(huge).all()
    assert enc.encode("single string").shape == (1, 32)


def test_decode_from_text_and_soft_prompts(enc):
    settings = GenerationSettings(max_new_tokens=6)
    out = enc.decode(TEXTS, settings=settings)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    prompts = enc.encode_soft_prompts(TEXTS)
    assert enc.decode(prompts, settings=settings) == out
    with pytest.raises(ValueError, match="soft prompts"):
        enc.decode(torch.zeros(2, 10, 3))


def test_logit_lens(enc):
    lens = enc.logit_lens(["hello", "bread"], top_k=3)
    assert len(lens) == 2 and len(lens[0]) == 10
    entry = lens[0][0]
    assert len(entry.tokens) == 3 and entry.probs == sorted(entry.probs, reverse=True)
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        enc.logit_lens(["hello"], top_k=0)
