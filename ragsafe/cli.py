"""The `ragsafe` command: a thin layer that maps flags onto the Python API."""

from __future__ import annotations

import json
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


@app.command()
def train(
    out: Path = typer.Option(Path("runs/default"), help="Run folder: caches, trainer state, final checkpoint."),
    domain: str | None = typer.Option(None, help="A domain pack in corpora/domains (default, medical) or a pack file."),
    queries: Path | None = typer.Option(None, help="Your own unlabeled queries (.jsonl/.json/.csv/.txt)."),
    backbone: str = typer.Option("default", help="'default', 'smollm2', a .gguf file, a model folder or a hub id."),
    teacher: str = typer.Option("minilm", help="'minilm' (bundled) or a sentence-transformers folder."),
    policy: str | None = typer.Option(None, help="System prompt the backbone answers under (default: built-in)."),
    no_policy: bool = typer.Option(False, "--no-policy", help="Generate responses without any system prompt."),
    steps: int = typer.Option(200, help="Stage-2 steps (tokens + heads through the backbone)."),
    head_steps: int = typer.Option(1000, help="Stage-1 steps (heads on cached states; cheap)."),
    batch_size: int = typer.Option(16, help="Stage-2 batch size."),
    lr: float = typer.Option(5e-4, help="Stage-2 peak learning rate."),
    max_queries: int | None = typer.Option(None, help="Use at most this many queries (sampled)."),
    max_new_tokens: int = typer.Option(40, help="Length cap of the generated responses."),
    w_recon: float = typer.Option(0.0, help="Weight of the reconstruction loss (slow on CPU)."),
    data_dir: Path | None = typer.Option(None, help="Data folder (default: ../shared/data)."),
    resume: bool = typer.Option(False, help="Continue from the run folder's last trainer state."),
) -> None:
    """Fit the gen tokens self-supervised: the backbone answers the queries, the tokens learn its answers."""
    from dataclasses import replace

    from ragsafe.train.config import TrainConfig
    from ragsafe.train.trainer import Trainer, describe

    if domain and queries:
        raise typer.BadParameter("give --domain or --queries, not both")
    cfg = TrainConfig(
        out=out,
        domain=None if queries else (domain or "default"),
        queries_file=queries,
        backbone=backbone,
        teacher=teacher,
        steps=steps,
        head_steps=head_steps,
        batch_size=batch_size,
        lr=lr,
        max_queries=max_queries,
        w_recon=w_recon,
        data_dir=data_dir,
    )
    cfg.generation = replace(cfg.generation, max_new_tokens=max_new_tokens)
    if no_policy:
        cfg.policy = None
    elif policy:
        cfg.policy = policy
    checkpoint = Trainer(cfg).run(resume=resume)
    card = json.loads((checkpoint / "config.json").read_text())["card"]
    for name, metrics in card["validation"].items():
        console.print(f"[bold]{name:>24}[/]  {describe(metrics)}")
    console.print(f"checkpoint: {checkpoint}")


if __name__ == "__main__":
    app()
