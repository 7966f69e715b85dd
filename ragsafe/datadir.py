"""Where the public benchmark/training data lives: --data-dir, $RAGSAFE_DATA, or ../shared/data.

The data is never copied into the project; every loader takes the directory and names the exact
file it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent


class DataError(FileNotFoundError):
    pass


def resolve_data_dir(path: str | Path | None = None) -> Path:
    candidates = [Path(path)] if path else []
    if not path:
        if os.environ.get("RAGSAFE_DATA"):
            candidates.append(Path(os.environ["RAGSAFE_DATA"]))
        candidates += [Path.cwd() / "../shared/data", _REPO / "../shared/data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(f"No data directory found (tried {tried}). Pass --data-dir or set RAGSAFE_DATA.")


def data_file(data_dir: str | Path | None, relative: str) -> Path:
    """The path of one file of the data dir, or a DataError naming it."""
    path = resolve_data_dir(data_dir) / relative
    if not path.is_file():
        raise DataError(f"Missing data file {path} (expected in the data dir as '{relative}').")
    return path
