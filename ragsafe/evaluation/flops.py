"""What this machine can compute: measured matmul throughput and parameter counts for FLOP bounds."""

from __future__ import annotations

import time

import torch

from ragsafe.model.backbone import Backbone


def matmul_gflops(dtype: torch.dtype, hidden: int, rows: int = 1024, repeats: int = 10) -> float:
    """Sustained GFLOPS of a (rows x H) @ (H x 4H) matmul, the shape that dominates a forward pass."""
    x, w = torch.randn(rows, hidden, dtype=dtype), torch.randn(4 * hidden, hidden, dtype=dtype)
    for _ in range(2):
        torch.nn.functional.linear(x, w)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.nn.functional.linear(x, w)
    return 2 * rows * hidden * 4 * hidden * repeats / (time.perf_counter() - start) / 1e9


def non_embedding_params(backbone: Backbone) -> int:
    """Parameters a token's forward pass multiplies through (the embedding lookup costs no FLOPs)."""
    base = backbone.model.base_model
    return sum(p.numel() for p in base.parameters()) - base.get_input_embeddings().weight.numel()
