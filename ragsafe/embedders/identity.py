"""What determines an embedder's vectors: equal identities give equal vectors, so they key caches
(benchmark vector caches, LlamaIndex's ingestion cache through `model_name`)."""

from __future__ import annotations

import hashlib

from ragsafe.embedders.base import Embedder
from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.hyde import HyDEEmbedder
from ragsafe.embedders.llm_mean import LLMMeanEmbedder
from ragsafe.embedders.teacher import TeacherEmbedder


def embedder_identity(emb: Embedder, side: str = "documents") -> str:
    """What determines an embedder's vectors on one side; equal identities share one encoding pass."""
    if isinstance(emb, TeacherEmbedder):
        return f"teacher:{emb.spec}"
    if side == "documents" and (
        isinstance(emb, HyDEEmbedder) or (isinstance(emb, GenEmbedder) and emb.documents == "teacher")
    ):
        return f"teacher:{emb.teacher.spec}"
    if isinstance(emb, GenEmbedder):
        instruction = emb.document_instruction if side == "documents" else emb.query_instruction
        digest = hashlib.sha256(f"{emb.encoder.backbone.identity()}|{side}|{instruction}".encode())
        for value in emb.encoder.state_dict().values():
            digest.update(value.detach().cpu().numpy().tobytes())
        return f"gen:{digest.hexdigest()[:16]}"
    if isinstance(emb, HyDEEmbedder):  # queries: the generated answer depends on backbone, policy, settings
        identity = f"hyde:{emb.backbone.identity(16)}|{emb.system}|{emb.settings}|{emb.teacher.spec}"
        return identity + (f"|{emb.query_instruction}" if emb.query_instruction else "")
    if isinstance(emb, LLMMeanEmbedder):
        return f"llm_mean:{emb.backbone.identity(16)}"
    return emb.name
