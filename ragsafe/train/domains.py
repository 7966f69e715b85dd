"""Domain packs: which unlabeled queries, which retrieval instructions and which evaluation set make a
domain. A pack is a JSON file in `corpora/domains/` (or any path), so a team adds its own without code.
Instruction pools (`corpora/instructions/`), the instructions to train under, are read here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from ragsafe.datadir import data_file
from ragsafe.train.queries import Query, deduplicate, exclude_held_out, json_kind, load_queries, sample

PACK_DIR = Path(__file__).resolve().parents[2] / "corpora" / "domains"
# the harm probe's pack (source_probe.py): here, so the CLI can check it without importing torch
PROBE_PACK = PACK_DIR.parent / "probes" / "harm_probe_pack.json"
# instruction pools for training under varied instructions (read_instruction_pool)
POOL_DIR = PACK_DIR.parent / "instructions"


class DomainError(ValueError):
    pass


@dataclass
class QuerySource:
    file: str
    label: str = "benign"
    field: str | None = None
    limit: int | None = None
    licence: str = ""

    @classmethod
    def parse(cls, raw: object, where: str) -> QuerySource:
        """One entry of a pack's "queries", or a DomainError naming the entry and what is wrong with it."""
        if not isinstance(raw, dict):
            example = '{"file": "...", "label": "benign"}'
            raise DomainError(f"{where} must be an object like {example}, not {json_kind(raw)}.")
        check_keys(raw, {f.name for f in fields(cls)}, where)
        if not isinstance(raw.get("file"), str) or not raw["file"].strip():
            raise DomainError(f'{where} needs "file": a path inside the data dir.')
        for key in ("field", "licence"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise DomainError(f'{where}: "{key}" must be a string, not {json_kind(raw[key])}.')
        label = raw.get("label", "benign")
        if not isinstance(label, str) or not label or ":" in label:  # sources are written "label:file"
            raise DomainError(f'{where}: "label" must be a non-empty word without ":" (benign, harmful, ...).')
        limit = raw.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise DomainError(f'{where}: "limit" must be a whole number of at least 1, not {limit!r}.')
        return cls(**raw)


def check_keys(raw: dict, known: set[str], where: str) -> None:
    """A misspelt key would otherwise be a TypeError, or quietly mean nothing."""
    unknown = sorted(set(raw) - known)
    if unknown:
        raise DomainError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")


def pack_path(name_or_path: str) -> Path:
    """The pack file a --domain/--pack value names: a file, or the stem of one in corpora/domains."""
    return shipped_or_file(name_or_path, PACK_DIR, "Domain pack", "domain", DomainError)


def known_packs() -> list[str]:
    return shipped_names(PACK_DIR)


def shipped_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.json"))


def shipped_or_file(name_or_path: str | Path, folder: Path, kind: str, noun: str, error: type[ValueError]) -> Path:
    """A file, or the stem of a JSON file shipped in `folder`; else `error` naming the shipped ones."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.suffix == ".json" or len(path.parts) > 1:  # meant as a file, not as a shipped one's name
        raise error(f"{kind} file {path} does not exist.")
    if (folder / f"{name_or_path}.json").is_file():
        return folder / f"{name_or_path}.json"
    known = ", ".join(shipped_names(folder))
    raise error(f"Unknown {noun} '{name_or_path}'. Known: {known}; or pass a file.")


def read_json_file(path: Path, kind: str, error: type[ValueError]) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{kind} {path} is not valid JSON: {err}") from err


class InstructionPoolError(ValueError):
    pass


def read_instruction_pool(name_or_path: str | Path) -> list[str]:
    """The instructions of a pool (`ragsafe train --query-instructions`): a JSON list of strings, or
    {"instructions": [...]}, where "" is the bare query; a file, or the name of one in
    corpora/instructions. An InstructionPoolError names what is wrong with it."""
    path = shipped_or_file(name_or_path, POOL_DIR, "Instruction pool", "instruction pool", InstructionPoolError)
    raw = read_json_file(path, "Instruction pool", InstructionPoolError)
    pool = raw.get("instructions") if isinstance(raw, dict) else raw
    if not isinstance(pool, list) or not pool or not all(isinstance(i, str) for i in pool):
        raise InstructionPoolError(
            f'Instruction pool {path}: needs a non-empty list of strings, as {{"instructions": [...]}} or a bare list.'
        )
    return [i.strip() for i in pool]


@dataclass
class DomainPack:
    name: str
    description: str
    queries: list[QuerySource]
    instructions: dict[str, str] = field(default_factory=dict)
    eval: str = ""

    @classmethod
    def load(cls, name_or_path: str) -> DomainPack:
        path = pack_path(name_or_path)
        return cls.parse(read_json_file(path, "Domain pack", DomainError), path)

    @classmethod
    def parse(cls, raw: object, path: Path) -> DomainPack:
        """A pack from its parsed JSON, or a DomainError naming what is wrong with it."""
        where = f"Domain pack {path}:"
        if not isinstance(raw, dict):
            raise DomainError(f'{where} must be a JSON object with "queries", not {json_kind(raw)}.')
        check_keys(raw, {f.name for f in fields(cls)}, f"Domain pack {path}")
        sources = raw.get("queries")
        if not isinstance(sources, list) or not sources:
            raise DomainError(f'{where} "queries" must be a non-empty list of {{"file": ...}} objects.')
        instructions = raw.get("instructions") or {}
        if not isinstance(instructions, dict) or not all(isinstance(v, str) for v in instructions.values()):
            raise DomainError(f'{where} "instructions" must map "query" / "document" to strings.')
        for key in ("name", "description", "eval"):
            if not isinstance(raw.get(key, ""), str):
                raise DomainError(f'{where} "{key}" must be a string, not {json_kind(raw[key])}.')
        return cls(
            name=raw.get("name") or path.stem,
            description=raw.get("description", ""),
            queries=[QuerySource.parse(q, f'{where} "queries" entry {i}') for i, q in enumerate(sources, 1)],
            instructions=instructions,
            eval=raw.get("eval", ""),
        )

    def check_files(self, data_dir: str | Path | None) -> None:
        """Every source file is in the data dir (a DataError names the first missing one)."""
        for source in self.queries:
            data_file(data_dir, source.file)

    def collect(self, data_dir: str | Path | None, seed: int = 0) -> tuple[list[Query], dict[str, int]]:
        """The pack's queries (sampled per source, deduplicated, benchmark queries removed) and counts.

        Records with no query are counted per file ("skipped records: FILE"), not fatal: the public
        pools a pack reads may hold the odd row without text."""
        queries: list[Query] = []
        counts: dict[str, int] = {}
        for source in self.queries:
            read = load_queries(data_file(data_dir, source.file), source.field)
            texts = read.texts
            picked = sample([Query(t, f"{source.label}:{source.file}") for t in texts], source.limit, seed)
            counts[source.file] = len(picked)
            if read.skipped:
                counts[f"skipped records: {source.file}"] = read.skipped
            queries.extend(picked)
        queries, dropped = exclude_held_out(deduplicate(queries), data_dir)
        counts["dropped: benchmark queries"] = dropped
        counts["total"] = len(queries)
        return queries, counts
