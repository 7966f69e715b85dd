"""Embedders by name, for the CLI and benchmarks: one place that knows how each one is built."""

from __future__ import annotations

from pathlib import Path

from ragsafe.embedders.base import Embedder, document_side, embedder_names
from ragsafe.embedders.bm25 import BM25Embedder
from ragsafe.embedders.gen import GenEmbedder, fitted_query_mix
from ragsafe.embedders.hyde import HyDEEmbedder
from ragsafe.embedders.llm_mean import LLMMeanEmbedder
from ragsafe.embedders.teacher import DEFAULT_TEACHER, TeacherEmbedder, TeacherError
from ragsafe.model.backbone import Backbone, load_backbone
from ragsafe.model.chat import GenerationSettings
from ragsafe.model.checkpoint import card_teacher, default_checkpoint_dir, read_config
from ragsafe.model.gen_encoder import GenConfig, GenEncoder
from ragsafe.train.generate import DEFAULT_POLICY


def trained_teacher(checkpoint: str | None) -> str:
    """The teacher a checkpoint's tokens were trained against (default: the shipped checkpoint's)."""
    path = Path(checkpoint) if checkpoint else default_checkpoint_dir()
    return (card_teacher(read_config(path)) if path is not None else None) or DEFAULT_TEACHER


def build_embedders(
    names: list[str] | str,
    checkpoint: str | None = None,
    backbone: str | Backbone = "default",
    teacher: TeacherEmbedder | None = None,
    hyde_settings: GenerationSettings | None = None,
    query_mix: float | None = None,
    harm_threshold: float | None = None,
    int8: bool = False,
) -> list[Embedder]:
    """query_mix: β for the gen_hybrid entries instead of the checkpoint's fitted one; harm_threshold:
    the harm probe's threshold for the trained gen entries instead of the checkpoint's; int8: the
    backbone's MLP in int8 (`quantize_int8`: CPU, faster queries, slightly different vectors)."""
    names = embedder_names(names)  # "gen_asym" or "teacher,bm25" is not a list of letters
    if checkpoint is not None and any(n.startswith("gen") and not n.endswith("_untrained") for n in names):
        read_config(checkpoint)  # a wrong checkpoint fails now, not after the models load
    mix = fitted_query_mix(checkpoint) if "gen_hybrid_untrained" in names else None
    if teacher is None:
        spec = trained_teacher(checkpoint)
        try:
            teacher = TeacherEmbedder(spec)
        except TeacherError as err:
            raise TeacherError(
                f"the checkpoint's tokens were trained against teacher '{spec}', which cannot be loaded here "
                f"({err}); pass teacher= (a TeacherEmbedder of the same model)."
            ) from err
    bb: Backbone | None = None
    if any(n not in ("bm25", "teacher") for n in names):
        if isinstance(backbone, Backbone):
            if int8 and not backbone.int8:  # quantizing it here would change it under every other user
                raise ValueError("int8=True with a float Backbone object: quantize_int8(backbone) it yourself first")
            bb = backbone
        else:
            bb = load_backbone(backbone, int8=int8)
    hyde_settings = hyde_settings or GenerationSettings(max_new_tokens=48)
    out: list[Embedder] = []
    for name in names:
        documents = document_side(name)
        if name == "bm25":
            out.append(BM25Embedder())
        elif name == "teacher":
            out.append(teacher)
        elif name in ("gen", "gen_asym"):
            out.append(GenEmbedder.load(checkpoint, bb, documents, teacher, harm_threshold=harm_threshold))
        elif name in ("gen_hybrid", "gen_hybrid_ungated"):
            gated = name == "gen_hybrid"
            emb = GenEmbedder.load(
                checkpoint,
                bb,
                documents,
                teacher,
                hybrid=True,
                gated=gated,
                query_mix=query_mix,
                harm_threshold=harm_threshold,
            )
            emb.name = name
            out.append(emb)
        elif name in ("gen_untrained", "gen_asym_untrained", "gen_hybrid_untrained"):
            encoder = GenEncoder(bb, GenConfig(out_dim=teacher.dim))
            emb = GenEmbedder(
                encoder, documents=documents, teacher=teacher, query_mix=mix if name == "gen_hybrid_untrained" else None
            )
            emb.name = name
            out.append(emb)
        elif name == "llm_mean":
            out.append(LLMMeanEmbedder(bb))
        else:
            emb = HyDEEmbedder(bb, teacher, DEFAULT_POLICY if name == "hyde_policy" else None, hyde_settings)
            emb.name = name
            out.append(emb)
    return out
