"""Vectors cached on disk by (embedder identity, side, texts), so a benchmark rerun or a second
embedder with the same document side does not pay for the corpus pass again. The time the original
encoding took is stored beside the vectors, so reported timings stay those of a real pass."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from ragsafe.embedders.base import Embedder, Vectors
from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.identity import embedder_identity


def encode_documents_cached(emb: Embedder, texts: list[str], cache_dir: str | Path | None) -> tuple[Vectors, float]:
    """(vectors, seconds the encoding took when it was computed)."""
    return _cached(emb, texts, cache_dir, "documents")


def encode_queries_cached(emb: Embedder, texts: list[str], cache_dir: str | Path | None) -> tuple[Vectors, float]:
    """(vectors, seconds) for queries; every embedder here is deterministic (HyDE decodes greedily).

    gen_hybrid is composed from its two cached parts (pure gen, teacher), so it shares gen_asym's pass;
    its gate reads the same two parts, plus the probe's own gen pass where a task instruction is in
    effect (`encode_probe_queries_cached`).
    """
    vectors, seconds = _cached(emb, texts, cache_dir, "queries")
    if isinstance(emb, GenEmbedder) and emb.query_mix:
        assert emb.teacher is not None
        teacher_vectors, teacher_seconds = _cached(emb.teacher, texts, cache_dir, "queries")
        probe_vectors, probe_seconds = None, 0.0
        if emb.query_gate is not None and emb.probe_differs():
            probe_vectors, probe_seconds = encode_probe_queries_cached(emb, texts, cache_dir)
        mixed = emb.mix_query(vectors, texts, teacher_vectors, probe_vectors)
        return mixed, seconds + teacher_seconds + probe_seconds
    return vectors, seconds


def encode_probe_queries_cached(
    emb: GenEmbedder, texts: list[str], cache_dir: str | Path | None
) -> tuple[Vectors, float]:
    """The gen vectors the harm probe reads (`GenEmbedder.probe_view`: under the instruction it was
    calibrated with, whatever task instruction the queries carry), cached."""
    before = emb.query_instruction
    emb.query_instruction = emb.probe_instruction
    try:
        return _cached(emb, texts, cache_dir, "queries")
    finally:
        emb.query_instruction = before


def _timed(encode, texts: list[str]) -> tuple[Vectors, float]:
    start = time.perf_counter()
    vectors = encode(texts)
    return vectors, time.perf_counter() - start


def _cached(emb: Embedder, texts: list[str], cache_dir: str | Path | None, side: str) -> tuple[Vectors, float]:
    encode = emb.encode_documents if side == "documents" else emb.encode_queries
    if isinstance(emb, GenEmbedder) and side == "queries":
        encode = emb.encode_gen_queries  # the cached part; a hybrid mix is applied by the caller
    if emb.sparse or cache_dir is None:
        return _timed(encode, texts)
    digest = hashlib.sha256(f"{side}|{embedder_identity(emb, side)}".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\x00")
    path = Path(cache_dir) / f"{digest.hexdigest()[:24]}.npy"
    timing = path.with_suffix(".json")
    if path.is_file() and timing.is_file():
        return np.load(path), float(json.loads(timing.read_text())["seconds"])
    vectors, seconds = _timed(encode, texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".tmp.npy"), vectors)
    path.with_suffix(".tmp.npy").replace(path)
    timing.write_text(json.dumps({"seconds": seconds, "count": len(texts), "identity": embedder_identity(emb, side)}))
    return vectors, seconds
