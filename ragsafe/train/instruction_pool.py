"""Instruction pools for training under varied instructions (`ragsafe train --query-instructions`).

A pool is a JSON file: {"instructions": ["...", ""], "description": "..."} or a bare list of strings;
"" stands for the bare query. Shipped pools live in `corpora/instructions/` and are named by stem."""

from __future__ import annotations

import json
from pathlib import Path

POOL_DIR = Path(__file__).resolve().parents[2] / "corpora" / "instructions"


class InstructionPoolError(ValueError):
    pass


def known_pools() -> list[str]:
    return sorted(p.stem for p in POOL_DIR.glob("*.json"))


def read_instruction_pool(name_or_path: str | Path) -> list[str]:
    """The pool's instructions, or an InstructionPoolError naming what is wrong with the file."""
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        shipped = POOL_DIR / f"{name_or_path}.json"
        if path.suffix or len(path.parts) > 1 or not shipped.is_file():
            raise InstructionPoolError(
                f"No instruction pool '{name_or_path}': not a file, nor one of the shipped pools "
                f"({', '.join(known_pools()) or 'none'})."
            )
        path = shipped
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InstructionPoolError(f"Instruction pool {path} is not valid JSON: {err}") from err
    pool = raw.get("instructions") if isinstance(raw, dict) else raw
    if not isinstance(pool, list) or not pool or not all(isinstance(i, str) for i in pool):
        raise InstructionPoolError(
            f'Instruction pool {path}: needs a non-empty list of strings, as {{"instructions": [...]}} or a bare list.'
        )
    return [i.strip() for i in pool]
