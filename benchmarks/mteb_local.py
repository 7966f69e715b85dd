"""ragsafe embedders through `mteb.evaluate` on BIOSSES, read from the local data dir.

Nothing is fetched from a model or data hub: the task overrides `load_data` to read
`sts/biosses/biosses.tsv` from the data dir, and the embedders are ragsafe's own (bundled models).
Each row reports mteb's main score (Spearman of cosine similarity) next to ragsafe's own Spearman,
computed on the very vectors mteb received, as a cross-check of the adapter.

    pip install -e '.[bench]'
    python benchmarks/mteb_local.py [--embedders teacher,gen,llm_mean] [--data-dir ../shared/data]
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Set before mteb/datasets are imported: they read these at import time, and there is no hub here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import mteb  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import typer  # noqa: E402
from datasets import Dataset, DatasetDict  # noqa: E402
from mteb.abstasks.sts import AbsTaskSTS  # noqa: E402
from mteb.models.abs_encoder import AbsEncoder  # noqa: E402
from mteb.models.model_meta import ModelMeta, ScoringFunction  # noqa: E402
from mteb.types import PromptType  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from ragsafe.datadir import data_file  # noqa: E402
from ragsafe.embedders.base import Embedder  # noqa: E402
from ragsafe.evaluation.metrics import pair_cosines, spearman  # noqa: E402
from ragsafe.evaluation.results import write_results  # noqa: E402
from ragsafe.evaluation.tasks import sts  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BIOSSES_FILE = "sts/biosses/biosses.tsv"
# Sparse vectors have no cosine in mteb's STS evaluator; HyDE takes seconds per text.
SKIPPED = {"bm25": "sparse (mteb's STS scoring needs dense vectors)", "hyde": "generates an answer per text (too slow)"}
SKIPPED["hyde_policy"] = SKIPPED["hyde"]


class RagsafeEncoder(AbsEncoder):
    """mteb's encoder protocol over a ragsafe `Embedder`.

    Keeps every array it returns, so a caller can recompute the score from exactly what mteb saw.
    """

    def __init__(self, embedder: Embedder) -> None:
        if embedder.sparse:
            raise ValueError(f"{embedder.name} is sparse; mteb's dense evaluators cannot score it.")
        self.embedder = embedder
        self.encoded: list[np.ndarray] = []
        # ragsafe's dense vectors are L2-normalised, so cosine is the similarity they are trained for.
        self.mteb_model_meta = ModelMeta.create_empty(
            overwrites={
                "name": f"ragsafe/{embedder.name}",
                "revision": "local",
                "embed_dim": embedder.dim,
                "similarity_fn_name": ScoringFunction.COSINE,
                "framework": ["PyTorch"],
                "use_instructions": False,
            }
        )

    def encode(
        self,
        inputs: DataLoader,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        # One call with every text, so the embedder batches (and length-sorts) by its own batch size.
        texts = [text for batch in inputs for text in batch["text"]]
        if prompt_type == PromptType.query:
            vectors = self.embedder.encode_queries(texts)
        else:
            # Symmetric tasks (STS) pass no prompt type: both sides are plain text, i.e. documents.
            vectors = self.embedder.encode_documents(texts)
        vectors = np.asarray(vectors, dtype=np.float32)
        self.encoded.append(vectors)
        return vectors


def sts_metadata(name: str, description: str, source: str) -> mteb.TaskMetadata:
    """Metadata of a local, English, text-to-text STS task scored like mteb's BIOSSES."""
    return mteb.TaskMetadata(
        name=name,
        description=description,
        reference=None,
        # Never loaded: LocalSTSTask.load_data replaces the hub download.
        dataset={"path": source, "revision": "local"},
        type="STS",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="cosine_spearman",  # as mteb's own BIOSSES task
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation=None,
    )


class LocalSTSTask(AbsTaskSTS):
    """An mteb STS task whose pairs are given in memory instead of loaded from the hub.

    Subclasses set `metadata` on the class: mteb drops instance attributes of that name when it
    unloads a task after evaluation.
    """

    def __init__(
        self,
        sentence1: Sequence[str],
        sentence2: Sequence[str],
        scores: Sequence[float],
        min_score: float,
        max_score: float,
    ) -> None:
        if not len(sentence1) == len(sentence2) == len(scores):
            raise ValueError("sentence1, sentence2 and scores must have the same length")
        super().__init__()
        self.min_score, self.max_score = min_score, max_score
        self.pairs = {"sentence1": list(sentence1), "sentence2": list(sentence2), "score": [float(s) for s in scores]}

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        # Overridden so mteb never calls datasets.load_dataset (that would go to the hub).
        self.dataset = DatasetDict({"test": Dataset.from_dict(self.pairs)})
        self.data_loaded = True


class BiossesLocal(LocalSTSTask):
    metadata = sts_metadata(
        "BIOSSESLocal", "BIOSSES biomedical sentence similarity, read from the local data dir.", BIOSSES_FILE
    )


def biosses_task(data_dir: str | Path | None) -> tuple[BiossesLocal, str]:
    """BIOSSES from the data dir (100 pairs; gold = mean of the 5 annotators, 0-4, as in mteb's BIOSSES).

    Also returns the file's sha256 prefix: it stands in for a hub revision in the results.
    """
    pairs = sts(data_dir, "BIOSSES")
    task = BiossesLocal(pairs.first, pairs.second, pairs.scores, min_score=0, max_score=4)
    raw = data_file(data_dir, BIOSSES_FILE).read_bytes()
    return task, hashlib.sha256(raw).hexdigest()[:16]


def evaluate_sts(embedder: Embedder, task: LocalSTSTask) -> dict[str, Any]:
    """Run `mteb.evaluate` and recompute Spearman on the vectors it got; one results row."""
    encoder = RagsafeEncoder(embedder)
    start = time.perf_counter()
    # cache=None: results stay in memory rather than in ~/.cache/mteb, where a stale run could be reused.
    result = mteb.evaluate(encoder, task, cache=None, show_progress_bar=False, encode_kwargs={"batch_size": 32})
    seconds = time.perf_counter() - start
    task_result = result.task_results[0]
    scores = task_result.scores["test"][0]
    main_score = float(task_result.get_score())
    if len(encoder.encoded) != 2:
        raise RuntimeError(f"expected 2 encode calls (sentence1, sentence2), got {len(encoder.encoded)}")
    ours = spearman(pair_cosines(*encoder.encoded).tolist(), task.pairs["score"])
    return {
        "embedder": embedder.name,
        "dim": embedder.dim,
        "mteb main score (cosine_spearman)": main_score,
        "ragsafe spearman": ours,
        "|difference|": abs(main_score - ours),
        "mteb cosine_pearson": float(scores["cosine_pearson"]),
        "seconds": round(seconds, 1),
    }


def main(
    embedders: str = "teacher,gen,llm_mean",
    data_dir: str | None = None,
    backbone: str = "default",
    checkpoint: str | None = None,
    threads: int = 1,
    out: Path = RESULTS,
) -> None:
    from ragsafe.embedders.registry import build_embedders

    torch.set_num_threads(threads)
    # bm25 and hyde are never run here, even when asked for: say so rather than drop them silently.
    for name, why in SKIPPED.items():
        typer.echo(f"not run: {name} ({why})")
    names = [n for n in embedders.split(",") if n and n not in SKIPPED]
    task, file_hash = biosses_task(data_dir)
    rows = []
    for embedder in build_embedders(names, checkpoint=checkpoint, backbone=backbone):
        rows.append(evaluate_sts(embedder, task))
        typer.echo(rows[-1])
    meta = {
        "mteb": mteb.__version__,
        "task": f"{task.metadata.name}: custom mteb AbsTaskSTS, load_data reads {BIOSSES_FILE} from the data dir",
        "data file sha256[:16]": file_hash,
        "pairs": len(task.pairs["score"]),
        "gold": "mean_score (mean of annotators A-E, 0-4)",
        "sentences encoded with": "encode_documents (mteb passes no prompt type for STS)",
        "backbone": backbone,
        "checkpoint": checkpoint or "shipped default",
        "threads": threads,
        "not run": ", ".join(f"{n} ({why})" for n, why in SKIPPED.items()),
    }
    notes = (
        "Main score = mteb's `cosine_spearman` from `mteb.evaluate` (cache off). 'ragsafe spearman' is "
        "`ragsafe.evaluation.metrics.spearman` of the cosine of the same vectors mteb received, against the gold "
        "scores. Scores are correlations in [-1, 1], not x100. Data read locally, so the number is comparable "
        "in kind to, but not guaranteed identical with, the MTEB leaderboard's BIOSSES (hub copy of the same pairs)."
    )
    write_results(out, "mteb_local", rows, meta, notes)


if __name__ == "__main__":
    typer.run(main)
