"""Benchmark results as tables: one JSON and one markdown file per benchmark, with the machine."""

from __future__ import annotations

import json
import os
import platform
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ragsafe.model.backbone import BackboneError, default_dtype


def _dtype_name() -> str:
    try:
        return str(default_dtype()).removeprefix("torch.")
    except BackboneError as err:  # a mistyped RAGSAFE_DTYPE must not cost a finished run its results
        return f"unknown ({err})"


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
        # the format the backbone runs in unless a script sets one: bf16 moves the vectors a little
        "backbone_dtype": _dtype_name(),
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


def write_plot(
    out_dir: str | Path, name: str, rows: list[dict[str, Any]], columns: list[str], title: str, label: str = "embedder"
) -> Path:
    """`<name>.png`: one group of bars per column (a task or metric), one bar per row (an embedder)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: benchmarks run on servers
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(out_dir) / f"{name}.png"
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(columns) + 3) + 2.5, 4))
    x = np.arange(len(columns))
    colours = plt.get_cmap("tab20" if len(rows) > 10 else "tab10").colors  # one colour per embedder
    for i, row in enumerate(rows):
        values = [row.get(c) if isinstance(row.get(c), (int, float)) else np.nan for c in columns]
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=str(row[label]), color=colours[i % len(colours)])
    ticks = [textwrap.fill(c, 20) for c in columns]  # long metric names would run into each other
    ax.set_xticks(x, ticks, rotation=30 if len(columns) > 4 else 0, ha="right" if len(columns) > 4 else "center")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars stay visible
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
