"""Batched generation with the frozen backbone: from chat messages (responses, HyDE) or from vectors (decoding).

Sampling settings are always explicit (a `GenerationSettings`), never the checkpoint's hidden
generation_config defaults, so cached responses are reproducible and keyed by what produced them.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch
from transformers import GenerationConfig

from ragsafe.model.backbone import Backbone


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.8
    repetition_penalty: float = 1.1
    max_prompt_tokens: int = 1024
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def hf_config(self, backbone: Backbone) -> GenerationConfig:
        sampling = {"temperature": self.temperature, "top_p": self.top_p, "top_k": 0} if self.do_sample else {}
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            repetition_penalty=self.repetition_penalty,
            pad_token_id=backbone.tokenizer.pad_token_id,
            eos_token_id=backbone.eos_token_ids,
            **sampling,
        )


def chat_prompts(
    backbone: Backbone, queries: list[str], system: str | None, max_tokens: int | None = None
) -> list[str]:
    """Each query as one user turn (after an optional system prompt), with the generation prompt.

    max_tokens: a query whose prompt would be longer loses the end of its own text, never the
    template's (cutting the prompt itself would drop the assistant header the answer starts from).
    """
    tokenizer = backbone.tokenizer

    def prompt(query: str) -> str:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": query}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def length(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    if max_tokens is not None and queries and (bare := length(prompt(""))) > max_tokens:
        raise ValueError(
            f"the chat template and system prompt alone take {bare} tokens, over the {max_tokens} a prompt "
            "may have: raise max_prompt_tokens or shorten the policy"
        )
    out = []
    for query in queries:
        text = prompt(query)
        over = 0 if max_tokens is None else length(text) - max_tokens
        if over > 0:
            ids = tokenizer(query, add_special_tokens=False)["input_ids"]
            keep = len(ids)
            while over > 0 and keep > 0:  # decoding and re-tokenizing can merge or split a token at the cut
                keep = max(0, keep - over)
                text = prompt(tokenizer.decode(ids[:keep]))
                over = length(text) - max_tokens
        out.append(text)
    return out


def prompt_fits(backbone: Backbone, query: str, system: str | None, max_tokens: int) -> bool:
    """Whether the query's whole prompt fits in max_tokens (else `chat_prompts` cuts the query)."""
    [text] = chat_prompts(backbone, [query], system)
    return len(backbone.tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_tokens


def chat_generate_ids(
    backbone: Backbone,
    queries: list[str],
    system: str | None = None,
    settings: GenerationSettings | None = None,
    **overrides,
) -> torch.Tensor:
    """The new token ids (B, T) the backbone generates for `queries` (one batch, left-padded prompts).

    `overrides` go to `generate` on top of the settings (e.g. a fixed length for a timing run).
    """
    settings = settings or GenerationSettings()
    encoded = backbone.tokenizer(
        chat_prompts(backbone, queries, system, settings.max_prompt_tokens),
        add_special_tokens=False,  # the chat template already holds any BOS
        padding="longest",
        padding_side="left",
        return_tensors="pt",
    ).to(backbone.device)
    if settings.do_sample:
        torch.manual_seed(settings.seed)
    with torch.no_grad():
        ids = backbone.model.generate(**encoded, generation_config=settings.hf_config(backbone), **overrides)
    return ids[:, encoded["input_ids"].shape[1] :]


def chat_generate(
    backbone: Backbone, queries: list[str], system: str | None = None, settings: GenerationSettings | None = None
) -> list[str]:
    """Answers of the backbone to `queries` (one batch), new tokens only, special tokens removed, stripped."""
    if not queries:
        return []
    new = chat_generate_ids(backbone, queries, system, settings)
    return [t.strip() for t in backbone.tokenizer.batch_decode(new, skip_special_tokens=True)]


def generate_from_embeds(backbone: Backbone, embeds: torch.Tensor, settings: GenerationSettings) -> list[str]:
    """Generation that starts from input vectors (soft prompts) instead of token ids; KV cache on."""
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    # Starting from embeddings, the penalty sees only generated tokens; that is what decoding wants.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*repetition_penalty.*")
        ids = backbone.model.generate(
            inputs_embeds=embeds, attention_mask=mask, generation_config=settings.hf_config(backbone)
        )
    return [t.strip() for t in backbone.tokenizer.batch_decode(ids, skip_special_tokens=True)]
