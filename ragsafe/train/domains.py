"""Domain packs: which unlabeled queries, which retrieval instructions and which evaluation set make a
domain. A pack is a JSON file in `corpora/domains/` (or any path), so a team adds its own without code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ragsafe.datadir import data_file
from ragsafe.train.queries import Query, deduplicate, exclude_held_out, read_queries, sample

PACK_DIR = Path(__file__).resolve().parents[2] / "corpora" / "domains"


class DomainError(ValueError):
    pass


@dataclass
class QuerySource:
    file: str
    label: str = "benign"
    field: str | None = None
    limit: int | None = None
    licence: str = ""


@dataclass
class DomainPack:
    name: str
    description: str
    queries: list[QuerySource]
    instructions: dict[str, str] = field(default_factory=dict)
    eval: str = ""

    @classmethod
    def load(cls, name_or_path: str) -> DomainPack:
        path = Path(name_or_path)
        if not path.is_file():
            path = PACK_DIR / f"{name_or_path}.json"
        if not path.is_file():
            known = sorted(p.stem for p in PACK_DIR.glob("*.json"))
            raise DomainError(f"Unknown domain '{name_or_path}'. Known: {', '.join(known)}; or pass a pack file.")
        raw = json.loads(path.read_text())
        raw["queries"] = [QuerySource(**q) for q in raw.get("queries", [])]
        return cls(**raw)

    def collect(self, data_dir: str | Path | None, seed: int = 0) -> tuple[list[Query], dict[str, int]]:
        """The pack's queries (sampled per source, deduplicated, benchmark queries removed) and counts."""
        queries: list[Query] = []
        counts: dict[str, int] = {}
        for source in self.queries:
            texts = read_queries(data_file(data_dir, source.file), source.field)
            picked = sample([Query(t, f"{source.label}:{source.file}") for t in texts], source.limit, seed)
            counts[source.file] = len(picked)
            queries.extend(picked)
        queries, dropped = exclude_held_out(deduplicate(queries), data_dir)
        counts["dropped: benchmark queries"] = dropped
        counts["total"] = len(queries)
        return queries, counts
