import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ragsafe.datadir import DataError, resolve_data_dir
from ragsafe.model.chat import GenerationSettings
from ragsafe.model.gen_encoder import GenConfig, GenEncoder
from ragsafe.train.config import TrainConfig
from ragsafe.train.generate import generate_responses, looks_like_refusal, read_cache
from ragsafe.train.losses import alignment_loss, contrastive_loss, reconstruction_loss
from ragsafe.train.queries import HeldOutUncheckedWarning, Query, QueryFileError, exclude_held_out, read_queries
from ragsafe.train.trainer import Trainer, validation_metrics

WORKER = Path(__file__).parent / "_worker.py"


def has_data() -> bool:
    try:
        resolve_data_dir(None)
        return True
    except DataError:
        return False


# ------------------------------------------------------------------ losses
def test_alignment_loss_is_one_minus_cosine():
    e, t = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert alignment_loss(e, t).item() == pytest.approx((0 + 1) / 2)


def test_contrastive_loss_masks_duplicate_targets():
    e = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # rows 0 and 1 share a target (same refusal)
    masked = contrastive_loss(e, t, temperature=1.0, duplicate_threshold=0.95)
    unmasked = contrastive_loss(e, t, temperature=1.0, duplicate_threshold=2.0)
    assert masked < unmasked
    # by hand for row 2: logits [0, 0.0995..., 1] / 1 -> -log softmax at index 2
    en = torch.nn.functional.normalize(e, dim=-1)
    row2 = en[2] @ torch.nn.functional.normalize(t, dim=-1).T
    assert torch.isclose(
        -torch.log_softmax(row2, 0)[2], torch.nn.functional.cross_entropy((en @ t.T)[2:3], torch.tensor([2]))
    )


def test_reconstruction_targets_end_on_eos_only_where_the_answer_ends(qwen_tiny):
    from ragsafe.train.trainer import reconstruction_ids

    tokenizer, eos = qwen_tiny.tokenizer, qwen_tiny.eos_token_ids[0]
    answer = "the sky is blue because of scattering"
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    n = len(ids)
    assert reconstruction_ids(tokenizer, answer, eos, n + 1, 40) == [*ids, eos]
    assert reconstruction_ids(tokenizer, answer, eos, n - 2, 40) == ids[:-2]  # cut here: no stop taught
    assert reconstruction_ids(tokenizer, answer, eos, n, 40) == ids  # no room for EOS: the first n tokens
    assert reconstruction_ids(tokenizer, answer, eos, 64, n) == ids  # as long as the generation cap: cut there


def test_reconstruction_loss_falls_when_the_soft_prompt_is_optimised(qwen_tiny):
    ids = qwen_tiny.tokenizer(["the cat sat on the mat"], return_tensors="pt")["input_ids"]
    mask = torch.ones_like(ids)
    torch.manual_seed(0)
    # not zeros: RMSNorm makes the loss flat (and undefined in direction) at s = 0
    s = torch.randn(1, 4, qwen_tiny.hidden_size).requires_grad_(True)
    opt = torch.optim.Adam([s], lr=0.1)
    first = None
    for _ in range(40):
        loss = reconstruction_loss(qwen_tiny, s, ids, mask, chunk=3)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.2


def test_validation_metrics_detect_collapse():
    t = torch.eye(4)
    good = validation_metrics(t.clone(), t)
    collapsed = validation_metrics(torch.ones(4, 4), t)
    assert good["val_recall@1"] == 1.0 and good["val_mrr"] == 1.0
    assert collapsed["val_recall@1"] == 0.0 and collapsed["val_pairwise_cos"] == pytest.approx(1.0)


def test_validation_metrics_do_not_count_a_duplicate_answer_against_the_query():
    # queries 0 and 1 got the same stock refusal: each finding it first is a perfect score
    t = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    metrics = validation_metrics(t.clone(), t)
    assert metrics["val_recall@1"] == 1.0 and metrics["val_mrr"] == 1.0
    strict = validation_metrics(t.clone(), t, duplicate_cos=1.5)  # nothing is a duplicate: the tie counts
    assert strict["val_recall@1"] == 0.5


# ------------------------------------------------------------------ queries
def test_read_queries_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"question": "q1"}\n\n{"instruction": "q2"}\n{"turns": ["q3", "x"]}\n')
    (tmp_path / "b.json").write_text(json.dumps(["q4", {"prompt": "q5"}]))
    (tmp_path / "c.csv").write_text("id,goal\n1,q6\n2,\n")
    (tmp_path / "d.txt").write_text("q7\n\n  q8  \n")
    with gzip.open(tmp_path / "e.jsonl.gz", "wt") as f:
        f.write('{"query": "q9"}\n')
    got = [q for name in ["a.jsonl", "b.json", "c.csv", "d.txt", "e.jsonl.gz"] for q in read_queries(tmp_path / name)]
    assert got == [f"q{i}" for i in range(1, 10)]


def test_read_queries_errors(tmp_path):
    with pytest.raises(QueryFileError, match="does not exist"):
        read_queries(tmp_path / "missing.txt")
    (tmp_path / "bad.jsonl").write_text('{"query": "ok"}\n{broken\n')
    with pytest.raises(QueryFileError, match="bad.jsonl:2"):
        read_queries(tmp_path / "bad.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(QueryFileError, match="no query column"):
        read_queries(tmp_path / "x.csv")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(QueryFileError, match="UTF-8"):
        read_queries(tmp_path / "bin.txt")
    (tmp_path / "q.parquet").write_text("x")
    with pytest.raises(QueryFileError, match="unsupported"):
        read_queries(tmp_path / "q.parquet")


def test_every_benchmark_query_set_is_held_out(tmp_path):
    """Reasoning, retrieval and medical questions too, not only the safety prompts; a missing set is skipped."""
    (tmp_path / "reasoning/theoremqa").mkdir(parents=True)
    (tmp_path / "reasoning/theoremqa/theoremqa_test.json").write_text('[{"Question": "What is 2 + 2?"}]')
    (tmp_path / "wiki_benign").mkdir()
    xquad = {"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [{"question": "Who built it?"}]}]}]}
    (tmp_path / "wiki_benign/xquad.en.json").write_text(json.dumps(xquad))
    (tmp_path / "medical/medquad").mkdir(parents=True)
    with gzip.open(tmp_path / "medical/medquad/medquad_answered.jsonl.gz", "wt") as f:
        f.write(json.dumps({"question": "What is (are) Gout ?", "answer": "a"}) + "\n")
    queries = [Query(t, "s") for t in ("what is 2+2", "Who built it", "what is (are) gout?", "how do trees grow")]
    with pytest.warns(HeldOutUncheckedWarning, match="not found in the data dir") as caught:
        kept, dropped = exclude_held_out(queries, tmp_path)
    assert dropped == 3 and [q.text for q in kept] == ["how do trees grow"]
    assert "advbench_ir/harmful_behaviors.csv" in str(caught[0].message)  # the sets it could not check are named


@pytest.mark.skipif(not has_data(), reason="needs the data dir")
def test_benchmark_queries_are_filtered_out():
    goal = read_queries(resolve_data_dir(None) / "advbench_ir/harmful_behaviors.csv", "goal")[0]
    xstest = read_queries(resolve_data_dir(None) / "safety/xstest/xstest_prompts.csv", "prompt")[0]
    variants = [Query(goal.upper() + "!!", "a"), Query(xstest, "b"), Query("how do trees grow", "c")]
    kept, dropped = exclude_held_out(variants, None)
    assert dropped == 2 and [q.text for q in kept] == ["how do trees grow"]


@pytest.mark.skipif(not has_data(), reason="needs the data dir")
def test_default_domain_pack_has_no_benchmark_query():
    from ragsafe.train.domains import DomainPack
    from ragsafe.train.queries import held_out_texts, normalise

    queries, counts = DomainPack.load("default").collect(None)
    banned = held_out_texts(None)
    assert counts["total"] == len(queries) > 1000
    assert not any(normalise(q.text) in banned for q in queries)


# ------------------------------------------------------------------ generation cache
def test_refusal_heuristic():
    assert looks_like_refusal("I'm sorry, but I can't assist with that.")
    assert not looks_like_refusal("Paris is the capital of France.")


def test_generation_cache_is_reused_and_keyed_by_policy(qwen_tiny, tmp_path):
    settings = GenerationSettings(max_new_tokens=4)
    path = tmp_path / "r.jsonl"
    rows = generate_responses(qwen_tiny, ["a", "b", "a"], path, "p1", settings, batch_size=2, show_progress=False)
    assert [r["query"] for r in rows] == ["a", "b", "a"] and len(read_cache(path)) == 2
    calls = []
    generate_responses(qwen_tiny, ["a", "b"], path, "p1", settings, on_batch=calls.append, show_progress=False)
    assert calls == []  # everything cached
    generate_responses(qwen_tiny, ["a"], path, "p2", settings, show_progress=False)
    assert len(read_cache(path)) == 3


def test_an_overlong_query_loses_its_own_end_not_the_assistant_header(qwen_tiny, monkeypatch):
    from ragsafe.model.chat import chat_generate, chat_prompts

    tokenizer = qwen_tiny.tokenizer
    query = " ".join(f"word{i}" for i in range(300))
    [full] = chat_prompts(qwen_tiny, [query], "be brief")
    [cut] = chat_prompts(qwen_tiny, [query], "be brief", max_tokens=60)
    length = len(tokenizer(cut, add_special_tokens=False)["input_ids"])
    assert length <= 60 < len(tokenizer(full, add_special_tokens=False)["input_ids"])
    assert cut.endswith("<|im_start|>assistant\n") and "be brief" in cut and "word0 word1" in cut
    assert chat_prompts(qwen_tiny, ["short"], None, max_tokens=60) == chat_prompts(qwen_tiny, ["short"], None)
    seen = []
    generate = qwen_tiny.model.generate

    def spy(input_ids, **kwargs):
        seen.append(tokenizer.decode(input_ids[0]))
        return generate(input_ids=input_ids, **kwargs)

    monkeypatch.setattr(qwen_tiny.model, "generate", spy)
    chat_generate(qwen_tiny, [query], None, GenerationSettings(max_new_tokens=2, max_prompt_tokens=60))
    assert seen[0].endswith("<|im_start|>assistant\n")  # what the backbone answers from


def test_kill_9_during_generation_then_resume(tmp_path):
    path = tmp_path / "r.jsonl"
    killed = subprocess.run([sys.executable, str(WORKER), "generate", str(path), "2"], capture_output=True)
    assert killed.returncode == -9
    partial = read_cache(path)
    assert 0 < len(partial) < 20
    with path.open("a") as f:
        f.write('{"key": "torn')  # a write cut off mid-line
    done = subprocess.run([sys.executable, str(WORKER), "generate", str(path), "0"], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 20 and len({r["key"] for r in lines}) == 20  # none lost, none duplicated
    assert all(partial[k] == next(r for r in lines if r["key"] == k) for k in partial)


# ------------------------------------------------------------------ trainer
def test_both_losses_fall_on_the_tiny_model(qwen_tiny, teacher, tmp_path):
    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join(f"question {i} about {w}" for i, w in enumerate(["cats", "dogs", "rain", "tea"] * 3)))
    cfg = TrainConfig(
        out=tmp_path / "run",
        queries_file=qfile,
        generation=GenerationSettings(max_new_tokens=10, do_sample=True, temperature=1.0, top_p=1.0),
        head_steps=0,
        steps=25,
        batch_size=8,
        lr=1e-2,
        warmup=1,
        w_recon=1.0,
        val_fraction=0.2,
        checkpoint_every=100,
    )
    trainer = Trainer(cfg, qwen_tiny, teacher)
    trainer.prepare()
    trainer.examples.train_idx = trainer.examples.train_idx[:8]  # full-batch: a deterministic objective
    trainer.train_tokens()
    steps = [h for h in trainer.history if h["stage"] == 2]
    assert steps[-1]["recon"] < steps[0]["recon"] - 0.1
    assert steps[-1]["align"] < steps[0]["align"] - 0.1


def small_config(tmp_path, texts: list[str], **overrides) -> TrainConfig:
    """A few-step run on the tiny model: 5-token answers, batches of 4, a checkpoint every 2 steps."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join(texts))
    settings = dict(generation=GenerationSettings(max_new_tokens=5), batch_size=4, checkpoint_every=2, warmup=1)
    return TrainConfig(out=tmp_path / "run", queries_file=qfile, **{**settings, **overrides})


def test_run_writes_a_loadable_checkpoint_with_a_card(qwen_tiny, teacher, tmp_path):
    from ragsafe.model.checkpoint import load_checkpoint, read_config

    cfg = small_config(tmp_path, [f"tell me about item {i}" for i in range(12)], head_steps=20, steps=3)
    out = Trainer(cfg, qwen_tiny, teacher).run()
    card = read_config(out)["card"]
    assert card["stage2_steps"] == 3 and card["train_examples"] + card["val_examples"] == 12
    assert set(card["validation"]) == {"untrained", "after_heads", "final", "teacher_query_reference"}
    enc = load_checkpoint(out, qwen_tiny)
    assert enc.encode(["x"]).shape == (1, teacher.dim)
    assert read_config(out)["instructions"]["query"]
    config = read_config(out)
    assert "threshold" in config["safety"] and 0.0 <= config["query_mix"]["beta"] <= 2.0
    from dataclasses import replace

    from ragsafe.train.config import read_run_config

    assert read_run_config(cfg.out) == cfg  # what --resume goes on with
    with pytest.raises(ValueError, match="lr: 0.0005 -> 1.0"):  # resuming it as another run is refused
        Trainer(replace(cfg, lr=1.0), qwen_tiny, teacher).run(resume=True)
    Trainer(replace(cfg, steps=4), qwen_tiny, teacher).run(resume=True)  # more steps may be asked for
    assert read_run_config(cfg.out).steps == 4  # and a later plain resume keeps them
    resumed = read_config(out)["card"]
    assert resumed["stage2_steps"] == 4
    # the resumed run overwrote the card; what the first run measured before stage 2 is still on it
    assert resumed["validation"]["after_heads"] == card["validation"]["after_heads"]
    assert resumed["validation"]["untrained"] == card["validation"]["untrained"]
    # an edited query file would re-split train and validation under the saved state: refused
    cfg.queries_file.write_text(cfg.queries_file.read_text() + "\ntell me about item 99")
    with pytest.raises(ValueError, match="queries changed since"):
        Trainer(replace(cfg, steps=4), qwen_tiny, teacher).run(resume=True)


def test_kill_9_during_training_then_resume(tmp_path):
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(WORKER), "train", str(out), "5"], capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    progress = json.loads((out / "trainer_state" / "progress.json").read_text())
    assert progress["step"] == 4  # last checkpoint before the kill (every 2 steps)
    done = subprocess.run([sys.executable, str(WORKER), "train", str(out), "0"], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    history = json.loads((out / "history.json").read_text())
    steps = [h["step"] for h in history if h["stage"] == 2]
    assert steps == list(range(1, 9))  # each step exactly once
    assert (out / "checkpoint" / "gen.safetensors").is_file()


def scripted_evaluation(monkeypatch, scores: list[float]) -> list[float]:
    """Trainer.evaluate returns these validation MRRs in turn (the list empties as they are used)."""

    def evaluate(self) -> dict[str, float]:
        mrr = scores.pop(0)
        return {"val_cos": mrr, "val_recall@1": mrr, "val_mrr": mrr}

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    return scores


def test_a_resumed_run_still_ends_on_the_best_state_of_the_run_before(qwen_tiny, teacher, tmp_path, monkeypatch):
    import signal

    cfg = small_config(tmp_path, [f"what is thing number {i}" for i in range(12)], head_steps=0, steps=6)
    # first run: start 0.5, step 2 0.9 (the best), step 4 0.3, then Ctrl-C; the resumed run: 0.2 on
    # resuming, 0.1 at step 6 and at the end. It must end on the state of step 2.
    scores = scripted_evaluation(monkeypatch, [0.5, 0.9, 0.3, 0.2, 0.1, 0.1])
    first = Trainer(cfg, qwen_tiny, teacher)
    first.prepare()
    at_step_2 = {}

    def on_step(step: int) -> None:
        if step == 2:
            at_step_2.update({k: v.clone() for k, v in first.encoder.state_dict().items()})
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)  # the trainer finishes the step, saves and stops

    first.on_step = on_step
    assert first.train_tokens() == 4
    second = Trainer(cfg, qwen_tiny, teacher)
    second.prepare()
    assert second.train_tokens(resume=True) == 6
    assert scores == [] and second.best_step == 2
    for name, value in second.encoder.state_dict().items():
        assert torch.equal(value, at_step_2[name])


def test_a_save_that_dies_midway_leaves_the_previous_state_in_force(qwen_tiny, teacher, tmp_path, monkeypatch):
    import ragsafe.train.trainer as trainer_module

    cfg = small_config(tmp_path, [f"what is thing number {i}" for i in range(12)], head_steps=0, steps=4)
    trainer = Trainer(cfg, qwen_tiny, teacher)
    trainer.prepare()
    opt = torch.optim.AdamW(trainer.encoder.parameters())
    trainer._save_state(opt, 2, None)
    saved = {k: v.clone() for k, v in trainer.encoder.state_dict().items()}
    with torch.no_grad():
        trainer.encoder.tokens.add_(1.0)

    def dies(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(trainer_module, "save_file", dies)  # the model is written, the optimiser is not
    with pytest.raises(OSError):
        trainer._save_state(opt, 4, None)
    monkeypatch.undo()
    fresh = Trainer(cfg, qwen_tiny, teacher)
    fresh.prepare()
    assert fresh._load_state(torch.optim.AdamW(fresh.encoder.parameters()))[0] == 2
    for name, value in fresh.encoder.state_dict().items():
        assert torch.equal(value, saved[name])


def test_a_state_saved_in_the_older_layout_still_resumes(qwen_tiny, teacher, tmp_path):
    import shutil

    cfg = small_config(tmp_path, [f"what is thing number {i}" for i in range(12)], head_steps=0, steps=4)
    trainer = Trainer(cfg, qwen_tiny, teacher)
    trainer.prepare()
    with torch.no_grad():
        trainer.encoder.tokens.add_(1.0)
    trainer._save_state(torch.optim.AdamW(trainer.encoder.parameters()), 2, None)
    folder = cfg.out / "trainer_state"  # before per-save folders: model/, optimizer file, progress.json
    progress = json.loads((folder / "progress.json").read_text())
    for item in (folder / progress.pop("saved")).iterdir():
        shutil.move(item, folder / item.name)
    (folder / "progress.json").write_text(json.dumps(progress))
    fresh = Trainer(cfg, qwen_tiny, teacher)
    fresh.prepare()
    assert fresh._load_state(torch.optim.AdamW(fresh.encoder.parameters())) == (2, None)
    assert torch.equal(fresh.encoder.tokens, trainer.encoder.tokens)


def test_gen_config_from_trainer_matches_teacher(qwen_tiny, teacher):
    enc = GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim))
    assert enc.encode(["x"]).shape[1] == teacher.dim == 384
    assert np.isfinite(enc.encode([""])).all()


def test_data_parallel_with_torchrun_on_two_cpu_processes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    done = subprocess.run([*cmd, str(WORKER), "ddp", str(out), "0"], capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert (out / "rank0.sha").read_text() == (out / "rank1.sha").read_text()  # ranks stayed in sync
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history if h["stage"] == 2] == list(range(1, 9))


def test_a_non_finite_batch_is_skipped_and_the_best_state_kept(qwen_tiny, teacher, tmp_path):
    cfg = small_config(tmp_path, [f"what is thing number {i}" for i in range(12)], head_steps=0, steps=4)
    trainer = Trainer(cfg, qwen_tiny, teacher)
    trainer.prepare()
    trainer.targets[trainer.examples.train_idx] = float("nan")  # every training batch now has a NaN loss
    before = {k: v.clone() for k, v in trainer.encoder.state_dict().items()}
    assert trainer.train_tokens() == 4
    skipped = [h for h in trainer.history if h.get("skipped")]
    assert len(skipped) == 4
    for name, value in trainer.encoder.state_dict().items():
        assert torch.isfinite(value).all() and torch.equal(value, before[name])


def test_a_run_can_start_from_a_checkpoint(qwen_tiny, teacher, tmp_path):
    from ragsafe.model.checkpoint import load_checkpoint, read_config

    texts = [f"tell me about item {i}" for i in range(12)]
    first = Trainer(small_config(tmp_path / "a", texts, head_steps=20, steps=2), qwen_tiny, teacher).run()
    cfg = small_config(tmp_path / "b", texts, head_steps=20, steps=0, init_from=str(first))
    trainer = Trainer(cfg, qwen_tiny, teacher)
    second = trainer.run()
    assert not [h for h in trainer.history if h["stage"] == 1]  # stage 1 skipped: the heads came with it
    assert read_config(second)["card"]["stage1_head_steps"] == f"none: heads from --init-from {first}"
    for name, value in load_checkpoint(first, qwen_tiny).state_dict().items():
        assert torch.equal(value, load_checkpoint(second, qwen_tiny).state_dict()[name])


def test_varied_instructions_prefix_each_query_with_one_drawn_from_the_pool(qwen_tiny, teacher, tmp_path):
    from ragsafe.train.domains import read_instruction_pool
    from ragsafe.train.trainer import student_texts

    texts = [f"tell me about item {i}" for i in range(40)]
    one = student_texts(texts, "Answer:", [], seed=0)
    assert one == [f"Answer: {t}" for t in texts]
    pool = ["", "Find it:", "Say it:"]
    varied = student_texts(texts, "Answer:", pool, seed=0)
    assert varied == student_texts(texts, "Answer:", pool, seed=0)  # one draw per query, reproducible
    assert varied != student_texts(texts, "Answer:", pool, seed=1)
    used = {s[: -len(t)].strip() for s, t in zip(varied, texts, strict=True)}
    assert used == set(pool) and varied.count(texts[0]) <= 1 and "Answer:" not in used

    cfg = small_config(tmp_path, texts[:12], head_steps=0, steps=0, query_instructions=read_instruction_pool("varied"))
    plain = Trainer(small_config(tmp_path / "plain", texts[:12], head_steps=0, steps=0), qwen_tiny, teacher)
    plain.prepare()
    trainer = Trainer(cfg, qwen_tiny, teacher)
    trainer.prepare()
    ex = trainer.examples
    assert ex.val_idx == plain.examples.val_idx  # the split does not depend on the instructions
    assert len({s[: -len(q.text)] for s, q in zip(ex.student_texts, ex.queries, strict=True)}) > 2
    config = json.loads((trainer.run() / "config.json").read_text())
    assert config["instructions"]["query"] == plain.instructions["query"]  # still what it embeds with


def test_instruction_pools_are_read_or_refused_by_name(tmp_path):
    from ragsafe.train.domains import InstructionPoolError, read_instruction_pool

    shipped = read_instruction_pool("varied")
    assert "" in shipped and len(set(shipped)) >= 5
    (tmp_path / "bare.json").write_text(json.dumps(["Find:", " "]))
    assert read_instruction_pool(tmp_path / "bare.json") == ["Find:", ""]
    for text, why in [("{", "not valid JSON"), ("[]", "non-empty list"), ('{"instructions": [3]}', "strings")]:
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(InstructionPoolError, match=why):
            read_instruction_pool(tmp_path / "bad.json")
    with pytest.raises(InstructionPoolError, match="none.json does not exist"):
        read_instruction_pool(tmp_path / "none.json")
    with pytest.raises(InstructionPoolError, match="Unknown instruction pool 'nosuch'. Known: varied"):
        read_instruction_pool("nosuch")
    with pytest.raises(ValueError, match="query_instructions as strings"):
        TrainConfig(query_instructions=[None])


def test_prefix_store_recomputes_when_the_queries_change(qwen_tiny, tmp_path):
    from ragsafe.train.prefix_store import PrefixStore

    enc = GenEncoder(qwen_tiny, GenConfig(out_dim=8))
    first = [f"question number {i}" for i in range(6)]
    second = ["a different question"] + first[1:]  # same count, the first chunk's content changed
    PrefixStore(enc, first, tmp_path, chunk_size=4).build(show_progress=False)
    reused = PrefixStore(enc, second, tmp_path, chunk_size=4).build(show_progress=False)
    fresh = PrefixStore(enc, second, tmp_path / "fresh", chunk_size=4).build(show_progress=False)
    for got, want in zip(reused.entries, fresh.entries, strict=True):
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, want, strict=True))
    assert len(list(tmp_path.glob("chunk_*.safetensors"))) == 2  # chunk 2 reused; chunk 1 replaced, not kept twice


def test_prefix_store_recomputes_when_the_text_budget_changes(qwen_tiny, tmp_path):
    from ragsafe.train.prefix_store import PrefixStore

    long = [" ".join(f"word{j}" for j in range(40)) + f" {i}" for i in range(4)]
    wide = PrefixStore(GenEncoder(qwen_tiny, GenConfig(out_dim=8)), long, tmp_path).build(show_progress=False)
    short = GenEncoder(qwen_tiny, GenConfig(out_dim=8, max_length=20))  # keeps 10 tokens of each text
    narrow = PrefixStore(short, long, tmp_path).build(show_progress=False)
    assert narrow.entries[0][0][0].shape[1] == 10 < wide.entries[0][0][0].shape[1]


# ------------------------------------------------------------------ --init-from, checked before the models
class NoModels(AssertionError):
    pass


def no_backbone(monkeypatch):
    """Loading a backbone is the mistake these tests catch: the checks must come before it."""

    def refuse(*_, **__):
        raise NoModels("a backbone loaded before the start checkpoint was checked")

    monkeypatch.setattr("ragsafe.train.trainer.load_backbone", refuse)


def four_queries(tmp_path) -> Path:
    qfile = tmp_path / "q.txt"
    qfile.write_text("how do tides work\nwhy is the sky blue\nwhat is rust\nhow do bees fly\n")
    return qfile


def saved_start(tmp_path, backbone, **gen) -> Path:
    from ragsafe.model.checkpoint import save_checkpoint

    return save_checkpoint(GenEncoder(backbone, GenConfig(**{"out_dim": 384, **gen})), tmp_path / "start")


def test_init_from_is_checked_before_any_model_loads(tmp_path, monkeypatch, qwen_tiny):
    from ragsafe.model.checkpoint import CheckpointError

    no_backbone(monkeypatch)
    cfg = TrainConfig(out=tmp_path / "run", queries_file=four_queries(tmp_path), domain=None)
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        Trainer(TrainConfig(**{**cfg.__dict__, "init_from": str(tmp_path / "nowhere")}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is not a ragsafe checkpoint"):
        Trainer(TrainConfig(**{**cfg.__dict__, "init_from": str(tmp_path / "empty")}))
    start = saved_start(tmp_path, qwen_tiny, num_tokens=4, num_compress=4)
    with pytest.raises(ValueError, match="has 4 gen tokens; this run trains 10"):  # a backbone known by its weights
        Trainer(TrainConfig(**{**cfg.__dict__, "init_from": str(start), "backbone": "some/model"}))
    # a checkpoint names its backbone: a run on a backbone known by name is refused before loading it
    with pytest.raises(CheckpointError, match="trained on backbone 'tiny-qwen2.*this run uses 'default'"):
        Trainer(TrainConfig(**{**cfg.__dict__, "init_from": str(start)}))
    with pytest.raises(CheckpointError, match="this run uses 'smollm2'"):
        Trainer(TrainConfig(**{**cfg.__dict__, "init_from": "default", "backbone": "smollm2"}))
    monkeypatch.setattr("ragsafe.train.trainer.default_checkpoint_dir", lambda: None)
    with pytest.raises(ValueError, match="ships no default checkpoint"):
        Trainer(TrainConfig(**{**cfg.__dict__, "init_from": "default"}))
    assert not (tmp_path / "run").exists()  # refused before the run folder appears


def test_init_from_another_backbone_is_refused_before_generation(tmp_path, monkeypatch, qwen_tiny, llama_tiny):
    from types import SimpleNamespace

    from ragsafe.model.checkpoint import CheckpointError

    def no_generation(*_, **__):
        raise AssertionError("answers generated before the start checkpoint was checked")

    monkeypatch.setattr("ragsafe.train.trainer.generate_responses", no_generation)
    start = saved_start(tmp_path, qwen_tiny)
    cfg = TrainConfig(out=tmp_path / "run", queries_file=four_queries(tmp_path), domain=None, init_from=str(start))
    teacher = SimpleNamespace(dim=384)  # only its width is read before `prepare`
    with pytest.raises(CheckpointError, match="not on the loaded"):
        Trainer(cfg, llama_tiny, teacher)
    with pytest.raises(ValueError, match="output width 384; this run's teacher has 8"):
        Trainer(cfg, qwen_tiny, SimpleNamespace(dim=8))
    assert Trainer(cfg, qwen_tiny, teacher).cfg.init_from == str(start)  # the matching start passes


def test_max_queries_zero_is_not_no_limit(tmp_path):
    with pytest.raises(ValueError, match="max_queries >= 1 or None"):
        TrainConfig(out=tmp_path / "run", queries_file=four_queries(tmp_path), domain=None, max_queries=0)


def test_a_config_built_in_python_is_checked_too():
    with pytest.raises(ValueError, match=r"steps >= 0 \(got -1\); lr > 0"):
        TrainConfig(steps=-1, lr=0.0)
    with pytest.raises(ValueError, match="val_fraction"):
        TrainConfig(val_fraction=1.0)
    assert TrainConfig(steps=0, head_steps=0).steps == 0  # a run of stage 1 or stage 2 alone is allowed


def test_resume_needs_something_to_resume(tmp_path):
    from ragsafe.train.config import check_something_to_resume, write_run_config

    with pytest.raises(ValueError, match=f"nothing to resume in {tmp_path / 'run'}"):
        check_something_to_resume(tmp_path / "run")
    (tmp_path / "old" / "trainer_state").mkdir(parents=True)  # a run older than run_config.json
    check_something_to_resume(tmp_path / "old")
    write_run_config(TrainConfig(out=tmp_path / "new"))  # killed while generating: its caches go on
    check_something_to_resume(tmp_path / "new")


def test_a_template_longer_than_the_prompt_budget_is_an_error_not_an_empty_question(qwen_tiny):
    from ragsafe.model.chat import chat_prompts

    with pytest.raises(ValueError, match="max_prompt_tokens"):
        chat_prompts(qwen_tiny, ["what is rust"], "a long policy " * 40, max_tokens=20)


def test_answers_cached_before_long_queries_were_cut_are_not_reused(qwen_tiny):
    import hashlib

    from ragsafe.train.generate import response_key

    settings = GenerationSettings(max_prompt_tokens=60)

    def plain_key(query: str) -> str:  # the key every cache was written with so far
        payload = [qwen_tiny.identity(), "p", settings.to_dict(), query]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    assert response_key(qwen_tiny, "p", settings, "short") == plain_key("short")  # caches stay valid
    long = " ".join(f"word{i}" for i in range(300))
    assert response_key(qwen_tiny, "p", settings, long) != plain_key(long)


def test_a_teacher_that_cannot_be_had_fails_before_the_backbone_loads(tmp_path, monkeypatch):
    import ragsafe.train.trainer as trainer_module
    from ragsafe.embedders.teacher import TeacherError

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone loaded before the teacher was checked")

    monkeypatch.setattr(trainer_module, "load_backbone", no_backbone)
    cfg = small_config(tmp_path, [f"what is thing number {i}" for i in range(12)], teacher=str(tmp_path / "nowhere"))
    with pytest.raises(TeacherError, match="does not exist"):
        Trainer(cfg)
