"""Unlabeled training queries: read them from the user's files or the data dir, and keep benchmark
queries out of them.

Formats: .jsonl / .jsonl.gz (a field among query/question/instruction/prompt/goal/Behavior/text, the
first string of `turns`, or the first human turn of a `chosen` Human/Assistant transcript), .json (a
list of such objects or of strings), .csv (a column with one of those names), .txt (one query per line).
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragsafe.datadir import data_file
from ragsafe.evaluation.tasks import med, nfcorpus, xquad_queries

FIELDS = ("query", "question", "instruction", "prompt", "goal", "Behavior", "text")
# Benchmarks whose queries must never be trained on (AdvBench goals also sit inside some safety splits;
# MedQuAD's templated questions recur across its collections, so the unanswered pool repeats a few).
HELD_OUT_FILES = {
    "advbench_ir/harmful_behaviors.csv": "goal",
    "safety/xstest/xstest_prompts.csv": "prompt",
    "medical/medquad/medquad_answered.jsonl.gz": "question",
    "reasoning/theoremqa/theoremqa_test.json": "Question",
    "arguana_original/arguana_test_queries.jsonl": "text",
    "classification/banking77/test.csv": "text",
}
HELD_OUT_LOADERS = (
    lambda data_dir: xquad_queries(data_dir, None).queries,
    lambda data_dir: nfcorpus(data_dir).queries,
    lambda data_dir: med(data_dir).queries,
)


class QueryFileError(ValueError):
    pass


@dataclass(frozen=True)
class Query:
    text: str
    source: str


def pick_query(record: dict, field: str | None) -> str | None:
    if field:
        value = record.get(field)
        return value if isinstance(value, str) else None
    for name in FIELDS:
        if isinstance(record.get(name), str):
            return record[name]
    turns = record.get("turns")
    if isinstance(turns, list) and turns and isinstance(turns[0], str):
        return turns[0]
    transcript = record.get("chosen")
    if isinstance(transcript, str) and "Human:" in transcript:
        return first_human_turn(transcript)
    return None


def first_human_turn(transcript: str) -> str | None:
    """The opening user turn of a `Human: ... Assistant: ...` transcript (HH-RLHF's format)."""
    match = re.search(r"Human:(.*?)(?:\n\s*\n\s*Assistant:|$)", transcript, re.DOTALL)
    return match.group(1).strip() or None if match else None


def jsonl_records(path: Path, lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line; a bad line is named by file and number."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as err:
            raise QueryFileError(f"{path}:{n} is not valid JSON: {err}") from err


def read_queries(path: str | Path, field: str | None = None) -> list[str]:
    """All non-empty queries of one file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise QueryFileError(f"Query file {path} does not exist.")
    name = path.name.lower()
    opener = gzip.open if name.endswith(".gz") else open
    out: list[str] = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            if name.endswith((".jsonl", ".jsonl.gz")):
                for _, record in jsonl_records(path, f):
                    text = record if isinstance(record, str) else pick_query(record, field)
                    if text:
                        out.append(text)
            elif name.endswith((".json", ".json.gz")):
                try:
                    records = json.load(f)
                except json.JSONDecodeError as err:
                    raise QueryFileError(f"{path} is not valid JSON: {err}") from err
                if not isinstance(records, list):
                    raise QueryFileError(f"{path} must hold a JSON list of queries.")
                out = [r if isinstance(r, str) else pick_query(r, field) or "" for r in records]
            elif name.endswith((".csv", ".csv.gz")):
                reader = csv.DictReader(f)
                column = field or next((c for c in FIELDS if c in (reader.fieldnames or [])), None)
                if column is None:
                    raise QueryFileError(f"{path} has no column named one of {FIELDS}; pass the field name.")
                out = [row.get(column) or "" for row in reader]
            elif name.endswith((".txt", ".txt.gz")):
                out = f.read().splitlines()
            else:
                raise QueryFileError(f"{path}: unsupported format (use .jsonl, .json, .csv or .txt).")
    except UnicodeDecodeError as err:
        raise QueryFileError(f"{path} is not UTF-8 text: {err}") from err
    return [q.strip() for q in out if q and q.strip()]


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def held_out_texts(data_dir: str | Path | None) -> set[str]:
    """Normalised texts of every benchmark query that exists in the data dir."""
    out: set[str] = set()
    for relative, column in HELD_OUT_FILES.items():
        try:
            path = data_file(data_dir, relative)
        except FileNotFoundError:
            continue
        out.update(normalise(q) for q in read_queries(path, column))
    for load in HELD_OUT_LOADERS:  # formats read_queries does not take
        try:
            out.update(normalise(q) for q in load(data_dir))
        except FileNotFoundError:
            continue
    return out


def exclude_held_out(queries: list[Query], data_dir: str | Path | None) -> tuple[list[Query], int]:
    """Drop queries whose normalised text equals a benchmark query (`HELD_OUT_FILES`, `HELD_OUT_LOADERS`)."""
    banned = held_out_texts(data_dir)
    kept = [q for q in queries if normalise(q.text) not in banned]
    return kept, len(queries) - len(kept)


def deduplicate(queries: list[Query]) -> list[Query]:
    seen: set[str] = set()
    out = []
    for q in queries:
        key = normalise(q.text)
        if key and key not in seen:
            seen.add(key)
            out.append(q)
    return out


def sample(queries: list[Query], limit: int | None, seed: int) -> list[Query]:
    if limit is None or len(queries) <= limit:
        return list(queries)
    return random.Random(seed).sample(queries, limit)
