import json
import os

import pytest

from ragsafe.corpus import CorpusError, chunk_words, load_corpus, passage_id

DEMO = "corpora/demo"


def test_demo_corpus_reads_every_format():
    passages, report = load_corpus(DEMO)
    assert report.skipped == [] and report.files_read == 8
    sources = {p.source for p in passages}
    assert {"chess.jsonl", "rivers.csv", "bread.md", "paris.txt"} <= sources
    assert any(p.title == "Chess openings" for p in passages)
    assert len({p.id for p in passages}) == len(passages)


def test_ids_are_stable_and_depend_on_source_and_text():
    first, _ = load_corpus(DEMO)
    again, _ = load_corpus(DEMO)
    assert [p.id for p in first] == [p.id for p in again]
    assert passage_id("a.txt", "x") != passage_id("b.txt", "x") != passage_id("a.txt", "y")


def test_chunking_caps_words_and_keeps_everything():
    text = "\n\n".join(" ".join(f"w{p}_{i}" for i in range(30)) for p in range(10))
    chunks = chunk_words(text, 50)
    assert all(len(c.split()) <= 50 for c in chunks)
    assert " ".join(chunks).split() == text.split()
    assert all(len(c.split()) <= 7 for c in chunk_words("word " * 100, 7))


def test_a_chunk_size_below_one_word_is_refused():  # it used to loop forever
    with pytest.raises(CorpusError, match="at least one word"):
        chunk_words("a b c", 0)
    with pytest.raises(CorpusError, match="at least one word"):
        load_corpus("corpora/demo", chunk_size=-5)


def test_bad_files_are_listed_and_skipped(tmp_path):
    (tmp_path / "good.txt").write_text("A fine passage about rivers.")
    (tmp_path / "empty.txt").write_text("   \n")
    (tmp_path / "binary.txt").write_bytes(b"abc\x00\x01\x02")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    (tmp_path / "nocol.csv").write_text("a,b\n1,2\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    unreadable = tmp_path / "locked.md"
    unreadable.write_text("secret")
    unreadable.chmod(0)
    passages, report = load_corpus(tmp_path)
    reasons = dict(report.skipped)
    root = os.geteuid() == 0  # root reads a chmod-0 file; anyone else gets it reported, not a crash
    read = ["bad.jsonl", "good.txt", "locked.md"] if root else ["bad.jsonl", "good.txt"]
    assert [p.source for p in passages] == read  # bad.jsonl's good line is read
    assert "empty" in reasons["empty.txt"] and "binary" in reasons["binary.txt"]
    assert "UTF-8" in reasons["latin1.txt"] and "line 2" in reasons["bad.jsonl"]
    assert "text" in reasons["nocol.csv"] and "unsupported" in reasons["image.png"]
    assert root or "locked.md" in reasons


def test_bad_jsonl_lines_are_skipped_one_by_one_and_listed(tmp_path):
    lines = [json.dumps({"text": f"record {i} about rivers"}) for i in range(3)]
    lines += ["{oops", json.dumps({"title": "no text"})] + ["[1]"] * 6
    (tmp_path / "mixed.jsonl").write_text("\n".join(lines))
    (tmp_path / "all_bad.jsonl").write_text("{oops\n")
    passages, report = load_corpus(tmp_path)
    assert sorted(p.text for p in passages) == [f"record {i} about rivers" for i in range(3)]
    mixed = [why for path, why in report.skipped if path == "mixed.jsonl"]
    assert mixed[0].startswith("line 4 is not valid JSON") and mixed[1].startswith("line 5 has no string 'text'")
    assert len(mixed) == 6 and "3 more" in mixed[-1]  # five listed, the rest counted
    assert [why for path, why in report.skipped if path == "all_bad.jsonl"] == [
        "line 1 is not valid JSON (Expecting property name enclosed in double quotes): skipped"
    ]
    assert report.files_read == 1


def test_byte_order_marks_line_separators_and_multiline_csv_fields(tmp_path):
    bom = "\ufeff"
    (tmp_path / "excel.csv").write_text(bom + 'title,text\nT,"first paragraph\n\nsecond paragraph"\n', newline="")
    (tmp_path / "export.jsonl").write_text(bom + json.dumps({"text": "one\u2028two"}, ensure_ascii=False) + "\n")
    (tmp_path / "note.txt").write_text(bom + "A note.")
    passages, report = load_corpus(tmp_path)
    assert report.skipped == []
    texts = {p.source: p.text for p in passages}
    assert texts == {
        "excel.csv": "first paragraph second paragraph",
        "export.jsonl": "one two",  # one record, not two broken lines (U+2028 is whitespace to the chunker)
        "note.txt": "A note.",
    }
    paragraphs, _ = load_corpus(tmp_path / "excel.csv", chunk_size=2)  # the field's break survives to the chunker
    assert [p.text for p in paragraphs] == ["first paragraph", "second paragraph"]


def test_huge_file_is_chunked(tmp_path):
    (tmp_path / "big.txt").write_text("lorem ipsum dolor sit amet " * 60_000)  # ~1.6 MB, 300k words
    passages, _ = load_corpus(tmp_path, chunk_size=200)
    assert all(len(p.text.split()) <= 200 for p in passages)


def test_missing_corpus_is_an_error(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "nope")


def test_single_file_and_html(tmp_path):
    (tmp_path / "page.html").write_text(
        "<html><head><title>T</title><style>x{}</style></head><body><p>Hello there</p><script>bad()</script></body>"
    )
    passages, _ = load_corpus(tmp_path / "page.html")
    assert passages[0].title == "T" and passages[0].text == "Hello there"
    assert json.dumps(passages[0].metadata)


def test_entries_that_are_not_read_are_listed_not_lost(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    (root / "locked").mkdir(parents=True)
    (root / "good.txt").write_text("A fine passage about rivers.")
    (root / "locked" / "secret.txt").write_text("never listed")
    (root / "dead.txt").symlink_to("nowhere.txt")
    (root / "self").symlink_to("self")
    os.mkfifo(root / "pipe.txt")
    (root / ".hidden-dead").symlink_to("nowhere")  # hidden entries are not documents: left out unlisted
    listing = type(root).iterdir

    def iterdir(path):  # root reads any folder, so the denial is simulated for every user
        if path.name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(type(root), "iterdir", iterdir)
    passages, report = load_corpus(root)
    assert [p.source for p in passages] == ["good.txt"]
    assert report.skipped == [
        ("dead.txt", "broken link (to nowhere.txt, which does not exist)"),
        ("locked", "unreadable folder (Permission denied)"),
        ("pipe.txt", "not a regular file (a FIFO)"),
        ("self", "unreadable link to self (Too many levels of symbolic links)"),
    ]


def test_linked_folders_are_followed_once_and_loops_are_cut(tmp_path):
    root, outside = tmp_path / "corpus", tmp_path / "shared"
    (root / "sub").mkdir(parents=True)
    (outside / "inner").mkdir(parents=True)
    (root / "a.txt").write_text("alpha text")
    (root / "sub" / "b.txt").write_text("beta text")
    (outside / "c.txt").write_text("gamma text")
    (outside / "inner" / "d.txt").write_text("delta text")
    (root / "linked").symlink_to(outside)
    (root / "linked-again").symlink_to(outside)
    (root / "sub" / "up").symlink_to(root)
    (root / "sub-too").symlink_to(root / "sub")
    (outside / "inner" / "top").symlink_to(tmp_path)  # above the corpus: walking it would come back in
    passages, report = load_corpus(root)
    assert [p.source for p in passages] == ["a.txt", "linked/c.txt", "linked/inner/d.txt", "sub/b.txt"]
    assert passages[1].id == passage_id("linked/c.txt", "gamma text")  # named by the path through the link
    assert dict(report.skipped) == {
        "linked-again": "the same folder as linked, read there",
        "linked/inner/top": "link to a folder that holds the corpus (a loop)",
        "sub/up": "link to a folder that holds the corpus (a loop)",
        "sub-too": "the same folder as sub, read there",
    }
    assert [p for p, _ in report.skipped] == ["linked/inner/top", "linked-again", "sub/up", "sub-too"]


def test_record_fields_travel_as_metadata_and_into_the_id(tmp_path, teacher):
    import hashlib

    from ragsafe.index import Index

    rows = [
        {
            "id": "a",
            "text": "The Nile flows north.",
            "url": "https://x/nile",
            "year": 2020,
            "source": "atlas",
            "tags": ["river", "africa"],
        },
        {"text": "Paris is the capital of France.", "url": "https://x/paris", "author": ""},
    ]
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "t.csv").write_text('text,url\n"Chess starts with the opening.",https://x/chess\n')
    (tmp_path / "plain.txt").write_text("A plain passage.")
    passages = {p.text: p for p in load_corpus(tmp_path)[0]}
    nile = passages["The Nile flows north."].metadata
    assert nile["url"] == "https://x/nile" and nile["year"] == 2020 and nile["source"] == "docs.jsonl"
    assert nile["field_source"] == "atlas" and nile["tags"] == '["river", "africa"]'  # never overwrites ragsafe's keys
    assert "author" not in passages["Paris is the capital of France."].metadata  # empty fields are left out
    assert passages["Chess starts with the opening."].metadata["url"] == "https://x/chess"
    # no fields: the id earlier versions gave; a changed field: another passage, so re-indexing replaces it
    plain = passages["A plain passage."]
    assert (
        plain.id
        == hashlib.sha256(b"plain.txt\x00A plain passage.").hexdigest()[:32]
        == passage_id("plain.txt", plain.text)
    )
    assert passage_id("t.csv", "x", {"url": "a"}) != passage_id("t.csv", "x", {"url": "b"}) != passage_id("t.csv", "x")
    with Index("fields", path=tmp_path / "q") as idx:
        idx.add(list(passages.values()), [teacher], show_progress=False)
        hit = idx.search(teacher.encode_queries(["capital of France"])[0], "teacher", k=1)[0]
        assert hit.metadata["url"] == "https://x/paris"


def test_a_records_id_and_own_title_are_part_of_its_passage(tmp_path):
    rows = [
        {"id": "r1", "title": "Doc one", "text": "Shared text."},
        {"id": "r2", "title": "Doc two", "text": "Shared text."},
    ]
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "t.csv").write_text("id,title,text\nX-17,Hello,Some text here\n")
    first = load_corpus(tmp_path)[0]
    shared = [p for p in first if p.text == "Shared text."]
    assert [p.title for p in shared] == ["Doc one", "Doc two"]  # two records, not one merged passage
    assert [p.metadata["field_id"] for p in shared] == ["r1", "r2"]
    assert next(p for p in first if p.source == "t.csv").metadata["field_id"] == "X-17"
    rows[0]["title"] = "Doc one, renamed"  # a new title is a new passage: re-indexing replaces the old one
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    renamed = {p.title: p.id for p in load_corpus(tmp_path)[0]}
    assert renamed["Doc one, renamed"] not in {p.id for p in first} and renamed["Doc two"] == shared[1].id
    (tmp_path / "page.html").write_text("<title>Old</title><p>Body text</p>")
    before = next(p.id for p in load_corpus(tmp_path / "page.html")[0])
    (tmp_path / "page.html").write_text("<title>New</title><p>Body text</p>")
    assert next(p.id for p in load_corpus(tmp_path / "page.html")[0]) != before


def test_only_what_could_not_be_read_is_kept_from_pruning_and_hidden_folders_are_left_out(tmp_path):
    (tmp_path / "empty.txt").write_text("")  # read and found empty: its old passages may go
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01")
    (tmp_path / "rows.jsonl").write_text('{"text": "ok"}\n{oops\n')
    (tmp_path / "dead").symlink_to("nowhere")
    for hidden in (".git/description", ".pytest_cache/README.md", ".venv/lib/LICENSE.txt"):
        (tmp_path / hidden).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / hidden).write_text("not a document")
    passages, report = load_corpus(tmp_path)
    assert [p.source for p in passages] == ["rows.jsonl"]
    assert sorted(report.unread) == ["binary.txt", "dead", "rows.jsonl"]
    assert not any(path.startswith(".") for path, _ in report.skipped)
