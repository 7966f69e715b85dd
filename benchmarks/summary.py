"""Rewrite the "Current tables" part of benchmarks/README.md from results/*.md, so the README always
shows the tables the last runs wrote (run_all.sh calls this last).

    python benchmarks/summary.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
MARK = "## Current tables"
ORDER = [
    "harmful_retrieval",
    "harmful_retrieval_cuda",
    "harmful_retrieval_cuda_hyde512",
    "harmful_retrieval_first200",
    "harmful_retrieval_int8",
    "reasoning",
    "general",
    "general_int8",
    "general_own_instruction",
    "instructions",
    "query_mix",
    "hybrid_ceiling",
    "medical",
    "safety_filter",
    "probe_labels",
    "probe_layers",
    "response_policy",
    "judge",
    "decode_fidelity",
    "mteb_local",
    "encode_speed",
    "dtype_drift",
    "query_latency_cpu",
    "query_latency_cuda",
    "index_speed",
    "bm25_growth",
    "train_speed",
    "audit_report",
]


def section(path: Path) -> str:
    """A results file's table (and its image, if any) under a heading, without the machine line."""
    lines = path.read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    out = [f"### {path.stem}", "", *table[:40]]
    if len(table) > 40:
        out.append(f"\n({len(table) - 40} more rows in `results/{path.name}`)")
    for image in (path.with_suffix(".png"), path.parent / f"{path.stem.replace('_report', '')}_exposure.png"):
        if image.is_file() and path.stem != "audit_report":
            out += ["", f"![{path.stem}](results/{image.name})"]
    if path.stem == "audit_report":
        out += ["", "![audit report, headless Chromium](results/audit_report.png)"]
    return "\n".join(out) + f"\n\nSettings, notes and machine: `results/{path.name}`.\n"


def main() -> None:
    readme = HERE / "README.md"
    text = readme.read_text()
    head = text.split(MARK)[0].rstrip() + "\n\n"
    files = {p.stem: p for p in (HERE / "results").glob("*.md")}
    names = [n for n in ORDER if n in files] + sorted(n for n in files if n not in ORDER)
    body = "\n".join(section(files[n]) for n in names)
    readme.write_text(f"{head}{MARK}\n\n{body}")


if __name__ == "__main__":
    main()
