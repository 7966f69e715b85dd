"""Document vectors cached on disk by (embedder identity, texts), so a benchmark rerun or a second
embedder with the same document side does not pay for the corpus pass again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ragsafe.embedders.base import Embedder, Vectors
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
        digest = hashlib.sha256(f"{emb.encoder.backbone.fingerprint}|{side}|{instruction}".encode())
        for value in emb.encoder.state_dict().values():
            digest.update(value.detach().cpu().numpy().tobytes())
        return f"gen:{digest.hexdigest()[:16]}"
    if isinstance(emb, LLMMeanEmbedder):
        return f"llm_mean:{emb.backbone.fingerprint[:16]}"
    return emb.name


def encode_documents_cached(emb: Embedder, texts: list[str], cache_dir: str | Path | None) -> tuple[Vectors, bool]:
    """(vectors, whether they came from the cache)."""
    return _cached(emb, texts, cache_dir, "documents")


def encode_queries_cached(emb: Embedder, texts: list[str], cache_dir: str | Path | None) -> tuple[Vectors, bool]:
    """Query vectors of deterministic embedders, cached like documents (HyDE is never cached: it is the
    query-time cost being measured)."""
    if isinstance(emb, HyDEEmbedder):
        return emb.encode_queries(texts), False
    return _cached(emb, texts, cache_dir, "queries")


def _cached(emb: Embedder, texts: list[str], cache_dir: str | Path | None, side: str) -> tuple[Vectors, bool]:
    encode = emb.encode_documents if side == "documents" else emb.encode_queries
    if emb.sparse or cache_dir is None:
        return encode(texts), False
    digest = hashlib.sha256(f"{side}|{embedder_identity(emb, side)}".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\x00")
    path = Path(cache_dir) / f"{digest.hexdigest()[:24]}.npy"
    if path.is_file():
        return np.load(path), True
    vectors = encode(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".tmp.npy"), vectors)
    path.with_suffix(".tmp.npy").replace(path)
    return vectors, False
