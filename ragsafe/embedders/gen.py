"""gen: the LLM2Vec-Gen embedder. Queries become the embedding of the response the LLM would give.

Documents go through the same encoder under a summarise instruction (symmetric, the paper's setup)
or, with `documents="teacher"`, through the teacher directly (asymmetric: the gen query vector lives
in the teacher's space, and documents cost a MiniLM pass instead of an LLM pass).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from ragsafe.embedders.teacher import TeacherEmbedder
from ragsafe.model.backbone import DEFAULT_BACKBONE, Backbone, load_backbone
from ragsafe.model.checkpoint import default_checkpoint_dir, load_checkpoint, read_config
from ragsafe.model.gen_encoder import GenConfig, GenEncoder

QUERY_INSTRUCTION = "Write a passage that answers this request:"
DOCUMENT_INSTRUCTION = "Summarize the following passage:"
UNTRAINED_OUT_DIM = 384  # the default teacher's width, so untrained tokens live in the same shape of space

DocumentSide = Literal["gen", "teacher"]


class GenEmbedder:
    sparse = False

    def __init__(
        self,
        encoder: GenEncoder,
        query_instruction: str | None = QUERY_INSTRUCTION,
        document_instruction: str | None = DOCUMENT_INSTRUCTION,
        documents: DocumentSide = "gen",
        teacher: TeacherEmbedder | None = None,
        batch_size: int = 16,
    ) -> None:
        if documents == "teacher":
            if teacher is None:
                raise ValueError("documents='teacher' needs a teacher embedder.")
            if teacher.dim != encoder.dim:
                raise ValueError(
                    f"teacher dim {teacher.dim} != gen dim {encoder.dim}: not the teacher it was trained on."
                )
        elif documents != "gen":
            raise ValueError(f"documents must be 'gen' or 'teacher', got {documents!r}")
        self.encoder = encoder
        self.query_instruction = query_instruction
        self.document_instruction = document_instruction
        self.documents = documents
        self.teacher = teacher
        self.batch_size = batch_size
        self.name = "gen" if documents == "gen" else "gen_asym"
        self.safety: dict | None = None  # the checkpoint's refusal calibration, set by `load`

    @classmethod
    def load(
        cls,
        checkpoint: str | Path | None = None,
        backbone: Backbone | str | None = None,
        documents: DocumentSide = "gen",
        teacher: TeacherEmbedder | None = None,
    ) -> GenEmbedder:
        """Load a checkpoint (default: the one shipped for the default backbone).

        Without any checkpoint, the tokens are freshly initialised (untrained): everything works, the
        embeddings just carry no training yet; a warning says so.
        """
        path = Path(checkpoint) if checkpoint else default_checkpoint_dir()
        if not isinstance(backbone, Backbone):
            backbone = load_backbone(backbone or DEFAULT_BACKBONE)
        if path is None:
            warnings.warn("No trained checkpoint found: using untrained gen tokens.", stacklevel=2)
            encoder = GenEncoder(backbone, GenConfig(out_dim=UNTRAINED_OUT_DIM))
            config: dict = {}
        else:
            encoder = load_checkpoint(path, backbone)
            config = read_config(path)
        instructions = config.get("instructions", {})
        if documents == "teacher" and teacher is None:
            teacher = TeacherEmbedder()
        embedder = cls(
            encoder,
            query_instruction=instructions.get("query", QUERY_INSTRUCTION),
            document_instruction=instructions.get("document", DOCUMENT_INSTRUCTION),
            documents=documents,
            teacher=teacher,
        )
        embedder.safety = config.get("safety")
        return embedder

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def encode_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        return self.encoder.encode(texts, instruction or self.query_instruction, batch_size=self.batch_size)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        if self.documents == "teacher":
            assert self.teacher is not None
            return self.teacher.embed(texts)
        return self.encoder.encode(texts, self.document_instruction, batch_size=self.batch_size)
