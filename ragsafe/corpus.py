"""Read a folder (or one file) of documents into passages with stable ids.

Formats: .txt, .md, .html/.htm (tags stripped with the standard library), .jsonl (one document per
line: `text` plus optional `title`/`id`), .csv (a `text` column, optional `title`/`id`), .pdf when the
optional `pypdf` package is installed. Long documents are cut into passages of at most
`chunk_words` words, so no single input to a model is ever a whole huge file.

A passage id is a hash of its source path (relative to the corpus root) and its text: the same
content at the same place gets the same id on every run, which makes indexing idempotent.
Files that cannot be read (binary, not UTF-8, empty, unreadable, bad rows) are listed in the
report and skipped, never fatal.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
SUFFIXES = TEXT_SUFFIXES | {".html", ".htm", ".jsonl", ".csv", ".pdf"}


class CorpusError(ValueError):
    pass


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    source: str
    title: str = ""
    chunk: int = 0

    @property
    def metadata(self) -> dict:
        return {"source": self.source, "title": self.title, "chunk": self.chunk}


@dataclass
class CorpusReport:
    files_read: int = 0
    passages: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def passage_id(source: str, text: str) -> str:
    return hashlib.sha256(f"{source}\x00{text}".encode()).hexdigest()[:32]


def chunk_words(text: str, size: int) -> list[str]:
    """Split text into passages of at most `size` words, preferring paragraph boundaries."""
    if size < 1:
        raise CorpusError(f"passages need at least one word each, got a size of {size}")
    out: list[str] = []
    current: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        words = paragraph.split()
        if current and len(current) + len(words) > size:
            out.append(" ".join(current))
            current = []
        while len(words) > size:
            out.append(" ".join(words[:size]))
            words = words[size:]
        current.extend(words)
    if current:
        out.append(" ".join(current))
    return out


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        self._in_title = tag == "title"
        if tag in ("p", "div", "br", "li", "h1", "h2", "h3", "tr"):
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data.strip()
        elif not self._skip:
            self.parts.append(data)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise CorpusError("binary file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"not UTF-8 ({err.reason} at byte {err.start})") from err


def _documents(path: Path) -> Iterator[tuple[str, str]]:
    """(title, text) of each document in one file."""
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        yield path.stem, _read_text(path)
    elif suffix in (".html", ".htm"):
        parser = _TextOnly()
        parser.feed(_read_text(path))
        yield parser.title or path.stem, "".join(parser.parts)
    elif suffix == ".jsonl":
        for n, line in enumerate(_read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"line {n} is not valid JSON ({err.msg})") from err
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise CorpusError(f"line {n} has no string 'text' field")
            yield str(row.get("title") or row.get("id") or f"{path.stem}:{n}"), row["text"]
    elif suffix == ".csv":
        reader = csv.DictReader(_read_text(path).splitlines())
        if "text" not in (reader.fieldnames or []):
            raise CorpusError("no 'text' column")
        for n, row in enumerate(reader, 1):
            yield str(row.get("title") or row.get("id") or f"{path.stem}:{n}"), row.get("text") or ""
    elif suffix == ".pdf":
        try:
            from pypdf import PdfReader
        except ImportError as err:
            raise CorpusError("PDF support needs the optional package: pip install pypdf") from err
        try:
            reader = PdfReader(str(path))
            yield path.stem, "\n\n".join(page.extract_text() or "" for page in reader.pages)
        except Exception as err:  # pypdf raises many types for damaged files
            raise CorpusError(f"unreadable PDF ({err})") from err
    else:
        raise CorpusError(f"unsupported file type '{suffix}'")


def load_corpus(root: str | Path, chunk_size: int = 200) -> tuple[list[Passage], CorpusReport]:
    """All passages under `root` (a folder, searched recursively, or one file), in a stable order."""
    root = Path(root)
    if chunk_size < 1:
        raise CorpusError(f"passages need at least one word each, got a chunk size of {chunk_size}")
    if not root.exists():
        raise CorpusError(f"{root} does not exist.")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    base = root.parent if root.is_file() else root
    report = CorpusReport()
    passages: list[Passage] = []
    seen: set[str] = set()
    for path in files:
        rel = str(path.relative_to(base))
        if path.name.startswith("."):
            continue
        if path.suffix.lower() not in SUFFIXES:
            report.skipped.append((rel, f"unsupported file type '{path.suffix or '(none)'}'"))
            continue
        found: list[Passage] = []  # a file counts whole or not at all
        try:
            for title, text in _documents(path):
                for i, chunk in enumerate(chunk_words(text, chunk_size)):
                    found.append(Passage(passage_id(rel, chunk), chunk, rel, title, i))
        except (CorpusError, OSError) as err:
            report.skipped.append((rel, str(err)))
            continue
        if not found:
            report.skipped.append((rel, "empty (no text)"))
            continue
        report.files_read += 1
        for passage in found:
            if passage.id not in seen:  # the same text twice in one file is one passage
                seen.add(passage.id)
                passages.append(passage)
    report.passages = len(passages)
    return passages, report
