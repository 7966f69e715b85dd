"""`ragsafe audit CORPUS/`: how often harmful queries pull harmful passages out of *your* corpus.

1. index the corpus (or reuse the index: only missing passages are embedded);
2. run a harmful probe set (shipped in corpora/probes, or --probes) through each embedder, top k;
3. decide which retrieved passages are harmful: from --labels (passage ids or source files known to
   be harmful: exact rates) and/or the backbone as judge (`ragsafe.judge`, validated in
   benchmarks/judge.py; with labels too, the report says how far the judge agreed with them);
4. report per embedder the harmful exposure (share of probes with a harmful passage in the top k),
   per probe which passages came back, and what the gen embedding of each probe decodes to.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

from ragsafe.corpus import CorpusError, Passage, load_corpus
from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.registry import build_embedders
from ragsafe.index import Index, IndexStoreError, point_id, storage_name
from ragsafe.judge import HarmJudge, Judge, RefusalJudge
from ragsafe.model.chat import GenerationSettings
from ragsafe.model.checkpoint import CheckpointError
from ragsafe.retrieval import RefusalScorer, shared_teacher_vectors
from ragsafe.train.queries import FIELDS, QueryFileError, clean, pick_query, records

JudgeKind = Literal["probe", "prompt", "off"]
PROBES = Path(__file__).resolve().parents[1] / "corpora" / "probes" / "harmful_probes.jsonl"


class AuditError(ValueError):
    pass


@dataclass
class AuditConfig:
    corpus: Path
    out: Path = Path("audit-report")
    name: str | None = None
    embedders: list[str] = field(default_factory=lambda: ["bm25", "teacher", "gen_asym", "gen_hybrid"])
    k: int = 5
    probes: Path | None = None
    labels: Path | None = None
    judge: JudgeKind = "probe"  # probe: RefusalJudge (needs calibrated tokens); prompt: HarmJudge
    decode: bool = True  # decode each probe's gen soft prompt (slow on CPU: 32 probes ~280 s on 2 busy cores)
    checkpoint: str | None = None
    backbone: str = "default"
    index_path: Path | None = None
    qdrant_url: str | None = None
    api_key_env: str = "QDRANT_API_KEY"


@dataclass
class Retrieved:
    passage_id: str
    source: str
    score: float
    text: str
    harmful: bool | None = None  # None: unknown (no label, no judge)
    p_harm: float | None = None
    where: str = ""  # what the report names it by (`hit_label`); the source file when empty


def hit_label(metadata: dict) -> str:
    """Source file, then the record's title where one file holds many (.jsonl, .csv), then the part of a
    long document: what tells two hits from one file apart in a report."""
    source = str(metadata.get("source", ""))
    label = source
    title = str(metadata.get("title") or "")
    if title and title != Path(source).stem:
        label += f" › {title}"
    if metadata.get("field_id") not in (None, ""):  # two records of one file can share a title
        label += f" [id {metadata['field_id']}]"
    if metadata.get("chunk"):
        label += f" (part {int(metadata['chunk']) + 1})"
    return label


@dataclass
class ProbeRun:
    probe: dict
    embedder: str
    hits: list[Retrieved]


def load_probes(path: Path | None) -> list[dict]:
    """Probes with ids and categories: .jsonl rows or a .json list ({"id", "category", "query" | "prompt" |
    ...}, or a bare string), a .csv with one of those columns, or .txt lines, in file order. A probe
    without an id takes its line number in a .jsonl, else its place from 0. An entry without a query
    is an error that names it, never silently dropped."""
    path = path or PROBES
    if not path.is_file():
        raise AuditError(f"Probe file {path} {'is a folder' if path.is_dir() else 'does not exist'}.")
    by_line = path.suffix.lower() == ".jsonl"
    try:
        probes = [_probe(record, where, n if by_line else i) for i, (where, n, record) in enumerate(records(path))]
    except QueryFileError as err:
        raise AuditError(str(err)) from err
    ids = [p["id"] for p in probes]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise AuditError(f"{path}: probe ids must be unique; repeated: {', '.join(repeated[:5])}.")
    if not probes:
        raise AuditError(f"No probes in {path}.")
    return probes


def _probe(row: object, where: str, number: int) -> dict:
    """One probe from a parsed entry; `number` is its id when it names none."""
    query = row if isinstance(row, str) else pick_query(row, None)
    if not query or not query.strip():
        raise AuditError(f"{where} has no query (a string, or a field named one of {FIELDS}).")
    meta = row if isinstance(row, dict) else {}
    pid = meta.get("id")
    return {
        "id": str(number if pid is None or pid == "" else pid),
        "category": str(meta.get("category") or ""),
        "query": clean(query),
    }


def load_labels(path: Path | None) -> set[str]:
    """Harmful passage ids or source paths: one per line, or jsonl/json with an `id` field."""
    if path is None:
        return set()
    if not path.is_file():
        raise AuditError(f"Labels file {path} {'is a folder' if path.is_dir() else 'does not exist'}.")
    text = path.read_text(encoding="utf-8-sig")  # an editor's byte-order mark would hide the first label
    try:
        if path.suffix == ".json":
            rows = json.loads(text)
        elif path.suffix == ".jsonl":
            rows = [json.loads(x) for x in text.splitlines() if x.strip()]
        else:
            rows = [line.strip() for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise AuditError(f"{path} is not valid JSON: {err}") from err
    rows = rows if isinstance(rows, list) else [rows]
    for n, r in enumerate(rows, 1):
        if isinstance(r, dict) and "id" not in r:
            raise AuditError(f"{path}: entry {n} has no 'id' (a passage id or a source file of the corpus).")
    labels = {str(r["id"] if isinstance(r, dict) else r) for r in rows}
    if not labels:
        raise AuditError(f"Labels file {path} names no passage; leave --labels out to let the judge decide.")
    return labels


def match_labels(labels: set[str], passages: list[Passage], corpus: Path, path: Path | None) -> tuple[set, list]:
    """(harmful passage ids, labels that name nothing in the corpus). A label is a passage id, a record's own
    `id` (of a .jsonl or .csv file), or a file or folder: relative to the corpus root as the index stores it,
    or any path that points into the corpus."""
    if not labels:
        return set(), []
    base = corpus.resolve() if corpus.is_dir() else corpus.resolve().parent
    by_source: dict[str, list[str]] = {}
    by_record: dict[str, list[str]] = {}
    for p in passages:
        by_source.setdefault(p.source, []).append(p.id)
        if p.fields.get("field_id") not in (None, ""):
            by_record.setdefault(str(p.fields["field_id"]), []).append(p.id)
    ids = {p.id for p in passages}
    harmful, unmatched = set(), []
    for label in sorted(labels):
        source = os.path.normpath(label)  # "./a.md" and "a/../a.md" name a.md
        if label not in ids and source not in by_source:
            try:
                resolved = Path(label).resolve() if Path(label).exists() else None
            except OSError:  # e.g. a label too long to be a file name: it is an id or nothing
                resolved = None
            if resolved is not None and resolved.is_relative_to(base):
                source = str(resolved.relative_to(base))
        if label in ids:
            harmful.add(label)
        elif source in by_source:
            harmful.update(by_source[source])
        elif label in by_record:
            harmful.update(by_record[label])
        elif under := folder_passages(by_source, source):
            harmful.update(under)
        else:
            unmatched.append(label)
    if len(unmatched) == len(labels):
        raise AuditError(
            f"None of the {len(labels)} labels in {path} names a passage id, a record id, a file or a folder of "
            f"{corpus} "
            f"(files are named relative to the corpus, e.g. {passages[0].source!r}; first label: {unmatched[0]!r})."
        )
    return harmful, unmatched


def folder_passages(by_source: dict[str, list[str]], folder: str) -> list[str]:
    """The passages of every file under `folder` (none for the corpus root: a label is not the whole corpus)."""
    if folder in (".", ""):
        return []
    return [pid for source, pids in by_source.items() if Path(source).is_relative_to(folder) for pid in pids]


def own_files(cfg: AuditConfig) -> dict[Path, str]:
    """What the audit itself reads or writes, never a document even inside the corpus: a rerun would
    otherwise index its earlier report, which quotes every probe."""
    own = {cfg.out: "the audit's own report folder: not a document"}
    own |= {p: "the audit's probes file: not a document" for p in [cfg.probes] if p is not None}
    own |= {p: "the audit's labels file: not a document" for p in [cfg.labels] if p is not None}
    return own


def index_name(corpus: Path, vectors: Iterable[str] = ()) -> str:
    """The corpus folder's name plus a hash of its full path (two folders called `docs` never share an index),
    then the named vectors the run stores: a collection's vectors are fixed when it is made, so another set of
    embedders gets its own collection and the same set reuses its own."""
    resolved = Path(corpus).resolve()
    stem = "".join(c if c.isalnum() else "-" for c in resolved.name[:64]) or "corpus"  # names have a length cap
    return "-".join([stem, hashlib.sha256(str(resolved).encode()).hexdigest()[:8], *sorted(set(vectors))])


def default_index(cfg: AuditConfig, vectors: set[str]) -> str:
    """The audit's own index: named by folder, path and vectors, or the one an earlier ragsafe named by
    folder and path alone where it holds these vectors (reused, not rebuilt and left on disk)."""
    earlier = index_name(cfg.corpus)
    with Index(earlier, path=cfg.index_path, url=cfg.qdrant_url, api_key_env=cfg.api_key_env) as index:
        if index.exists() and vectors <= set(index.vector_names()):
            return earlier
    return index_name(cfg.corpus, vectors)


def check_named_index(index: Index, passages: list[Passage], vectors: set[str], corpus: Path) -> None:
    """An index named with --name must already hold the corpus's passages with these vectors."""
    try:
        lacking = sorted(vectors - set(index.vector_names()))  # no such index: the error says how to make it
    except IndexStoreError as err:
        raise AuditError(str(err)) from err
    if lacking:
        raise AuditError(f"Index '{index.name}' has no {lacking} vectors; index the corpus with those embedders first.")
    missing = index.missing(passages)
    if missing:
        raise AuditError(
            f"Index '{index.name}' lacks {len(missing)} of the {len(passages)} passages of {corpus} (first: "
            f"{missing[0].source}): it was built with another --chunk-words, or the files changed since. The audit "
            f"reads an index named with --name and does not write into it: run `ragsafe index {corpus} --name "
            f"{index.name}` at the default --chunk-words first, or leave --name out for the audit's own index."
        )


def build_judge(kind: JudgeKind, embedders: list, checkpoint: str | None, backbone: str) -> Judge | None:
    """The harm judge, sharing the audit's backbone (and its gen tokens, for the probe judge)."""
    if kind == "off":
        return None
    gen = next((e for e in embedders if isinstance(e, GenEmbedder)), None)
    if kind == "prompt":
        if gen is not None:
            return HarmJudge(gen.encoder.backbone)
        from ragsafe.model.backbone import load_backbone

        return HarmJudge(load_backbone(backbone))
    try:
        if gen is None or not (gen.safety or {}).get("direction"):
            gen = GenEmbedder.load(checkpoint, gen.encoder.backbone if gen else backbone)
        return RefusalJudge(gen)
    except (ValueError, CheckpointError) as err:
        raise AuditError(f"{err} (--judge prompt, or --judge off)") from err


def agreement(decisions: list[tuple[bool, bool]]) -> dict:
    """How the judge's calls compare with the labels on the same passages: (label, judged) pairs."""
    tp = sum(label and judged for label, judged in decisions)
    flagged, harmful = sum(j for _, j in decisions), sum(label for label, _ in decisions)
    return {
        "passages": len(decisions),
        "labelled harmful": harmful,
        "precision": tp / flagged if flagged else None,
        "recall": tp / harmful if harmful else None,
    }


def run_audit(cfg: AuditConfig) -> dict:
    """Runs the audit and returns its summary; report.write_report turns it into md/html."""
    if cfg.judge not in get_args(JudgeKind):
        raise AuditError(f"judge must be probe, prompt or off, got {cfg.judge!r}")
    if cfg.k < 1:
        raise AuditError(f"k must be at least 1, got {cfg.k}")
    try:
        passages, report = load_corpus(cfg.corpus, exclude=own_files(cfg))
    except CorpusError as err:
        raise AuditError(str(err)) from err
    if not passages:
        skipped = "; ".join(f"{path}: {why}" for path, why in report.skipped[:5])
        more = f"; and {len(report.skipped) - 5} more" if len(report.skipped) > 5 else ""
        raise AuditError(
            f"No readable passages in {cfg.corpus} ({len(report.skipped)} file(s) skipped"
            + (f": {skipped}{more})." if skipped else ").")
        )
    probes = load_probes(cfg.probes)
    labels = load_labels(cfg.labels)
    harmful_ids, unmatched = match_labels(labels, passages, Path(cfg.corpus), cfg.labels)
    embedders = build_embedders(cfg.embedders, cfg.checkpoint, cfg.backbone)
    judge = build_judge(cfg.judge, embedders, cfg.checkpoint, cfg.backbone)  # before the slow part: fail fast
    # the harm probes too: one that does not fit its embedder fails now, not after the corpus is embedded
    scorers = {id(e): RefusalScorer.for_embedder(e) for e in embedders if isinstance(e, GenEmbedder)}
    stored = {id(e): storage_name(e) for e in embedders}  # gen documents hash their weights: once, not per probe
    name = cfg.name or default_index(cfg, set(stored.values()))
    runs: list[ProbeRun] = []
    corpus_points = sorted({point_id(p.id) for p in passages})
    with Index(name, path=cfg.index_path, url=cfg.qdrant_url, api_key_env=cfg.api_key_env) as index:
        if cfg.name:  # the user's own index is read, never written: passages chunked otherwise would pile up in it
            check_named_index(index, passages, set(stored.values()), cfg.corpus)
        index.add(passages, embedders)  # with --name: adds nothing, a BM25 embedder takes the index's statistics
        # the index may hold more than this corpus (a shared --name, files deleted since): then only the corpus's
        # passages are searched (a filter, slower in embedded Qdrant, so only where it is needed)
        only = corpus_points if index.count() > len(corpus_points) else None
        queries = [p["query"] for p in probes]
        for emb in embedders:
            blocked: list[bool] | None = None
            if isinstance(emb, GenEmbedder):
                gen_vectors = emb.encode_gen_queries(queries)
                probe_vectors = emb.probe_view(queries, gen_vectors)
                scorer = scorers[id(emb)]
                text_vectors = shared_teacher_vectors(emb, scorer, queries)
                vectors = emb.mix_query(gen_vectors, queries, text_vectors, probe_vectors)
                if scorer is not None:
                    blocked = scorer.blocks(probe_vectors, queries, text_vectors).tolist()
            else:
                vectors = emb.encode_queries(queries)  # a BM25 embedder holds the index's statistics after add
            for i, (probe, vector) in enumerate(zip(probes, vectors, strict=True)):
                hits = index.search(vector, stored[id(emb)], cfg.k, only=only)
                retrieved = [
                    Retrieved(h.id, str(h.metadata.get("source", "")), h.score, h.text, where=hit_label(h.metadata))
                    for h in hits
                ]
                runs.append(ProbeRun(probe, emb.name, retrieved))
                if blocked is not None:  # what SafeRetriever(mode="suppress") would return
                    runs.append(ProbeRun(probe, f"{emb.name} + suppress", [] if blocked[i] else retrieved))
    # harm decisions: labels are exact; the judge fills in the rest
    unique = {r.passage_id: r for run in runs for r in run.hits}
    for pid, r in unique.items():
        if labels:
            r.harmful = pid in harmful_ids
    judge_vs_labels = None
    if judge is not None:
        todo = list(unique)
        probs = judge.probabilities([unique[p].text for p in todo])
        for pid, p in zip(todo, probs, strict=True):
            unique[pid].p_harm = p
            if not labels:
                unique[pid].harmful = p >= judge.threshold
        if labels:
            calls = [(bool(unique[pid].harmful), p >= judge.threshold) for pid, p in zip(todo, probs, strict=True)]
            judge_vs_labels = agreement(calls) | {"judge": judge.name, "threshold": judge.threshold}
    for run in runs:  # each run's hits point at the shared decisions
        for r in run.hits:
            r.harmful, r.p_harm = unique[r.passage_id].harmful, unique[r.passage_id].p_harm
    decoded = {}
    gen = next((e for e in embedders if isinstance(e, GenEmbedder)), None)
    if gen is not None and cfg.decode:
        texts = gen.encoder.decode(
            [p["query"] for p in probes], gen.query_instruction, GenerationSettings(max_new_tokens=32)
        )
        decoded = {p["id"]: t for p, t in zip(probes, texts, strict=True)}
    summary = {
        "corpus": str(cfg.corpus),
        # what produced the numbers: two reports of other checkpoints must not look alike
        "provenance": {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else "shipped default",
            "backbone": cfg.backbone,
            "probes": str(cfg.probes) if cfg.probes else "shipped probes (corpora/probes)",
            "labels": str(cfg.labels) if cfg.labels else "none",
        },
        "index": name,
        "passages": len(passages),
        "skipped_files": report.skipped,
        "probes": len(probes),
        "k": cfg.k,
        "harm_source": "labels" if labels else (f"judge: {judge.name}" if judge else "none"),
        "judge_vs_labels": judge_vs_labels,
        "judge_threshold": judge.threshold if judge else None,  # the report shows each passage's p_harm beside it
        "unmatched_labels": unmatched,
        "embedders": {},
        "runs": runs,
        "decoded": decoded,
    }
    known = summary["harm_source"] != "none"  # with neither labels nor a judge, exposure is unknown, not 0
    for run_name in dict.fromkeys(r.embedder for r in runs):
        mine = [r for r in runs if r.embedder == run_name]
        exposed = [any(h.harmful for h in r.hits) for r in mine]
        counts = [sum(bool(h.harmful) for h in r.hits) for r in mine]
        summary["embedders"][run_name] = {
            "harmful exposure@k": sum(exposed) / len(mine) if known else None,
            "mean harmful passages in top k": sum(counts) / len(mine) if known else None,
        }
    return summary
