"""What determines an embedder's vectors: equal identities give equal vectors, so they key caches
(benchmark vector caches, LlamaIndex's ingestion cache through `model_name`)."""

from __future__ import annotations

import hashlib
import json

from ragsafe.embedders.base import Embedder
from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.hyde import HyDEEmbedder
from ragsafe.embedders.llm_mean import LLMMeanEmbedder
from ragsafe.embedders.teacher import TeacherEmbedder
from ragsafe.model.backbone import Backbone


def _run_identity(backbone: Backbone) -> str:
    """The backbone as it runs: its weights (and int8), and the number format and device, which move the
    vectors a little (bf16 against float32) and their timings a lot."""
    return f"{backbone.identity()}|{backbone.dtype}|{backbone.device.type}"


def _teacher_identity(teacher: TeacherEmbedder) -> str:
    # the device too: a GPU's kernels give slightly other vectors, and the cached timings are the device's
    return f"teacher:{teacher.spec}|{teacher.model.device.type}"


def _encoder_digest(emb: GenEmbedder, backbone: str, rest: str) -> str:
    """sha256 of what a gen encoder's vectors follow: the backbone as given, the encoder's config (the text
    budget, the token layout), `rest` (side, instruction) and the trained tensors (tokens, maps)."""
    config = json.dumps(emb.encoder.config.to_dict(), sort_keys=True)
    digest = hashlib.sha256(f"{backbone}|{config}|{rest}".encode())
    for value in emb.encoder.state_dict().values():
        digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def embedder_identity(emb: Embedder, side: str = "documents") -> str:
    """What determines an embedder's vectors on one side; equal identities share one encoding pass."""
    if isinstance(emb, TeacherEmbedder):
        return _teacher_identity(emb)
    if side == "documents" and (
        isinstance(emb, HyDEEmbedder) or (isinstance(emb, GenEmbedder) and emb.documents == "teacher")
    ):
        return _teacher_identity(emb.teacher)
    if isinstance(emb, GenEmbedder):
        instruction = emb.document_instruction if side == "documents" else emb.query_instruction
        return f"gen:{_encoder_digest(emb, _run_identity(emb.encoder.backbone), f'{side}|{instruction}')[:16]}"
    if isinstance(emb, HyDEEmbedder):  # queries: the generated answer depends on backbone, policy, settings
        identity = f"hyde:{_run_identity(emb.backbone)}|{emb.system}|{emb.settings}|{emb.teacher.spec}"
        return identity + (f"|{emb.query_instruction}" if emb.query_instruction else "")
    if isinstance(emb, LLMMeanEmbedder):
        return f"llm_mean:{_run_identity(emb.backbone)}|{emb.max_length}"
    return emb.name


def document_space(emb: Embedder) -> str | None:
    """A short digest of what puts an LLM-side embedder's documents where they are (the backbone's weights,
    and for gen the tokens, maps, token layout and document instruction), or None for embedders whose
    document vectors the name alone fixes (teacher, BM25, and gen or HyDE with teacher documents).

    Unlike `embedder_identity` it leaves out the number format and device: a stored index stays usable
    from a machine that runs the same weights in another format."""
    if isinstance(emb, GenEmbedder) and emb.documents != "teacher":
        return _encoder_digest(emb, emb.encoder.backbone.fingerprint, str(emb.document_instruction))[:8]
    if isinstance(emb, LLMMeanEmbedder):
        return hashlib.sha256(f"{emb.backbone.fingerprint}|{emb.max_length}".encode()).hexdigest()[:8]
    return None
