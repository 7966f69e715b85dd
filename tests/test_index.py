import hashlib
import math
import subprocess
import sys
import uuid
from collections import Counter

import numpy as np
import pytest
import torch
from qdrant_client import models

from ragsafe.corpus import load_corpus
from ragsafe.embedders.bm25 import BM25Embedder, bm25_tokenize
from ragsafe.embedders.gen import GenEmbedder
from ragsafe.index import Index, IndexStoreError, point_id
from ragsafe.model.gen_encoder import GenConfig, GenEncoder


@pytest.fixture
def demo():
    return load_corpus("corpora/demo")[0]


def test_index_is_idempotent_and_searchable(tmp_path, demo, teacher):
    idx = Index("demo", path=tmp_path)
    bm25 = BM25Embedder()
    assert idx.add(demo, [teacher, bm25], show_progress=False) == len(demo)
    assert idx.add(demo, [teacher, bm25], show_progress=False) == 0
    assert idx.count() == len(demo)
    hits = idx.search(teacher.encode_queries(["how do I treat a burn"])[0], "teacher", 3)
    assert hits[0].metadata["source"] == "burns.md" and hits[0].score >= hits[1].score
    sparse_hits = idx.search(idx.load_bm25().encode_queries(["capital of France"])[0], "bm25", 2)
    assert sparse_hits[0].metadata["source"] == "paris.txt"
    idx.close()


def bm25_by_hand(passages, stats_from, query: str, k1: float = 1.5, b: float = 0.75) -> dict[str, float]:
    """Okapi BM25 with Qdrant's idf over `passages` and the average length of `stats_from`."""
    docs = {p.id: bm25_tokenize(p.text) for p in passages}
    avgdl = np.mean([len(bm25_tokenize(p.text)) for p in stats_from])
    scores = {}
    for pid, tokens in docs.items():
        score = 0.0
        for term, count in Counter(bm25_tokenize(query)).items():
            n = sum(term in d for d in docs.values())
            tf = tokens.count(term)
            idf = math.log(1 + (len(docs) - n + 0.5) / (n + 0.5))
            score += count * idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(tokens) / avgdl))
        scores[pid] = score
    return scores


def test_bm25_grows_without_touching_stored_vectors(tmp_path, demo, monkeypatch):
    idx = Index("grown", path=tmp_path)
    idx.add(demo[:4], [BM25Embedder()], show_progress=False)
    first = {p.id: p.vector for p in idx.client.scroll("grown", with_vectors=True)[0]}

    def rewrites(*_, **__):
        raise AssertionError("stored vectors were rewritten")

    monkeypatch.setattr(idx.client, "update_vectors", rewrites)
    assert idx.add(demo, [BM25Embedder()], show_progress=False) == len(demo) - 4
    after = {p.id: p.vector for p in idx.client.scroll("grown", with_vectors=True)[0]}
    assert all(after[i] == v for i, v in first.items())
    # idf comes from all the passages now stored; the length normalisation from the first four
    for query in ["how do I treat a burn", "capital of France", "bread dough"]:
        expected = bm25_by_hand(demo, demo[:4], query)
        hits = idx.search(idx.load_bm25().encode_queries([query])[0], "bm25", 5)
        assert hits, query
        for h in hits:
            assert h.score == pytest.approx(expected[h.id], rel=1e-4)
        best = sorted(expected.values(), reverse=True)[: len(hits)]
        assert [h.score for h in hits] == pytest.approx(best, rel=1e-4)
    # an unchanged rerun keeps the stored statistics, and hands them to the embedder it was given
    again = BM25Embedder()
    assert idx.add(demo, [again], show_progress=False) == 0
    assert again.hashed and again.state() == idx.load_bm25().state()
    idx.close()


def legacy_index(name: str, path) -> Index:
    """An index as ragsafe made it before the store applied idf: the vocabulary and idf in its statistics."""
    idx = Index(name, path=path)
    idx.client.create_collection(name, sparse_vectors_config={"bm25": models.SparseVectorParams()})
    return idx


def test_legacy_bm25_grown_in_two_runs_scores_like_one_built_at_once(tmp_path, demo):
    grown, whole = legacy_index("grown", tmp_path / "a"), legacy_index("whole", tmp_path / "b")
    grown.add(demo[:4], [BM25Embedder()], show_progress=False)
    grown.add(demo, [BM25Embedder(hashed=True)], show_progress=False)  # new passages change idf and avgdl
    whole.add(demo, [BM25Embedder()], show_progress=False)
    for query in ["how do I treat a burn", "capital of France", "bread dough"]:
        hits = [
            [(h.id, round(h.score, 5)) for h in idx.search(idx.load_bm25().encode_queries([query])[0], "bm25", 5)]
            for idx in (grown, whole)
        ]
        assert hits[0] == hits[1]
    again = BM25Embedder()
    assert grown.add(demo, [again], show_progress=False) == 0
    assert not again.hashed and again.state() == whole.load_bm25().state()
    grown.close()
    whole.close()


def test_a_legacy_bm25_refresh_killed_midway_is_repaired_by_any_later_run(tmp_path, demo, monkeypatch):
    idx, whole = legacy_index("demo", tmp_path / "a"), legacy_index("whole", tmp_path / "b")
    idx.add(demo[:4], [BM25Embedder()], show_progress=False)

    def killed(*_, **__):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(idx.client, "update_vectors", killed)
        with pytest.raises(KeyboardInterrupt):
            idx.add(demo, [BM25Embedder()], show_progress=False)  # new statistics saved, stored vectors not
    assert not idx.holds(demo[:4], {"bm25"})  # so `ragsafe index` does not skip the repair
    assert idx.add(demo[:4], [BM25Embedder()], show_progress=False) == 0  # nothing new, yet it repairs
    whole.add(demo[:4], [BM25Embedder()], show_progress=False)
    for query in ["how do I treat a burn", "capital of France"]:
        hits = [
            [(h.id, round(h.score, 5)) for h in i.search(i.load_bm25().encode_queries([query])[0], "bm25", 4)]
            for i in (idx, whole)
        ]
        assert hits[0] == hits[1]
    assert idx.holds(demo[:4], {"bm25"})
    idx.close()
    whole.close()


def test_new_passages_must_carry_every_vector_the_index_stores(tmp_path, demo, teacher):
    idx = Index("demo", path=tmp_path)
    idx.add(demo[:5], [teacher, BM25Embedder()], show_progress=False)
    with pytest.raises(IndexStoreError, match=r"also stores \['bm25'\]"):
        idx.add(demo, [teacher], show_progress=False)
    assert idx.add(demo[:5], [teacher], show_progress=False) == 0  # nothing new: a subset is fine
    idx.close()


def test_holds_says_whether_a_rerun_has_anything_to_embed(tmp_path, demo, teacher):
    idx = Index("demo", path=tmp_path)
    assert not idx.holds(demo, {"teacher"})  # no collection yet
    idx.add(demo[:-1], [teacher, BM25Embedder()], show_progress=False)
    assert not idx.holds(demo, {"teacher", "bm25"})  # one passage missing
    idx.add(demo, [teacher, BM25Embedder()], show_progress=False)
    assert idx.holds(demo, {"teacher", "bm25"})
    assert not idx.holds(demo, {"teacher", "llm_mean"})  # a vector the collection does not store
    idx.close()


def test_gen_asym_shares_the_teacher_vectors(tmp_path, demo, teacher, qwen_tiny):
    gen = GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)), documents="teacher", teacher=teacher)
    idx = Index("demo", path=tmp_path)
    idx.add(demo, [teacher, gen], show_progress=False)
    assert set(idx.vector_names()) == {"teacher"}
    assert len(idx.search(gen.encode_queries(["bread"])[0], "teacher", 2)) == 2


class _WrongWidth:
    """An embedder that stores its documents under the teacher's name, at another width."""

    name, sparse, dim = "teacher", False, 8

    def encode_queries(self, texts, instruction=None):
        return np.ones((len(texts), self.dim), dtype=np.float32)

    encode_documents = encode_queries


def test_mismatches_are_clear_errors(tmp_path, demo, teacher, qwen_tiny):
    idx = Index("demo", path=tmp_path)
    idx.add(demo[:2], [teacher], show_progress=False)
    wrong_dim = _WrongWidth()
    with pytest.raises(IndexStoreError, match="dimension 384"):
        idx.add(demo, [wrong_dim], show_progress=False)
    with pytest.raises(IndexStoreError, match=r"not \['bm25'\]"):
        idx.add(demo, [BM25Embedder()], show_progress=False)
    with pytest.raises(IndexStoreError, match="no 'gen' vectors"):
        idx.search(np.zeros(384), "gen", 3)
    with pytest.raises(IndexStoreError, match="no BM25 statistics"):
        idx.load_bm25()
    idx.close()
    with Index("other", path=tmp_path) as other, pytest.raises(IndexStoreError, match="No index named"):
        other.vector_names()
    with pytest.raises(IndexStoreError, match="name must be"):
        Index("bad name!", path=tmp_path)


def test_kill_9_during_indexing_then_rerun_gives_one_point_per_passage(tmp_path):
    script = f"""
import os, signal, sys
from ragsafe.corpus import Passage
from ragsafe.embedders.teacher import TeacherEmbedder
from ragsafe.index import Index
kill = sys.argv[1] == "kill"
passages = [Passage(f"{{i:032x}}", f"passage number {{i}} about topic {{i % 5}}", "x.txt") for i in range(40)]
teacher = TeacherEmbedder()
if kill:  # die during the third batch's embedding, after two batches were upserted
    calls = []
    original = teacher.encode_documents
    def dying(texts):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(texts)
    teacher.encode_documents = dying
idx = Index("k", path={str(tmp_path)!r})
idx.add(passages, [teacher], batch_size=8, show_progress=False)
print(idx.count())
"""
    killed = subprocess.run([sys.executable, "-c", script, "kill"], capture_output=True, text=True)
    assert killed.returncode == -9
    done = subprocess.run([sys.executable, "-c", script, "run"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "40"


def test_prune_drops_only_this_corpus_stale_points_and_legacy_bm25_refits(tmp_path, demo):
    legacy, fresh = legacy_index("demo", tmp_path / "a"), Index("demo", path=tmp_path / "b")
    for idx in (legacy, fresh):
        idx.add(demo[:6], [BM25Embedder()], show_progress=False, corpus="/docs")
        idx.add(demo[6:], [BM25Embedder()], show_progress=False, corpus="/other")
        pruned = idx.prune("/docs", demo[:4])
        assert (pruned.removed, pruned.unmarked) == (2, 0)  # two of this corpus went away; /other is untouched
        assert idx.count() == len(demo) - 2
    # legacy statistics counted the two deleted passages: refitted on what is left, as if built without them
    whole = legacy_index("whole", tmp_path / "c")
    whole.add([*demo[:4], *demo[6:]], [BM25Embedder()], show_progress=False)
    assert legacy.holds(demo[:4], {"bm25"}) and legacy.load_bm25().state() == whole.load_bm25().state()
    assert fresh.holds(demo[:4], {"bm25"})  # the store's idf follows deletions by itself
    for idx in (legacy, fresh, whole):
        idx.close()


def test_index_errors_name_the_cause(tmp_path, demo, teacher):
    with pytest.raises(IndexStoreError, match="Cannot reach the Qdrant server"):
        Index("x", url="http://127.0.0.1:1")
    held = Index("x", path=tmp_path)
    other_process = subprocess.run(
        [sys.executable, "-c", f"from ragsafe.index import Index; Index('y', path={str(tmp_path)!r})"],
        capture_output=True,
        text=True,
    )
    assert other_process.returncode != 0 and "open in another process" in other_process.stderr
    held.add(demo[:3], [teacher], show_progress=False)
    query = teacher.encode_queries(["burn"])
    with pytest.raises(ValueError, match="k must be at least 1"):
        held.search(query[0], "teacher", 0)
    with pytest.raises(IndexStoreError, match="have 384"):
        held.search(query[0][:10], "teacher", 2)
    with pytest.raises(ValueError, match="one query vector at a time"):
        held.search(np.vstack([query, query]), "teacher", 2)
    with pytest.raises(TypeError, match="list of Passage"):
        held.add(None, [teacher])
    held.close()


def test_indexes_of_one_process_share_an_embedded_folder(tmp_path, demo, teacher):
    a, b = Index("a", path=tmp_path), Index("b", path=tmp_path)
    a.add(demo[:2], [teacher], show_progress=False)
    b.add(demo[2:5], [teacher], show_progress=False)
    a.close()
    a.close()  # twice: still releases the shared client only once
    assert b.count() == 3  # b's client outlives a
    b.close()
    again = Index("a", path=tmp_path)  # the last close let the folder go
    assert again.count() == 2
    again.close()


def test_hand_made_passage_ids_map_to_stable_point_ids():
    assert point_id("doc-1") == point_id("doc-1") != point_id("doc-2")
    assert len({point_id(i) for i in ("1", "10", "100", "abc", "abc0")}) == 5  # short hex ids are not padded
    hexed = "0123456789abcdef" * 2
    assert point_id(hexed) == "01234567-89ab-cdef-0123-456789abcdef"  # ragsafe's own ids keep their mapping


def test_an_index_dropped_without_close_lets_its_folder_go(tmp_path, monkeypatch):
    import gc

    monkeypatch.chdir(tmp_path)
    Index("x", path="relative")  # never closed; the path is relative to a folder left below
    monkeypatch.chdir("/")
    gc.collect()
    other_process = subprocess.run(
        [sys.executable, "-c", f"from ragsafe.index import Index; Index('y', path={str(tmp_path / 'relative')!r})"],
        capture_output=True,
        text=True,
    )
    assert other_process.returncode == 0, other_process.stderr


def test_hashed_bm25_vectors_are_scored_by_the_index_not_in_memory():
    from ragsafe.embedders.base import scores

    hashed = BM25Embedder(hashed=True).fit(["a cat sat", "a dog ran"])
    with pytest.raises(ValueError, match="scored by the index"):
        scores(hashed.encode_queries(["cat"]), hashed.encode_documents(["a cat sat"]))


def test_a_passage_two_folders_hold_survives_pruning_one_of_them(tmp_path, demo):
    idx = Index("shared", path=tmp_path)
    idx.add(demo[:4], [BM25Embedder()], show_progress=False, corpus="/a")
    idx.add(demo[2:6], [BM25Embedder()], show_progress=False, corpus="/b")  # demo[2:4] already stored by /a
    assert idx.claim("/b", demo[2:6]) == 2 and idx.claim("/b", demo[2:6]) == 0
    assert idx.prune("/a", demo[:2]).removed == 0  # /a lost demo[2:4]; /b still holds them
    assert idx.count() == 6
    assert idx.prune("/b", demo[4:6]).removed == 2  # now no folder holds them
    assert idx.count() == 4
    # a point an earlier ragsafe marked with one string is read as that one corpus
    idx.client.set_payload("shared", {"corpus": "/a"}, points=[point_id(demo[0].id)], wait=True)
    idx.claim("/c", demo[:1])
    assert idx.prune("/a", []).removed == 1 and idx.prune("/c", []).removed == 1 and idx.count() == 2
    idx.close()


def test_reindexing_adopts_unmarked_points_and_counts_the_rest(tmp_path, demo):
    idx = Index("old", path=tmp_path)
    idx.add(demo[:6], [BM25Embedder()], show_progress=False)  # as an earlier ragsafe did: no corpus mark
    pruned = idx.prune("/docs", demo[:4])
    assert (pruned.removed, pruned.unmarked) == (0, 2)  # the two it cannot place are counted, not deleted
    assert idx.prune("/docs", demo[:3]).removed == 1  # the four it adopted are this corpus's now
    spared = idx.prune("/docs", demo[:1], spare={demo[1].source})
    assert spared.removed == 1 and idx.count() == 6 - 1 - 1  # demo[1]'s file was unreadable: it stays
    idx.close()


def test_an_index_folder_that_is_a_file_or_a_name_that_is_no_string_is_one_clear_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(IndexStoreError, match="is a file"):
        Index("docs", path=tmp_path / "afile")
    with pytest.raises(IndexStoreError, match="Index name must be"):
        Index(123, path=tmp_path / "q")  # type: ignore[arg-type]


def test_ids_that_share_a_hex_prefix_stay_apart_and_a_passage_id_is_its_own_point():
    from ragsafe.corpus import passage_id

    head = "d41d8cd98f00b204e9800998ecf8427e"
    assert point_id(f"{head}-0") != point_id(f"{head}-1") != point_id(head)
    own = passage_id("a.txt", "text")  # ragsafe's own ids keep the points earlier versions gave them
    assert point_id(own) == str(uuid.UUID(hex=own))
    sha256 = hashlib.sha256(b"x").hexdigest()  # so do longer hex ids a user's indexes already hold
    assert point_id(sha256) == str(uuid.UUID(hex=sha256[:32]))


def test_fields_cannot_overwrite_a_passages_own_keys_and_a_repeated_id_counts_once(tmp_path):
    from ragsafe.corpus import Passage

    odd = Passage("f" * 32, "hello world text", "api.txt", fields={"text": "X", "passage_id": "zzz", "source": "y"})
    idx = Index("own", path=tmp_path)
    assert idx.add([odd, odd], [BM25Embedder()], show_progress=False) == 1
    hit = idx.search(idx.load_bm25().encode_queries(["hello"])[0], "bm25", 1)[0]
    assert (hit.id, hit.text, hit.metadata["source"]) == ("f" * 32, "hello world text", "api.txt")
    idx.close()


def test_prune_spares_what_lies_in_a_folder_that_could_not_be_read(tmp_path):
    from ragsafe.corpus import Passage

    def passage(source: str) -> Passage:
        return Passage(hashlib.md5(source.encode()).hexdigest(), f"text of {source}", source)

    a, inside, beside = passage("a.txt"), passage("sub/b.txt"), passage("sub2/c.txt")
    idx = Index("spare", path=tmp_path)
    idx.add([a, inside, beside], [BM25Embedder()], show_progress=False, corpus="/docs")
    assert idx.prune("/docs", [], spare={"."}).removed == 0  # the corpus folder itself could not be read
    pruned = idx.prune("/docs", [a], spare={"sub"})  # "sub" was unreadable this time; "sub2" is gone
    assert pruned.removed == 1 and idx.missing([a, inside, beside]) == [beside]
    idx.close()


def test_a_finalized_index_releasing_its_folder_inside_another_open_does_not_hang(tmp_path, monkeypatch):
    import threading

    import ragsafe.index as index_module

    held = Index("a", path=tmp_path / "a")
    real = index_module.QdrantClient

    def client_whose_making_runs_a_finalizer(*args, **kwargs):
        held.close()  # what the garbage collector may do to a dropped Index, on this very thread
        return real(*args, **kwargs)

    monkeypatch.setattr(index_module, "QdrantClient", client_whose_making_runs_a_finalizer)
    opened = []
    worker = threading.Thread(target=lambda: opened.append(Index("b", path=tmp_path / "b")), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and opened, "opening an index waited on itself"
    opened[0].close()


def test_tied_scores_come_back_in_one_order_after_reopening(tmp_path, teacher):
    """The same text in several files scores alike; which of them makes the top k must not depend on
    whether the collection was just written or reopened (an audit's numbers would change between runs)."""
    from ragsafe.corpus import Passage

    same = "Bread needs flour, water, salt and yeast."
    passages = [Passage(f"p{i:02d}", same, f"copy{i}.txt") for i in (7, 3, 11, 5, 9)]
    passages += [Passage("other", "The Nile is a long river.", "nile.txt")]
    query = teacher.encode_queries(["how to bake bread"])[0]
    with Index("ties", path=tmp_path) as idx:
        idx.add(passages, [teacher], show_progress=False)
        fresh = [h.id for h in idx.search(query, "teacher", 3)]
    with Index("ties", path=tmp_path) as idx:
        reopened = [h.id for h in idx.search(query, "teacher", 3)]
    assert fresh == reopened == ["p03", "p05", "p07"]


def test_documents_the_backbone_embeds_are_stored_per_checkpoint(tmp_path, demo, qwen_tiny):
    """Another checkpoint's queries must never be searched against these documents."""
    from ragsafe.index import storage_name

    first = GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=8)))
    again = GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=8)))
    again.encoder.load_state_dict(first.encoder.state_dict())
    other = GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=8)))
    with torch.no_grad():
        other.encoder.tokens.add_(0.01)
    assert storage_name(first) == storage_name(again) != storage_name(other)
    assert storage_name(first).startswith("gen-")
    with Index("docs", path=tmp_path) as idx:
        idx.add(demo[:2], [first], show_progress=False)
        with pytest.raises(IndexStoreError, match="vectors are fixed"):
            idx.add(demo[:2], [other], show_progress=False)
        with pytest.raises(IndexStoreError, match="another checkpoint"):
            idx.search(other.encode_queries(["bread"])[0], storage_name(other), 2)
        assert len(idx.search(again.encode_queries(["bread"])[0], storage_name(again), 2)) == 2
