"""The training losses. Inputs: student embeddings e (B, D) of queries, teacher vectors t (B, D) of the
LLM's responses to those queries, soft prompts s (B, K, H) for reconstruction.

- alignment: 1 - cos(e_i, t_i). The paper uses element-mean MSE on raw vectors; with a normalised
  teacher (MiniLM) that is 2(1 - cos)/D, i.e. the same direction signal scaled down by D, and its
  norm term wasted the first ~150 steps of a trial here. Cosine keeps only the part retrieval uses.
- contrastive: InfoNCE of e_i against all t_j in the batch (temperature tau). Pulls e_i towards its
  own response *and away from the others*, which is what prevents the collapse a trial here hit with
  alignment alone (every query mapped to one refusal-like vector). Targets that are near-identical to
  t_i (the same refusal written twice) are not negatives: they are masked out.
- reconstruction: cross-entropy of the frozen LM regenerating the response from the soft prompt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ragsafe.evaluation.metrics import DUPLICATE_COS
from ragsafe.model.backbone import Backbone


def alignment_loss(e: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (1 - F.cosine_similarity(e.float(), t.float(), dim=-1)).mean()


def contrastive_loss(
    e: torch.Tensor, t: torch.Tensor, temperature: float = 0.05, duplicate_threshold: float = DUPLICATE_COS
) -> torch.Tensor:
    e, t = F.normalize(e.float(), dim=-1), F.normalize(t.float(), dim=-1)
    logits = e @ t.T / temperature
    with torch.no_grad():
        same = (t @ t.T) > duplicate_threshold
        same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(e.shape[0], device=e.device))


def reconstruction_loss(
    backbone: Backbone, s: torch.Tensor, response_ids: torch.Tensor, response_mask: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """Mean CE of the frozen LM predicting the response tokens after the K soft-prompt vectors.

    Input: [s_1..s_K][response tokens (right-padded)]. The last soft-prompt slot predicts the first
    response token. The LM head (the vocabulary-sized matmul) runs only on real target positions, in
    chunks, so its activations never hold (B x T x V) at once.
    """
    model = backbone.model
    k = s.shape[1]
    tokens = model.get_input_embeddings()(response_ids)
    inputs = torch.cat([s.to(tokens.dtype), tokens], dim=1)
    ones = torch.ones(s.shape[:2], dtype=response_mask.dtype, device=response_mask.device)
    mask = torch.cat([ones, response_mask], dim=1)
    hidden = model.base_model(inputs_embeds=inputs, attention_mask=mask, use_cache=False).last_hidden_state
    # position k-1+j predicts response token j
    pred = hidden[:, k - 1 : -1, :][response_mask.bool()]
    target = response_ids[response_mask.bool()]
    head = model.get_output_embeddings()
    total = torch.zeros((), device=s.device)
    for start in range(0, pred.shape[0], chunk):
        logits = head(pred[start : start + chunk]).float()
        total = total + F.cross_entropy(logits, target[start : start + chunk], reduction="sum")
    return total / max(1, target.numel())
