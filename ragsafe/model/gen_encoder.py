"""GenEncoder: the LLM2Vec-Gen encoder (method.md §3.4, §6).

text + K_tot trainable token vectors -> frozen backbone -> last-layer states at the last K positions (h)
-> R (H->H) gives the soft prompt s, which the frozen LM can decode back into text
-> A (H->D) maps s into the teacher's space; the mean over K positions is the embedding.

Only `tokens`, `R` and `A` are parameters of this module (float32); the backbone is frozen and shared.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ragsafe.model.backbone import Backbone
from ragsafe.model.chat import GenerationSettings, generate_from_embeds
from ragsafe.model.tokens import TextBatch, init_token_vectors, position_ids, tokenize_texts
from ragsafe.progress import progress_batches
from ragsafe.texts import check_texts


@dataclass
class GenConfig:
    """Shape of the trained part. v2 layout (default): 10 tokens, all compression; v1: 20 tokens, last 10."""

    out_dim: int = 384
    num_tokens: int = 10
    num_compress: int = 10
    max_length: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.num_compress <= self.num_tokens:
            raise ValueError(f"need 1 <= num_compress ({self.num_compress}) <= num_tokens ({self.num_tokens})")
        if self.max_length <= self.num_tokens:
            raise ValueError(f"max_length ({self.max_length}) must exceed num_tokens ({self.num_tokens})")
        if self.out_dim < 1:
            raise ValueError(f"out_dim must be positive, got {self.out_dim}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def text_budget(self) -> int:
        """Tokens of a text kept in front of the special tokens (a longer text is cut on the right)."""
        return self.max_length - self.num_tokens


@dataclass
class LensEntry:
    """Top tokens the LM head reads off one compression position."""

    position: int
    tokens: list[str]
    probs: list[float]


def _cache_argument(model: nn.Module) -> str:
    """The forward argument that takes a KV cache: `cache` in the pinned transformers, `past_key_values`
    in earlier 5.x releases (still found on GPU images). A wrong name would be swallowed by **kwargs and
    the tokens would silently attend to nothing, so it is looked up rather than assumed."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class GenEncoder(nn.Module):
    def __init__(self, backbone: Backbone, config: GenConfig | None = None) -> None:
        super().__init__()
        self.config = config or GenConfig()
        # Kept out of the module tree so state_dict(), .parameters() and checkpoints hold only the trained part.
        object.__setattr__(self, "backbone", backbone)
        hidden = backbone.hidden_size
        table = backbone.model.get_input_embeddings().weight
        self.tokens = nn.Parameter(init_token_vectors(table, self.config.num_tokens, self.config.seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.R = nn.Linear(hidden, hidden)
            self.A = nn.Linear(hidden, self.config.out_dim)
        self.to(backbone.device)  # the trainable part lives where the backbone computes (float32)
        self._cache_kwarg = _cache_argument(backbone.model.base_model)

    @property
    def dim(self) -> int:
        return self.config.out_dim

    def tokenize(self, texts: list[str]) -> TextBatch:
        return tokenize_texts(self.backbone.tokenizer, texts, self.config.text_budget).to(self.backbone.device)

    def compression_states(self, batch: TextBatch, grad: bool = False) -> torch.Tensor:
        """Last-layer states at the K compression positions, (B, K, H) float32.

        grad=False: one no-grad pass over text + tokens (inference; the weights are read once).
        grad=True: the text prefix runs under no_grad into a KV cache and only the K_tot token positions
        run with autograd on top of it: identical values, and backward touches K_tot positions, not L.
        """
        if not grad:
            out = self.full_pass(batch).last_hidden_state
            return out[:, -self.config.num_compress :, :].float()
        return self.token_states(self.prefix_cache(batch), batch.attention_mask)

    def full_pass(self, batch: TextBatch, hidden_states: bool = False):
        """One no-grad pass over text + tokens: the backbone's output (every layer's states with
        hidden_states=True; the tokens are the last K_tot positions of each row)."""
        model = self.backbone.model
        text_embeds = model.get_input_embeddings()(batch.input_ids)
        special, full_mask = self._token_inputs(batch.attention_mask)
        with torch.no_grad():
            return model.base_model(
                inputs_embeds=torch.cat([text_embeds, special], dim=1),
                attention_mask=full_mask,
                position_ids=position_ids(full_mask),
                use_cache=False,
                output_hidden_states=hidden_states,
            )

    def _token_inputs(self, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The K_tot token vectors for each row (backbone dtype) and the mask of text + tokens."""
        n = text_mask.shape[0]
        special = self.tokens.to(self.backbone.dtype).unsqueeze(0).expand(n, -1, -1)
        ones = torch.ones(n, self.config.num_tokens, dtype=text_mask.dtype, device=text_mask.device)
        return special, torch.cat([text_mask, ones], dim=1)

    def prefix_cache(self, batch: TextBatch):
        """KV cache of the frozen text prefix (no grad): what the tokens attend to, fixed for a given text."""
        with torch.no_grad():
            text_embeds = self.backbone.model.get_input_embeddings()(batch.input_ids)
            out = self.backbone.model.base_model(
                inputs_embeds=text_embeds,
                attention_mask=batch.attention_mask,
                position_ids=position_ids(batch.attention_mask),
                use_cache=True,
            )
            return out.cache if getattr(out, "cache", None) is not None else out.past_key_values

    def token_states(self, cache, prefix_mask: torch.Tensor) -> torch.Tensor:
        """Run only the K_tot token positions (with autograd) on top of a prefix cache; (B, K, H) float32.

        The cache is extended in place by this call.
        """
        special, full_mask = self._token_inputs(prefix_mask)
        offsets = torch.arange(self.config.num_tokens, device=prefix_mask.device)
        out = self.backbone.model.base_model(
            inputs_embeds=special,
            attention_mask=full_mask,
            position_ids=prefix_mask.sum(dim=1, keepdim=True) + offsets,
            use_cache=True,
            **{self._cache_kwarg: cache},
        ).last_hidden_state
        return out[:, -self.config.num_compress :, :].float()

    def soft_prompts(self, h: torch.Tensor) -> torch.Tensor:
        """R(h): (B, K, H), the vectors the frozen LM decodes the predicted response from."""
        return self.R(h)

    def pool(self, s: torch.Tensor) -> torch.Tensor:
        """mean_k A(s_k): (B, D), the raw (unnormalised) embedding."""
        return self.A(s).mean(dim=1)

    def forward(self, batch: TextBatch, grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (soft prompts s (B,K,H), embeddings e (B,D)); the training entry point."""
        s = self.soft_prompts(self.compression_states(batch, grad=grad))
        return s, self.pool(s)

    def _run(
        self, texts: Sequence[str] | str, instruction: str | None, batch_size: int, show_progress: bool | None, what
    ):
        texts = check_texts(texts)
        if instruction:
            texts = [f"{instruction} {t}" for t in texts]
        results: list = [None] * len(texts)
        # Longest first: batches hold similar lengths (less padding) and memory peaks show up at once.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.no_grad():
            for chunk in progress_batches(order, batch_size, show_progress, "encoding"):
                outputs = what(self.tokenize([texts[i] for i in chunk]))
                for row, i in enumerate(chunk):
                    results[i] = outputs[row]
        return results

    def encode(
        self,
        texts: Sequence[str] | str,
        instruction: str | None = None,
        normalize: bool = True,
        batch_size: int = 16,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed texts as (N, D) float32; `instruction + " " + text` when an instruction is given."""

        def embed(batch: TextBatch) -> np.ndarray:
            e = self.pool(self.soft_prompts(self.compression_states(batch)))
            if normalize:
                e = nn.functional.normalize(e, dim=-1)
            return e.cpu().numpy()

        rows = self._run(texts, instruction, batch_size, show_progress, embed)
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dim), dtype=np.float32)

    def encode_soft_prompts(
        self, texts: Sequence[str] | str, instruction: str | None = None, batch_size: int = 16
    ) -> torch.Tensor:
        """Soft prompts (N, K, H) float32 of texts, for decoding."""
        rows = self._run(texts, instruction, batch_size, False, lambda b: self.soft_prompts(self.compression_states(b)))
        hidden = self.backbone.hidden_size
        return torch.stack(rows) if rows else torch.zeros(0, self.config.num_compress, hidden)

    def decode(
        self,
        texts_or_prompts: Sequence[str] | str | torch.Tensor,
        instruction: str | None = None,
        settings: GenerationSettings | None = None,
        batch_size: int = 16,
    ) -> list[str]:
        """Greedy-decode the predicted response from texts or from soft prompts (N, K, H), with a KV cache."""
        if isinstance(texts_or_prompts, torch.Tensor):
            prompts = texts_or_prompts
            if prompts.dim() != 3 or prompts.shape[-1] != self.backbone.hidden_size:
                raise ValueError(
                    f"soft prompts must be (N, K, {self.backbone.hidden_size}), got {tuple(prompts.shape)}"
                )
        else:
            prompts = self.encode_soft_prompts(texts_or_prompts, instruction, batch_size)
        out: list[str] = []
        for start in range(0, prompts.shape[0], batch_size):
            chunk = prompts[start : start + batch_size].to(self.backbone.device, self.backbone.dtype)
            out.extend(generate_from_embeds(self.backbone, chunk, settings or GenerationSettings()))
        return out

    def logit_lens(
        self, texts: Sequence[str] | str, instruction: str | None = None, top_k: int = 5
    ) -> list[list[LensEntry]]:
        """Per text and compression position, the top tokens of the LM head applied to h (R and A dropped)."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        head = self.backbone.model.get_output_embeddings()
        tokenizer = self.backbone.tokenizer

        def lens(batch: TextBatch) -> list[list[LensEntry]]:
            h = self.compression_states(batch).to(self.backbone.dtype)
            probs = head(h).float().softmax(dim=-1)
            top = probs.topk(top_k, dim=-1)
            return [
                [
                    LensEntry(k, [tokenizer.decode([int(t)]) for t in top.indices[b, k]], top.values[b, k].tolist())
                    for k in range(h.shape[1])
                ]
                for b in range(h.shape[0])
            ]

        return self._run(texts, instruction, 16, False, lens)
