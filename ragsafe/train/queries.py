"""Unlabeled training queries: read them from the user's files or the data dir, and keep benchmark
queries out of them.

Formats: .jsonl / .jsonl.gz (a field among query/question/instruction/prompt/goal/Behavior/text, the
first string of `turns`, or the first human turn of a `chosen` Human/Assistant transcript), .json (a
list of such objects or of strings), .csv (a column with one of those names), .txt (one query per line).
A record with no usable query is read past and counted, never silently (`QueryFile.describe`).
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
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


class SkippedQueriesWarning(UserWarning):
    """Records of a query file that held no usable query (the CLI shows it as one line)."""


@dataclass(frozen=True)
class Query:
    text: str
    source: str


SHOWN_SKIPS = 3  # records named in a skip summary; the rest are only counted


@dataclass
class QueryFile:
    """The queries of one file, and the records read past because they held none."""

    path: Path
    texts: list[str] = field(default_factory=list)
    skipped: int = 0
    examples: list[str] = field(default_factory=list)  # the first few, as "file:line reason"

    def skip(self, where: str, reason: str) -> None:
        self.skipped += 1
        if len(self.examples) < SHOWN_SKIPS:
            self.examples.append(f"{where} {reason}")

    def add(self, where: str, record: object, field: str | None) -> None:
        text = record if isinstance(record, str) else pick_query(record, field)
        if text and text.strip():
            self.texts.append(clean(text))
        else:
            self.skip(where, "has an empty query" if isinstance(text, str) else why_no_query(record, field))

    def describe(self) -> str:
        """One line naming the first skipped records and why, or "" when none was skipped."""
        if not self.skipped:
            return ""
        more = f"; and {self.skipped - len(self.examples)} more" if self.skipped > len(self.examples) else ""
        return f"skipped {self.skipped} record(s) of {self.path} with no usable query: {'; '.join(self.examples)}{more}"


def clean(text: str) -> str:
    """A query as stored: stripped, with one form of line end (CSV cells keep theirs as written, and a
    CRLF file must key the answer caches as before)."""
    return text.strip().replace("\r\n", "\n").replace("\r", "\n")


def pick_query(record: object, field: str | None) -> str | None:
    """The query of one parsed record, or None; a record that is no JSON object holds none."""
    if not isinstance(record, dict):
        return None
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


def json_kind(value: object) -> str:
    """The JSON name of a parsed value's type, for messages about a file the user wrote."""
    kinds = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object", str: "a string"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def why_no_query(record: object, field: str | None) -> str:
    """Why `pick_query` found no query in a record (it returned None)."""
    if not isinstance(record, dict):
        return f"is {json_kind(record)}, not an object or a string"
    names = [field] if field else [*FIELDS, "turns", "chosen"]
    present = [name for name in names if name in record]
    if not present:
        wanted = f"'{field}'" if field else f"one of {', '.join(FIELDS)}"
        keys = [str(k) for k in list(record)[:8]] + (["..."] if len(record) > 8 else [])
        return f"has no field named {wanted} (its fields: {', '.join(keys) or 'none'})"
    name = present[0]
    if name == "turns":
        return "has 'turns' that does not start with a string"
    if name == "chosen":
        return "has a 'chosen' transcript whose Human: turn is missing or empty"
    return f"has '{name}' that is {json_kind(record[name])}, not a string"


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
    """All non-empty queries of one file, in file order (records without one are read past)."""
    return load_queries(path, field).texts


def load_queries(path: str | Path, field: str | None = None) -> QueryFile:
    """The queries of one file, and a count of the records that held none (see `QueryFile.describe`).

    Tolerant on purpose: the public pools the domain packs read have the odd row without text, and one
    such row should not end a run; the caller reports the skips."""
    read = QueryFile(Path(path))
    for where, _, record in records(path, field):
        read.add(where, record, field)
    return read


FORMATS = tuple(f"{ext}{gz}" for ext in (".jsonl", ".json", ".csv", ".txt") for gz in ("", ".gz"))


def records(path: str | Path, field: str | None = None) -> Iterator[tuple[str, int, object]]:
    """(where, number, record) for each record of a query file, in file order. `where` names it in
    messages; `number` is its line in a .jsonl, else its place from 1. A .txt line is a string (blank
    lines separate, they are no records); a csv row is a dict whose "query" is the cell of its query
    column (`field`, else the first of FIELDS present), which alone decides."""
    path = Path(path)
    if not path.is_file():
        raise QueryFileError(f"Query file {path} does not exist.")
    name = path.name.lower()
    if not name.endswith(FORMATS):
        raise QueryFileError(f"{path}: unsupported format (use .jsonl, .json, .csv or .txt).")
    opener = gzip.open if name.endswith(".gz") else open
    try:
        # utf-8-sig: Excel and some Windows editors start the file with a byte-order mark
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            if name.endswith((".jsonl", ".jsonl.gz")):
                for n, record in jsonl_records(path, f):
                    yield f"{path}:{n}", n, record
            elif name.endswith((".json", ".json.gz")):
                for n, record in enumerate(json_list(path, f), 1):
                    yield f"{path}: entry {n}", n, record
            elif name.endswith((".csv", ".csv.gz")):
                yield from csv_records(path, f, field)
            else:
                lines = [line for line in f.read().splitlines() if line.strip()]
                for n, line in enumerate(lines, 1):
                    yield f"{path}: line {n}", n, line
    except UnicodeDecodeError as err:
        raise QueryFileError(f"{path} is not UTF-8 text: {err}") from err


def json_list(path: Path, f) -> list:
    try:
        records = json.load(f)
    except json.JSONDecodeError as err:
        raise QueryFileError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(records, list):
        raise QueryFileError(f"{path} must hold a JSON list of queries (strings, or objects with a query field).")
    return records


def csv_records(path: Path, f, field: str | None) -> Iterator[tuple[str, int, dict]]:
    reader = csv.DictReader(f)
    columns = reader.fieldnames or []
    column = field if field in columns else None if field else next((c for c in FIELDS if c in columns), None)
    if column is None:
        wanted = f"column named '{field}'" if field else f"query column (one named {', '.join(FIELDS)})"
        raise QueryFileError(f"{path} has no {wanted}; its columns: {', '.join(columns) or 'none'}.")
    for n, row in enumerate(reader, 1):
        cell = row.get(column) or ""
        yield f"{path}:{reader.line_num}", n, {**row, "query": cell, **({field: cell} if field else {})}


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def held_out_texts(data_dir: str | Path | None, missing: list[str] | None = None) -> set[str]:
    """Normalised texts of every benchmark query that exists in the data dir; what could not be read
    goes into `missing`."""
    out: set[str] = set()
    for relative, column in HELD_OUT_FILES.items():
        try:
            path = data_file(data_dir, relative)
        except FileNotFoundError:
            if missing is not None:
                missing.append(relative)
            continue
        out.update(normalise(q) for q in read_queries(path, column))
    for load in HELD_OUT_LOADERS:  # formats read_queries does not take
        try:
            out.update(normalise(q) for q in load(data_dir))
        except FileNotFoundError as err:
            if missing is not None:
                missing.append(str(err))
            continue
    return out


class HeldOutUncheckedWarning(UserWarning):
    """Benchmark files missing from the data dir: training queries equal to theirs cannot be removed."""


def exclude_held_out(queries: list[Query], data_dir: str | Path | None) -> tuple[list[Query], int]:
    """Drop queries whose normalised text equals a benchmark query (`HELD_OUT_FILES`, `HELD_OUT_LOADERS`).

    Benchmark files the data dir lacks are named in a HeldOutUncheckedWarning: without them the
    filter cannot see those benchmarks' queries, and says so rather than pass them silently."""
    missing: list[str] = []
    banned = held_out_texts(data_dir, missing)
    if missing:
        warnings.warn(
            f"{len(missing)} benchmark file(s) not found in the data dir (first: {missing[0]}): training queries "
            "equal to their queries cannot be removed; point --data-dir at a folder that holds them to check them",
            HeldOutUncheckedWarning,
            stacklevel=2,
        )
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
