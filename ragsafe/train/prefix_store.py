"""Per-example KV caches of the frozen text prefixes, computed once and reused every training step.

The backbone is frozen and the text of an example never changes, so the keys and values its prefix
produces never change either; only the K_tot token positions on top of it depend on the trainable
tokens. Caching the prefix turns a training step from a pass over all L + K positions into a pass
over K positions (about 5x less compute for 40-token queries here). Memory: layers x 2 x kv_heads x
head_dim floats per token; about 1.2 MB per 50-token query for the 0.5B default backbone.

Chunks are written to `folder` as they are computed, so an interrupted build resumes where it stopped.
A chunk's file name carries a digest of its texts, the backbone, its dtype and the text budget, so a run
folder reused with other queries (another filter, label rule or sample) or another `max_length`
recomputes them instead of reading stale states.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import DynamicCache

from ragsafe.model.gen_encoder import GenEncoder
from ragsafe.progress import make_progress


class PrefixStore:
    def __init__(self, encoder: GenEncoder, texts: list[str], folder: str | Path, chunk_size: int = 16) -> None:
        self.encoder = encoder
        self.texts = texts
        self.folder = Path(folder)
        self.chunk_size = chunk_size
        # per example: list over layers of (keys, values), each (kv_heads, length, head_dim), no padding
        self.entries: list[list[tuple[torch.Tensor, torch.Tensor]]] = []

    def build(self, show_progress: bool = True) -> PrefixStore:
        self.folder.mkdir(parents=True, exist_ok=True)
        chunks = range(0, len(self.texts), self.chunk_size)
        with make_progress(transient=False) as progress:
            task = progress.add_task("caching prefixes", total=len(self.texts), info="", visible=show_progress)
            for start in chunks:
                texts = self.texts[start : start + self.chunk_size]
                path = self.folder / f"chunk_{start:07d}_{self._digest(texts)}.safetensors"
                if path.is_file():
                    tensors = load_file(str(path))
                else:
                    tensors = self._compute(texts)
                    tmp = path.with_suffix(".tmp")
                    save_file(tensors, str(tmp))
                    tmp.replace(path)
                    for stale in self.folder.glob(f"chunk_{start:07d}_*.safetensors"):  # other texts or settings
                        if stale != path:
                            stale.unlink()
                self.entries.extend(_split(tensors, len(texts)))
                progress.advance(task, len(texts))
        return self

    def _digest(self, texts: list[str]) -> str:
        # and whatever else changes the stored states: the dtype and how much of a text is kept
        backbone, budget = self.encoder.backbone, self.encoder.config.text_budget
        payload = json.dumps([backbone.identity(), str(backbone.dtype), budget, texts])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def _compute(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.encoder.tokenize(texts)
        cache = self.encoder.prefix_cache(batch)
        out: dict[str, torch.Tensor] = {}
        lengths = batch.lengths.tolist()
        for layer_idx, layer in enumerate(cache.layers):
            for row, length in enumerate(lengths):
                # left padding: the real tokens are the last `length` positions
                keys = layer.keys[row, :, layer.keys.shape[2] - length :, :]
                values = layer.values[row, :, layer.values.shape[2] - length :, :]
                out[f"{row}.{layer_idx}.k"] = keys.contiguous().cpu()
                out[f"{row}.{layer_idx}.v"] = values.contiguous().cpu()
        return out

    def batch(self, indices: list[int]) -> tuple[DynamicCache, torch.Tensor]:
        """A left-padded DynamicCache for these examples and its (B, L) attention mask."""
        device = self.encoder.backbone.device
        entries = [self.entries[i] for i in indices]
        lengths = [e[0][0].shape[1] for e in entries]
        width = max(max(lengths), 1)
        mask = torch.zeros(len(indices), width, dtype=torch.long)
        for row, length in enumerate(lengths):
            mask[row, width - length :] = 1
        cache = DynamicCache()
        for layer_idx in range(len(entries[0])):
            keys, values = [], []
            for entry, length in zip(entries, lengths, strict=True):
                k, v = entry[layer_idx]
                pad = (0, 0, width - length, 0)  # pad the sequence dimension on the left
                keys.append(torch.nn.functional.pad(k, pad))
                values.append(torch.nn.functional.pad(v, pad))
            cache.update(torch.stack(keys).to(device), torch.stack(values).to(device), layer_idx)
        return cache, mask.to(device)

    def token_states(self, indices: list[int]) -> torch.Tensor:
        """Compression states (B, K, H) of these examples with the encoder's current tokens."""
        cache, mask = self.batch(indices)
        return self.encoder.token_states(cache, mask)


def _split(tensors: dict[str, torch.Tensor], count: int) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    layers = 1 + max(int(name.split(".")[1]) for name in tensors)
    return [[(tensors[f"{row}.{i}.k"], tensors[f"{row}.{i}.v"]) for i in range(layers)] for row in range(count)]
