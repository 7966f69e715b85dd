import importlib.util
import os
from pathlib import Path

import pytest
import torch

from ragsafe.testing import tiny_backbone

torch.set_num_threads(2)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def qwen_tiny():
    return tiny_backbone("qwen2")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, qwen_tiny):
    """The tiny random model as a model folder, the way a user names one (`--backbone DIR`)."""
    folder = tmp_path_factory.mktemp("tiny")
    qwen_tiny.model.save_pretrained(folder)
    qwen_tiny.tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def llama_tiny():
    return tiny_backbone("llama")


@pytest.fixture(scope="session", params=["qwen2", "llama"])
def tiny(request, qwen_tiny, llama_tiny):
    return qwen_tiny if request.param == "qwen2" else llama_tiny


@pytest.fixture(scope="session")
def teacher():
    from ragsafe.embedders.teacher import TeacherEmbedder

    return TeacherEmbedder()


@pytest.fixture(autouse=True)
def _isolated_cache(request, tmp_path_factory, monkeypatch):
    # Unit tests never write into (or depend on) the user's backbone cache. Integration tests use it,
    # so the real default backbone is converted once per machine, as for a user.
    if request.node.get_closest_marker("integration") is None:
        monkeypatch.setenv("RAGSAFE_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def benchmark_script():
    """Import a file of benchmarks/ by name: it is a folder of scripts, not a package."""

    def load(name: str):
        path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
