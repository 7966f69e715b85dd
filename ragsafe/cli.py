"""The `ragsafe` command: a thin layer that maps flags onto the Python API."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Safe retrieval for RAG: embed the answer an LLM would give, not the question.", no_args_is_help=True
)
console = Console()


@app.callback()
def main() -> None:
    """ragsafe command line."""


@app.command()
def explain(
    query: str = typer.Argument(..., help="The query whose embedding to explain."),
    checkpoint: Path | None = typer.Option(None, help="Checkpoint directory (default: the shipped one)."),
    backbone: str = typer.Option("default", help="'default', 'smollm2', a .gguf file, a model folder or a hub id."),
    max_new_tokens: int = typer.Option(48, help="Length cap of the decoded response."),
    top_k: int = typer.Option(5, help="Logit-lens tokens shown per compression position."),
) -> None:
    """Decode what the query's embedding represents: the predicted response and the logit-lens tokens."""
    from ragsafe.embedders.gen import GenEmbedder
    from ragsafe.model.chat import GenerationSettings

    if not query.strip():
        raise typer.BadParameter("the query is empty", param_hint="QUERY")
    with console.status("loading the backbone and tokens"):
        gen = GenEmbedder.load(checkpoint, backbone)
    encoder = gen.encoder
    with console.status("decoding"):
        response = encoder.decode([query], gen.query_instruction, GenerationSettings(max_new_tokens=max_new_tokens))[0]
        lens = encoder.logit_lens([query], gen.query_instruction, top_k=top_k)[0]
    console.print(f"[bold]query[/]: {query}")
    console.print(f"[bold]predicted response[/] (decoded from the embedding's soft prompt): {response or '(empty)'}")
    table = Table(title="logit lens: top tokens per compression position")
    table.add_column("pos", justify="right")
    table.add_column("tokens (probability)")
    for entry in lens:
        table.add_row(
            str(entry.position), "  ".join(f"{t!r} {p:.2f}" for t, p in zip(entry.tokens, entry.probs, strict=True))
        )
    console.print(table)


if __name__ == "__main__":
    app()
