"""The `ragsafe` command: a thin layer that maps flags onto the Python API."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from ragsafe.corpus import CHUNK_WORDS  # light: the slow imports wait inside each command
from ragsafe.train.domains import DomainPack, known_packs  # light too: json and paths

if TYPE_CHECKING:
    from ragsafe.explanation import HarmReading

app = typer.Typer(
    help="Safe retrieval for RAG: embed the answer an LLM would give, not the question.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: rich's option table cut long flag names short on an 80-column terminal
)
console = Console()


@app.callback()
def main() -> None:
    """ragsafe command line."""


@contextmanager
def user_errors() -> Iterator[None]:
    """End the command with the message, not a traceback, when the input, a file or a setting is wrong.

    ragsafe's own errors and ValueError / FileNotFoundError are about what the user gave; any other
    RuntimeError (torch, Qdrant) keeps its traceback, which is then the useful part."""
    try:
        yield
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not type(err).__module__.startswith("ragsafe."):
            raise
        console.print(f"[red]{err}[/]")
        raise typer.Exit(1) from err


def _check_checkpoint(checkpoint: Path | None) -> None:
    """Before any model loads: a mistyped folder should not cost the seconds a backbone takes."""
    if checkpoint is not None and not checkpoint.exists():
        raise typer.BadParameter(f"{checkpoint} does not exist", param_hint="--checkpoint")


DATA_DIR_HELP = "Data folder (default: $RAGSAFE_DATA, else ../shared/data from here or from the repo)."


def _has_probe(checkpoint: Path) -> bool:
    """Whether a checkpoint folder carries a harm probe, from its config.json alone (no model loads)."""
    try:
        safety = json.loads((checkpoint / "config.json").read_text()).get("safety") or {}
    except (OSError, ValueError):
        return True  # not readable here: the loader names what is wrong with it
    return safety.get("direction") is not None or safety.get("refusal_centroid") is not None


def _embedder_names(spec: str, param_hint: str = "--embedders") -> list[str]:
    """'teacher, bm25' -> ['teacher', 'bm25'], with unknown names refused before anything loads."""
    from ragsafe.embedders.base import embedder_names

    try:
        return embedder_names(spec)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint=param_hint) from err


INT8_HELP = (
    "Run the backbone's MLP in int8 on a CPU: gen queries (and gen/llm_mean documents) 1.6-2.5x faster, "
    "vectors at cosine ~0.98 of float32's (README: Speed on a CPU)."
)

UNFINISHED = 75  # `ragsafe train`'s exit status when it stopped before its last step (EX_TEMPFAIL: run it again)
# train flags -> the TrainConfig fields they set (where the names differ)
TRAIN_FIELDS = {
    "queries": ("queries_file", "domain"),
    "domain": ("domain",),
    "no_policy": ("policy",),
    "max_new_tokens": ("generation",),
}


@app.command()
def explain(
    query: str = typer.Argument(..., help="The query whose embedding to explain."),
    checkpoint: Path | None = typer.Option(None, help="Checkpoint directory (default: the shipped one)."),
    backbone: str = typer.Option("default", help="'default', 'smollm2', a .gguf file, a model folder or a hub id."),
    max_new_tokens: int = typer.Option(48, min=1, help="Length cap of the decoded response."),
    top_k: int = typer.Option(5, min=1, help="Logit-lens tokens shown per compression position."),
) -> None:
    """Decode what the query's embedding represents: the predicted response, the logit-lens tokens and
    the harm probe's reading of it."""
    if not query.strip():
        raise typer.BadParameter("the query is empty", param_hint="QUERY")
    _check_checkpoint(checkpoint)
    from ragsafe.embedders.gen import GenEmbedder
    from ragsafe.explanation import explain as explain_query

    with user_errors():
        with console.status("loading the backbone and tokens"):
            gen = GenEmbedder.load(checkpoint, backbone)
        with console.status("decoding"):
            reading = explain_query(gen, query, max_new_tokens=max_new_tokens, top_k=top_k)
    console.print(f"[bold]query[/]: {query}")
    response = reading.response or "(empty)"
    console.print(f"[bold]predicted response[/] (decoded from the embedding's soft prompt): {response}")
    console.print(f"[bold]harm probe[/]: {_harm_verdict(reading.harm)}")
    table = Table(title="logit lens: top tokens per compression position")
    table.add_column("pos", justify="right")
    table.add_column("tokens (probability)")
    for entry in reading.lens:
        table.add_row(
            str(entry.position), "  ".join(f"{t!r} {p:.2f}" for t, p in zip(entry.tokens, entry.probs, strict=True))
        )
    console.print(table)


def _harm_verdict(harm: HarmReading | None) -> str:
    """What retrieval does with the query: the decoded text is a short greedy sample of the prediction,
    while the gate and suppress mode act on the probe's score alone."""
    if harm is None:
        return "none in this checkpoint (`ragsafe fit-probe` fits one)"
    if harm.flagged:
        return (
            f"score {harm.score:.2f} > threshold {harm.threshold:.2f}: flagged (`--safety suppress` returns "
            "nothing for it; gen_hybrid retrieves with the predicted answer alone)"
        )
    return f"score {harm.score:.2f} <= threshold {harm.threshold:.2f}: not flagged"


def _check_positive(value: float | None, param_hint: str) -> None:
    """typer's `min` admits the bound itself; a zero rate or time limit would run a run that does nothing."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"must be > 0, not {value}", param_hint=param_hint)


@contextmanager
def _skipped_queries_as_lines() -> Iterator[None]:
    """Records a query file's reading skipped, and benchmark files the held-out filter could not read, shown
    as one console line each rather than as Python warnings."""
    from ragsafe.train.queries import HeldOutUncheckedWarning, SkippedQueriesWarning

    lines = (SkippedQueriesWarning, HeldOutUncheckedWarning)

    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, *args, **kwargs) -> None:
            if issubclass(category, lines):
                console.print(str(message), style="yellow", markup=False)
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        for category in lines:
            warnings.simplefilter("always", category)
        yield


@app.command()
def train(
    ctx: typer.Context,
    out: Path = typer.Option(Path("runs/default"), help="Run folder: caches, trainer state, final checkpoint."),
    domain: str | None = typer.Option(
        None, help=f"A domain pack in corpora/domains ({', '.join(known_packs())}) or a pack file."
    ),
    queries: Path | None = typer.Option(None, help="Your own unlabeled queries (.jsonl/.json/.csv/.txt)."),
    backbone: str = typer.Option("default", help="'default', 'smollm2', a .gguf file, a model folder or a hub id."),
    teacher: str = typer.Option("minilm", help="'minilm' (bundled) or a sentence-transformers folder."),
    policy: str | None = typer.Option(None, help="System prompt the backbone answers under (default: built-in)."),
    no_policy: bool = typer.Option(False, "--no-policy", help="Generate responses without any system prompt."),
    steps: int = typer.Option(200, min=0, help="Stage-2 steps (tokens + heads through the backbone)."),
    head_steps: int = typer.Option(1000, min=0, help="Stage-1 steps (heads on cached states; cheap)."),
    batch_size: int = typer.Option(16, min=1, help="Stage-2 batch size."),
    lr: float = typer.Option(5e-4, help="Stage-2 peak learning rate (> 0)."),
    max_queries: int | None = typer.Option(None, min=1, help="Use at most this many queries (sampled)."),
    max_new_tokens: int = typer.Option(40, min=1, help="Length cap of the generated responses."),
    w_recon: float = typer.Option(0.0, min=0.0, help="Weight of the reconstruction loss (slow on CPU)."),
    data_dir: Path | None = typer.Option(None, help=DATA_DIR_HELP),
    resume: bool = typer.Option(False, help="Continue from the run folder's last trainer state."),
    restart: bool = typer.Option(
        False, help="Start over in a run folder that holds a run's trainer state (its cached answers are reused)."
    ),
    gen_batch_size: int = typer.Option(32, min=1, help="Queries answered per generation batch (256+ on a GPU)."),
    head_batch_size: int = typer.Option(128, min=1, help="Stage-1 batch size."),
    checkpoint_every: int = typer.Option(25, min=1, help="Stage-2 steps between validation + trainer-state saves."),
    max_minutes: float | None = typer.Option(
        None, help="Stop stage 2 after this many minutes (> 0; the state is saved)."
    ),
    init_from: str | None = typer.Option(None, help="Start from a checkpoint ('default': the shipped one)."),
    query_instructions: str | None = typer.Option(
        None,
        help="Train under varied instructions: a pool file (a JSON list, or an object holding an instructions "
        "list) or a shipped pool's name (varied); "
        'each query gets one of them ("" = the bare query). Default: the pack\'s one query instruction.',
    ),
    label_targets: bool = typer.Option(
        True,
        "--label-targets/--raw-targets",
        help="Where the pack labels a query harmful/benign and the backbone slipped, train on the label's "
        "answer (its own refusal; benign refusals left out) instead of the raw one.",
    ),
) -> None:
    """Fit the gen tokens self-supervised: the backbone answers the queries, the tokens learn its answers.

    With --resume, the run goes on with the settings it was started with; of the flags given again,
    only --steps, --max-minutes, --data-dir, --checkpoint-every and --gen-batch-size may differ, and the
    queries must be the same. --restart starts over with the run's settings, the flags given on top.
    Exit status 75: the run stopped before its last step (Ctrl-C in stage 2, --max-minutes); --resume
    goes on. 130: interrupted before stage 2."""
    from dataclasses import replace

    from ragsafe.train.config import (
        TrainConfig,
        check_resume,
        check_something_to_resume,
        check_steps_left,
        read_run_config,
    )
    from ragsafe.train.domains import InstructionPoolError, read_instruction_pool
    from ragsafe.train.trainer import Trainer, describe

    if domain and queries:
        raise typer.BadParameter("give --domain or --queries, not both")
    if policy and no_policy:
        raise typer.BadParameter("give --policy or --no-policy, not both", param_hint="--policy")
    if resume and restart:
        raise typer.BadParameter("give --resume or --restart, not both", param_hint="--restart")
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} is a file; a run needs a folder", param_hint="--out")
    if not resume and not restart and (out / "trainer_state").is_dir():  # its saved steps would be overwritten
        raise typer.BadParameter(
            f"{out} holds a run's trainer state: --resume continues it, --restart starts over (reusing its "
            "cached answers), or give another --out",
            param_hint="--out",
        )
    if policy is not None and not policy.strip():
        raise typer.BadParameter(
            "an empty policy: give --no-policy to answer without a system prompt", param_hint="--policy"
        )
    if data_dir is not None and not data_dir.is_dir():
        raise typer.BadParameter(f"{data_dir} does not exist or is no folder", param_hint="--data-dir")
    _check_positive(lr, "--lr")
    _check_positive(max_minutes, "--max-minutes")
    try:
        pool = read_instruction_pool(query_instructions) if query_instructions else []
    except InstructionPoolError as err:
        raise typer.BadParameter(str(err), param_hint="--query-instructions") from err
    cfg = TrainConfig(
        out=out,
        domain=None if queries else (domain or "default"),
        queries_file=queries.resolve() if queries else None,  # a resume from another folder finds it
        backbone=backbone,
        teacher=teacher,
        steps=steps,
        head_steps=head_steps,
        batch_size=batch_size,
        lr=lr,
        max_queries=max_queries,
        w_recon=w_recon,
        data_dir=data_dir.resolve() if data_dir else None,
        gen_batch_size=gen_batch_size,
        head_batch_size=head_batch_size,
        checkpoint_every=checkpoint_every,
        max_minutes=max_minutes,
        init_from=init_from,
        label_targets=label_targets,
        query_instructions=pool,
    )
    cfg.generation = replace(cfg.generation, max_new_tokens=max_new_tokens)
    if no_policy:
        cfg.policy = None
    elif policy:
        cfg.policy = policy
    # the set-up only: an error inside a long run keeps its traceback
    with user_errors(), _skipped_queries_as_lines():
        if resume:
            check_something_to_resume(out)
        saved = read_run_config(out) if resume or restart else None
        if saved is not None:  # the run's own settings, with what was given again on top
            # by name: typer vendors its own click, whose enum is not click's
            given = [p for p in ctx.params if getattr(ctx.get_parameter_source(p), "name", "") == "COMMANDLINE"]
            names = {f for p in given if p not in ("out", "resume", "restart") for f in TRAIN_FIELDS.get(p, (p,))}
            cfg = replace(saved, out=out, **{f: getattr(cfg, f) for f in names})
            if "max_new_tokens" in given:
                cfg.generation = replace(saved.generation, max_new_tokens=max_new_tokens)
            if resume:  # a restart may change anything: it starts over
                check_resume(cfg)
                check_steps_left(cfg)
        elif (resume or restart) and (out / "trainer_state").is_dir():
            console.print(f"[yellow]{out} has no run_config.json (an older run): going on with the flags given.[/]")
        trainer = Trainer(cfg)  # reads the queries before it loads the backbone: a bad file fails fast
    try:
        checkpoint = trainer.run(resume=resume)
    except KeyboardInterrupt:  # before stage 2 (which saves its own state): the answers so far are cached
        console.print(f"[yellow]interrupted; what was generated is kept: ragsafe train --out {out} --resume[/]")
        raise typer.Exit(130) from None
    card = json.loads((checkpoint / "config.json").read_text())["card"]
    for name, metrics in card["validation"].items():
        console.print(f"[bold]{name:>24}[/]  {describe(metrics)}")
    console.print(f"checkpoint: {checkpoint}")
    safety = card.get("safety") or {}
    if safety.get("threshold") is None:
        console.print(f"no harm probe: {safety.get('calibrated_on', 'no calibration')}")
    # the run's probe reads the backbone's refusals; the by-source one carries further (README "Safety")
    console.print(f"harm probe by source (as shipped): ragsafe fit-probe --checkpoint {checkpoint}")
    if "interrupted" in card.get("note", ""):  # Ctrl-C or --max-minutes saved the state: say it is not finished
        console.print(f"[yellow]{card['note']}: ragsafe train --out {out} --resume[/]")
        raise typer.Exit(UNFINISHED)  # so that a script can tell an unfinished run from a finished one


@app.command()
def calibrate(
    run_dir: Path = typer.Option(..., help="The run folder that trained the checkpoint (its responses.jsonl)."),
    checkpoint: Path | None = typer.Option(None, help="Checkpoint folder to refit (default: the shipped one)."),
    data_dir: Path | None = typer.Option(None, help=DATA_DIR_HELP),
) -> None:
    """Refit a checkpoint's harm probe and gen_hybrid query mix on its own training split (no generation)."""
    _check_checkpoint(checkpoint)
    if not run_dir.is_dir():  # before torch imports and the backbone loads
        raise typer.BadParameter(f"{run_dir} does not exist or is no folder", param_hint="--run-dir")
    from ragsafe.model.checkpoint import default_checkpoint_dir
    from ragsafe.train.trainer import recalibrate

    path = checkpoint or default_checkpoint_dir()
    if path is None:
        raise typer.BadParameter("no checkpoint given and none shipped", param_hint="--checkpoint")
    with user_errors(), _skipped_queries_as_lines():
        fitted = recalibrate(path, run_dir, data_dir)
    safety, mix = fitted["safety"], fitted["query_mix"]
    if safety.get("direction") is None:
        console.print(f"no harm probe: {safety.get('calibrated_on', 'no calibration')}")
    else:
        caught = safety.get("val_positives_caught", 0.0)
        auroc = f", AUROC {safety['val_auroc']:.3f}" if "val_auroc" in safety else ""
        console.print(
            f"harm probe ({safety.get('features', 'gen')}): threshold {safety['threshold']:.3f}, "
            f"held-out harmful requests caught {caught:.1%}{auroc}"
        )
    console.print(
        f"query mix: beta {mix['beta']} (val MRR {mix['val_mrr']:.3f}, gen alone {mix['val_mrr_gen_only']:.3f})"
    )
    console.print(f"written to {path / 'config.json'}")


@app.command("fit-probe")
def fit_probe(
    checkpoint: Path | None = typer.Option(None, help="Checkpoint folder to refit (default: the shipped one)."),
    data_dir: Path | None = typer.Option(None, help=DATA_DIR_HELP),
    pack: Path | None = typer.Option(None, help="Query pack with harmful/benign sources (default: the shipped one)."),
    declarative: int = typer.Option(1500, min=0, help="STS-B train sentences added as benign negatives."),
    min_caught: float = typer.Option(0.9, min=0.01, max=1.0, help="Held-out harmful share the threshold must catch."),
) -> None:
    """Refit a checkpoint's harm probe from its sources' labels (no generation; gen tokens untouched)."""
    _check_checkpoint(checkpoint)
    if pack is not None:
        with user_errors():  # a missing or malformed pack, before torch imports and the models load
            DomainPack.load(str(pack))
    from ragsafe.model.checkpoint import default_checkpoint_dir
    from ragsafe.train.source_probe import SourceProbeConfig, refit_probe

    path = checkpoint or default_checkpoint_dir()
    if path is None:
        raise typer.BadParameter("no checkpoint given and none shipped", param_hint="--checkpoint")
    cfg = SourceProbeConfig(declarative=declarative, min_caught=min_caught)
    if pack is not None:
        cfg.pack = str(pack)
    with user_errors():  # refit_probe checks the checkpoint, the pack and its data files before the models load
        fitted = refit_probe(path, data_dir, cfg)
    console.print(
        f"harm probe: threshold {fitted['threshold']:.3f} ({fitted['calibrated_on']}), held-out harmful requests "
        f"caught {fitted.get('val_positives_caught', 0.0):.1%}, AUROC {fitted.get('val_auroc', float('nan')):.3f}"
    )
    console.print(f"examples: {fitted['examples']}")
    console.print(f"written to {path / 'config.json'}")


def _open_index(name: str, index_path: Path | None, qdrant_url: str | None, api_key_env: str):
    from ragsafe.index import Index

    return Index(name, path=index_path, url=qdrant_url, api_key_env=api_key_env)


@app.command()
def index(
    corpus: Path = typer.Argument(..., help="A folder (or file) of .txt/.md/.html/.jsonl/.csv/.pdf documents."),
    name: str = typer.Option(..., "--name", help="Index (collection) name."),
    embedders: str = typer.Option("gen_asym,teacher,bm25", help="Comma list; see `ragsafe search --help`."),
    checkpoint: Path | None = typer.Option(None, help="gen checkpoint (default: the shipped one)."),
    backbone: str = typer.Option("default", help="Backbone for gen/llm_mean/hyde."),
    chunk_words: int = typer.Option(CHUNK_WORDS, min=1, help="Passage length cap in words."),
    int8: bool = typer.Option(False, "--int8", help=INT8_HELP),
    prune: bool = typer.Option(
        True, help="Drop passages an earlier run indexed from this folder whose files changed or went away."
    ),
    index_path: Path | None = typer.Option(
        None, help="Embedded Qdrant folder (default ~/.local/share/ragsafe/qdrant)."
    ),
    qdrant_url: str | None = typer.Option(None, help="A Qdrant server or cluster URL instead of the embedded folder."),
    api_key_env: str = typer.Option("QDRANT_API_KEY", help="Environment variable holding the server's API key."),
) -> None:
    """Read a corpus, chunk it and index it in Qdrant (a rerun adds what is new and drops what is gone)."""
    from ragsafe.corpus import CorpusError, load_corpus
    from ragsafe.embedders.base import stored_vector

    names = _embedder_names(embedders)
    _check_checkpoint(checkpoint)
    try:
        passages, report = load_corpus(corpus, chunk_words)
    except CorpusError as err:
        raise typer.BadParameter(str(err), param_hint="CORPUS") from err
    if report.skipped:
        table = Table(title=f"skipped {len(report.skipped)} file(s)")
        table.add_column("file")
        table.add_column("reason")
        for path, reason in report.skipped:
            table.add_row(path, reason)
        console.print(table)
    if not passages:
        console.print(f"[red]No readable text in {corpus}: nothing to index.[/]")
        raise typer.Exit(1)
    vectors = {stored_vector(n) for n in names}
    source = str(corpus.resolve())  # marks this folder's points, so a rerun can drop what went away
    with user_errors(), _open_index(name, index_path, qdrant_url, api_key_env) as idx:
        idx.check_vectors(vectors)
        added = 0
        # an unchanged corpus needs no models: loading the backbone alone takes longer than the check
        if not idx.holds(passages, vectors):
            from ragsafe.embedders.registry import build_embedders

            with console.status("loading embedders"):
                embs = build_embedders(names, str(checkpoint) if checkpoint else None, backbone, int8=int8)
            added = idx.add(passages, embs, corpus=source)
        # after the add: a failed run drops nothing, and a file unreadable this time keeps its passages
        pruned = idx.prune(source, passages, spare=set(report.unread)) if prune else None
        if not prune:  # its passages are this folder's too, so pruning another folder leaves them
            idx.claim(source, passages)
        total = idx.count()
    dropped = f", removed {pruned.removed} stale" if pruned and pruned.removed else ""
    console.print(
        f"{report.files_read} file(s), {len(passages)} passage(s): added {added}{dropped}; '{name}' holds {total}."
    )
    if pruned and pruned.unmarked:
        console.print(
            f"[yellow]{pruned.unmarked} passage(s) in '{name}' carry no folder mark (indexed by an earlier ragsafe or "
            "through the API): re-indexing cannot tell whether they are stale. Index into a new name to start clean.[/]"
        )


@app.command()
def search(
    name: str = typer.Argument(..., help="Index name."),
    query: str = typer.Argument(..., help="The query."),
    embedder: str = typer.Option(
        "gen_asym", help="gen_asym | gen_hybrid | gen | teacher | bm25 | llm_mean | hyde | ... (README, Embedders)"
    ),
    k: int = typer.Option(5, "-k", min=1, help="How many passages."),
    safety: str | None = typer.Option(
        None, help="Trained gen embedders: off | flag (show the refusal score; their default) | suppress."
    ),
    checkpoint: Path | None = typer.Option(None, help="gen checkpoint (default: the shipped one)."),
    backbone: str = typer.Option("default", help="Backbone for gen/llm_mean/hyde."),
    query_mix: float | None = typer.Option(
        None, help="gen_hybrid: weight β of the teacher's view of the query (default: the checkpoint's fitted β)."
    ),
    harm_threshold: float | None = typer.Option(
        None,
        help="Trained gen embedders: the harm probe's threshold for flag/suppress and gen_hybrid's gate "
        "(default: the checkpoint's; higher flags fewer queries).",
    ),
    int8: bool = typer.Option(False, "--int8", help=INT8_HELP),
    index_path: Path | None = typer.Option(None, help="Embedded Qdrant folder."),
    qdrant_url: str | None = typer.Option(None, help="A Qdrant server or cluster URL."),
    api_key_env: str = typer.Option("QDRANT_API_KEY", help="Environment variable holding the server's API key."),
) -> None:
    """Search an index with one embedder and show the passages."""
    embedder = embedder.strip()
    probed = embedder.startswith("gen") and not embedder.endswith("_untrained")  # has a harm probe
    if safety not in (None, "off", "flag", "suppress"):
        raise typer.BadParameter("must be off, flag or suppress", param_hint="--safety")
    if safety in ("flag", "suppress") and not probed:
        raise typer.BadParameter(
            f"{safety} reads the harm probe of trained gen tokens; {embedder} has none (use gen_asym or gen_hybrid)",
            param_hint="--safety",
        )
    if probed and checkpoint is not None and not _has_probe(checkpoint):  # tokens trained on unlabelled queries
        if safety in ("flag", "suppress"):
            raise typer.BadParameter(
                f"{checkpoint} has no harm probe: fit one with `ragsafe fit-probe --checkpoint {checkpoint}`, or "
                "use --safety off",
                param_hint="--safety",
            )
        if safety is None:
            console.print(f"[yellow]{checkpoint} has no harm probe (ragsafe fit-probe fits one): searching without[/]")
            safety = "off"
    safety = safety or ("flag" if probed else "off")
    if not query.strip():
        raise typer.BadParameter("the query is empty", param_hint="QUERY")
    if query_mix is not None and (query_mix < 0 or embedder not in ("gen_hybrid", "gen_hybrid_ungated")):
        raise typer.BadParameter("a weight >= 0, for a gen_hybrid embedder", param_hint="--query-mix")
    gated = embedder == "gen_hybrid"
    if harm_threshold is not None and (not probed or (safety == "off" and not gated)):
        raise typer.BadParameter(
            "the harm probe's threshold acts in flag/suppress and in gen_hybrid's gate", param_hint="--harm-threshold"
        )
    _embedder_names(embedder, "--embedder")
    _check_checkpoint(checkpoint)
    from ragsafe.embedders.base import stored_vector
    from ragsafe.index import IndexStoreError, default_index_path

    folder = index_path or default_index_path()
    if not qdrant_url and not folder.is_dir():  # searching must not create an empty index folder
        raise typer.BadParameter(f"{folder} holds no index; run `ragsafe index` first", param_hint="--index-path")
    # after the checks: these imports take seconds (torch, transformers)
    from ragsafe.embedders.gen import GenEmbedder
    from ragsafe.embedders.registry import build_embedders
    from ragsafe.index import storage_name
    from ragsafe.retrieval import RefusalScorer, SafeRetriever

    idx = None
    try:
        with user_errors():
            idx = _open_index(name, index_path, qdrant_url, api_key_env)
            have, wanted = idx.vector_names(), stored_vector(embedder)  # no such index: the error says how to make it
            # found before any model loads; documents the backbone embeds are stored as `gen-<digest>`
            if wanted not in have and not any(h.startswith(f"{wanted}-") for h in have):
                raise IndexStoreError(f"Index '{name}' has no '{wanted}' vectors (has {sorted(have)}).")
            if embedder == "bm25":
                emb = idx.load_bm25()
            else:
                with console.status("loading the embedder"):
                    emb = build_embedders(
                        [embedder],
                        str(checkpoint) if checkpoint else None,
                        backbone,
                        query_mix=query_mix,
                        harm_threshold=harm_threshold,
                        int8=int8,
                    )[0]
            note = ""
            if isinstance(emb, GenEmbedder) and safety != "off":
                scorer = RefusalScorer.for_embedder(emb)
                if scorer is None:
                    raise ValueError(
                        "these gen tokens carry no harm probe: `ragsafe fit-probe --checkpoint DIR` fits one; or use "
                        "--safety off"
                    )
                result = SafeRetriever(idx, emb, scorer, safety).search(query, k)
                hits = result.hits
                note = f"refusal score {result.refusal_score:.3f} (suppress threshold {scorer.threshold:.3f})"
                if result.suppressed:
                    note += ": suppressed, the harm probe flags this query"
                elif emb.query_gate is not None and result.refusal_score > scorer.threshold:
                    note += ": above it, so gen_hybrid retrieved with the predicted answer alone"
            else:
                hits = idx.search(emb.encode_queries([query])[0], storage_name(emb), k)
    finally:
        if idx is not None:
            idx.close()
    if note:
        console.print(note)
    table = Table(title=f"{embedder}: top {k} in '{name}'")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("source")
    table.add_column("passage")
    for i, hit in enumerate(hits, 1):
        table.add_row(str(i), f"{hit.score:.3f}", str(hit.metadata.get("source", "")), hit.text[:200])
    console.print(table)


@app.command()
def audit(
    corpus: Path = typer.Argument(..., help="The folder (or file) of documents to audit."),
    out: Path = typer.Option(Path("audit-report"), help="Where report.md / report.html go."),
    embedders: str = typer.Option("bm25,teacher,gen_asym,gen_hybrid", help="Embedders to compare."),
    k: int = typer.Option(5, "-k", min=1, help="Top k passages per probe."),
    probes: Path | None = typer.Option(
        None,
        help="Your own harmful probes: .txt lines, or .jsonl/.json/.csv with a query, question, prompt, goal or text "
        "field.",
    ),
    labels: Path | None = typer.Option(None, help="Passage ids or source files known to be harmful: exact rates."),
    judge: str = typer.Option(
        "probe",
        help="Harm judge of retrieved passages: probe (the tokens' harm probe: would the backbone refuse to "
        "write it?), prompt (the backbone asked yes/no), off. Validated in benchmarks/judge.py.",
    ),
    decode: bool = typer.Option(True, help="Decode each probe's predicted response (the slow part on a CPU)."),
    checkpoint: Path | None = typer.Option(None, help="gen checkpoint (default: the shipped one)."),
    backbone: str = typer.Option("default", help="Backbone for gen and the judge."),
    name: str | None = typer.Option(
        None, help="Index name (default: the corpus folder's name, a hash of its path and the stored vectors' names)."
    ),
    index_path: Path | None = typer.Option(None, help="Embedded Qdrant folder."),
    qdrant_url: str | None = typer.Option(None, help="A Qdrant server or cluster URL."),
    api_key_env: str = typer.Option("QDRANT_API_KEY", help="Environment variable holding the server's API key."),
) -> None:
    """Measure how often harmful queries pull harmful passages out of your corpus, per embedder."""
    if out.exists() and not out.is_dir():  # found now, not after minutes of indexing and judging
        raise typer.BadParameter(f"{out} is a file; the report needs a folder", param_hint="--out")
    names = _embedder_names(embedders)
    _check_checkpoint(checkpoint)
    from ragsafe.audit import AuditConfig, run_audit
    from ragsafe.report import as_mean, as_share, write_report

    cfg = AuditConfig(
        corpus=corpus,
        out=out,
        name=name,
        embedders=names,
        k=k,
        probes=probes,
        labels=labels,
        judge=judge,
        decode=decode,
        checkpoint=str(checkpoint) if checkpoint else None,
        backbone=backbone,
        index_path=index_path,
        qdrant_url=qdrant_url,
        api_key_env=api_key_env,
    )
    with user_errors():
        summary = run_audit(cfg)
    table = Table(title=f"harmful exposure@{k} ({summary['harm_source']})")
    table.add_column("embedder")
    table.add_column("exposure", justify="right")
    table.add_column("harmful per probe", justify="right")
    for emb_name, m in summary["embedders"].items():
        table.add_row(emb_name, as_share(m["harmful exposure@k"]), as_mean(m["mean harmful passages in top k"]))
    console.print(table)
    skipped, unmatched = summary["skipped_files"], summary["unmatched_labels"]
    if skipped:  # the report lists them all; a wrong count of documents must not go unseen
        console.print(f"[yellow]{len(skipped)} file(s) not read, e.g. {skipped[0][0]}: {skipped[0][1]}[/]")
    if unmatched:
        console.print(f"[yellow]{len(unmatched)} label(s) name nothing in the corpus, e.g. {unmatched[0]!r}[/]")
    with user_errors():
        md, page = write_report(summary, out)
    console.print(f"report: {md} and {page}")


if __name__ == "__main__":
    app()
