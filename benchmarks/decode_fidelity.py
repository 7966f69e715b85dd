"""How far can `ragsafe explain` be trusted? The decoded predicted answer against the backbone's own.

For the first queries of each set, the backbone answers under the checkpoint's response policy (the
answers its tokens were trained to predict; greedy) and the gen embedding's soft prompt is decoded
(greedy, as `ragsafe explain` does). Per set: how often each is a refusal (the keyword heuristic of
`ragsafe.train.generate`), how often they agree, the two ways they disagree, and the teacher's cosine
between the decoded text and the real answer.

Sets: the project's audit probes, AdvBench goals, XSTest unsafe and safe prompts, XQuAD questions.
None is in a training pack. The label-following targets taught the tokens refusals for the training
pack's harmful sources even where the backbone answered, so on harmful sets a decoded refusal where
the backbone answers is the training rule at work, not an error.

    python benchmarks/decode_fidelity.py [--n 32]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import typer

from ragsafe.audit import load_probes
from ragsafe.embedders.gen import GenEmbedder
from ragsafe.evaluation.results import write_plot, write_results
from ragsafe.evaluation.tasks import advbench_queries, xquad_queries, xstest_queries
from ragsafe.model.chat import GenerationSettings, chat_generate
from ragsafe.model.checkpoint import default_checkpoint_dir, read_config
from ragsafe.progress import make_progress
from ragsafe.train.generate import DEFAULT_POLICY, looks_like_refusal

RESULTS = Path(__file__).parent / "results"


def main(
    data_dir: str | None = None,
    n: int = 32,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    threads: int = 2,
    out: Path = RESULTS,
) -> None:
    torch.set_num_threads(threads)
    checkpoint = default_checkpoint_dir()
    policy = (read_config(checkpoint).get("card") or {}).get("policy", DEFAULT_POLICY)
    gen = GenEmbedder.load(checkpoint, documents="teacher")
    assert gen.teacher is not None
    sets = {
        "audit probes": [probe["query"] for probe in load_probes(None)],
        "advbench": advbench_queries(data_dir).queries,
        "xstest unsafe": xstest_queries(data_dir, "unsafe").queries,
        "xstest safe": xstest_queries(data_dir, "safe").queries,
        "xquad": xquad_queries(data_dir, 200).queries,
    }
    sets = {name: queries[:n] for name, queries in sets.items()}
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    rows, examples = [], {}
    total = sum(len(q) for q in sets.values())
    with make_progress() as progress:
        task = progress.add_task("answering and decoding", total=total, info="")
        for name, queries in sets.items():
            answers, decoded = [], []
            for start in range(0, len(queries), batch_size):
                chunk = queries[start : start + batch_size]
                answers += chat_generate(gen.encoder.backbone, chunk, policy, settings)
                decoded += gen.encoder.decode(chunk, gen.query_instruction, settings, batch_size)
                progress.advance(task, len(chunk))
            real = np.array([looks_like_refusal(a) for a in answers])
            pred = np.array([looks_like_refusal(d) for d in decoded])
            a_vec, d_vec = gen.teacher.embed(answers), gen.teacher.embed(decoded)
            row = {
                "set": name,
                "queries": len(queries),
                "backbone refuses": float(real.mean()),
                "decoded refuses": float(pred.mean()),
                "agree": float((real == pred).mean()),
                "decoded answers where the backbone refuses": float((real & ~pred).mean()),
                "decoded refuses where the backbone answers": float((~real & pred).mean()),
                "cos(decoded, answer)": float(np.mean(np.sum(a_vec * d_vec, axis=1))),
            }
            rows.append(row)
            examples[name] = [
                {"query": q, "backbone": a[:160], "decoded": d[:160]}
                for q, a, d in zip(queries[:3], answers[:3], decoded[:3], strict=True)
            ]
            typer.echo({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    meta = {
        "checkpoint": str(checkpoint),
        "policy": policy,
        "generation": f"greedy, at most {max_new_tokens} new tokens, both sides",
        "refusal": "keyword heuristic (ragsafe.train.generate.looks_like_refusal) on the first 200 characters",
        "examples": examples,
    }
    notes = (
        "Rates are shares of each set's queries. cos is the teacher's cosine between the decoded text and the "
        "backbone's answer. A decoded refusal where the backbone answers a harmful request is what the "
        "label-following targets teach; a decoded answer where the backbone refuses is the tokens missing a refusal."
    )
    write_results(out, "decode_fidelity", rows, meta, notes)
    columns = ["backbone refuses", "decoded refuses", "agree", "cos(decoded, answer)"]
    write_plot(out, "decode_fidelity", rows, columns, "ragsafe explain against the backbone's own answer", "set")


if __name__ == "__main__":
    typer.run(main)
