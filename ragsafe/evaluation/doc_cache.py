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


def embedder_identity(emb: Embedder) -> str:
    """What determines an embedder's document vectors; equal identities share one document pass."""
    if isinstance(emb, TeacherEmbedder):
        return f"teacher:{emb.spec}"
    if isinstance(emb, HyDEEmbedder) or (isinstance(emb, GenEmbedder) and emb.documents == "teacher"):
        return f"teacher:{emb.teacher.spec}"
    if isinstance(emb, GenEmbedder):
        digest = hashlib.sha256(f"{emb.encoder.backbone.fingerprint}{emb.document_instruction}".encode())
        for value in emb.encoder.state_dict().values():
            digest.update(value.detach().cpu().numpy().tobytes())
        return f"gen:{digest.hexdigest()[:16]}"
    if isinstance(emb, LLMMeanEmbedder):
        return f"llm_mean:{emb.backbone.fingerprint[:16]}"
    return emb.name


def encode_documents_cached(emb: Embedder, texts: list[str], cache_dir: str | Path | None) -> Vectors:
    if emb.sparse or cache_dir is None:
        return emb.encode_documents(texts)
    digest = hashlib.sha256(embedder_identity(emb).encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\x00")
    path = Path(cache_dir) / f"{digest.hexdigest()[:24]}.npy"
    if path.is_file():
        return np.load(path)
    vectors = emb.encode_documents(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".tmp.npy"), vectors)
    path.with_suffix(".tmp.npy").replace(path)
    return vectors
