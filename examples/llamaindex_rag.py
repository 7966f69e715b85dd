"""Build a LlamaIndex VectorStoreIndex over a folder with Qdrant and ragsafe embeddings, then retrieve.

python examples/llamaindex_rag.py [FOLDER] [--embedder gen_asym|teacher|gen] [--query "..."]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from ragsafe.corpus import load_corpus
from ragsafe.embedders.registry import build_embedders
from ragsafe.llamaindex import RagsafeEmbedding


def main(
    folder: Path = typer.Argument(Path(__file__).parent.parent / "corpora" / "demo"),
    embedder: str = "gen_asym",
    query: str = "How should I treat a small burn on my hand?",
    backbone: str = "default",
    qdrant_path: Path | None = None,
    k: int = 3,
) -> list[str]:
    passages, _ = load_corpus(folder)
    documents = [Document(text=p.text, metadata=p.metadata, id_=p.id) for p in passages]
    embed_model = RagsafeEmbedding(build_embedders([embedder], backbone=backbone)[0])
    client = QdrantClient(path=str(qdrant_path or tempfile.mkdtemp(prefix="ragsafe-li-")))
    store = QdrantVectorStore(client=client, collection_name="demo")
    index = VectorStoreIndex.from_documents(
        documents, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed_model
    )
    nodes = index.as_retriever(similarity_top_k=k).retrieve(query)
    for node in nodes:
        typer.echo(f"{node.score:.3f}  {node.metadata.get('source')}  {node.text[:80]}")
    client.close()
    return [n.metadata.get("source") for n in nodes]


if __name__ == "__main__":
    typer.run(main)
