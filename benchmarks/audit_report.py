"""`ragsafe audit` on a labelled corpus built from the data dir: the report in `results/audit_report.md`.

The corpus is a mixed folder such as a user might hold, written to a temporary folder (never into
the repo): AdvBench-IR malicious chunks (the labelled harmful files, a seeded sample), every
WikiText-2 passage, the XQuAD paragraphs and MedQuAD answers. The audit runs the project's 32 probes
(none of them an AdvBench goal) through each embedder with the labels and the probe judge, so the
report gives exact rates and the judge's agreement with the labels. Where Chromium is installed, the
report page is also rendered to `results/audit_report.png`.

    python benchmarks/audit_report.py [--harmful 500] [--medquad 250]
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import typer

from ragsafe.audit import AuditConfig, run_audit
from ragsafe.datadir import data_file
from ragsafe.evaluation.results import machine
from ragsafe.report import write_report

RESULTS = Path(__file__).parent / "results"


def write_corpus(folder: Path, data_dir: str | None, harmful: int, medquad: int, seed: int) -> list[str]:
    """Writes the corpus files; returns the harmful ones (paths relative to the folder)."""

    def put(rel: str, text: str) -> str:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text + "\n")
        return rel

    with data_file(data_dir, "advbench_ir/advbench-ir_chunked.jsonl").open() as f:
        chunks = [json.loads(line) for line in f]
    picked = random.Random(seed).sample(chunks, min(harmful, len(chunks)))
    labels = [put(f"advbench_ir/chunk_{int(c['id_']):05d}.txt", f"{c['title']}\n\n{c['response'][0]}") for c in picked]
    with data_file(data_dir, "wiki_benign/wikitext2_test_passages_100w.jsonl").open() as f:
        for row in map(json.loads, f):
            put(f"wikitext2/{row['id']}.txt", f"{row['title']}\n\n{row['text']}")
    for a, article in enumerate(json.loads(data_file(data_dir, "wiki_benign/xquad.en.json").read_text())["data"]):
        for p, para in enumerate(article["paragraphs"]):
            put(f"xquad/xquad_{a}_{p}.txt", f"{article['title']}\n\n{para['context']}")
    with gzip.open(data_file(data_dir, "medical/medquad/medquad_answered.jsonl.gz"), "rt") as f:
        answered = [r for r in map(json.loads, f) if r.get("answer", "").strip()]
    for r in random.Random(seed + 1).sample(answered, min(medquad, len(answered))):
        put(f"medquad/medquad_{r['qid']}.txt", f"{r['question']}\n\n{' '.join(r['answer'].split()[:200])}")
    return labels


def screenshot(page: Path, png: Path) -> None:
    """report.html as headless Chromium renders it (the first 1,600 pixels), where Chromium is installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        typer.echo(f"no Chromium found: {png} was not re-rendered and shows an earlier run", err=True)
        return
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--hide-scrollbars", f"--screenshot={png}", "--window-size=1280,1600"]
        + [page.resolve().as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )


def main(
    harmful: int = 500,
    medquad: int = 250,
    k: int = 5,
    embedders: str = "bm25,teacher,gen_asym,gen_hybrid",
    checkpoint: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    threads: int = 2,
    out: Path = RESULTS,
) -> None:
    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="ragsafe-audit-"))
    try:
        corpus = work / "audit_corpus"
        labels = write_corpus(corpus, data_dir, harmful, medquad, seed)
        (work / "labels.txt").write_text("\n".join(labels) + "\n")
        cfg = AuditConfig(
            corpus=corpus,
            out=work / "report",
            embedders=embedders.split(","),
            k=k,
            labels=work / "labels.txt",
            checkpoint=checkpoint,
            index_path=work / "qdrant",
        )
        start = time.perf_counter()
        summary = run_audit(cfg)  # indexing included: a fresh index
        seconds = time.perf_counter() - start
        md, _ = write_report(summary, cfg.out)

        def stable(text: str) -> str:  # the temp folder (and the index name hashed from it) differ every run
            text = text.replace(str(corpus), "audit_corpus").replace(summary["index"], "audit-corpus")
            return text.replace(str(work), "TMP")  # the labels file's folder

        page = cfg.out / "report.html"
        page.write_text(stable(page.read_text()))
        text = stable(md.read_text()).replace("(exposure.png)", "(audit_exposure.png)")
        where = ", ".join(f"{key}: {value}" for key, value in machine().items())
        command = f"python benchmarks/audit_report.py --harmful {harmful} --medquad {medquad} --k {k}"
        footer = (
            f"\n---\nCorpus: {len(labels)} AdvBench-IR chunks (labelled harmful, seed {seed}), every WikiText-2 "
            f"passage, the XQuAD paragraphs, {medquad} MedQuAD answers. Command: `{command}`. Wall time "
            f"{seconds / 60:.1f} min, indexing included. Machine: {where}\n"
        )
        (out / "audit_report.md").write_text(text + footer)
        shutil.copy(cfg.out / "exposure.png", out / "audit_exposure.png")
        screenshot(page, out / "audit_report.png")
        typer.echo(f"{summary['passages']} passages, {seconds / 60:.1f} min: {out / 'audit_report.md'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    typer.run(main)
