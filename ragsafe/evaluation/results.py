"""Benchmark results as tables: one JSON and one markdown file per benchmark, with the machine."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def write_results(
    out_dir: str | Path, name: str, rows: list[dict[str, Any]], meta: dict[str, Any], notes: str = ""
) -> tuple[Path, Path]:
    """Write `<name>.json` (rows + meta + machine) and `<name>.md` (a table, the notes, the machine)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = machine()
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps({"rows": rows, "meta": meta, "machine": info}, indent=2, default=str))
    table = pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g")
    machine_line = ", ".join(f"{k}: {v}" for k, v in info.items() if v is not None)
    meta_lines = "\n".join(f"- {k}: {v}" for k, v in meta.items())
    md_path.write_text(f"# {name}\n\n{table}\n\n{notes}\n\n{meta_lines}\n\nMachine: {machine_line}\n")
    return json_path, md_path
