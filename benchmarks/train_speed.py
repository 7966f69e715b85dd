"""Training speed per backbone: responses/s of generation, examples/s of a stage-2 step, and the step
time against its FLOP bound (forward + input-gradient backward of K positions through the backbone).

    python benchmarks/train_speed.py [--backbones default,smollm2]
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import typer

from ragsafe.embedders.teacher import TeacherEmbedder
from ragsafe.evaluation.flops import matmul_gflops, non_embedding_params
from ragsafe.evaluation.results import write_results
from ragsafe.model.backbone import load_backbone
from ragsafe.model.chat import GenerationSettings, chat_generate
from ragsafe.model.gen_encoder import GenConfig, GenEncoder
from ragsafe.train.domains import DomainPack
from ragsafe.train.generate import DEFAULT_POLICY
from ragsafe.train.losses import alignment_loss, contrastive_loss
from ragsafe.train.prefix_store import PrefixStore

RESULTS = Path(__file__).parent / "results"


def main(
    backbones: str = "default,smollm2",
    data_dir: str | None = None,
    gen_batch: int = 32,
    max_new_tokens: int = 40,
    batch_size: int = 16,
    steps: int = 5,
    threads: int = 2,
    out: Path = RESULTS,
) -> None:
    torch.set_num_threads(threads)
    queries = [q.text for q in DomainPack.load("default").collect(data_dir)[0]][: max(gen_batch, batch_size * 2)]
    teacher = TeacherEmbedder()
    rows = []
    for name in backbones.split(","):
        bb = load_backbone(name)
        settings = GenerationSettings(max_new_tokens=max_new_tokens)
        start = time.perf_counter()
        answers = chat_generate(bb, queries[:gen_batch], DEFAULT_POLICY, settings)
        gen_s = time.perf_counter() - start
        encoder = GenEncoder(bb, GenConfig(out_dim=teacher.dim))
        texts = queries[: batch_size * 2]
        start = time.perf_counter()
        store = PrefixStore(encoder, texts, out / ".cache" / f"prefix-{name}", chunk_size=batch_size).build(False)
        prefix_s = time.perf_counter() - start
        targets = torch.from_numpy(teacher.embed(answers[: len(texts)] + [""] * (len(texts) - len(answers))))
        opt = torch.optim.AdamW(encoder.parameters(), lr=1e-4)
        times = []
        for step in range(steps):
            idx = list(range((step % 2) * batch_size, (step % 2 + 1) * batch_size))
            start = time.perf_counter()
            e = encoder.pool(encoder.soft_prompts(store.token_states(idx)))
            loss = alignment_loss(e, targets[idx]) + contrastive_loss(e, targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
        step_s = statistics.median(times)
        gflops = matmul_gflops(bb.dtype, bb.hidden_size)
        tokens = batch_size * encoder.config.num_tokens
        # forward 2*P*tokens, backward to the inputs only (weights frozen) about the same again
        bound = 2 * 2 * non_embedding_params(bb) * tokens / (gflops * 1e9)
        rows.append(
            {
                "backbone": bb.name,
                "generation responses/s": gen_batch / gen_s,
                "generated tokens cap": max_new_tokens,
                "prefix cache examples/s": len(texts) / prefix_s,
                f"stage-2 step s (bs {batch_size})": step_s,
                "stage-2 examples/s": batch_size / step_s,
                "step FLOP bound s": bound,
                "step / bound": step_s / bound,
            }
        )
        typer.echo(rows[-1])
    meta = {
        "generation": f"batch {gen_batch}, greedy, policy prompt, {max_new_tokens} new tokens max",
        "stage-2 step": "K=10 token positions on cached prefixes, forward + backward, align + contrastive",
        "threads": threads,
    }
    write_results(out, "train_speed", rows, meta, "FLOP bound: 4 x non-embedding params x (batch x K) / matmul GFLOPS.")


if __name__ == "__main__":
    typer.run(main)
