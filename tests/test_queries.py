"""Reading training queries and domain packs: skipped records are counted and named, wrong shapes are
one message naming the file and what is wrong (not an AttributeError or a TypeError)."""

import json
import warnings

import pytest

from ragsafe.train.config import TrainConfig
from ragsafe.train.domains import PACK_DIR, PROBE_PACK, DomainError, DomainPack, known_packs
from ragsafe.train.queries import QueryFileError, SkippedQueriesWarning, load_queries, read_queries
from ragsafe.train.trainer import collect_queries

BAD_JSONL = '{"q": "x"}\n{"query": "  "}\n{"query": ["x"]}\n[1, 2]\n7\nnull\n'


def test_jsonl_records_without_a_query_are_skipped_and_named(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "first"}\n' + BAD_JSONL + '"a bare string"\n')
    read = load_queries(path)
    assert read.texts == ["first", "a bare string"] and read.skipped == 6
    assert read.examples == [
        f"{path}:2 has no field named one of query, question, instruction, prompt, goal, Behavior, text "
        "(its fields: q)",
        f"{path}:3 has an empty query",
        f"{path}:4 has 'query' that is a list, not a string",
    ]
    line = read.describe()
    assert line.startswith(f"skipped 6 record(s) of {path}") and line.endswith("and 3 more")
    assert read_queries(path) == read.texts  # the plain reader keeps its list of texts


def test_non_object_records_name_their_line_or_entry(tmp_path):
    (tmp_path / "a.jsonl").write_text('[1, 2]\n7\n{"prompt": "ok"}\n')  # used to be an AttributeError
    read = load_queries(tmp_path / "a.jsonl")
    assert read.texts == ["ok"]
    assert read.examples == [
        f"{tmp_path / 'a.jsonl'}:1 is a list, not an object or a string",
        f"{tmp_path / 'a.jsonl'}:2 is a number, not an object or a string",
    ]
    (tmp_path / "b.json").write_text(json.dumps([5, {"goal": "g"}, None, {"turns": [3]}]))
    read = load_queries(tmp_path / "b.json")
    assert read.texts == ["g"] and read.skipped == 3
    assert read.examples[0] == f"{tmp_path / 'b.json'}: entry 1 is a number, not an object or a string"
    assert read.examples[1].endswith("entry 3 is null, not an object or a string")
    assert read.examples[2].endswith("entry 4 has 'turns' that does not start with a string")


def test_a_named_field_is_what_the_reason_names(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"Question": 3}\n{"other": "x"}\n{"Question": "fine"}\n')
    read = load_queries(tmp_path / "a.jsonl", "Question")
    assert read.texts == ["fine"]
    assert read.examples[0].endswith(":1 has 'Question' that is a number, not a string")
    assert read.examples[1].endswith(":2 has no field named 'Question' (its fields: other)")


def test_csv_with_a_byte_order_mark_and_its_column_messages(tmp_path):
    excel = tmp_path / "excel.csv"
    excel.write_bytes("\ufeffquery,id\nhow do tides work,1\n,2\nwhy is the sky blue,3\n".encode())
    read = load_queries(excel)
    assert read.texts == ["how do tides work", "why is the sky blue"]
    assert read.examples == [f"{excel}:3 has an empty query"]  # the file's own line number
    (tmp_path / "bom.jsonl").write_bytes('\ufeff{"query": "with a mark"}\n'.encode())
    assert read_queries(tmp_path / "bom.jsonl") == ["with a mark"]
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(QueryFileError) as err:
        read_queries(tmp_path / "x.csv")
    message = str(err.value)
    assert "has no query column (one named query, question, instruction, prompt, goal, Behavior, text)" in message
    assert "its columns: a, b" in message
    assert "pass the field" not in message  # train has no such option
    with pytest.raises(QueryFileError, match="has no column named 'Behavior'"):
        read_queries(excel, "Behavior")


def test_too_few_queries_says_what_was_skipped(tmp_path):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text(BAD_JSONL)
    with pytest.raises(ValueError, match="Only 0 usable training queries") as err:
        collect_queries(TrainConfig(out=tmp_path / "run", queries_file=qfile, domain=None))
    assert "skipped 6 record(s)" in str(err.value) and f"{qfile}:1 has no field" in str(err.value)


def test_skipped_records_of_a_usable_file_are_a_warning_and_counted(tmp_path):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps({"query": f"how do {w} work"}) + "\n" for w in "abcd") + "[1]\n")
    with pytest.warns(SkippedQueriesWarning, match=r"q.jsonl:5 is a list"):
        queries, counts, _ = collect_queries(TrainConfig(out=tmp_path / "run", queries_file=qfile, domain=None))
    assert len(queries) == 4 and counts[f"skipped records: {qfile}"] == 1
    clean = tmp_path / "clean.txt"
    clean.write_text("a b\n\nc d\ne f\ng h\n")  # a blank .txt line separates, it is no skipped record
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedQueriesWarning)
        collect_queries(TrainConfig(out=tmp_path / "run", queries_file=clean, domain=None))


# ------------------------------------------------------------------ domain packs
def write_pack(tmp_path, raw) -> str:
    path = tmp_path / "pack.json"
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    return str(path)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x", "queries": ["a.jsonl"]}, '"queries" entry 1 must be an object like'),
        (["a.jsonl"], "must be a JSON object"),
        ({"name": "x", "queries": []}, '"queries" must be a non-empty list'),
        ({"name": "x"}, '"queries" must be a non-empty list'),
        ({"queries": [{"label": "benign"}]}, 'entry 1 needs "file"'),
        ({"queries": [{"file": "a", "lable": "benign"}]}, "entry 1: unknown key.s. lable"),
        ({"queries": [{"file": "a"}, {"file": "b", "limit": 0}]}, 'entry 2: "limit" must be a whole number'),
        ({"queries": [{"file": "a", "label": "x:y"}]}, '"label" must be a non-empty word'),
        ({"queries": [{"file": "a", "field": 3}]}, '"field" must be a string, not a number'),
        ({"queries": [{"file": "a"}], "instructions": ["q"]}, '"instructions" must map'),
        ({"queries": [{"file": "a"}], "extra": 1}, "unknown key.s. extra"),
        ("{not json", "is not valid JSON"),
    ],
)
def test_a_wrong_pack_is_one_message_naming_what_is_wrong(tmp_path, raw, message):
    with pytest.raises(DomainError, match=message):
        DomainPack.load(write_pack(tmp_path, raw))


def test_pack_names_and_missing_pack_files(tmp_path):
    with pytest.raises(DomainError, match="pack file .*nope.json does not exist"):
        DomainPack.load(str(tmp_path / "nope.json"))
    with pytest.raises(DomainError, match="Unknown domain 'nope'. Known: broad, default, medical"):
        DomainPack.load("nope")
    assert known_packs() == sorted(p.stem for p in PACK_DIR.glob("*.json")) and "broad" in known_packs()
    for name in [*known_packs(), str(PROBE_PACK)]:  # every shipped pack still loads
        assert DomainPack.load(name).queries
    minimal = DomainPack.load(write_pack(tmp_path, {"queries": [{"file": "a.txt"}]}))
    assert (minimal.name, minimal.queries[0].label) == ("pack", "benign")


def test_a_pack_counts_skipped_records_and_goes_on(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "pool.jsonl").write_text("".join(json.dumps({"text": f"tell me about item {i}"}) + "\n" for i in range(5)))
    with (data / "pool.jsonl").open("a") as f:
        f.write('{"text": null}\n{"id": 3}\n')
    pack = DomainPack.load(write_pack(tmp_path, {"queries": [{"file": "pool.jsonl"}]}))
    pack.check_files(data)
    queries, counts = pack.collect(data)
    assert len(queries) == 5 and counts["skipped records: pool.jsonl"] == 2
    with pytest.raises(FileNotFoundError, match="gone.txt"):
        DomainPack.load(write_pack(tmp_path, {"queries": [{"file": "gone.txt"}]})).check_files(data)
