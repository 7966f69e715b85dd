"""Save and load the trained part of a GenEncoder: tokens, R and A (safetensors) + config.json.

The config names the backbone and the fingerprint of its weights; loading on a backbone with another
fingerprint raises CheckpointError instead of producing silently wrong embeddings.
"""

from __future__ import annotations

import json
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from ragsafe.model.backbone import Backbone
from ragsafe.model.gen_encoder import GenConfig, GenEncoder

FORMAT_VERSION = 1
WEIGHTS_FILE = "gen.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, malformed, or belongs to a different backbone."""


def save_checkpoint(encoder: GenEncoder, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `path/gen.safetensors` and `path/config.json` atomically (temp files, then rename)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in encoder.state_dict().items()}
    config = {
        "format_version": FORMAT_VERSION,
        "backbone": {
            "name": encoder.backbone.name,
            "fingerprint": encoder.backbone.fingerprint,
            "hidden_size": encoder.backbone.hidden_size,
        },
        "gen": encoder.config.to_dict(),
        **(extra or {}),
    }
    tmp_weights, tmp_config = path / f"{WEIGHTS_FILE}.tmp", path / f"{CONFIG_FILE}.tmp"
    save_file(tensors, str(tmp_weights))
    tmp_config.write_text(json.dumps(config, indent=2))
    tmp_weights.replace(path / WEIGHTS_FILE)
    tmp_config.replace(path / CONFIG_FILE)
    return path


def write_config(path: str | Path, config: dict[str, Any]) -> None:
    """Replace a checkpoint's config.json atomically (the weights stay as they are)."""
    read_config(path)  # only ever rewrite an existing, valid checkpoint
    tmp = Path(path) / f"{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(config, indent=2))
    tmp.replace(Path(path) / CONFIG_FILE)


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{path} is not a ragsafe checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE}).")
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {err}") from err
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format {config.get('format_version')!r}.")
    return config


def card_teacher(config: dict[str, Any]) -> str | None:
    """The teacher a checkpoint's tokens were trained against, as its training card names it (None: no card)."""
    return (config.get("card") or {}).get("teacher")


def load_checkpoint(path: str | Path, backbone: Backbone) -> GenEncoder:
    """Rebuild a GenEncoder on `backbone` from a checkpoint directory."""
    config = read_config(path)
    expected = config["backbone"]
    if expected["fingerprint"] != backbone.fingerprint:
        raise CheckpointError(
            f"Checkpoint {path} was trained on backbone '{expected['name']}' (fingerprint "
            f"{expected['fingerprint'][:12]}), but the loaded backbone is '{backbone.name}' "
            f"({backbone.fingerprint[:12]}). Load the backbone it was trained on, or train tokens for this one."
        )
    known = {f.name for f in fields(GenConfig)}
    encoder = GenEncoder(backbone, GenConfig(**{k: v for k, v in config["gen"].items() if k in known}))
    state = load_file(str(Path(path) / WEIGHTS_FILE))
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: tensors missing {missing} / unexpected {unexpected}.")
    return encoder


def default_checkpoint_dir() -> Path | None:
    """The checkpoint shipped inside the package for the default backbone, if this build has one."""
    folder = Path(str(resources.files("ragsafe") / "checkpoints" / "default"))
    return folder if (folder / CONFIG_FILE).is_file() else None
