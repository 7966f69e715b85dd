"""Read a folder (or one file) of documents into passages with stable ids.

Formats: .txt, .md, .html/.htm (tags stripped with the standard library), .jsonl (one document per
line: `text` plus optional `title`/`id`), .csv (a `text` column, optional `title`/`id`), .pdf when the
optional `pypdf` package is installed. A .jsonl or .csv record's other fields (a url, an author, a
date) travel with each of its passages as metadata, so searches can filter on them. Long documents
are cut into passages of at most `chunk_words` words, so no single input to a model is ever a whole
huge file.

A passage id is a hash of its source path (relative to the corpus root), its text, its record's
fields (its `id` among them, stored as `field_id`) and a title the document gives itself (a record's
`title`, an HTML `<title>`): the same content at the same place gets the same id on every run, which
makes indexing idempotent, and a changed field or title makes a new passage, so re-indexing replaces
the stale one. Plain files, titled by their name, keep the ids of earlier versions.
Files that cannot be read (binary, not UTF-8, empty, unreadable) are listed in the report and
skipped, never fatal (`CorpusReport.unread` names those whose earlier passages re-indexing keeps);
so are .jsonl lines that hold no record (the file's other lines are read), folders that cannot be
listed, broken links and entries that are not regular files. Linked folders are followed,
each real folder read once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

# MiniLM, the teacher that embeds gen_asym's and gen_hybrid's documents, reads 256 word pieces: at 150
# words about 1 % of full-length English passages run past that, at 200 words about a third.
CHUNK_WORDS = 150
TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
SUFFIXES = TEXT_SUFFIXES | {".html", ".htm", ".jsonl", ".csv", ".pdf"}


MAX_BAD_ROWS = 5  # bad lines listed per file; the rest are counted


class CorpusError(ValueError):
    pass


# the keys ragsafe itself stores with a passage; a record field of the same name is kept as "field_<name>"
RESERVED_KEYS = {"source", "title", "chunk", "corpus", "passage_id", "text", "id"}


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    source: str
    title: str = ""
    chunk: int = 0
    fields: dict = field(default_factory=dict, compare=False, hash=False)  # a record's other fields

    @property
    def metadata(self) -> dict:
        # the passage's own keys last: a hand-made Passage's fields must not overwrite them
        return {**self.fields, "source": self.source, "title": self.title, "chunk": self.chunk}


@dataclass
class CorpusReport:
    files_read: int = 0
    passages: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    # files and folders that could not be read this time (not those read and found empty): re-indexing
    # keeps what they held before rather than deleting it over a passing fault (an unmounted share, a
    # file being written)
    unread: list[str] = field(default_factory=list)


def passage_id(source: str, text: str, fields: dict | None = None) -> str:
    payload = f"{source}\x00{text}"
    if fields:  # only then: passages without fields keep the ids earlier versions gave them
        payload += "\x00" + json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def record_fields(row: dict) -> dict:
    """A record's fields besides its text and title, as Qdrant payload: scalars as they are, anything
    else as JSON text; names ragsafe uses itself get a "field_" prefix instead of overwriting them (the
    record's `id` is kept as `field_id`)."""
    out = {}
    for key, value in row.items():
        if key in ("text", "title") or value is None or value == "":
            continue
        name = f"field_{key}" if key in RESERVED_KEYS else str(key)
        out[name] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value, ensure_ascii=False)
    return out


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
        return raw.decode("utf-8-sig")  # a leading byte-order mark (Excel's "CSV UTF-8" writes one) is not text
    except UnicodeDecodeError as err:
        raise CorpusError(f"not UTF-8 ({err.reason} at byte {err.start})") from err


def _documents(path: Path, bad_rows: list[str]) -> Iterator[tuple[str, str, dict, bool]]:
    """(title, text, the record's other fields, whether the title is the document's own rather than made
    up from a name or a line number) of each document in one file; a .jsonl line that is no record goes
    into `bad_rows` (why) and the rest of the file is still read."""
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        yield path.stem, _read_text(path), {}, False
    elif suffix in (".html", ".htm"):
        parser = _TextOnly()
        parser.feed(_read_text(path))
        yield parser.title or path.stem, "".join(parser.parts), {}, bool(parser.title)
    elif suffix == ".jsonl":
        # records end at "\n" only: splitlines() would also cut at U+2028 and the like, which JSON strings
        # may hold unescaped
        for n, line in enumerate(_read_text(path).split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                bad_rows.append(f"line {n} is not valid JSON ({err.msg})")
                continue
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                bad_rows.append(f"line {n} has no string 'text' field")
                continue
            title = row.get("title")
            yield str(title or row.get("id") or f"{path.stem}:{n}"), row["text"], record_fields(row), bool(title)
    elif suffix == ".csv":
        # newline="": the csv module splits rows itself, so a quoted field keeps its line breaks
        reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
        if "text" not in (reader.fieldnames or []):
            raise CorpusError("no 'text' column")
        for n, row in enumerate(reader, 1):
            title = str(row.get("title") or row.get("id") or f"{path.stem}:{n}")
            fields = record_fields({k: v for k, v in row.items() if k is not None})
            yield title, row.get("text") or "", fields, bool(row.get("title"))
    elif suffix == ".pdf":
        try:
            from pypdf import PdfReader
        except ImportError as err:
            raise CorpusError("PDF support needs the optional package: pip install pypdf") from err
        try:
            reader = PdfReader(str(path))
            yield path.stem, "\n\n".join(page.extract_text() or "" for page in reader.pages), {}, False
        except Exception as err:  # pypdf raises many types for damaged files
            raise CorpusError(f"unreadable PDF ({err})") from err
    else:
        raise CorpusError(f"unsupported file type '{suffix}'")


def _files(root: Path, report: CorpusReport) -> list[Path]:
    """Every regular file under `root`, sorted, through linked folders too; what is not read goes into the
    report with why. Hidden files and folders are left out unlisted, as they are not documents."""
    real_root = root.resolve()
    read: dict[Path, Path] = {real_root: root}  # real folder -> the path it is read under
    files: list[Path] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            entries = sorted(folder.iterdir())
        except OSError as err:
            report.skipped.append((str(folder.relative_to(root)), f"unreadable folder ({err.strerror or err})"))
            report.unread.append(str(folder.relative_to(root)))
            continue
        folders: list[Path] = []
        for path in entries:
            rel = str(path.relative_to(root))
            try:
                mode = path.stat().st_mode  # through a link: what it points to
            except OSError as err:
                if not path.name.startswith("."):
                    report.skipped.append((rel, _unreadable(path, err)))
                    report.unread.append(rel)
                continue
            if path.name.startswith("."):  # hidden files and folders (.git, .venv) are not documents
                continue
            if stat.S_ISDIR(mode):
                why = _not_walked(path, root, real_root, read)
                if why:
                    report.skipped.append((rel, why))
                else:
                    read[path.resolve()] = path
                    folders.append(path)
            elif stat.S_ISREG(mode):
                files.append(path)
            else:
                report.skipped.append((rel, f"not a regular file ({_kind(mode)})"))
        pending.extend(reversed(folders))  # depth first in name order: of two links to one folder, the first wins
    return sorted(files)


def _unreadable(path: Path, err: OSError) -> str:
    """Why an entry that cannot be stat'ed is skipped."""
    try:
        target = os.readlink(path)
    except OSError:
        return f"unreadable ({err.strerror or err})"
    if isinstance(err, FileNotFoundError):
        return f"broken link (to {target}, which does not exist)"
    return f"unreadable link to {target} ({err.strerror or err})"  # e.g. a link to itself


def _not_walked(folder: Path, root: Path, real_root: Path, read: dict[Path, Path]) -> str | None:
    """Why a folder is not walked: a link up to the corpus or above it would loop, and one to a folder read
    elsewhere would read its files twice under two names."""
    real = folder.resolve()
    if real_root.is_relative_to(real):
        return "link to a folder that holds the corpus (a loop)"
    if real in read:
        return f"the same folder as {read[real].relative_to(root)}, read there"
    if folder.is_symlink() and real.is_relative_to(real_root):
        return f"link to {real.relative_to(real_root)} inside the corpus, read there"
    return None


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "of an unknown kind"


def load_corpus(
    root: str | Path, chunk_size: int = CHUNK_WORDS, exclude: dict[Path, str] | None = None
) -> tuple[list[Passage], CorpusReport]:
    """All passages under `root` (a folder, searched recursively, or one file), in a stable order.

    exclude: paths (files or folders) left out with the reason given, e.g. an audit's own report folder
    when it lies inside the corpus: read as documents, its quotes of the probes would top every search."""
    root = Path(root)
    left_out = {path.resolve(): why for path, why in (exclude or {}).items()}
    if chunk_size < 1:
        raise CorpusError(f"passages need at least one word each, got a chunk size of {chunk_size}")
    if not root.exists():
        raise CorpusError(f"{root} does not exist.")
    base = root.parent if root.is_file() else root
    report = CorpusReport()
    files = [root] if root.is_file() else _files(root, report)
    passages: list[Passage] = []
    seen: set[str] = set()
    for path in files:
        rel = str(path.relative_to(base))
        why_out = next((why for out, why in left_out.items() if path.resolve().is_relative_to(out)), None)
        if why_out is not None:
            report.skipped.append((rel, why_out))
            continue
        if path.suffix.lower() not in SUFFIXES:
            report.skipped.append((rel, f"unsupported file type '{path.suffix or '(none)'}'"))
            continue
        found: list[Passage] = []  # a file that fails to read counts not at all
        bad_rows: list[str] = []
        try:
            for title, text, fields, own_title in _documents(path, bad_rows):
                # "title" is never a field name (record_fields leaves it out), so it cannot collide here
                identity = {**fields, "title": title} if own_title else fields
                for i, chunk in enumerate(chunk_words(text, chunk_size)):
                    found.append(Passage(passage_id(rel, chunk, identity), chunk, rel, title, i, fields))
        except (CorpusError, OSError) as err:
            report.skipped.append((rel, str(err)))
            report.unread.append(rel)
            continue
        # the file is spared as a whole: which earlier passages its bad rows held cannot be told
        if bad_rows:
            report.unread.append(rel)
        report.skipped.extend((rel, f"{why}: skipped") for why in bad_rows[:MAX_BAD_ROWS])
        if len(bad_rows) > MAX_BAD_ROWS:
            report.skipped.append((rel, f"and {len(bad_rows) - MAX_BAD_ROWS} more such lines: skipped"))
        if not found:
            if not bad_rows:
                report.skipped.append((rel, "empty (no text)"))
            continue
        report.files_read += 1
        for passage in found:
            if passage.id not in seen:  # the same text twice in one file is one passage
                seen.add(passage.id)
                passages.append(passage)
    report.passages = len(passages)
    report.skipped.sort(key=lambda entry: Path(entry[0]))  # the walk's skips and the reads' in one path order
    return passages, report
