from typer.testing import CliRunner

from ragsafe.cli import app

runner = CliRunner()


def test_every_verb_has_help():
    for verb in ["explain", "train", "calibrate", "index", "search"]:
        result = runner.invoke(app, [verb, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


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
    missing = runner.invoke(app, ["search", "nope", "x", "--embedder", "teacher", *args])
    assert missing.exit_code == 1 and "No index named" in missing.output
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
    both = runner.invoke(app, ["train", "--domain", "medical", "--queries", "x.txt"])
    assert both.exit_code != 0
    (tmp_path / "ckpt").mkdir()
    not_a_checkpoint = runner.invoke(
        app, ["calibrate", "--run-dir", str(tmp_path), "--checkpoint", str(tmp_path / "ckpt")]
    )
    assert not_a_checkpoint.exit_code == 1 and "not a ragsafe" in not_a_checkpoint.output
