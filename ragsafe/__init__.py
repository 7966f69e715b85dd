"""ragsafe: safe retrieval for RAG. Embeds the answer an LLM would give (LLM2Vec-Gen), not the question."""

from ragsafe.corpus import Passage, load_corpus
from ragsafe.embedders.base import Embedder, scores
from ragsafe.embedders.bm25 import BM25Embedder
from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.hyde import HyDEEmbedder
from ragsafe.embedders.llm_mean import LLMMeanEmbedder
from ragsafe.embedders.registry import build_embedders
from ragsafe.embedders.teacher import TeacherEmbedder
from ragsafe.index import Index
from ragsafe.model.backbone import Backbone, BackboneError, load_backbone
from ragsafe.model.chat import GenerationSettings
from ragsafe.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ragsafe.model.gen_encoder import GenConfig, GenEncoder
from ragsafe.retrieval import RefusalScorer, SafeRetriever

__all__ = [
    "Backbone",
    "BackboneError",
    "BM25Embedder",
    "CheckpointError",
    "Embedder",
    "GenConfig",
    "GenEmbedder",
    "GenEncoder",
    "GenerationSettings",
    "HyDEEmbedder",
    "Index",
    "LLMMeanEmbedder",
    "Passage",
    "RefusalScorer",
    "SafeRetriever",
    "TeacherEmbedder",
    "build_embedders",
    "load_backbone",
    "load_checkpoint",
    "load_corpus",
    "save_checkpoint",
    "scores",
]
