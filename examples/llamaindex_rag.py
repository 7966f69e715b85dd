"""Build a LlamaIndex VectorStoreIndex over a folder with Qdrant and ragsafe embeddings, then retrieve.

python examples/llamaindex_rag.py [FOLDER] [--embedder gen_asym|teacher|gen] [--query "..."]
"""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from pathlib import Path

import typer
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from ragsafe.corpus import load_corpus
from ragsafe.embedders.registry import build_embedders
from ragsafe.index import point_id
from ragsafe.llamaindex import RagsafeEmbedding


def main(
    folder: Path = typer.Argument(Path(__file__).parent.parent / "corpora" / "demo"),
    embedder: str = "gen_asym",
    query: str = "How should I treat a small burn on my hand?",
    backbone: str = "default",
    qdrant_path: Path | None = None,
    k: int = 3,
) -> list[str]:
    passages, _ = load_corpus(folder)  # already chunked, so the passages go in as nodes, unsplit
    nodes = [
        # a fixed id per passage (the passage id in the UUID form Qdrant takes; RagsafeRetriever's nodes carry
        # it as hex), so a rerun overwrites instead of adding copies; the metadata stays out of
        # the embedded text (LlamaIndex would put "source: ..." in front of it), as in `ragsafe index`
        TextNode(id_=point_id(p.id), text=p.text, metadata=p.metadata, excluded_embed_metadata_keys=list(p.metadata))
        for p in passages
    ]
    embed_model = RagsafeEmbedding(build_embedders([embedder], backbone=backbone)[0])
    with tempfile.TemporaryDirectory(prefix="ragsafe-li-") as scratch:  # without --qdrant-path: gone afterwards
        client = QdrantClient(path=str(qdrant_path or scratch))
        try:
            # one collection per folder and model: two folders named alike, or two embedders (or checkpoints)
            # of the same dimension, must never share vectors; model_name changes with whatever changes them
            where = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
            collection = f"{folder.resolve().name}-{where}-{embed_model.model_name}"
            store = QdrantVectorStore(client=client, collection_name=collection)
            with warnings.catch_warnings():  # embedded Qdrant ignores the payload indexes LlamaIndex asks for
                warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
                index = VectorStoreIndex(
                    nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed_model
                )
            nodes = index.as_retriever(similarity_top_k=k).retrieve(query)
        finally:  # an embedded client left open keeps its folder locked
            client.close()
        for node in nodes:
            typer.echo(f"{node.score:.3f}  {node.metadata.get('source')}  {node.text[:80]}")
    return [n.metadata.get("source") for n in nodes]


if __name__ == "__main__":
    typer.run(main)
