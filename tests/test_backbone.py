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


def test_int8_quantizes_gate_and_up_only_and_keeps_the_embedding_close(tmp_path):
    from ragsafe.embedders.gen import GenEmbedder
    from ragsafe.embedders.identity import embedder_identity
    from ragsafe.model.backbone import quantize_int8
    from ragsafe.model.gen_encoder import GenConfig, GenEncoder

    texts = ["How do I bake bread?", "What is the capital of France?", "Tell me about volcanoes."]
    bb = tiny_backbone("qwen2", hidden=64, seed=3)
    # float: the identity is the fingerprint, so caches written before int8 existed keep their keys
    assert bb.identity() == bb.fingerprint and bb.identity(16) == bb.fingerprint[:16]
    plain = GenEmbedder(GenEncoder(bb, GenConfig(out_dim=32)))
    before, plain_identity = plain.encode_queries(texts), embedder_identity(plain, "queries")
    assert quantize_int8(bb) is bb and bb.int8
    mlp = bb.model.model.layers[0].mlp
    assert [type(m) is torch.nn.Linear for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)] == [False, False, True]
    assert type(bb.model.model.layers[1].self_attn.q_proj) is torch.nn.Linear
    after = plain.encode_queries(texts)
    assert not (before == after).all()  # it did change what runs
    assert ((before * after).sum(axis=1) > 0.95).all()
    assert bb.identity() == bb.fingerprint + "|int8"
    assert embedder_identity(plain, "queries") != plain_identity  # cached float vectors are not reused
    quantize_int8(bb)  # twice is once
    assert np_equal(plain.encode_queries(texts), after)
    # a directory saved from float weights loads quantized, with the float fingerprint (checkpoints still fit)
    src = tiny_backbone("llama", seed=4)
    src.model.save_pretrained(tmp_path / "m")
    src.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_backbone(str(tmp_path / "m"), int8=True)
    assert loaded.int8 and loaded.fingerprint == src.fingerprint and loaded.dtype == torch.float32


def np_equal(a, b) -> bool:
    return bool((a == b).all())


def test_int8_refuses_what_it_cannot_quantize_and_training_refuses_int8(tmp_path, teacher):
    from ragsafe.embedders.registry import build_embedders
    from ragsafe.model.backbone import quantize_int8
    from ragsafe.train.config import TrainConfig
    from ragsafe.train.source_probe import refit_probe
    from ragsafe.train.trainer import Trainer, recalibrate

    bf16 = tiny_backbone("qwen2", seed=5)
    bf16.model.to(torch.bfloat16)
    with pytest.raises(BackboneError, match="float32"):
        quantize_int8(bf16)
    with pytest.raises(BackboneError, match="leave dtype out"):
        load_backbone("default", dtype=torch.bfloat16, int8=True)  # before any weights load
    float_backbone = tiny_backbone("qwen2", seed=6)
    with pytest.raises(ValueError, match="quantize_int8"):  # never quantized behind its other users' backs
        build_embedders(["gen_asym_untrained"], backbone=float_backbone, teacher=teacher, int8=True)
    assert not float_backbone.int8
    quantized = quantize_int8(float_backbone)
    (tmp_path / "q.txt").write_text("how do rivers form\n")
    cfg = TrainConfig(out=tmp_path / "run", queries_file=tmp_path / "q.txt", domain=None)
    for fit in (
        lambda: Trainer(cfg, backbone=quantized, teacher=teacher),
        lambda: recalibrate(tmp_path / "ckpt", tmp_path / "run", backbone=quantized),
        lambda: refit_probe("default", backbone=quantized),
    ):
        with pytest.raises(BackboneError, match="without int8"):
            fit()
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_name_that_is_no_local_path_and_no_reachable_hub_id_says_both_in_one_line(monkeypatch):
    from ragsafe.model import backbone

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the hub.\nCheck your internet connection or see ...")

    monkeypatch.setattr(backbone.AutoModelForCausalLM, "from_pretrained", offline)
    with pytest.raises(BackboneError, match="no local file or folder by that name") as caught:
        load_backbone("models/qwen-typo")
    assert "We couldn't connect to the hub." in str(caught.value)
    assert "Check your internet" not in str(caught.value)  # the first line says why; the rest is noise


def test_the_number_format_can_be_fixed_for_numbers_meant_to_compare_across_machines(monkeypatch):
    from ragsafe.model.backbone import default_dtype

    monkeypatch.setenv("RAGSAFE_DTYPE", "float32")
    assert default_dtype() == torch.float32
    monkeypatch.setenv("RAGSAFE_DTYPE", "bf16")
    assert default_dtype() == torch.bfloat16
    monkeypatch.setenv("RAGSAFE_DTYPE", "half")
    with pytest.raises(BackboneError, match="float32 or bfloat16"):
        default_dtype()
