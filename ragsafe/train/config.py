"""Training configuration: one dataclass, one place for every default (the CLI maps flags onto it)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ragsafe.evaluation.metrics import DUPLICATE_COS
from ragsafe.model.chat import GenerationSettings
from ragsafe.train.generate import DEFAULT_POLICY


@dataclass
class TrainConfig:
    out: Path = Path("runs/default")
    backbone: str = "default"
    teacher: str = "minilm"
    domain: str | None = "default"
    queries_file: Path | None = None
    data_dir: Path | None = None
    policy: str | None = DEFAULT_POLICY
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=40))
    gen_batch_size: int = 32
    max_queries: int | None = None
    # where a pack labels a query harmful or benign, the target follows the label when the backbone
    # slipped (ragsafe/train/labels.py)
    label_targets: bool = True
    val_fraction: float = 0.1
    seed: int = 0
    # model shape
    num_tokens: int = 10
    num_compress: int = 10
    max_length: int = 512
    # start from a trained checkpoint ("default": the shipped one) instead of fresh tokens and heads;
    # a domain run then adapts the general tokens rather than relearning them from a few hundred answers;
    # stage 1 is skipped (the heads are already fitted)
    init_from: str | None = None
    # the tokens start as this phrase's embeddings (None: vocabulary mean plus noise)
    token_init: str | None = " Answer in one passage. The passage that answers this request is:"
    # stage 1: the heads (R, A) on cached compression states of the initial tokens
    head_steps: int = 1000
    head_lr: float = 2e-3
    head_batch_size: int = 128
    # stage 2: tokens + heads through the frozen backbone
    steps: int = 200
    lr: float = 5e-4
    batch_size: int = 16
    warmup: int = 20
    grad_clip: float = 1.0
    weight_decay: float = 0.01  # stage 1 (the heads) only; the tokens train without it (method.md §5.5)
    # losses
    w_align: float = 1.0
    w_contrast: float = 1.0
    w_recon: float = 0.0
    temperature: float = 0.05
    duplicate_threshold: float = DUPLICATE_COS  # targets this close are one answer (losses, validation)
    recon_tokens: int = 32  # the answer's first tokens the frozen LM reconstructs (+ EOS when it ends there)
    checkpoint_every: int = 25
    # stop stage 2 after this many minutes of it (None: run all steps); the trainer state is saved
    max_minutes: float | None = None
    # end on the evaluated state with the best validation MRR, not necessarily the last one: a guard
    # against late drift towards collapse (it only ever picks states measured on held-out queries)
    keep_best: bool = True
    prefix_chunk: int | None = None  # queries per cached-prefix file; None: 16 on CPU, 128 on a GPU
    instructions: dict[str, str] = field(default_factory=dict)
    # train under varied instructions: each query is prefixed by one of these, drawn once by the seed
    # ("" for the bare query), so a task instruction at inference is not text the tokens never saw
    # (the paper trains on raw prompts). Empty: every query carries the pack's one query instruction,
    # which stays what the checkpoint embeds with by default either way.
    query_instructions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # here, not only in the CLI: a config built in Python must not start an hour-long run on a bad count
        at_least = {"steps": 0, "head_steps": 0, "batch_size": 1, "head_batch_size": 1, "gen_batch_size": 1}
        at_least |= {"checkpoint_every": 1, "num_tokens": 1, "recon_tokens": 1, "warmup": 0}
        bad = [
            f"{name} >= {low} (got {getattr(self, name)})"
            for name, low in at_least.items()
            if getattr(self, name) < low
        ]
        positive = ("lr", "head_lr", "temperature")
        bad += [f"{name} > 0 (got {getattr(self, name)})" for name in positive if not getattr(self, name) > 0]
        weights = ("w_align", "w_contrast", "w_recon", "weight_decay")
        bad += [f"{name} >= 0 (got {getattr(self, name)})" for name in weights if getattr(self, name) < 0]
        if self.max_queries is not None and self.max_queries < 1:
            bad.append(f"max_queries >= 1 or None for all (got {self.max_queries})")
        if self.max_minutes is not None and not self.max_minutes > 0:
            bad.append(f"max_minutes > 0 or None (got {self.max_minutes})")
        if not 0 < self.val_fraction < 1:
            bad.append(f"0 < val_fraction < 1 (got {self.val_fraction})")
        if not all(isinstance(i, str) for i in self.query_instructions):
            bad.append(f"query_instructions as strings (got {self.query_instructions!r})")
        if bad:
            raise ValueError(f"training config: need {'; '.join(bad)}")

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        """The inverse of to_dict (e.g. a checkpoint card's config); unknown keys are an error."""
        raw = dict(raw)
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown training-config keys {unknown} (a card from another ragsafe version?)")
        # cards written before the option existed trained on the backbone's raw answers
        raw.setdefault("label_targets", False)
        for key in ("out", "queries_file", "data_dir"):
            if raw.get(key) is not None:
                raw[key] = Path(raw[key])
        if isinstance(raw.get("generation"), dict):
            try:
                raw["generation"] = GenerationSettings(**raw["generation"])
            except TypeError as err:
                raise ValueError(f"generation settings of another ragsafe version: {err}") from err
        return cls(**raw)

    def to_dict(self) -> dict:
        out = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


RUN_CONFIG = "run_config.json"  # in the run folder: what the run was started with, for --resume
# what a resumed run may change: how long and how often it goes on, where the data lives, and batch
# sizes of passes whose results are cached; anything else would make it train something else
RESUMABLE = ("out", "steps", "max_minutes", "data_dir", "checkpoint_every", "gen_batch_size", "prefix_chunk")


def read_run_config(out: Path) -> TrainConfig | None:
    """The configuration a run folder was started with (None for a new folder or a run older than the file)."""
    path = Path(out) / RUN_CONFIG
    return TrainConfig.from_dict(json.loads(path.read_text())) if path.is_file() else None


def write_run_config(cfg: TrainConfig) -> None:
    cfg.out.mkdir(parents=True, exist_ok=True)
    tmp = cfg.out / f"{RUN_CONFIG}.tmp"  # replaced in one step: other ranks may be reading it
    tmp.write_text(json.dumps(cfg.to_dict(), indent=2))
    tmp.replace(cfg.out / RUN_CONFIG)


QUERY_DIGEST = "queries.sha256"  # in the run folder: which queries the run trains and validates on


def query_digest(queries: list) -> str:
    """A digest of the training queries (text and source, in order): the train/validation split follows them."""
    digest = hashlib.sha256()
    for q in queries:
        digest.update(f"{q.source}\x00{q.text}\x01".encode())
    return digest.hexdigest()


def check_same_queries(out: Path, digest: str, count: int) -> None:
    """Refuse to resume on other queries: an edited query file (or a data dir that filters otherwise) would
    re-split train and validation under the saved state and its best score."""
    path = Path(out) / QUERY_DIGEST
    if path.is_file() and path.read_text().strip() != digest:
        raise ValueError(
            f"The training queries changed since {out} was started (an edited query file or pack, or another "
            f"data dir; {count} queries now): resuming would re-split them under the saved state. Start a new "
            "run in another folder, or --restart this one (its cached answers are reused)."
        )


def check_steps_left(cfg: TrainConfig) -> None:
    """--resume with --steps at or below what a finished run did would only redo its end (or count past it)."""
    progress = Path(cfg.out) / "trainer_state" / "progress.json"
    if not progress.is_file():
        return
    done = int(json.loads(progress.read_text()).get("step", 0))
    finished = (Path(cfg.out) / "checkpoint" / "config.json").is_file() and done >= cfg.steps
    if done > cfg.steps or finished:
        raise ValueError(
            f"{cfg.out} has done {done} stage-2 steps{' and written its checkpoint' if finished else ''}: "
            f"give --steps above {done} to train further."
        )


def check_something_to_resume(out: Path) -> None:
    """--resume on a folder no run ever started in would quietly start a fresh full run instead."""
    if not (Path(out) / RUN_CONFIG).is_file() and not (Path(out) / "trainer_state").is_dir():
        raise ValueError(f"nothing to resume in {out}: no {RUN_CONFIG} or trainer_state there (drop --resume to start)")


def check_resume(cfg: TrainConfig) -> None:
    """Refuse to resume a run with settings it was not started with (it would quietly train something else)."""
    saved = read_run_config(cfg.out)
    if saved is None:
        return
    old, new = saved.to_dict(), cfg.to_dict()
    changed = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in old if k not in RESUMABLE and old[k] != new[k]]
    if changed:
        raise ValueError(
            f"{cfg.out} was started with other settings ({'; '.join(changed)}). Resume with the run's own "
            f"settings (the CLI reads them from {RUN_CONFIG} when only --out and --resume are given), or "
            "start a new run in another folder."
        )
