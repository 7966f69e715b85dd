"""HyDE: the backbone writes an answer to the query and the teacher embeds that answer.

The expensive reference point for gen: it embeds the *actual* generated response, which gen's tokens
approximate in one forward pass. Documents are embedded by the teacher as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ragsafe.embedders.teacher import TeacherEmbedder
from ragsafe.model.backbone import Backbone
from ragsafe.model.chat import GenerationSettings, chat_generate
from ragsafe.progress import progress_batches
from ragsafe.texts import check_texts


class HyDEEmbedder:
    name = "hyde"
    sparse = False

    def __init__(
        self,
        backbone: Backbone,
        teacher: TeacherEmbedder,
        system: str | None = None,
        settings: GenerationSettings | None = None,
        batch_size: int = 16,
        query_instruction: str | None = None,
    ) -> None:
        self.backbone, self.teacher, self.system = backbone, teacher, system
        self.query_instruction = query_instruction  # put in front of every query the backbone answers
        self.settings = settings or GenerationSettings()
        self.batch_size = batch_size
        self.last_answers: list[str] = []

    @property
    def dim(self) -> int:
        return self.teacher.dim

    def answers(self, texts: Sequence[str], instruction: str | None = None) -> list[str]:
        texts = check_texts(texts)
        prompts = [f"{instruction} {t}" if instruction else t for t in texts]
        out: list[str] = []
        for chunk in progress_batches(prompts, self.batch_size, None, "hyde: generating"):
            out.extend(chat_generate(self.backbone, chunk, self.system, self.settings))
        return out

    def encode_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        self.last_answers = self.answers(texts, self.query_instruction if instruction is None else instruction)
        return self.teacher.embed(self.last_answers)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.teacher.encode_documents(texts)
