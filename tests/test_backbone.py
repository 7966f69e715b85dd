import pytest
import torch

from ragsafe.model.backbone import BackboneError, load_backbone, weights_fingerprint
from ragsafe.testing import tiny_backbone


def test_fingerprint_is_dtype_independent_and_weight_sensitive():
    a = tiny_backbone("qwen2", seed=0)
    assert weights_fingerprint(a.model) == a.fingerprint
    as_bf16 = weights_fingerprint(a.model.to(torch.bfloat16))
    a.model.to(torch.float32)
    # bf16 rounding of fp32 weights is what a bf16 copy stores, so the fingerprint matches
    assert as_bf16 == a.fingerprint
    assert tiny_backbone("qwen2", seed=1).fingerprint != a.fingerprint


def test_local_model_directory_loads_with_same_fingerprint(tmp_path):
    tiny = tiny_backbone("llama")
    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_backbone(str(tmp_path / "m"), dtype=torch.float32)
    assert loaded.fingerprint == tiny.fingerprint
    assert loaded.tokenizer.padding_side == "left"
    assert not any(p.requires_grad for p in loaded.model.parameters())


@pytest.mark.parametrize(
    "spec,message",
    [("", "non-empty"), ("./does/not/exist", "neither"), ("/tmp/none.gguf", "does not exist")],
)
def test_clear_errors(spec, message):
    with pytest.raises(BackboneError, match=message):
        load_backbone(spec)


def test_directory_without_config(tmp_path):
    with pytest.raises(BackboneError, match="no config.json"):
        load_backbone(str(tmp_path))


def test_missing_part_package_says_how_to_install(monkeypatch, tmp_path):
    from ragsafe.model import backbone

    monkeypatch.setattr(backbone, "DEFAULT_PARTS", ["ragsafe_no_such_part_package"])
    with pytest.raises(BackboneError, match="pip install"):
        backbone.assemble_default_gguf(tmp_path / "x.gguf")


def test_hash_mismatch_is_an_error_and_leaves_nothing(monkeypatch, tmp_path):
    from ragsafe.model import backbone

    # Six small fake parts stand in for the real packages; the expected hash is the real one.
    parts = []
    for i in range(1, 7):
        folder = tmp_path / f"p{i}" / "data"
        folder.mkdir(parents=True)
        (folder / f"part{i:02d}.bin").write_bytes(b"not the model")
        parts.append(folder.parent)
    monkeypatch.setattr(backbone, "_package_dir", lambda module: parts[int(module[-1]) - 1])
    monkeypatch.setattr(backbone, "DEFAULT_PARTS", [f"part{i}" for i in range(1, 7)])
    with pytest.raises(BackboneError, match="sha256"):
        backbone.assemble_default_gguf(tmp_path / "out" / "default.gguf")
    assert not list((tmp_path / "out").iterdir())
