"""The training loop (method.md §4-§5), shaped for a CPU.

1. data: queries (a domain pack or the user's file, benchmark queries removed) -> the backbone's
   responses under the response policy (cached) -> teacher vectors of the responses (cached).
2. prefix cache: one frozen pass per query stores the KV cache of its text (see prefix_store.py),
   and yields the compression states of the initial tokens.
3. stage 1, heads: R and A fitted on those cached states (the tokens held at their initialisation).
   Seconds per thousand steps, so the heads see many epochs; the tokens start stage 2 from a map
   that already points into the teacher's space instead of from a random one.
4. stage 2, tokens + heads: every step runs only the K token positions on top of the cached
   prefixes, with autograd; AdamW, warmup + linear decay, gradient clipping.

All trainable tensors are float32. Checkpoints (tokens/R/A + optimiser moments + step) are written
every `checkpoint_every` steps and on Ctrl-C; `resume=True` continues from the last one.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ragsafe.embedders.gen import QUERY_INSTRUCTION
from ragsafe.embedders.teacher import TeacherEmbedder
from ragsafe.evaluation.metrics import DUPLICATE_COS, own_answer_ranks
from ragsafe.model.backbone import (
    DEFAULT_BACKBONE,
    DEFAULT_NAME,
    SMOLLM2_NAME,
    Backbone,
    load_backbone,
    require_float,
)
from ragsafe.model.checkpoint import (
    CheckpointError,
    default_checkpoint_dir,
    load_checkpoint,
    read_config,
    save_checkpoint,
    write_config,
)
from ragsafe.model.gen_encoder import GenConfig, GenEncoder
from ragsafe.model.tokens import token_vectors_from_text
from ragsafe.progress import make_progress
from ragsafe.train.calibrate import calibrate, card_entries
from ragsafe.train.config import (
    QUERY_DIGEST,
    TrainConfig,
    check_resume,
    check_same_queries,
    query_digest,
    write_run_config,
)
from ragsafe.train.domains import DomainPack
from ragsafe.train.generate import generate_responses, read_cache, response_key
from ragsafe.train.labels import follow_labels
from ragsafe.train.losses import alignment_loss, contrastive_loss, reconstruction_loss
from ragsafe.train.prefix_store import PrefixStore
from ragsafe.train.queries import Query, SkippedQueriesWarning, deduplicate, exclude_held_out, load_queries, sample
from ragsafe.train.teacher import TargetCache

DEFAULT_INSTRUCTIONS = {
    "query": "Write a passage that answers this request:",
    "document": "Summarize the following passage:",
}


@dataclass
class Examples:
    queries: list[Query]
    responses: list[str]
    refused: list[bool]
    targets: np.ndarray
    student_texts: list[str]
    train_idx: list[int]
    val_idx: list[int]
    counts: dict[str, int]
    # benign queries the backbone refused, left out of the targets (ragsafe/train/labels.py) but kept
    # as harm-probe negatives
    left_out: list[Query] = field(default_factory=list)


def file_queries(path: Path, data_dir: Path | None) -> tuple[list[Query], dict[str, int], str]:
    """A user's query file: its queries, their counts, and what was skipped reading it ("" if nothing)."""
    read = load_queries(path)
    unique = deduplicate([Query(t, str(path)) for t in read.texts])
    queries, dropped = exclude_held_out(unique, data_dir)
    counts = {str(path): len(read.texts), "dropped: repeats": len(read.texts) - len(unique)}
    counts["dropped: benchmark queries"] = dropped
    if read.skipped:
        counts[f"skipped records: {path}"] = read.skipped
    counts["total"] = len(queries)
    return queries, counts, read.describe()


def collect_queries(cfg: TrainConfig) -> tuple[list[Query], dict[str, int], dict[str, str]]:
    """The training queries, their counts per source, and the instructions the domain asks for.

    Records of the user's file that hold no query are skipped with a SkippedQueriesWarning naming them."""
    if cfg.queries_file:
        queries, counts, skipped = file_queries(cfg.queries_file, cfg.data_dir)
        instructions = dict(DEFAULT_INSTRUCTIONS)
    else:
        pack = DomainPack.load(cfg.domain or "default")
        queries, counts = pack.collect(cfg.data_dir, cfg.seed)
        instructions = {**DEFAULT_INSTRUCTIONS, **pack.instructions}
        skipped = ", ".join(f"{n} {k}" for k, n in counts.items() if k.startswith("skipped records: "))
    instructions.update(cfg.instructions)
    if cfg.max_queries is not None:  # "is not None": a falsy 0 once meant "all" (TrainConfig now refuses it)
        queries = sample(queries, cfg.max_queries, cfg.seed)
        counts["total"] = len(queries)
    if len(queries) < 4:
        why = [skipped] if skipped else []
        if cfg.queries_file:  # where the file's queries went
            why.append(f"{cfg.queries_file.name} holds {counts[str(cfg.queries_file)]}")
            why += [f"{n} {k.removeprefix('dropped: ')}" for k, n in counts.items() if k.startswith("dropped: ") and n]
        detail = f" ({'; '.join(why)})" if why else ""
        raise ValueError(f"Only {len(queries)} usable training queries; at least 4 are needed{detail}.")
    if skipped and cfg.queries_file:  # the user's own file: they can fix it (a pack's counts go on its card)
        warnings.warn(skipped, SkippedQueriesWarning, stacklevel=2)
    return queries, counts, instructions


def prepare_examples(
    cfg: TrainConfig,
    backbone: Backbone,
    teacher: TeacherEmbedder,
    collected: tuple[list[Query], dict[str, int], dict[str, str]] | None = None,
) -> tuple[Examples, dict]:
    """collected: `collect_queries(cfg)` when the caller already has it."""
    queries, counts, instructions = collected or collect_queries(cfg)
    rows = generate_responses(
        backbone, [q.text for q in queries], cfg.out / "responses.jsonl", cfg.policy, cfg.generation, cfg.gen_batch_size
    )
    responses = [r["response"] for r in rows]
    # An empty response has no meaning to align to; keep it out of training.
    keep = [i for i, r in enumerate(responses) if r.strip()]
    queries, responses = [queries[i] for i in keep], [responses[i] for i in keep]
    refused = [rows[i]["refused"] for i in keep]
    left_out: list[Query] = []
    if cfg.label_targets:
        labelled = follow_labels([q.source for q in queries], responses, refused)
        left_out = [queries[i] for i in labelled.left_out]
        queries = [queries[i] for i in labelled.keep]
        responses, refused = labelled.responses, labelled.refused
        counts.update(labelled.counts)
    targets = TargetCache(cfg.out / f"targets-{teacher.spec.replace('/', '_')}.npz", teacher).targets(responses)
    order = list(range(len(queries)))
    random.Random(cfg.seed).shuffle(order)
    n_val = max(2, int(round(cfg.val_fraction * len(order))))
    student = student_texts([q.text for q in queries], instructions.get("query"), cfg.query_instructions, cfg.seed)
    counts["empty responses dropped"] = len(rows) - len(keep)
    train_idx, val_idx = sorted(order[n_val:]), sorted(order[:n_val])
    ex = Examples(queries, responses, refused, targets, student, train_idx, val_idx, counts, left_out)
    return ex, instructions


def student_texts(texts: list[str], instruction: str | None, pool: list[str], seed: int) -> list[str]:
    """Each query as the student reads it: behind the one instruction, or behind one drawn from `pool`.

    One draw per query for the whole run: its prefix is computed once and cached."""
    rng = random.Random(f"instructions-{seed}")  # its own stream: the split's shuffle stays as it was
    chosen = [rng.choice(pool) for _ in texts] if pool else [instruction] * len(texts)
    return [f"{i} {t}" if i else t for i, t in zip(chosen, texts, strict=True)]  # as GenEncoder.encode joins them


def lr_at(step: int, total: int, warmup: int) -> float:
    """Linear warmup to 1, then linear decay to 0.1 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.1, 1 - 0.9 * (step - warmup) / max(1, total - warmup))


def make_loss(cfg: TrainConfig):
    def loss_fn(e: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        align = alignment_loss(e, t)
        contrast = contrastive_loss(e, t, cfg.temperature, cfg.duplicate_threshold)
        total = cfg.w_align * align + cfg.w_contrast * contrast
        return total, {"align": align.item(), "contrast": contrast.item()}

    return loss_fn


def reconstruction_ids(tokenizer, response: str, eos: int, limit: int, generated_cap: int) -> list[int]:
    """The answer's token ids the decoder learns from the soft prompt: at most `limit`, ending on EOS
    only where the answer ended by itself (a cut answer taught to stop would learn to stop early).

    An answer as long as the generation cap (`generated_cap` new tokens) is taken as cut there."""
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if len(ids) >= min(limit, generated_cap):
        return ids[:limit]
    return [*ids, eos]


@torch.no_grad()
def validation_metrics(e: torch.Tensor, t: torch.Tensor, duplicate_cos: float = DUPLICATE_COS) -> dict[str, float]:
    """method.md §4.3 diagnostics + a retrieval check that catches collapse: each query must find its
    own response vector among all validation responses (recall@1, MRR; `own_answer_ranks`).
    """
    e, t = F.normalize(e.float(), dim=-1), F.normalize(t.float(), dim=-1)
    sims = e @ t.T
    n = e.shape[0]
    diag = sims.diag()
    off = (sims.sum() - diag.sum()) / max(1, n * n - n)
    pair = e @ e.T
    pairwise = (pair.sum() - pair.diag().sum()) / max(1, n * n - n)
    ranks = own_answer_ranks(e.cpu().numpy(), t.cpu().numpy(), duplicate_cos)
    return {
        "val_cos": float(diag.mean()),
        "val_cos_others": float(off),
        "val_pairwise_cos": float(pairwise),
        "val_recall@1": float(np.mean(ranks == 1)),
        "val_mrr": float(np.mean(1.0 / ranks)),
    }


def init_distributed():
    """torch.distributed when launched by torchrun (WORLD_SIZE > 1), else None. gloo on CPU, nccl on CUDA."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return None
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist


def init_from_path(spec: str) -> Path:
    """The checkpoint folder --init-from names ('default': the shipped one)."""
    path = default_checkpoint_dir() if spec == "default" else Path(spec).expanduser()
    if path is None:
        raise ValueError("init_from='default' but this build ships no default checkpoint")
    return path


# backbone specs whose weights have a fixed name, so a checkpoint of another backbone is caught before loading
KNOWN_BACKBONE_NAMES = {DEFAULT_BACKBONE: DEFAULT_NAME, "smollm2": SMOLLM2_NAME}


def check_init_from(cfg: TrainConfig, backbone_spec: str | None) -> dict:
    """The --init-from checkpoint's config, checked before any model loads: generating the answers takes
    up to an hour on a CPU, and a wrong start should not wait for it.

    backbone_spec: the spec the run is about to load (None when the caller passes a loaded backbone)."""
    path = init_from_path(cfg.init_from or "")
    if not path.exists():
        raise FileNotFoundError(f"The checkpoint to start from (init_from) {path} does not exist.")
    config = read_config(path)  # CheckpointError: not a ragsafe checkpoint
    trained_on, expected = config["backbone"]["name"], KNOWN_BACKBONE_NAMES.get(backbone_spec or "")
    if expected is not None and trained_on != expected:
        raise CheckpointError(
            f"{path} was trained on backbone '{trained_on}', but this run uses '{backbone_spec}' ({expected}); "
            "start from a checkpoint of this backbone, or pass --backbone to match it."
        )
    if config["gen"].get("num_tokens") != cfg.num_tokens:
        raise ValueError(f"{path} has {config['gen'].get('num_tokens')} gen tokens; this run trains {cfg.num_tokens}")
    return config


def check_init_models(path: Path, config: dict, backbone: Backbone, out_dim: int) -> None:
    """What only the loaded models tell: the exact backbone weights and the teacher's width."""
    if config["backbone"]["fingerprint"] != backbone.fingerprint:
        raise CheckpointError(
            f"{path} was trained on backbone '{config['backbone']['name']}', not on the loaded '{backbone.name}' "
            f"(fingerprints {config['backbone']['fingerprint'][:12]} / {backbone.fingerprint[:12]})."
        )
    if config["gen"].get("out_dim") != out_dim:
        raise ValueError(f"{path} has output width {config['gen'].get('out_dim')}; this run's teacher has {out_dim}")


class Trainer:
    def __init__(self, cfg: TrainConfig, backbone: Backbone | None = None, teacher: TeacherEmbedder | None = None):
        self.cfg = cfg
        require_float(backbone)
        # first: a bad query file, pack, data dir or start checkpoint fails here, before the backbone loads
        # or a folder appears
        self.collected = collect_queries(cfg)
        start = check_init_from(cfg, None if backbone else cfg.backbone) if cfg.init_from else None
        cfg.out.mkdir(parents=True, exist_ok=True)
        # the teacher first: it loads in seconds, and a teacher id that cannot be had fails before the
        # backbone's long load rather than after it
        self.teacher = teacher or TeacherEmbedder(cfg.teacher)
        self.backbone = backbone or load_backbone(cfg.backbone)
        if start is not None:  # before `prepare` generates the answers
            check_init_models(init_from_path(cfg.init_from), start, self.backbone, self.teacher.dim)
        self.history: list[dict] = []
        self.dist = init_distributed()
        self.rank = self.dist.get_rank() if self.dist else 0
        self.world = self.dist.get_world_size() if self.dist else 1
        self.started = time.time()
        self.wall_before = 0.0  # wall time of earlier runs of the same training (resume)
        self.on_step: Callable[[int], None] | None = None  # called after each stage-2 step (tests, monitoring)
        self.best_step: int | None = None  # the stage-2 step whose state the run ends on (keep_best)
        # validation before stage 2 (untrained, after the heads): kept in the trainer state, so the card of
        # a resumed run still shows what the first run measured before its tokens moved
        self.validation_before: dict[str, dict] = {}

    # ---------------------------------------------------------------- data
    def prepare(self) -> None:
        # Rank 0 generates and caches everything first; the other ranks then read the caches.
        if self.dist and self.rank != 0:
            self.dist.barrier()
        self._prepare()
        if self.dist and self.rank == 0:
            self.dist.barrier()

    def _broadcast_parameters(self) -> None:
        """Make every rank start stage 2 from rank 0's parameters."""
        if self.dist:
            for param in self.encoder.parameters():
                self.dist.broadcast(param.data, src=0)

    def _prepare(self) -> None:
        torch.manual_seed(self.cfg.seed)
        self.examples, self.instructions = prepare_examples(self.cfg, self.backbone, self.teacher, self.collected)
        gen_cfg = GenConfig(
            out_dim=self.teacher.dim,
            num_tokens=self.cfg.num_tokens,
            num_compress=self.cfg.num_compress,
            max_length=self.cfg.max_length,
            seed=self.cfg.seed,
        )
        self.encoder = GenEncoder(self.backbone, gen_cfg)
        if self.cfg.init_from:
            self._init_from(self.cfg.init_from)
        elif self.cfg.token_init:
            ids = self.backbone.tokenizer(self.cfg.token_init, add_special_tokens=False)["input_ids"]
            table = self.backbone.model.get_input_embeddings().weight
            with torch.no_grad():
                self.encoder.tokens.copy_(token_vectors_from_text(table, ids, self.cfg.num_tokens))
        chunk = self.cfg.prefix_chunk or (128 if self.backbone.device.type == "cuda" else 16)
        self.store = PrefixStore(self.encoder, self.examples.student_texts, self.cfg.out / "prefix", chunk).build()
        self.targets = torch.from_numpy(self.examples.targets).to(self.backbone.device)
        tokenizer = self.backbone.tokenizer
        eos = self.backbone.eos_token_ids[0]
        cap = self.cfg.generation.max_new_tokens
        self.response_ids = [
            reconstruction_ids(tokenizer, r, eos, self.cfg.recon_tokens, cap) for r in self.examples.responses
        ]
        ex = self.examples
        baseline = self.teacher.embed([ex.queries[i].text for i in ex.val_idx])
        self.teacher_query_reference = validation_metrics(
            torch.from_numpy(baseline).to(self.targets.device), self.targets[ex.val_idx], self.cfg.duplicate_threshold
        )  # how well the teacher's own query embedding predicts the response: the bar to beat

    def _init_from(self, spec: str) -> None:
        path = init_from_path(spec)
        # its backbone, token count and width were checked in __init__, before any answer was generated
        self.encoder.load_state_dict(load_checkpoint(path, self.backbone).state_dict())

    def _recon(self, s: torch.Tensor, indices: list[int]) -> torch.Tensor:
        rows = [self.response_ids[i] for i in indices]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.backbone.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for row, r in enumerate(rows):  # right padding: the response follows the soft prompt directly
            ids[row, : len(r)] = torch.tensor(r)
            mask[row, : len(r)] = 1
        device = self.backbone.device
        return reconstruction_loss(self.backbone, s, ids.to(device), mask.to(device))

    def _states(self, indices: list[int], grad: bool, chunk: int = 32) -> torch.Tensor:
        parts = []
        for start in range(0, len(indices), chunk):
            with torch.set_grad_enabled(grad):
                parts.append(self.store.token_states(indices[start : start + chunk]))
        return torch.cat(parts)

    def evaluate(self) -> dict[str, float]:
        val = self.examples.val_idx
        with torch.no_grad():
            s = self.encoder.soft_prompts(self._states(val, grad=False))
            e = self.encoder.pool(s)
            metrics = validation_metrics(e, self.targets[val], self.cfg.duplicate_threshold)
            loss, parts = make_loss(self.cfg)(e, self.targets[val])
            if self.cfg.w_recon > 0:  # on a fixed slice: the decoder pass is the expensive part
                parts["recon"] = float(self._recon(s[:32], val[:32]))
        return {**metrics, "val_loss": float(loss), **{f"val_{k}": v for k, v in parts.items()}}

    def wall_seconds(self) -> float:
        return round(self.wall_before + time.time() - self.started, 1)

    # ---------------------------------------------------------------- stage 1
    def fit_heads(self) -> None:
        """R and A on the cached mean compression states of the initial tokens (e = A(R(mean h)))."""
        cfg, ex = self.cfg, self.examples
        if cfg.head_steps <= 0:
            return
        mean_h = self._states(list(range(len(ex.queries))), grad=False).mean(dim=1)
        params = list(self.encoder.R.parameters()) + list(self.encoder.A.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.head_lr, weight_decay=cfg.weight_decay)
        # Standardise h: the backbone's last-layer states have a few huge outlier dimensions (norm ~190
        # here); without this the first hundreds of steps only shrink the output norm.
        mu, sd = mean_h[ex.train_idx].mean(0), mean_h[ex.train_idx].std(0).clamp(min=1e-3)
        with torch.no_grad():  # fold the standardisation into R so e = A(R(mean h)) stays exact
            self.encoder.R.weight.div_(sd.unsqueeze(0))
            self.encoder.R.bias.sub_(self.encoder.R.weight @ mu)
        loss_fn = make_loss(cfg)
        gen = torch.Generator().manual_seed(cfg.seed)
        train = torch.tensor(ex.train_idx)
        with make_progress(transient=False) as progress:
            task = progress.add_task("stage 1: heads", total=cfg.head_steps, info="")
            for step in range(cfg.head_steps):
                batch = train[torch.randperm(len(train), generator=gen)[: cfg.head_batch_size]]
                for group in opt.param_groups:
                    group["lr"] = cfg.head_lr * lr_at(step, cfg.head_steps, cfg.warmup)
                e = self.encoder.A(self.encoder.R(mean_h[batch]))
                loss, parts = loss_fn(e, self.targets[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if step % 100 == 0 or step == cfg.head_steps - 1:
                    with torch.no_grad():
                        val = validation_metrics(
                            self.encoder.A(self.encoder.R(mean_h[ex.val_idx])),
                            self.targets[ex.val_idx],
                            self.cfg.duplicate_threshold,
                        )
                    self.history.append({"stage": 1, "step": step, "loss": loss.item(), **parts, **val})
                    progress.update(
                        task, info=f"loss {loss.item():.3f} val_cos {val['val_cos']:.3f} r@1 {val['val_recall@1']:.2f}"
                    )
                progress.advance(task)

    # ---------------------------------------------------------------- stage 2
    def _state_path(self) -> Path:
        return self.cfg.out / "trainer_state"

    def _save_state(self, opt: torch.optim.Optimizer, step: int, best: dict | None) -> None:
        """Everything --resume needs, the best evaluated state included. Each save goes to a folder of
        its own and `progress.json` is replaced last, so a kill at any moment leaves the previous
        complete state in force, never a mix of two steps."""
        folder = self._state_path()
        saved = f"step-{step:06d}-{time.time_ns():x}"
        save_checkpoint(self.encoder, folder / saved / "model", extra={"instructions": self.instructions})
        tensors = {}
        for name, param in self.encoder.named_parameters():
            state = opt.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    tensors[f"{name}.{key}"] = state[key].contiguous()
        save_file(tensors, str(folder / saved / "optimizer.safetensors"))
        progress = {
            "step": step,
            "history": self.history,
            "wall_seconds": self.wall_seconds(),
            "saved": saved,
            "validation_before": self.validation_before,
        }
        if best is not None:
            if best.get("saved") is None:  # a new best: written once, under a name no other save used
                name = f"best-{best['step']:06d}-{time.time_ns():x}.safetensors"
                save_file(
                    {k: v.detach().cpu().contiguous() for k, v in best["state"].items()}, str(folder / "best.tmp")
                )
                (folder / "best.tmp").replace(folder / name)
                best["saved"] = name
            progress["best"] = {"step": best["step"], "val_mrr": best["metrics"]["val_mrr"], "saved": best["saved"]}
        (folder / "progress.json.tmp").write_text(json.dumps(progress, indent=2))
        (folder / "progress.json.tmp").replace(folder / "progress.json")
        keep = {"progress.json", saved, progress.get("best", {}).get("saved")}
        for stale in folder.iterdir():  # earlier saves (and the older layout's model/ and optimizer file)
            if stale.name in keep:
                continue
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink()

    def _load_state(self, opt: torch.optim.Optimizer) -> tuple[int, dict | None]:
        """(the saved step, the best evaluated state so far or None); (0, None) when nothing was saved."""
        folder = self._state_path()
        if not (folder / "progress.json").is_file():
            return 0, None
        progress = json.loads((folder / "progress.json").read_text())
        saved = folder / progress.get("saved", "")  # runs saved before the per-save folders: the folder itself
        loaded = load_checkpoint(saved / "model", self.backbone)
        self.encoder.load_state_dict(loaded.state_dict())
        tensors = load_file(str(saved / "optimizer.safetensors"))
        for name, param in self.encoder.named_parameters():
            if f"{name}.exp_avg" in tensors:
                opt.state[param] = {
                    "step": torch.tensor(float(progress["step"])),
                    "exp_avg": tensors[f"{name}.exp_avg"].to(param.device),
                    "exp_avg_sq": tensors[f"{name}.exp_avg_sq"].to(param.device),
                }
        self.history = progress["history"]
        self.wall_before = float(progress.get("wall_seconds", 0.0))
        self.validation_before = progress.get("validation_before") or self.validation_before
        best = progress.get("best")
        if best is not None:
            state = load_file(str(folder / best["saved"]))
            best = {
                "metrics": {"val_mrr": best["val_mrr"]},
                "state": state,
                "step": best["step"],
                "saved": best["saved"],
            }
        return int(progress["step"]), best

    def train_tokens(self, resume: bool = False) -> int:
        cfg, ex = self.cfg, self.examples
        opt = torch.optim.AdamW(self.encoder.parameters(), lr=cfg.lr, weight_decay=0.0)
        step, saved_best = self._load_state(opt) if resume else (0, None)
        loss_fn = make_loss(cfg)
        rng = random.Random(cfg.seed + step + 100_003 * self.rank)  # each rank draws its own batches
        interrupted = False
        loop_start = time.time()
        best = self._snapshot(self.evaluate(), step) if cfg.keep_best else None
        if best is not None and saved_best is not None and not self._improves(best["metrics"], saved_best):
            best = saved_best  # a resumed run still ends on the best state of the run before it

        def on_sigint(signum, frame):  # finish the step, save, stop
            nonlocal interrupted
            interrupted = True

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            with make_progress(transient=False) as progress:
                task = progress.add_task("stage 2: tokens", total=cfg.steps, completed=step, info="")
                while step < cfg.steps and not interrupted:
                    if cfg.max_minutes is not None and time.time() - loop_start > 60 * cfg.max_minutes:
                        self.history.append({"stage": 2, "step": step, "stopped": f"time limit {cfg.max_minutes} min"})
                        break
                    batch = rng.sample(ex.train_idx, min(cfg.batch_size, len(ex.train_idx)))
                    for group in opt.param_groups:
                        group["lr"] = cfg.lr * lr_at(step, cfg.steps, cfg.warmup)
                    s = self.encoder.soft_prompts(self.store.token_states(batch))
                    loss, parts = loss_fn(self.encoder.pool(s), self.targets[batch])
                    if cfg.w_recon > 0:
                        recon = self._recon(s, batch)
                        loss = loss + cfg.w_recon * recon
                        parts["recon"] = recon.item()
                    opt.zero_grad()
                    loss.backward()
                    if self.dist:  # data parallel: average the (few, small) gradients over ranks
                        for param in self.encoder.parameters():
                            self.dist.all_reduce(param.grad)
                            param.grad /= self.world
                    norm = torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), cfg.grad_clip)
                    step += 1
                    if not (torch.isfinite(loss) and torch.isfinite(norm)):
                        # one bad batch must not turn every parameter into NaN (a resumed GPU run here did)
                        self.history.append({"stage": 2, "step": step, "skipped": "non-finite loss or gradient"})
                        continue
                    opt.step()
                    record = {"stage": 2, "step": step, "loss": loss.item(), **parts}
                    self.history.append(record)
                    if self.rank == 0 and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                        record.update(self.evaluate())
                        if best is not None and self._improves(record, best):
                            best = self._snapshot(record, step)
                        self._save_state(opt, step, best)
                    info = f"loss {loss.item():.3f}"
                    if "val_cos" in record:
                        info += f" val_cos {record['val_cos']:.3f} r@1 {record['val_recall@1']:.2f}"
                    progress.update(task, advance=1, info=info)
                    if self.on_step:
                        self.on_step(step)
            if self.rank == 0 and (interrupted or step < cfg.steps):
                self._save_state(opt, step, best)
        finally:
            signal.signal(signal.SIGINT, previous)
        if best is not None and not interrupted:
            final = self.evaluate()["val_mrr"]
            restore = not self._finite() or not math.isfinite(final) or best["metrics"]["val_mrr"] > final
            if restore:
                self.encoder.load_state_dict(best["state"])
            self.best_step = best["step"] if restore else step
        return step

    def _stage1_note(self, resumed: bool) -> int | str:
        if self.cfg.init_from:  # stage 1 never ran: the heads came fitted with the started checkpoint
            return f"none: heads from --init-from {self.cfg.init_from}"
        return "from checkpoint" if resumed else self.cfg.head_steps

    def _improves(self, record: dict, best: dict) -> bool:
        mrr = record["val_mrr"]
        return math.isfinite(mrr) and mrr > best["metrics"]["val_mrr"] and self._finite()

    def _finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.encoder.parameters())

    def _snapshot(self, metrics: dict, step: int) -> dict:
        state = {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}
        return {"metrics": {"val_mrr": float(metrics["val_mrr"])}, "state": state, "step": step}

    def calibration(self) -> dict:
        """Harm probe and hybrid query mix from the training split (see ragsafe.train.calibrate)."""
        ex = self.examples
        everything = list(range(len(ex.queries)))
        with torch.no_grad():
            e = torch.cat(
                [
                    F.normalize(
                        self.encoder.pool(self.encoder.soft_prompts(self._states(everything[i : i + 256], False))),
                        dim=-1,
                    )
                    for i in range(0, len(everything), 256)
                ]
            )
        return calibrate_examples(
            e.cpu().numpy(),
            self.encoder,
            self.teacher,
            ex,
            self.instructions.get("query"),
            self.cfg.duplicate_threshold,
        )

    # ---------------------------------------------------------------- all
    def run(self, resume: bool = False) -> Path:
        start = time.time()
        digest = query_digest(self.collected[0])
        if resume:
            check_resume(self.cfg)
            check_same_queries(self.cfg.out, digest, len(self.collected[0]))
        if self.rank == 0:  # a resume may only have changed what RESUMABLE allows: keep that (e.g. more steps)
            write_run_config(self.cfg)
            (self.cfg.out / QUERY_DIGEST).write_text(digest + "\n")
        self.prepare()
        initial = self.evaluate()
        resumed = resume and (self._state_path() / "progress.json").is_file()
        if not resumed and not self.cfg.init_from:  # a started checkpoint's heads are already fitted
            self.fit_heads()
        self._broadcast_parameters()
        # on resume the trained state is loaded inside train_tokens, and with it what the first run measured
        # here; evaluating now would show the untrained tokens. (A state saved before these numbers were
        # kept has none: the card says so.)
        if not resumed:
            self.validation_before = {"untrained": initial, "after_heads": self.evaluate()}
        steps_done = self.train_tokens(resume=resume)
        before = self.validation_before or {"untrained": initial, "after_heads": {"note": "not kept by this state"}}
        final = self.evaluate()
        ex = self.examples
        card = {
            "backbone": self.backbone.name,
            "teacher": self.teacher.spec,
            "policy": self.cfg.policy,
            "data": ex.counts,
            "train_examples": len(ex.train_idx),
            "val_examples": len(ex.val_idx),
            "refusal_rate_train_responses": round(float(np.mean(ex.refused)), 3),
            "stage1_head_steps": self._stage1_note(resumed),
            "stage2_steps": steps_done,
            "stage2_kept_step": steps_done if self.best_step is None else self.best_step,
            "wall_seconds_this_run": round(time.time() - start, 1),
            "wall_seconds_total": self.wall_seconds(),
            "validation": {
                **before,
                "final": final,
                "teacher_query_reference": self.teacher_query_reference,
            },
            "config": self.cfg.to_dict(),
        }
        fitted = self.calibration()
        card.update(card_entries(fitted))
        if steps_done < self.cfg.steps:
            card["note"] = f"interrupted at step {steps_done}; rerun with --resume"
        out = self.cfg.out / "checkpoint"
        if self.rank == 0:
            extra = {"instructions": self.instructions, **fitted, "card": card}
            save_checkpoint(self.encoder, out, extra=extra)
            (self.cfg.out / "history.json").write_text(json.dumps(self.history, indent=1))
        return out


def calibrate_examples(
    gen_vectors: np.ndarray,
    encoder: GenEncoder,
    teacher: TeacherEmbedder,
    ex: Examples,
    instruction: str | None,
    duplicate_cos: float,
) -> dict:
    """`calibrate` on a run's examples: their gen vectors, the teacher's view of their queries, and the
    benign refusals left out of the targets as extra probe negatives."""
    return calibrate(
        gen_vectors,
        teacher.embed([q.text for q in ex.queries]),
        ex.targets,
        [q.source for q in ex.queries],
        ex.refused,
        ex.train_idx,
        ex.val_idx,
        left_out_vectors(encoder, teacher, ex, instruction),
        duplicate_cos=duplicate_cos,
    )


def left_out_vectors(
    encoder: GenEncoder, teacher: TeacherEmbedder, ex: Examples, instruction: str | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """(gen, teacher) vectors of the queries left out of the targets, the harm probe's extra negatives."""
    if not ex.left_out:
        return None
    texts = [q.text for q in ex.left_out]
    return encoder.encode(texts, instruction, batch_size=32), teacher.embed(texts)


def check_run_dir(run_dir: Path) -> None:
    """Before the models load: recalibrating reads the run's cached answers and generates none."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Run folder {run_dir} does not exist.")
    if not (run_dir / "responses.jsonl").is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no responses.jsonl: point --run-dir at the run that trained this checkpoint"
        )


def recalibrate(
    checkpoint: str | Path,
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    backbone: Backbone | None = None,
    teacher: TeacherEmbedder | None = None,
) -> dict:
    """Refit a trained checkpoint's harm probe and query mix from its run's cached responses.

    For checkpoints trained before the calibration existed, or to refit after changing the labels.
    The run directory must hold the responses of the checkpoint's training queries (nothing is
    generated here); teacher targets are recomputed if the cache is for another teacher path.
    Writes the result into the checkpoint's config.json and returns it.
    """
    require_float(backbone)
    checkpoint, run_dir = Path(checkpoint), Path(run_dir)
    config = read_config(checkpoint)
    card = config.get("card") or {}
    if "config" not in card:
        raise ValueError(f"{checkpoint} has no training card: cannot tell which queries it was trained on")
    cfg = TrainConfig.from_dict(card["config"])
    cfg.out, cfg.data_dir = run_dir, Path(data_dir) if data_dir else cfg.data_dir
    check_run_dir(run_dir)
    backbone = backbone or load_backbone(cfg.backbone)
    encoder = load_checkpoint(checkpoint, backbone)  # first: a backbone mismatch is the error to report
    teacher = teacher or TeacherEmbedder(cfg.teacher)
    collected = collect_queries(cfg)
    queries = collected[0]
    cached = read_cache(run_dir / "responses.jsonl")
    missing = sum(response_key(backbone, cfg.policy, cfg.generation, q.text) not in cached for q in queries)
    if missing:
        raise ValueError(
            f"{run_dir / 'responses.jsonl'} lacks {missing} of the {len(queries)} training responses: "
            "point --run-dir at the run that trained this checkpoint"
        )
    ex, _ = prepare_examples(cfg, backbone, teacher, collected)
    expected = (card.get("train_examples"), card.get("val_examples"))
    if expected != (len(ex.train_idx), len(ex.val_idx)):
        raise ValueError(
            f"the rebuilt split has {len(ex.train_idx)} train / {len(ex.val_idx)} validation queries, the card "
            f"{expected[0]} / {expected[1]}: the data dir or the query filters changed since training"
        )
    # the instruction the checkpoint embeds queries with at inference, whatever the pack says today
    instruction = (config.get("instructions") or {}).get("query", QUERY_INSTRUCTION)  # as GenEmbedder.load reads it
    gen = encoder.encode([q.text for q in ex.queries], instruction, batch_size=32, show_progress=True)
    fitted = calibrate_examples(gen, encoder, teacher, ex, instruction, cfg.duplicate_threshold)
    if fitted["safety"].get("direction") is None and (config.get("safety") or {}).get("refusal_centroid"):
        fitted["safety"] = config["safety"]  # one label class only: keep the older calibration rather than none
    config.update(fitted)
    card.update(card_entries(fitted))
    config["card"] = card
    write_config(checkpoint, config)
    return fitted


def describe(metrics: dict[str, float]) -> str:
    keys = ("val_cos", "val_cos_others", "val_pairwise_cos", "val_recall@1", "val_mrr")
    return "  ".join(f"{k}={metrics[k]:.3f}" for k in keys if k in metrics and not math.isnan(metrics[k]))
