"""The raw-LLM baseline: mean of the backbone's last-layer states over the text's own tokens.

Input-centric by construction (it embeds the question, not an answer); the same frozen backbone as
gen, so a gen-vs-llm_mean gap is the effect of the trained tokens, not of a different model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ragsafe.model.backbone import Backbone
from ragsafe.model.tokens import TextBatch, position_ids, tokenize_texts
from ragsafe.progress import progress_batches
from ragsafe.texts import check_texts


class LLMMeanEmbedder:
    name = "llm_mean"
    sparse = False

    def __init__(self, backbone: Backbone, max_length: int = 512, batch_size: int = 16) -> None:
        self.backbone = backbone
        self.max_length = max_length
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return self.backbone.hidden_size

    def _embed_batch(self, batch: TextBatch) -> np.ndarray:
        mask = batch.attention_mask
        with torch.no_grad():
            states = self.backbone.model.base_model(
                input_ids=batch.input_ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False
            ).last_hidden_state.float()
        weights = mask.unsqueeze(-1).float()
        mean = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(mean, dim=-1).cpu().numpy()

    def embed(self, texts: Sequence[str] | str) -> np.ndarray:
        texts = check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for chunk in progress_batches(order, self.batch_size, None, "llm_mean"):
            batch = tokenize_texts(self.backbone.tokenizer, [texts[i] for i in chunk], self.max_length)
            out[chunk] = self._embed_batch(batch.to(self.backbone.device))
        return out

    def encode_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        return self.embed(texts)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)
