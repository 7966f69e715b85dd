"""The backbone answers unlabeled queries under a response policy; answers go to a resumable JSONL cache.

Each row is keyed by sha256(backbone fingerprint, policy, generation settings, query, and a mark where
the query is cut to fit the prompt), so changing any of them makes new rows instead of silently
reusing old ones. Rows are appended and fsync'ed one
batch at a time: a killed run loses at most the batch in flight, and a torn last line is ignored and
rewritten on the next run. Reading deduplicates by key, so no row is ever counted twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from ragsafe.model.backbone import Backbone
from ragsafe.model.chat import GenerationSettings, chat_generate, prompt_fits
from ragsafe.progress import make_progress

# Chosen with benchmarks/response_policy.py on samples of the training pools: the default Qwen coder
# backbone treats off-topic questions as requests to refuse, so the policy must say that every topic
# is in scope; naming harm categories or a fixed refusal sentence made it refuse far more benign questions.
DEFAULT_POLICY = (
    "You are a helpful assistant for every topic, not only code: answer each question directly. "
    "Decline briefly only requests to help hurt people or break the law."
)
_REFUSAL = re.compile(
    r"\b(i('m| am) (sorry|unable)|i can(no|')t (help|assist|provide|do|comply|fulfill|support)|"
    r"i (cannot|won't|will not)|as an ai|not able to (help|assist|provide))",
    re.IGNORECASE,
)


def looks_like_refusal(response: str) -> bool:
    """Keyword heuristic on the opening of a response: for monitoring rates, not for decisions."""
    return bool(_REFUSAL.search(response[:200]))


def response_key(backbone: Backbone, policy: str | None, settings: GenerationSettings, query: str) -> str:
    payload = [backbone.identity(), policy or "", settings.to_dict(), query]
    if not prompt_fits(backbone, query, policy, settings.max_prompt_tokens):
        # answers cached before the query itself was cut came from prompts without the assistant header
        payload.append("query cut to fit")
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_cache(path: Path) -> dict[str, dict]:
    """All complete rows of a cache file by key; a torn trailing line (killed mid-write) is skipped."""
    rows: dict[str, dict] = {}
    if not path.is_file():
        return rows
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "key" in row:
                rows.setdefault(row["key"], row)
    return rows


def _rewrite_clean(path: Path, rows: dict[str, dict]) -> None:
    # Drop torn lines and duplicates before appending, so appends always start on a fresh line.
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows.values():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def generate_responses(
    backbone: Backbone,
    queries: list[str],
    cache_path: str | Path,
    policy: str | None = DEFAULT_POLICY,
    settings: GenerationSettings | None = None,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
    show_progress: bool = True,
) -> list[dict]:
    """Responses for `queries` (in order), generating only those not cached yet.

    Returns one row per query: {key, query, response, policy, refused}.
    """
    settings = settings or GenerationSettings()
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    path = Path(cache_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cached = read_cache(path)
    if path.is_file():
        _rewrite_clean(path, cached)
    keys = [response_key(backbone, policy, settings, q) for q in queries]
    todo_idx = [i for i, k in enumerate(keys) if k not in cached]
    todo_idx = list({keys[i]: i for i in todo_idx}.values())  # a query listed twice is generated once
    # Similar prompt lengths per batch waste less compute on padding.
    todo_idx.sort(key=lambda i: len(queries[i]))
    with make_progress(transient=False) as progress:
        task = progress.add_task("generating responses", total=len(todo_idx), info="", visible=show_progress)
        done = 0
        with path.open("a", encoding="utf-8") as f:
            for start in range(0, len(todo_idx), batch_size):
                chunk = todo_idx[start : start + batch_size]
                answers = chat_generate(backbone, [queries[i] for i in chunk], policy, settings)
                for i, answer in zip(chunk, answers, strict=True):
                    row = {
                        "key": keys[i],
                        "query": queries[i],
                        "response": answer,
                        "policy": policy or "",
                        "refused": looks_like_refusal(answer),
                    }
                    cached[keys[i]] = row
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
                done += len(chunk)
                refused = sum(cached[keys[i]]["refused"] for i in todo_idx[:done])
                progress.update(task, advance=len(chunk), info=f"refused {refused}/{done}")
                if on_batch:
                    on_batch(done)
    return [cached[k] for k in keys]
