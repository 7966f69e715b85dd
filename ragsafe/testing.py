"""A tiny, randomly initialised backbone built in-process: for fast tests of code that takes a Backbone.

Real architecture classes (Llama, Qwen2) and a real byte-level BPE tokenizer trained on the fly, so
every code path (tokenization, padding, KV cache, generate, chat template) is the production one;
only the sizes are small and the weights random. Nothing is downloaded.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from ragsafe.model.backbone import Backbone

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Retrieval augmented generation finds passages that answer a question.",
    "I'm sorry, but I can't help with that request.",
    "Photosynthesis converts light into chemical energy in plants.",
    "The capital of France is Paris, a city on the Seine.",
    "Summarize the following passage: a short text about embeddings and search.",
    "How do I bake bread? Mix flour, water, salt and yeast, then knead and bake.",
    "0123456789 !?.,;:'\"()[]{}<>-_=+*/\\|@#$%^&~` abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer(vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on a few sentences (~50 ms); has pad/eos/bos and a chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>", bos_token="<s>"
    )
    fast.chat_template = _CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def tiny_backbone(kind: str = "qwen2", hidden: int = 64, layers: int = 2, seed: int = 0) -> Backbone:
    """A Qwen2- or Llama-shaped causal LM with random weights (fp32) and the tiny tokenizer."""
    tokenizer = tiny_tokenizer()
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    if kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        raise ValueError(f"kind must be 'qwen2' or 'llama', got {kind!r}")
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return Backbone.from_model(f"tiny-{kind}-{hidden}x{layers}-seed{seed}", model, tokenizer)
