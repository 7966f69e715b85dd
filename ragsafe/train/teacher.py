"""Teacher targets: the teacher's vectors of the LLM's responses, cached on disk by content hash.

The teacher is deterministic, so each response is embedded once; the cache is an .npz of keys and
vectors, rewritten atomically after each call that adds to it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ragsafe.embedders.teacher import TeacherEmbedder


def target_key(teacher_spec: str, text: str) -> str:
    return hashlib.sha256(f"{teacher_spec}\x00{text}".encode()).hexdigest()


class TargetCache:
    def __init__(self, path: str | Path, teacher: TeacherEmbedder) -> None:
        self.path = Path(path)
        self.teacher = teacher
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.is_file():
            data = np.load(self.path, allow_pickle=False)
            self.vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))

    def targets(self, texts: list[str]) -> np.ndarray:
        """(N, D) float32 teacher vectors of `texts`, embedding only the ones not cached yet."""
        keys = [target_key(self.teacher.spec, t) for t in texts]
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in self.vectors}
        if missing:
            vectors = self.teacher.embed(list(missing.values()))
            self.vectors.update(zip(missing, vectors, strict=True))
            self._save()
        if not keys:
            return np.zeros((0, self.teacher.dim), dtype=np.float32)
        return np.stack([self.vectors[k] for k in keys]).astype(np.float32)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, keys=np.array(list(self.vectors)), vectors=np.stack(list(self.vectors.values())))
        tmp.replace(self.path)
