"""gen: the LLM2Vec-Gen embedder. Queries become the embedding of the response the LLM would give.

Documents go through the same encoder under a summarise instruction (symmetric, the paper's setup)
or, with `documents="teacher"`, through the teacher directly (asymmetric: the gen query vector lives
in the teacher's space, and documents cost a MiniLM pass instead of an LLM pass).

`query_mix` β (gen_hybrid, asymmetric only; None: not hybrid) retrieves with normalise(gen(q) + β · teacher(q)):
the predicted answer plus the teacher's view of the question, β fitted on the checkpoint's own
validation answers (`ragsafe.train.calibrate`). The refusal score always reads the pure gen vector.

`query_gate` (gen_hybrid only): the checkpoint's harm probe. A query it reads as one the backbone would
refuse retrieves with β = 0, its predicted answer alone: the question's own wording is exactly what
pulls the passages of a harmful request back in, so it is left out where the answer is a refusal.
Nothing is withheld (that is `SafeRetriever`'s suppress mode); only the mix changes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from ragsafe.embedders.teacher import DEFAULT_TEACHER, TeacherEmbedder, same_teacher
from ragsafe.model.backbone import DEFAULT_BACKBONE, Backbone, load_backbone
from ragsafe.model.checkpoint import card_teacher, default_checkpoint_dir, load_checkpoint, read_config
from ragsafe.model.gen_encoder import GenConfig, GenEncoder
from ragsafe.texts import check_texts, warn_if_cut

QUERY_INSTRUCTION = "Write a passage that answers this request:"
DOCUMENT_INSTRUCTION = "Summarize the following passage:"
UNTRAINED_OUT_DIM = 384  # the default teacher's width, so untrained tokens live in the same shape of space

DocumentSide = Literal["gen", "teacher"]


class QueryGate(Protocol):
    """Which queries retrieve without the teacher's view of the question (`RefusalScorer` is one)."""

    def blocks(
        self, gen_vectors: np.ndarray, queries: Sequence[str], teacher_vectors: np.ndarray | None = None
    ) -> np.ndarray: ...


def mix_vectors(gen_vectors: np.ndarray, teacher_vectors: np.ndarray, beta: float | np.ndarray) -> np.ndarray:
    """normalise(gen + beta * teacher), row-wise: gen_hybrid's query vector (beta: one, or one per row)."""
    beta = np.asarray(beta, dtype=np.float32)
    out = gen_vectors + (beta[:, None] if beta.ndim else beta) * teacher_vectors
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def fitted_query_mix(checkpoint: str | Path | None = None) -> float:
    """β of a checkpoint's gen_hybrid (default: the shipped checkpoint), fitted by `ragsafe calibrate`."""
    path = Path(checkpoint) if checkpoint else default_checkpoint_dir()
    if path is None:
        raise ValueError("gen_hybrid needs trained tokens with a fitted query mix; none are installed")
    fitted = read_config(path).get("query_mix") or {}
    if fitted.get("beta") is None:
        raise ValueError(f"checkpoint {path} has no fitted query mix: run `ragsafe calibrate` on it")
    return float(fitted["beta"])


def check_side_and_mix(documents: str, query_mix: float | None) -> None:
    if documents not in ("gen", "teacher"):
        raise ValueError(f"documents must be 'gen' or 'teacher', got {documents!r}")
    if query_mix is not None and query_mix < 0:
        raise ValueError(f"query_mix must be >= 0, got {query_mix}")


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
        query_mix: float | None = None,
        query_gate: QueryGate | None = None,
    ) -> None:
        check_side_and_mix(documents, query_mix)
        if query_gate is not None and query_mix is None:
            raise ValueError("query_gate decides where the query mix applies: it needs query_mix.")
        if query_mix is not None and documents != "teacher":
            raise ValueError("query_mix mixes in the teacher's query vector: it needs documents='teacher'.")
        if documents == "teacher":
            if teacher is None:
                raise ValueError("documents='teacher' needs a teacher embedder.")
            if teacher.dim != encoder.dim:
                raise ValueError(
                    f"teacher dim {teacher.dim} != gen dim {encoder.dim}: not the teacher it was trained on."
                )
        self.encoder = encoder
        self.query_instruction = query_instruction
        self.document_instruction = document_instruction
        self.documents = documents
        self.teacher = teacher
        self.batch_size = batch_size
        self.query_mix = query_mix
        self.query_gate = query_gate
        # a hybrid keeps its name at a fitted weight of 0: the name says how it was built
        self.name = "gen" if documents == "gen" else "gen_asym" if query_mix is None else "gen_hybrid"
        self.safety: dict | None = None  # the checkpoint's refusal calibration, set by `load`
        # the query instruction the harm probe was calibrated under (`load` sets the checkpoint's)
        self.probe_instruction: str | None = query_instruction
        self._cut_warned = False
        # the teacher the tokens were trained against (`load` sets the checkpoint's): the harm probe reads
        # its view of the query when no teacher is attached
        self.trained_teacher = teacher.spec if teacher is not None else DEFAULT_TEACHER
        self._probe_teacher: TeacherEmbedder | None = None

    @classmethod
    def load(
        cls,
        checkpoint: str | Path | None = None,
        backbone: Backbone | str | None = None,
        documents: DocumentSide = "gen",
        teacher: TeacherEmbedder | None = None,
        hybrid: bool = False,
        gated: bool = True,
        query_mix: float | None = None,
        harm_threshold: float | None = None,
    ) -> GenEmbedder:
        """Load a checkpoint (default: the one shipped for the default backbone).

        hybrid=True: gen_hybrid, with the checkpoint's fitted query mix (documents go to the teacher),
        gated by the checkpoint's harm probe where it has one (gated=False: the mix applies to every query).
        query_mix overrides the fitted β (`benchmarks/results/query_mix.md` shows what each β buys).
        harm_threshold overrides the harm probe's threshold, for the gate and for `SafeRetriever` alike:
        higher flags fewer queries (fewer false alarms on benign ones, more harmful ones let through).

        Without any checkpoint, the tokens are freshly initialised (untrained): everything works, the
        embeddings just carry no training yet; a warning says so.
        """
        check_side_and_mix(documents, query_mix)  # before the backbone's load, as every check here
        path = Path(checkpoint) if checkpoint else default_checkpoint_dir()
        config: dict = read_config(path) if path is not None else {}
        if query_mix is not None and not hybrid:
            raise ValueError("query_mix is the weight of gen_hybrid's mix: it needs hybrid=True.")
        if harm_threshold is not None and (config.get("safety") or {}).get("threshold") is None:
            raise ValueError(f"harm_threshold: checkpoint {path} has no harm probe to set it on")
        if hybrid:  # checked before the backbone loads: a wrong checkpoint fails fast
            documents = "teacher"
            query_mix = fitted_query_mix(path) if query_mix is None else query_mix
        # the tokens learned one teacher's space: another of the same width would pass every shape check
        # and retrieve from the wrong space, unsaid
        # (a checkpoint without a card does not say: then the teacher given, or the default)
        on_card = card_teacher(config)
        trained_with = on_card or (teacher.spec if teacher is not None else DEFAULT_TEACHER)
        if teacher is not None and on_card:
            same = same_teacher(teacher.spec, on_card)
            if same is False:
                raise ValueError(
                    f"checkpoint {path} was trained against teacher '{on_card}', not '{teacher.spec}': its "
                    "vectors live in that teacher's space. Pass that teacher, or none."
                )
            if same is None:
                warnings.warn(
                    f"checkpoint {path} was trained against teacher '{on_card}', which is not here to compare "
                    f"with '{teacher.spec}': make sure they are the same model.",
                    stacklevel=2,
                )
                trained_with = teacher.spec
        if not isinstance(backbone, Backbone):
            backbone = load_backbone(backbone or DEFAULT_BACKBONE)
        if path is None:
            warnings.warn("No trained checkpoint found: using untrained gen tokens.", stacklevel=2)
            encoder = GenEncoder(backbone, GenConfig(out_dim=UNTRAINED_OUT_DIM))
        else:
            encoder = load_checkpoint(path, backbone)
        instructions = config.get("instructions", {})
        if documents == "teacher" and teacher is None:
            teacher = TeacherEmbedder(trained_with)
        embedder = cls(
            encoder,
            query_instruction=instructions.get("query", QUERY_INSTRUCTION),
            document_instruction=instructions.get("document", DOCUMENT_INSTRUCTION),
            documents=documents,
            teacher=teacher,
            query_mix=query_mix,
        )
        embedder.safety = config.get("safety")
        embedder.trained_teacher = trained_with
        if harm_threshold is not None:
            embedder.safety = {**embedder.safety, "threshold": float(harm_threshold)}
        if hybrid and gated and (embedder.safety or {}).get("direction") is not None:
            from ragsafe.retrieval import RefusalScorer  # that module builds on this one

            embedder.query_gate = RefusalScorer.from_safety(embedder, embedder.safety)
        return embedder

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def probe_teacher(self) -> TeacherEmbedder:
        """The teacher whose view of the query the harm probe reads: the attached one, else the one the
        tokens were trained against, loaded once (every scorer and filter built over this embedder shares it)."""
        if self.teacher is not None:
            return self.teacher
        if self._probe_teacher is None:
            self._probe_teacher = TeacherEmbedder(self.trained_teacher)
        return self._probe_teacher

    def encode_gen_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """The pure gen vectors: the predicted answer's embedding (what the refusal score reads)."""
        return self.encoder.encode(texts, self._query_instruction(instruction), batch_size=self.batch_size)

    def _query_instruction(self, instruction: str | None) -> str | None:
        # "" is an instruction of its own (the bare query, as two of the shipped pool's are): only None
        # means the embedder's
        return self.query_instruction if instruction is None else instruction

    def probe_differs(self, instruction: str | None = None) -> bool:
        """Whether queries embedded under `instruction` (default: the current query instruction) need
        a pass of their own for the harm probe."""
        return self.probe_instruction != self._query_instruction(instruction)

    def encode_probe_queries(self, texts: Sequence[str], show_progress: bool | None = None) -> np.ndarray:
        """The texts' gen vectors under the instruction the harm probe was calibrated with."""
        return self.encoder.encode(
            texts, self.probe_instruction, batch_size=self.batch_size, show_progress=show_progress
        )

    def probe_view(self, texts: Sequence[str], gen_vectors: np.ndarray, instruction: str | None = None) -> np.ndarray:
        """The gen vectors the harm probe reads: the texts under the instruction it was calibrated with.

        `gen_vectors` (computed under `instruction`, default the current query instruction) are reused
        when that is the probe's; a task instruction moves the gen vector, and the probe's threshold
        does not hold there (ArguAna's instruction doubles its false alarms), so they are recomputed."""
        return self.encode_probe_queries(texts) if self.probe_differs(instruction) else gen_vectors

    def mix_query(
        self,
        gen_vectors: np.ndarray,
        texts: Sequence[str],
        teacher_vectors: np.ndarray | None = None,
        probe_vectors: np.ndarray | None = None,
    ) -> np.ndarray:
        """The retrieval vectors from pure gen vectors: unchanged unless this is gen_hybrid (which embeds
        the texts with the teacher, unless their `teacher_vectors` are given). The gate reads
        `probe_vectors` (`probe_view`), by default computed here."""
        if not self.query_mix:
            return gen_vectors
        assert self.teacher is not None
        texts = check_texts(texts)
        if teacher_vectors is None:
            teacher_vectors = self.teacher.embed(texts)
        beta = np.full(len(gen_vectors), self.query_mix, dtype=np.float32)
        if self.query_gate is not None:
            if probe_vectors is None:
                probe_vectors = self.probe_view(texts, gen_vectors)
            beta[self.query_gate.blocks(probe_vectors, texts, teacher_vectors)] = 0.0
        return mix_vectors(gen_vectors, teacher_vectors, beta)

    def encode_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        texts = check_texts(texts)  # one string is one query, not a sequence of characters
        gen_vectors = self.encode_gen_queries(texts, instruction)
        gated = self.query_gate is not None and bool(self.query_mix)
        probe_vectors = self.probe_view(texts, gen_vectors, instruction) if gated else None
        return self.mix_query(gen_vectors, texts, probe_vectors=probe_vectors)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        if self.documents == "teacher":
            assert self.teacher is not None
            return self.teacher.encode_documents(texts)  # not embed(): that would cut long passages unsaid
        self._warn_if_cut(texts)
        return self.encoder.encode(texts, self.document_instruction, batch_size=self.batch_size)

    def _warn_if_cut(self, texts: Sequence[str]) -> None:
        """Say once when passages run past the backbone's text budget, as the teacher does for its window:
        their ends would go unembedded, unseen (LlamaIndex's default 1,024-token chunks would)."""
        texts = check_texts(texts)
        if self._cut_warned or not texts:
            return
        budget = self.encoder.config.text_budget
        prefix = f"{self.document_instruction} " if self.document_instruction else ""
        prompts = [prefix + t for t in texts]
        window = f"the gen encoder's {budget} text tokens"
        self._cut_warned = warn_if_cut(self.encoder.backbone.tokenizer, prompts, budget, window)
