import json

from typer.testing import CliRunner

from ragsafe.cli import app

runner = CliRunner()


def flat(output: str) -> str:
    """The output without rich's box and line wrapping, so a message reads as one line."""
    return " ".join(output.replace("│", " ").split())


def test_every_verb_has_help():
    for verb in ["explain", "train", "calibrate", "fit-probe", "index", "search"]:
        result = runner.invoke(app, [verb, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_reindexing_an_unchanged_corpus_loads_no_model(tmp_path, monkeypatch):
    args = ["index", "corpora/demo", "--name", "demo", "--embedders", "gen_asym,bm25", "--index-path", str(tmp_path)]
    # the stored vectors gen_asym needs are the teacher's, so a teacher+bm25 index already holds them
    first = runner.invoke(app, [*args[:4], "--embedders", "teacher,bm25", *args[6:]])
    assert first.exit_code == 0, first.output

    def no_models(*_, **__):
        raise AssertionError("models loaded for a corpus the index already holds")

    monkeypatch.setattr("ragsafe.embedders.registry.build_embedders", no_models)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "added 0" in again.output and "holds 10" in again.output


def test_index_then_search_with_teacher_and_bm25(tmp_path):
    args = ["--index-path", str(tmp_path / "q")]
    first = runner.invoke(app, ["index", "corpora/demo", "--name", "demo", "--embedders", "teacher,bm25", *args])
    assert first.exit_code == 0, first.output
    assert "added 10" in first.output
    again = runner.invoke(app, ["index", "corpora/demo", "--name", "demo", "--embedders", "teacher,bm25", *args])
    assert "added 0" in again.output and "holds 10" in again.output
    for embedder in ["teacher", "bm25"]:
        found = runner.invoke(app, ["search", "demo", "first aid for a burn", "--embedder", embedder, "-k", "2", *args])
        assert found.exit_code == 0, found.output
        assert "burns.md" in found.output


def test_clear_errors(tmp_path):
    args = ["--index-path", str(tmp_path / "q")]
    no_folder = runner.invoke(app, ["search", "nope", "x", "--embedder", "teacher", *args])
    assert no_folder.exit_code == 2 and "holds no index" in flat(no_folder.output)
    assert not (tmp_path / "q").exists()  # searching made no empty index folder
    (tmp_path / "q").mkdir()
    missing = runner.invoke(app, ["search", "nope", "x", "--embedder", "teacher", *args])
    assert missing.exit_code == 1 and "No index named" in missing.output
    for verb in (["search", "nope", "x"], ["audit", "corpora/demo"]):  # refused before any model loads
        zero = runner.invoke(app, [*verb, "-k", "0", *args])
        assert zero.exit_code == 2 and "-k" in zero.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["index", str(tmp_path / "empty"), "--name", "e", "--embedders", "teacher", *args])
    assert empty.exit_code == 1 and "nothing to index" in empty.output
    nowhere = runner.invoke(app, ["index", str(tmp_path / "nowhere"), "--name", "e", *args])
    assert nowhere.exit_code != 0
    bad = runner.invoke(app, ["search", "demo", "x", "--safety", "loud", *args])
    assert bad.exit_code != 0
    for mix in (["--embedder", "teacher", "--query-mix", "1"], ["--embedder", "gen_hybrid", "--query-mix", "-1"]):
        wrong_mix = runner.invoke(app, ["search", "demo", "x", *mix, *args])
        assert wrong_mix.exit_code == 2 and "--query-mix" in wrong_mix.output
    for name in ("teacher", "gen_asym_untrained"):
        no_probe = runner.invoke(app, ["search", "demo", "x", "--embedder", name, "--harm-threshold", "2", *args])
        assert no_probe.exit_code == 2 and "--harm-threshold" in no_probe.output
    both = runner.invoke(app, ["train", "--domain", "medical", "--queries", "x.txt"])
    assert both.exit_code != 0
    (tmp_path / "ckpt").mkdir()
    not_a_checkpoint = runner.invoke(
        app, ["calibrate", "--run-dir", str(tmp_path), "--checkpoint", str(tmp_path / "ckpt")]
    )
    assert not_a_checkpoint.exit_code == 1 and "not a ragsafe" in not_a_checkpoint.output
    no_probe_fit = runner.invoke(app, ["fit-probe", "--checkpoint", str(tmp_path / "ckpt")])
    assert no_probe_fit.exit_code == 1 and "not a ragsafe" in no_probe_fit.output


def test_user_errors_end_in_one_message_not_a_traceback(tmp_path):
    args = ["--index-path", str(tmp_path / "q")]
    unknown = runner.invoke(app, ["index", "corpora/demo", "--name", "d", "--embedders", "teacher,nosuch", *args])
    assert unknown.exit_code == 2 and "unknown embedder" in unknown.output and unknown.exception.__class__ is SystemExit
    zero = runner.invoke(app, ["index", "corpora/demo", "--name", "d", "--chunk-words", "0", *args])
    assert zero.exit_code == 2 and "--chunk-words" in zero.output  # refused, where it used to loop forever
    (tmp_path / "q").mkdir()
    no_bm25 = runner.invoke(app, ["search", "nope", "x", "--embedder", "bm25", *args])
    assert no_bm25.exit_code == 1 and "No index named" in no_bm25.output
    bad_name = runner.invoke(app, ["search", "bad name", "x", "--embedder", "bm25", *args])
    assert bad_name.exit_code == 1 and isinstance(bad_name.exception, SystemExit), bad_name.output
    (tmp_path / "bad.json").write_text('{"query": oops}')
    bad = runner.invoke(app, ["train", "--queries", str(tmp_path / "bad.json"), "--out", str(tmp_path / "run")])
    assert bad.exit_code == 1 and "bad.json is not valid JSON" in bad.output.replace("\n", "")


def test_refused_before_any_model_loads(tmp_path, monkeypatch):
    args = ["--index-path", str(tmp_path / "q")]
    assert runner.invoke(app, ["index", "corpora/demo", "--name", "d", "--embedders", "bm25", *args]).exit_code == 0

    def no_models(*_, **__):
        raise AssertionError("a model loaded for a command that was going to be refused")

    monkeypatch.setattr("ragsafe.embedders.registry.build_embedders", no_models)
    monkeypatch.setattr("ragsafe.embedders.gen.GenEmbedder.load", no_models)
    more = runner.invoke(app, ["index", "corpora/demo", "--name", "d", "--embedders", "bm25,teacher", *args])
    assert more.exit_code == 1 and "not ['teacher']" in flat(more.output) and "new name" in flat(more.output)
    for verb in (["search", "d", "x"], ["index", "corpora/demo", "--name", "d"], ["explain", "x"]):
        gone = runner.invoke(
            app, [*verb, "--checkpoint", str(tmp_path / "nope"), *args[: 2 if verb[0] != "explain" else 0]]
        )
        assert gone.exit_code == 2 and "does not exist" in flat(gone.output), gone.output
    for flag in ("--top-k", "--max-new-tokens"):
        assert runner.invoke(app, ["explain", "x", flag, "0"]).exit_code == 2
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "config.json").write_text('{"safety": {"direction": null}}')  # trained on unlabelled queries
    own = ["--embedder", "gen_asym", "--checkpoint", str(tmp_path / "own"), "--safety", "flag"]
    no_probe = runner.invoke(app, ["search", "d", "x", *own, *args])
    assert no_probe.exit_code == 2 and "ragsafe fit-probe --checkpoint" in flat(no_probe.output), no_probe.output
    unstored = runner.invoke(app, ["search", "d", "x", "--embedder", "llm_mean", *args])
    assert unstored.exit_code == 1 and "has no 'llm_mean' vectors" in flat(unstored.output)
    for mode in ("flag", "suppress"):  # nothing to read the harm probe from: refused, not ignored
        plain = runner.invoke(app, ["search", "d", "x", "--embedder", "teacher", "--safety", mode, *args])
        assert plain.exit_code == 2 and "harm probe" in flat(plain.output)
    (tmp_path / "report").write_text("a file")
    out_is_file = runner.invoke(app, ["audit", "corpora/demo", "--out", str(tmp_path / "report"), *args])
    assert out_is_file.exit_code == 2 and "is a file" in flat(out_is_file.output)
    spaced = runner.invoke(app, ["index", "corpora/demo", "--name", "d", "--embedders", " bm25 , ", *args])
    assert spaced.exit_code == 0 and "added 0" in spaced.output


def test_reindexing_drops_what_changed_or_went_away(tmp_path):
    import shutil

    folder = tmp_path / "docs"
    shutil.copytree("corpora/demo", folder)
    args = ["--index-path", str(tmp_path / "q"), "--embedders", "bm25"]
    first = runner.invoke(app, ["index", str(folder), "--name", "d", *args])
    assert first.exit_code == 0 and "holds 10" in first.output, first.output
    (folder / "paris.txt").unlink()
    (folder / "bread.md").write_text("Sourdough needs a starter, flour, water and salt.")
    again = runner.invoke(app, ["index", str(folder), "--name", "d", *args])
    assert again.exit_code == 0 and "added 1, removed 2 stale" in again.output and "holds 9" in again.output
    paris = runner.invoke(app, ["search", "d", "capital of France", "--embedder", "bm25", "--index-path", args[1]])
    assert paris.exit_code == 0 and "paris.txt" not in paris.output
    kept = runner.invoke(app, ["index", str(folder), "--name", "d", "--no-prune", *args])
    assert kept.exit_code == 0 and "added 0;" in kept.output
    # a file emptied on purpose takes its passages with it; a folder that cannot be reached this time does not
    (folder / "sub").mkdir()
    (folder / "sub" / "kept.txt").write_text("Passages in a folder that is away for one run stay indexed.")
    assert "added 1" in runner.invoke(app, ["index", str(folder), "--name", "d", *args]).output
    (folder / "burns.md").write_text("")
    (folder / "sub").rename(tmp_path / "away")
    (folder / "sub").symlink_to(tmp_path / "away-for-now")  # a share that is not mounted
    blanked = runner.invoke(app, ["index", str(folder), "--name", "d", *args])
    assert blanked.exit_code == 0 and "removed 1 stale" in blanked.output, blanked.output
    search = ["--embedder", "bm25", "--index-path", args[1]]
    assert "burns.md" not in runner.invoke(app, ["search", "d", "burn cool water", *search]).output
    assert "kept.txt" in runner.invoke(app, ["search", "d", "folder away for one run", *search]).output


def test_resume_goes_on_with_the_runs_own_settings(tmp_path, monkeypatch):
    from ragsafe.train import trainer
    from ragsafe.train.config import TrainConfig, write_run_config

    run = tmp_path / "run"
    (tmp_path / "q.txt").write_text("how do tides work\nwhy is the sky blue\nwhat is rust\nhow do bees fly\n")
    write_run_config(TrainConfig(out=run, backbone="smollm2", queries_file=tmp_path / "q.txt", domain=None, steps=7))
    started = []

    class Recorded(Exception):
        pass

    class Recorder:  # stands in for the trainer: this test is about which settings reach it
        def __init__(self, cfg):
            started.append(cfg)

        def run(self, resume):
            raise Recorded

    monkeypatch.setattr(trainer, "Trainer", Recorder)
    again = runner.invoke(app, ["train", "--out", str(run), "--resume", "--steps", "9"])
    assert isinstance(again.exception, Recorded)  # an error inside the run itself keeps its traceback
    cfg = started[0]
    assert (cfg.backbone, cfg.queries_file, cfg.domain, cfg.steps) == ("smollm2", tmp_path / "q.txt", None, 9)
    other = runner.invoke(app, ["train", "--out", str(run), "--resume", "--domain", "medical"])
    assert other.exit_code == 1 and "started with other settings" in " ".join(other.output.split())
    assert len(started) == 1
    # --restart starts over on the run's own settings too (not on the defaults), with what is given on top
    (run / "trainer_state").mkdir()
    restarted = runner.invoke(app, ["train", "--out", str(run), "--restart", "--lr", "1e-3"])
    assert isinstance(restarted.exception, Recorded)
    cfg = started[1]
    assert (cfg.backbone, cfg.queries_file, cfg.steps, cfg.lr) == ("smollm2", tmp_path / "q.txt", 7, 1e-3)
    # a finished run: resuming it with no steps left would only redo its end, with fewer count past it
    (run / "trainer_state" / "progress.json").write_text('{"step": 9}')
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "config.json").write_text("{}")
    for steps in ("9", "5"):
        done = runner.invoke(app, ["train", "--out", str(run), "--resume", "--steps", steps])
        assert done.exit_code == 1 and "give --steps above 9" in flat(done.output), done.output
    assert isinstance(runner.invoke(app, ["train", "--out", str(run), "--resume", "--steps", "12"]).exception, Recorded)


class ModelLoaded(AssertionError):
    pass


def refuse_models(monkeypatch) -> None:
    """Every train/calibrate/fit-probe set-up error below must come before a model loads."""

    def no_models(*_, **__):
        raise ModelLoaded("a model loaded for a command that was going to be refused")

    for target in ("ragsafe.train.trainer.load_backbone", "ragsafe.train.trainer.TeacherEmbedder"):
        monkeypatch.setattr(target, no_models)
    monkeypatch.setattr("ragsafe.embedders.gen.GenEmbedder.load", no_models)


def one_line_error(result, *parts: str, code: int = 1) -> None:
    assert result.exit_code == code and isinstance(result.exception, SystemExit), result.output
    assert all(p in flat(result.output) for p in parts), result.output
    assert "Traceback" not in result.output


def test_train_set_up_errors_come_before_any_model(tmp_path, monkeypatch):
    refuse_models(monkeypatch)
    (tmp_path / "q.txt").write_text("how do tides work\nwhy is the sky blue\nwhat is rust\nhow do bees fly\n")
    args = ["train", "--queries", str(tmp_path / "q.txt"), "--out", str(tmp_path / "run")]
    gone = runner.invoke(app, [*args, "--init-from", str(tmp_path / "nowhere")])
    one_line_error(gone, "nowhere does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(runner.invoke(app, [*args, "--init-from", str(tmp_path / "empty")]), "not a ragsafe checkpoint")
    other = runner.invoke(app, [*args, "--init-from", "default", "--backbone", "smollm2"])
    one_line_error(other, "was trained on backbone", "this run uses 'smollm2'")
    nothing = runner.invoke(app, ["train", "--out", str(tmp_path / "fresh"), "--resume"])
    one_line_error(nothing, f"nothing to resume in {tmp_path / 'fresh'}")
    assert not (tmp_path / "run").exists() and not (tmp_path / "fresh").exists()
    one_line_error(runner.invoke(app, [*args, "--policy", "Be terse.", "--no-policy"]), "not both", code=2)
    one_line_error(runner.invoke(app, [*args, "--policy", " "]), "--no-policy", code=2)
    one_line_error(runner.invoke(app, [*args, "--data-dir", str(tmp_path / "nope")]), "does not exist", code=2)
    (tmp_path / "afile").write_text("x")
    one_line_error(runner.invoke(app, [*args[:3], "--out", str(tmp_path / "afile")]), "is a file", code=2)
    (tmp_path / "run" / "trainer_state").mkdir(parents=True)  # a run's saved steps: never overwritten unasked
    one_line_error(runner.invoke(app, args), "--resume continues it, --restart starts over", code=2)
    one_line_error(runner.invoke(app, [*args, "--resume", "--restart"]), "not both", code=2)


def test_train_names_what_is_wrong_with_a_pack_or_a_query_file(tmp_path, monkeypatch):
    refuse_models(monkeypatch)
    out = ["--out", str(tmp_path / "run")]
    (tmp_path / "strings.json").write_text(json.dumps({"name": "x", "queries": ["a.jsonl"]}))
    (tmp_path / "list.json").write_text("[1]")
    strings = runner.invoke(app, ["train", "--domain", str(tmp_path / "strings.json"), *out])
    one_line_error(strings, '"queries" entry 1 must be an object')
    listed = runner.invoke(app, ["train", "--domain", str(tmp_path / "list.json"), *out])
    one_line_error(listed, "must be a JSON object")
    missing = runner.invoke(app, ["train", "--domain", str(tmp_path / "none.json"), *out])
    one_line_error(missing, "none.json does not exist")
    (tmp_path / "bad.jsonl").write_text('{"q": "x"}\n[1, 2]\n7\n')
    bad = runner.invoke(app, ["train", "--queries", str(tmp_path / "bad.jsonl"), *out])
    one_line_error(bad, "Only 0 usable training queries", "skipped 3 record(s)", "bad.jsonl:2 is a list")
    (tmp_path / "excel.csv").write_bytes("\ufeffquestion\nhow do tides work\n".encode())
    one_line_error(runner.invoke(app, ["train", "--queries", str(tmp_path / "excel.csv"), *out]), "Only 1 usable")
    pool = ["train", "--query-instructions"]
    unknown = runner.invoke(app, [*pool, "nosuch", *out])
    one_line_error(unknown, "Unknown instruction pool 'nosuch'", "Known: varied", code=2)
    one_line_error(runner.invoke(app, [*pool, str(tmp_path / "list.json"), *out]), "list of strings", code=2)


def test_train_shows_skipped_records_as_one_line_and_goes_on(tmp_path, monkeypatch):
    refuse_models(monkeypatch)
    rows = [json.dumps({"query": f"how does engine {i} work"}) for i in range(4)]
    (tmp_path / "q.jsonl").write_text("\n".join([*rows, "[1]"]) + "\n")
    result = runner.invoke(app, ["train", "--queries", str(tmp_path / "q.jsonl"), "--out", str(tmp_path / "run")])
    assert isinstance(result.exception, ModelLoaded)  # it went on to load the backbone
    assert "skipped 1 record(s)" in flat(result.output) and "q.jsonl:5 is a list" in flat(result.output)
    (tmp_path / "no_data").mkdir()  # a data dir without the benchmark files: named, and the run goes on
    args = ["train", "--queries", str(tmp_path / "q.jsonl"), "--out", str(tmp_path / "run2")]
    unchecked = runner.invoke(app, [*args, "--data-dir", str(tmp_path / "no_data")])
    assert isinstance(unchecked.exception, ModelLoaded), unchecked.output
    assert "benchmark file(s) not found in the data dir" in flat(unchecked.output)
    assert "SkippedQueriesWarning" not in result.output


def test_train_count_options_are_bounded(monkeypatch):
    from ragsafe.train import trainer

    def no_run(cfg):
        raise AssertionError(f"a run started with {cfg}")

    monkeypatch.setattr(trainer, "Trainer", no_run)
    for flag, value in [
        ("--max-queries", "0"),
        ("--steps", "-1"),
        ("--head-steps", "-1"),
        ("--batch-size", "0"),
        ("--head-batch-size", "0"),
        ("--gen-batch-size", "0"),
        ("--checkpoint-every", "0"),
        ("--max-new-tokens", "0"),
        ("--lr", "0"),
        ("--lr", "-1e-3"),
        ("--max-minutes", "0"),
        ("--w-recon", "-1"),
    ]:
        result = runner.invoke(app, ["train", flag, value])
        assert result.exit_code == 2 and flag in flat(result.output), (flag, result.output)


def test_train_help_lists_every_shipped_pack():
    from ragsafe.train.domains import known_packs

    shown = flat(runner.invoke(app, ["train", "--help"]).output)
    assert f"({', '.join(known_packs())})" in shown and "broad" in shown


def test_calibrate_and_fit_probe_check_their_folders_first(tmp_path, monkeypatch):
    from ragsafe.model.checkpoint import save_checkpoint
    from ragsafe.model.gen_encoder import GenConfig, GenEncoder
    from ragsafe.testing import tiny_backbone
    from ragsafe.train.config import TrainConfig

    refuse_models(monkeypatch)
    gone = runner.invoke(app, ["calibrate", "--run-dir", str(tmp_path / "nowhere")])
    one_line_error(gone, "nowhere does not exist", code=2)
    card = {"config": TrainConfig(out=tmp_path / "run").to_dict()}
    ckpt = str(save_checkpoint(GenEncoder(tiny_backbone(), GenConfig(out_dim=384)), tmp_path / "c", {"card": card}))
    (tmp_path / "run").mkdir()
    no_answers = runner.invoke(app, ["calibrate", "--run-dir", str(tmp_path / "run"), "--checkpoint", ckpt])
    one_line_error(no_answers, "holds no responses.jsonl")
    for verb in (["fit-probe"], ["calibrate", "--run-dir", str(tmp_path / "run")]):
        absent = runner.invoke(app, [*verb, "--checkpoint", str(tmp_path / "nope")])
        one_line_error(absent, "does not exist", code=2)
    no_pack = runner.invoke(app, ["fit-probe", "--checkpoint", ckpt, "--pack", str(tmp_path / "none.json")])
    one_line_error(no_pack, "none.json does not exist")
    (tmp_path / "strings.json").write_text(json.dumps({"queries": ["a.txt"]}))
    shaped = runner.invoke(app, ["fit-probe", "--checkpoint", ckpt, "--pack", str(tmp_path / "strings.json")])
    one_line_error(shaped, '"queries" entry 1 must be an object')
    (tmp_path / "data").mkdir()
    (tmp_path / "gone.json").write_text(json.dumps({"queries": [{"file": "gone.txt"}]}))
    args = ["--checkpoint", ckpt, "--pack", str(tmp_path / "gone.json"), "--data-dir", str(tmp_path / "data")]
    one_line_error(runner.invoke(app, ["fit-probe", *args]), "Missing data file", "gone.txt")


def test_explain_reports_the_harm_probe_reading(tmp_path, qwen_tiny, tiny_dir, teacher):
    from ragsafe.model.checkpoint import save_checkpoint
    from ragsafe.model.gen_encoder import GenConfig, GenEncoder

    def explain(safety: dict | None) -> str:
        ck = tmp_path / "ck"
        save_checkpoint(GenEncoder(qwen_tiny, GenConfig(out_dim=teacher.dim)), ck, extra={"safety": safety})
        result = runner.invoke(
            app,
            [
                "explain",
                "how do I bake bread",
                "--checkpoint",
                str(ck),
                "--backbone",
                tiny_dir,
                "--max-new-tokens",
                "2",
            ],
        )
        assert result.exit_code == 0, result.output
        return flat(result.output)

    probe = {"kind": "probe", "features": "gen+teacher", "direction": [0.0] * 2 * teacher.dim, "bias": 1.0}
    assert "score 1.00 > threshold 0.00: flagged" in explain(probe | {"threshold": 0.0})
    assert "score 1.00 <= threshold 2.00: not flagged" in explain(probe | {"threshold": 2.0})
    assert "harm probe: none in this checkpoint" in explain(None)


def test_an_interrupted_generation_says_how_to_go_on(tmp_path, monkeypatch):
    from ragsafe.train import trainer

    (tmp_path / "q.txt").write_text("how do tides work\nwhy is the sky blue\nwhat is rust\nhow do bees fly\n")

    class Interrupted:  # stands in for a trainer stopped by Ctrl-C while the backbone answers
        def __init__(self, cfg):
            pass

        def run(self, resume):
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "Trainer", Interrupted)
    result = runner.invoke(app, ["train", "--queries", str(tmp_path / "q.txt"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 130 and f"ragsafe train --out {tmp_path / 'run'} --resume" in flat(result.output)
