"""The trainable special tokens and the input layout they sit in.

The K_tot special tokens are a K_tot x H float32 parameter spliced into `inputs_embeds` after the text,
not new vocabulary rows: the backbone's embedding matrix is never resized, so the frozen model stays
byte-identical and the trained part is tiny. The layout of every row is

    [pads ...][text tokens ...][special_1 ... special_Ktot]

left-padded, so the last K_tot positions are always the special tokens; a text longer than
`max_length - K_tot` tokens is cut on the right so the tokens still fit (method.md §3.3, done before
appending instead of overwriting the tail after it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase


@dataclass
class TextBatch:
    """Left-padded text ids (B, L) and their mask; the special tokens are appended by the encoder."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(dim=1)

    def to(self, device: torch.device) -> TextBatch:
        return TextBatch(self.input_ids.to(device), self.attention_mask.to(device))


def tokenize_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_text_tokens: int) -> TextBatch:
    """Tokenize with the tokenizer's own special tokens (Llama gets a BOS), truncate, left-pad."""
    if max_text_tokens < 1:
        raise ValueError(f"max_length leaves {max_text_tokens} text tokens; raise it above the token count.")
    encoded = tokenizer(
        texts,
        add_special_tokens=True,
        truncation=True,
        max_length=max_text_tokens,
        padding="longest",
        padding_side="left",
        return_tensors="pt",
    )
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    if ids.shape[1] == 0:  # every text empty and no BOS: keep one masked column so shapes stay valid
        ids = torch.full((len(texts), 1), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(texts), 1), dtype=torch.long)
    return TextBatch(ids, mask)


def init_token_vectors(embeddings: torch.Tensor, count: int, seed: int = 0, noise: float = 0.5) -> torch.Tensor:
    """Mean of the vocabulary embeddings plus per-token Gaussian noise (noise x their std), in float32.

    Per-token noise makes the tokens distinguishable from the first step; the mean keeps them in the
    region of input space the frozen model was trained on.
    """
    table = embeddings.detach().float()
    generator = torch.Generator().manual_seed(seed)
    mean, std = table.mean(dim=0).cpu(), table.std().cpu()  # the generator (and result) are on the CPU
    return mean + noise * std * torch.randn(count, table.shape[1], generator=generator)


def token_vectors_from_text(embeddings: torch.Tensor, token_ids: list[int], count: int) -> torch.Tensor:
    """The input embeddings of a phrase as the starting tokens: its last `count` ids, cycled if shorter.

    Tokens that start as a phrase asking for the answer make the frozen model's last-layer states at
    them predict that answer from the first step; in stage 1 this raised the validation cosine to the
    teacher targets from 0.38 (noise start) to 0.41 with everything else fixed.
    """
    if not token_ids:
        raise ValueError("token_init text tokenizes to nothing")
    ids = (token_ids * count)[:count] if len(token_ids) < count else token_ids[-count:]
    return embeddings.detach()[ids].float().clone()


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """0-based positions that skip left padding, so a padded row is positioned like the same row alone."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)
