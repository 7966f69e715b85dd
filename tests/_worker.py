"""Subprocess worker for kill -9 tests: runs generation or training on the tiny model and SIGKILLs
itself at a chosen point (after N batches / steps), like a crash or `kill -9` would."""

import os
import signal
import sys
from pathlib import Path

from ragsafe.model.chat import GenerationSettings
from ragsafe.testing import tiny_backbone

SETTINGS = GenerationSettings(max_new_tokens=6, do_sample=True, temperature=1.0, top_p=1.0)


def queries(n: int) -> list[str]:
    return [f"query {i} about topic {i % 7}" for i in range(n)]


def die_after(n: int):
    def hook(done: int) -> None:
        if n and done >= n:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def main() -> None:
    mode, out, kill_at = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    if mode == "generate":
        from ragsafe.train.generate import generate_responses

        generate_responses(
            tiny_backbone(),
            queries(20),
            out,
            "policy",
            SETTINGS,
            batch_size=4,
            on_batch=die_after(kill_at),
            show_progress=False,
        )
    else:
        from ragsafe.embedders.teacher import TeacherEmbedder
        from ragsafe.train.config import TrainConfig
        from ragsafe.train.trainer import Trainer

        qfile = out.parent / "q.txt"
        qfile.write_text("\n".join(queries(16)))
        cfg = TrainConfig(
            out=out,
            queries_file=qfile,
            generation=SETTINGS,
            head_steps=5,
            steps=8,
            batch_size=4,
            checkpoint_every=2,
            warmup=1,
            head_batch_size=8,
        )
        trainer = Trainer(cfg, tiny_backbone(), TeacherEmbedder())
        trainer.on_step = die_after(kill_at)
        trainer.run(resume=mode == "train")
        if trainer.dist:  # record what each rank ended with, for the test to compare
            import hashlib

            digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in trainer.encoder.parameters()))
            (out / f"rank{trainer.rank}.sha").write_text(digest.hexdigest())
            trainer.dist.barrier()


if __name__ == "__main__":
    main()
