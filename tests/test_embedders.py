import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from rank_bm25 import BM25Okapi

from ragsafe.embedders.base import Embedder, scores
from ragsafe.embedders.bm25 import BM25Embedder, bm25_tokenize, term_index
from ragsafe.embedders.gen import GenEmbedder
from ragsafe.embedders.hyde import HyDEEmbedder
from ragsafe.embedders.identity import embedder_identity
from ragsafe.embedders.llm_mean import LLMMeanEmbedder
from ragsafe.model.chat import GenerationSettings, chat_generate_ids
from ragsafe.model.gen_encoder import GenConfig, GenEncoder

DOCS = ["the cat sat on the mat", "paris is the capital of france", "bread needs flour, water and salt", "the cat"]
QUERIES = ["where is paris", "a cat on a mat"]


def all_embedders(backbone, teacher):
    gen = GenEncoder(backbone, GenConfig(out_dim=teacher.dim))
    return [
        GenEmbedder(gen),
        GenEmbedder(gen, documents="teacher", teacher=teacher),
        LLMMeanEmbedder(backbone),
        BM25Embedder(),
        teacher,
        HyDEEmbedder(backbone, teacher, settings=GenerationSettings(max_new_tokens=4)),
    ]


def test_every_embedder_satisfies_the_protocol(qwen_tiny, teacher):
    names = set()
    for emb in all_embedders(qwen_tiny, teacher):
        assert isinstance(emb, Embedder)
        docs, queries = emb.encode_documents(DOCS), emb.encode_queries(QUERIES)
        assert docs.shape == (len(DOCS), emb.dim) and queries.shape == (len(QUERIES), emb.dim)
        assert sp.issparse(docs) == emb.sparse
        s = scores(queries, docs)
        assert s.shape == (2, 4) and np.isfinite(s).all()
        if not emb.sparse:
            assert docs.dtype == np.float32
            assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-4)
        names.add(emb.name)
    assert names == {"gen", "gen_asym", "llm_mean", "bm25", "teacher", "hyde"}


@pytest.mark.parametrize("bad", [[None], [3.5], 17])
def test_every_embedder_rejects_non_strings(qwen_tiny, teacher, bad):
    for emb in all_embedders(qwen_tiny, teacher):
        emb.encode_documents(DOCS)
        with pytest.raises(TypeError):
            emb.encode_queries(bad)


def test_every_embedder_handles_empty_list_empty_string_and_huge_text(qwen_tiny, teacher):
    huge = "lorem ipsum dolor " * 6000  # ~100k characters
    for emb in all_embedders(qwen_tiny, teacher):
        emb.encode_documents(DOCS)
        assert emb.encode_queries([]).shape[0] == 0
        out = emb.encode_queries(["", huge])
        dense = out.toarray() if sp.issparse(out) else out
        assert dense.shape == (2, emb.dim) and np.isfinite(dense).all()


def test_bm25_dot_product_equals_rank_bm25():
    bm25 = BM25Embedder()
    docs = bm25.encode_documents(DOCS)
    reference = BM25Okapi([bm25_tokenize(d) for d in DOCS])
    for query in QUERIES + ["the the cat unknownword"]:
        expected = reference.get_scores(bm25_tokenize(query))
        assert np.allclose(scores(bm25.encode_queries([query]), docs)[0], expected, atol=1e-4)


def test_hashed_bm25_leaves_idf_to_the_store_and_round_trips():
    plain, hashed = BM25Embedder().fit(DOCS), BM25Embedder(hashed=True).fit(DOCS)
    assert hashed.avgdl == plain.avgdl and hashed.idf is None
    docs, query = hashed.encode_documents(DOCS[:1]), hashed.encode_queries(["the the cat unknownword"])
    tokens = bm25_tokenize(DOCS[0])
    # without idf a document weight is the saturated term frequency alone
    tf = tokens.count(tokens[0])
    length_norm = 1 - hashed.b + hashed.b * len(tokens) / hashed.avgdl
    assert docs[0, term_index(tokens[0])] == pytest.approx(tf * (hashed.k1 + 1) / (tf + hashed.k1 * length_norm))
    assert query[0, term_index("the")] == 2 and query[0, term_index("unknownword")] == 1
    again = BM25Embedder().load_state(hashed.state())
    assert again.hashed and (again.encode_documents(DOCS[:1]) != docs).nnz == 0


def test_bm25_needs_a_corpus():
    with pytest.raises(RuntimeError, match="fit"):
        BM25Embedder().encode_queries(["x"])
    with pytest.raises(ValueError, match="at least one document"):
        BM25Embedder().fit(["", "!!"])


def test_teacher_ranks_the_obvious_match_first(teacher):
    s = scores(teacher.encode_queries(QUERIES), teacher.encode_documents(DOCS))
    assert s[0].argmax() == 1 and s[1].argmax() in (0, 3)


def test_hyde_embeds_the_generated_answer(qwen_tiny, teacher):
    hyde = HyDEEmbedder(qwen_tiny, teacher, settings=GenerationSettings(max_new_tokens=5))
    vectors = hyde.encode_queries(QUERIES)
    assert len(hyde.last_answers) == 2
    assert np.allclose(vectors, teacher.embed(hyde.last_answers), atol=1e-6)


def test_hyde_asks_the_backbone_with_its_query_instruction(qwen_tiny, teacher):
    settings = GenerationSettings(max_new_tokens=5)
    plain = HyDEEmbedder(qwen_tiny, teacher, settings=settings)
    instructed = HyDEEmbedder(qwen_tiny, teacher, settings=settings, query_instruction="Name the theorem:")
    instructed.encode_queries(QUERIES)
    assert instructed.last_answers == plain.answers([f"Name the theorem: {q}" for q in QUERIES])
    # cached query vectors never mix instructions; the documents are the teacher's either way
    assert embedder_identity(instructed, "queries") != embedder_identity(plain, "queries")
    assert embedder_identity(instructed, "documents") == embedder_identity(plain, "documents")


def test_gen_asymmetric_needs_a_matching_teacher(qwen_tiny, teacher):
    with pytest.raises(ValueError, match="needs a teacher"):
        GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)), documents="teacher")
    with pytest.raises(ValueError, match="teacher dim"):
        GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=7)), documents="teacher", teacher=teacher)


def test_gen_query_and_document_sides_differ(qwen_tiny):
    gen = GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=16)))
    assert not np.allclose(gen.encode_queries(["bread"]), gen.encode_documents(["bread"]))


def test_chat_generate_ids_can_fix_the_answer_length(qwen_tiny):
    # the latency benchmark replays real answer lengths on random weights through these overrides
    settings = GenerationSettings(max_new_tokens=64)
    for n in (1, 7):
        ids = chat_generate_ids(qwen_tiny, ["How do rivers form?"], None, settings, min_new_tokens=n, max_new_tokens=n)
        assert ids.shape == (1, n)
    free = chat_generate_ids(qwen_tiny, QUERIES, None, GenerationSettings(max_new_tokens=3))
    assert free.shape[0] == 2 and free.shape[1] <= 3


def test_untrained_registry_entries_reuse_the_checkpoints_query_mix(qwen_tiny, teacher, tmp_path):
    from ragsafe.embedders.gen import mix_vectors
    from ragsafe.embedders.registry import build_embedders
    from ragsafe.model.checkpoint import save_checkpoint

    trained = tmp_path / "ck"
    save_checkpoint(GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)), trained, extra={"query_mix": {"beta": 0.4}})
    asym, hybrid = build_embedders(["gen_asym_untrained", "gen_hybrid_untrained"], str(trained), qwen_tiny, teacher)
    assert (asym.name, hybrid.name) == ("gen_asym_untrained", "gen_hybrid_untrained")
    assert hybrid.query_mix == 0.4 and hybrid.documents == "teacher" and asym.query_mix is None
    pure = asym.encode_queries(QUERIES)  # same seed: the same untrained tokens
    expected = mix_vectors(pure, teacher.embed(QUERIES), 0.4)
    np.testing.assert_allclose(hybrid.encode_queries(QUERIES), expected, atol=1e-5)

    bare = tmp_path / "bare"
    save_checkpoint(GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)), bare)
    with pytest.raises(ValueError, match="no fitted query mix"):
        build_embedders(["gen_hybrid_untrained"], str(bare), qwen_tiny, teacher)


def test_gen_hybrid_is_gated_by_the_checkpoints_harm_probe(qwen_tiny, teacher, tmp_path):
    from ragsafe.embedders.gen import mix_vectors
    from ragsafe.embedders.registry import build_embedders
    from ragsafe.model.checkpoint import save_checkpoint

    encoder = GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim))
    pure = GenEmbedder(encoder, documents="teacher", teacher=teacher).encode_gen_queries(QUERIES)
    # a gen-only probe along the first query's gen vector: it scores 1.0 there, less elsewhere
    safety = {"kind": "probe", "direction": pure[0].tolist(), "bias": 0.0, "threshold": 0.999}
    ck = tmp_path / "ck"
    save_checkpoint(encoder, ck, extra={"query_mix": {"beta": 0.4}, "safety": safety})
    gated, ungated = build_embedders(["gen_hybrid", "gen_hybrid_ungated"], str(ck), qwen_tiny, teacher)
    assert gated.query_gate is not None and ungated.query_gate is None
    assert (gated.name, ungated.name) == ("gen_hybrid", "gen_hybrid_ungated")
    mixed = mix_vectors(pure, teacher.embed(QUERIES), 0.4)
    np.testing.assert_allclose(ungated.encode_queries(QUERIES), mixed, atol=1e-5)
    got = gated.encode_queries(QUERIES)
    np.testing.assert_allclose(got[0], pure[0] / np.linalg.norm(pure[0]), atol=1e-5)  # flagged: the answer alone
    np.testing.assert_allclose(got[1], mixed[1], atol=1e-5)  # not flagged: the fitted mix
    assert not np.allclose(got[0], mixed[0], atol=1e-3)
    one = gated.encode_queries(QUERIES[1])  # a bare string is one query, not one per character
    assert one.shape == (1, teacher.dim)
    np.testing.assert_allclose(one[0], got[1], atol=1e-5)

    heavier = GenEmbedder.load(ck, qwen_tiny, teacher=teacher, hybrid=True, query_mix=2.0)  # the user's β
    assert heavier.query_mix == 2.0 and heavier.query_gate is not None
    assert build_embedders(["gen_hybrid"], str(ck), qwen_tiny, teacher, query_mix=2.0)[0].query_mix == 2.0
    got = heavier.encode_queries(QUERIES)
    np.testing.assert_allclose(got[0], pure[0] / np.linalg.norm(pure[0]), atol=1e-5)  # the gate still decides
    np.testing.assert_allclose(got[1], mix_vectors(pure, teacher.embed(QUERIES), 2.0)[1], atol=1e-5)
    with pytest.raises(ValueError, match="needs hybrid=True"):
        GenEmbedder.load(ck, qwen_tiny, teacher=teacher, query_mix=2.0)

    # the user's threshold: above the first query's score nothing is flagged, by the gate or the scorer
    from ragsafe.retrieval import RefusalScorer

    lenient = build_embedders(["gen_hybrid", "gen_asym"], str(ck), qwen_tiny, teacher, harm_threshold=1.5)
    np.testing.assert_allclose(lenient[0].encode_queries(QUERIES), mixed, atol=1e-5)
    for emb in lenient:
        scorer = RefusalScorer.for_embedder(emb)
        assert scorer is not None and scorer.threshold == 1.5
        assert not scorer.blocks(pure, QUERIES).any()
    assert RefusalScorer.for_embedder(gated).threshold == 0.999  # the checkpoint itself is untouched

    no_probe = tmp_path / "no_probe"  # a checkpoint without a probe keeps the plain mix
    save_checkpoint(encoder, no_probe, extra={"query_mix": {"beta": 0.4}})
    assert GenEmbedder.load(no_probe, qwen_tiny, teacher=teacher, hybrid=True).query_gate is None
    with pytest.raises(ValueError, match="no harm probe"):
        GenEmbedder.load(no_probe, qwen_tiny, teacher=teacher, hybrid=True, harm_threshold=1.0)
    with pytest.raises(ValueError, match="needs query_mix"):
        GenEmbedder(encoder, documents="teacher", teacher=teacher, query_gate=gated.query_gate)


def test_the_gate_reads_queries_under_the_instruction_its_probe_was_calibrated_with(qwen_tiny, teacher, tmp_path):
    from ragsafe.embedders.gen import mix_vectors
    from ragsafe.evaluation.doc_cache import encode_queries_cached
    from ragsafe.model.checkpoint import save_checkpoint
    from ragsafe.retrieval import RefusalScorer

    encoder = GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim))
    pure = GenEmbedder(encoder, documents="teacher", teacher=teacher).encode_gen_queries(QUERIES)
    task = "Classify the stance of this argument:"
    moved = GenEmbedder(encoder, query_instruction=task).encode_gen_queries(QUERIES)
    # a threshold the first query passes under the calibrated instruction and not under the task's
    threshold = float(1 + max(moved[0] @ pure[0], pure[1] @ pure[0])) / 2
    assert threshold < 1
    safety = {"kind": "probe", "direction": pure[0].tolist(), "bias": 0.0, "threshold": threshold}
    ck = tmp_path / "ck"
    save_checkpoint(encoder, ck, extra={"query_mix": {"beta": 0.4}, "safety": safety})
    emb = GenEmbedder.load(ck, qwen_tiny, teacher=teacher, hybrid=True)
    emb.query_instruction = task  # what a benchmark's task instruction does
    got = emb.encode_queries(QUERIES)
    np.testing.assert_allclose(got[0], moved[0] / np.linalg.norm(moved[0]), atol=1e-5)  # flagged all the same
    np.testing.assert_allclose(got[1], mix_vectors(moved, teacher.embed(QUERIES), 0.4)[1], atol=1e-5)
    np.testing.assert_allclose(encode_queries_cached(emb, QUERIES, tmp_path / "cache")[0], got, atol=1e-5)
    assert emb.query_instruction == task  # the cache's probe pass put the task instruction back
    scorer = RefusalScorer.from_safety(emb, safety)
    assert scorer.scores(QUERIES)[0] > threshold  # the scorer reads the same view

    passes = []  # under the calibrated instruction, the gate reuses the retrieval pass: one encoder pass
    emb.query_instruction = emb.probe_instruction
    encode = emb.encoder.encode
    emb.encoder.encode = lambda *a, **kw: passes.append(a[1]) or encode(*a, **kw)
    emb.encode_queries(QUERIES)
    assert passes == [emb.probe_instruction]
    emb.query_instruction = task
    emb.encode_queries(QUERIES)
    assert passes[1:] == [task, emb.probe_instruction]


def test_hashed_bm25_merges_terms_that_share_a_number(monkeypatch):
    import ragsafe.embedders.bm25 as bm25_module

    monkeypatch.setattr(bm25_module, "term_index", lambda term: 7)  # every term collides
    hashed = BM25Embedder(hashed=True).fit(DOCS)
    rows = hashed.encode_queries(["the cat sat"])
    assert rows[0].indices.tolist() == [7] and rows[0].data.tolist() == [3.0]


def test_teacher_says_once_when_passages_outrun_its_window(teacher, monkeypatch):
    long = " ".join(["word"] * 400)
    monkeypatch.setattr(teacher, "_cut_warned", False)
    with pytest.warns(UserWarning, match="1 of 2 passages are longer than the teacher's"):
        teacher.encode_documents([long, "short"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        teacher.encode_documents([long])  # said once per embedder


def test_teacher_document_sides_say_so_too(qwen_tiny, teacher, monkeypatch):
    # gen_asym / gen_hybrid / HyDE documents are the teacher's: a cut there must be said as well
    long = " ".join(["word"] * 400)
    for emb in (
        GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)), documents="teacher", teacher=teacher),
        HyDEEmbedder(qwen_tiny, teacher),
    ):
        monkeypatch.setattr(teacher, "_cut_warned", False)  # restored afterwards: the teacher is shared
        with pytest.warns(UserWarning, match="longer than the teacher's"):
            emb.encode_documents([long])


def test_registry_takes_a_comma_string_and_bm25_encodes_nothing_to_nothing(teacher):
    from ragsafe.embedders.registry import build_embedders

    assert [e.name for e in build_embedders("bm25, teacher", teacher=teacher)] == ["bm25", "teacher"]
    empty = BM25Embedder().encode_documents([])
    assert empty.shape[0] == 0 and not BM25Embedder().fitted


def test_a_teacher_path_that_is_not_a_folder_is_one_clear_error(tmp_path):
    from ragsafe.embedders.teacher import TeacherEmbedder, TeacherError

    (tmp_path / "file").write_text("x")
    for spec in (str(tmp_path / "nowhere"), "./nowhere", str(tmp_path / "file")):
        with pytest.raises(TeacherError, match="does not exist"):
            TeacherEmbedder(spec)


def test_an_empty_instruction_is_one_of_its_own_not_the_default(qwen_tiny):
    gen = GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=16)), query_instruction="Retrieve a passage:")
    bare = gen.encoder.encode(["bread"])  # no instruction at all
    assert np.allclose(gen.encode_queries(["bread"], instruction=""), bare, atol=1e-6)
    assert not np.allclose(gen.encode_queries(["bread"]), bare, atol=1e-3)  # None: the embedder's own
    assert gen.probe_differs("") and not gen.probe_differs(None)


def test_gen_documents_say_once_when_they_outrun_the_text_budget(qwen_tiny):
    config = GenConfig(out_dim=16, max_length=40)
    gen = GenEmbedder(GenEncoder(qwen_tiny, config))
    long = " ".join(["word"] * 200)
    budget = config.text_budget  # max_length less the trained tokens
    with pytest.warns(UserWarning, match=f"1 of 2 passages are longer than the gen encoder's {budget} text tokens"):
        gen.encode_documents([long, "short"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gen.encode_documents([long])  # said once per embedder
        GenEmbedder(GenEncoder(qwen_tiny, GenConfig(out_dim=16, max_length=40))).encode_documents(["short"])


def test_gen_load_checks_its_arguments_before_any_backbone_loads(teacher, tmp_path):
    from ragsafe.embedders.registry import build_embedders
    from ragsafe.model.checkpoint import CheckpointError

    nowhere = str(tmp_path / "no-such-model")  # loading it would fail with a BackboneError
    with pytest.raises(ValueError, match="documents must be"):
        GenEmbedder.load(backbone=nowhere, documents="bogus")
    with pytest.raises(ValueError, match="query_mix must be >= 0"):
        GenEmbedder.load(backbone=nowhere, hybrid=True, query_mix=-1.0)
    with pytest.raises(CheckpointError, match="not a ragsafe checkpoint"):
        build_embedders(["gen_asym"], checkpoint=str(tmp_path / "no-ckpt"), backbone=nowhere, teacher=teacher)


def test_a_checkpoint_keeps_the_teacher_it_was_trained_against(qwen_tiny, teacher, tmp_path):
    from ragsafe.embedders.registry import trained_teacher
    from ragsafe.model.checkpoint import save_checkpoint
    from ragsafe.retrieval import RefusalScorer

    encoder = GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim))
    other = tmp_path / "other-teacher"  # a teacher of the same width would pass every shape check
    other.mkdir()
    save_checkpoint(encoder, tmp_path / "ck", extra={"card": {"teacher": str(other)}})
    assert trained_teacher(str(tmp_path / "ck")) == str(other)
    with pytest.raises(ValueError, match="trained against teacher"):
        GenEmbedder.load(tmp_path / "ck", qwen_tiny, documents="teacher", teacher=teacher)
    # a card written on another machine names a folder that is not here: said, not refused
    save_checkpoint(encoder, tmp_path / "away", extra={"card": {"teacher": "/elsewhere/teacher"}})
    with pytest.warns(UserWarning, match="not here to compare"):
        GenEmbedder.load(tmp_path / "away", qwen_tiny, documents="teacher", teacher=teacher)
    save_checkpoint(encoder, tmp_path / "no-card")  # says nothing: the teacher given is taken
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GenEmbedder.load(tmp_path / "no-card", qwen_tiny, documents="teacher", teacher=teacher)
    mine = tmp_path / "mine"
    save_checkpoint(encoder, mine, extra={"card": {"teacher": "minilm"}})
    assert GenEmbedder.load(mine, qwen_tiny, documents="teacher", teacher=teacher).teacher is teacher
    # a probe that does not fit the embedder is an error, not "these tokens carry no probe"
    bad = {"direction": [0.1] * (teacher.dim + 5), "threshold": 0.0, "features": "gen"}
    wrong = GenEmbedder(encoder, documents="teacher", teacher=teacher)
    wrong.safety = bad
    with pytest.raises(ValueError):
        RefusalScorer.for_embedder(wrong)
    wrong.safety = {"query_mix": 0.4}  # no probe at all
    assert RefusalScorer.for_embedder(wrong) is None
    wrong.safety = {"direction": [0.1] * teacher.dim, "features": "gen"}  # a probe with no threshold
    with pytest.raises(ValueError, match="no threshold"):
        RefusalScorer.for_embedder(wrong)


def test_the_identity_of_gen_and_llm_mean_follows_what_moves_their_vectors(qwen_tiny):
    import copy

    import torch

    from ragsafe.embedders.identity import embedder_identity
    from ragsafe.embedders.llm_mean import LLMMeanEmbedder
    from ragsafe.model.backbone import Backbone

    def gen(backbone, **config):
        return embedder_identity(GenEmbedder(GenEncoder(backbone, GenConfig(out_dim=16, **config))))

    half = copy.deepcopy(qwen_tiny.model).to(torch.bfloat16)
    bf16 = Backbone.from_model(qwen_tiny.name, half, qwen_tiny.tokenizer)
    assert bf16.fingerprint == qwen_tiny.fingerprint  # the weights' fingerprint does not see the format
    assert gen(qwen_tiny) == gen(qwen_tiny) != gen(bf16)
    assert gen(qwen_tiny) != gen(qwen_tiny, max_length=40)
    llm = embedder_identity(LLMMeanEmbedder(qwen_tiny))
    assert llm != embedder_identity(LLMMeanEmbedder(qwen_tiny, max_length=40))
    assert llm != embedder_identity(LLMMeanEmbedder(bf16))


def test_scores_take_plain_lists_too():
    assert scores([[1.0, 0.0]], [[1.0, 0.0], [0.0, 2.0]]).tolist() == [[1.0, 0.0]]
