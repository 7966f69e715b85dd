"""ragsafe: safe retrieval for RAG. Embeds the answer an LLM would give (LLM2Vec-Gen), not the question.

The public names below are imported lazily (PEP 562), so `import ragsafe.train` or the CLI does not
pull in Qdrant, LlamaIndex or BM25 unless they are used: training runs on a machine that has only
torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Passage": "ragsafe.corpus",
    "load_corpus": "ragsafe.corpus",
    "Embedder": "ragsafe.embedders.base",
    "scores": "ragsafe.embedders.base",
    "BM25Embedder": "ragsafe.embedders.bm25",
    "GenEmbedder": "ragsafe.embedders.gen",
    "HyDEEmbedder": "ragsafe.embedders.hyde",
    "LLMMeanEmbedder": "ragsafe.embedders.llm_mean",
    "build_embedders": "ragsafe.embedders.registry",
    "TeacherEmbedder": "ragsafe.embedders.teacher",
    "Explanation": "ragsafe.explanation",
    "HarmReading": "ragsafe.explanation",
    "explain": "ragsafe.explanation",
    "Index": "ragsafe.index",
    "Backbone": "ragsafe.model.backbone",
    "BackboneError": "ragsafe.model.backbone",
    "load_backbone": "ragsafe.model.backbone",
    "GenerationSettings": "ragsafe.model.chat",
    "CheckpointError": "ragsafe.model.checkpoint",
    "load_checkpoint": "ragsafe.model.checkpoint",
    "save_checkpoint": "ragsafe.model.checkpoint",
    "GenConfig": "ragsafe.model.gen_encoder",
    "GenEncoder": "ragsafe.model.gen_encoder",
    "RefusalScorer": "ragsafe.retrieval",
    "SafeRetriever": "ragsafe.retrieval",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ragsafe' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
