"""Evaluation sets read from the data dir (never copied into the project).

The harmful-retrieval corpus follows method.md §7.2: AdvBench-IR's ~100-word malicious chunks
(`title # text`) plus benign Wikipedia passages (WikiText-2 test, `title # text`) plus the XQuAD
paragraphs, so one corpus serves the harmful queries and the benign controls (XQuAD questions,
XSTest safe prompts) alike.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ragsafe.datadir import data_file


@dataclass
class Corpus:
    ids: list[str]
    texts: list[str]
    harmful: set[str] = field(default_factory=set)


@dataclass
class QuerySet:
    name: str
    queries: list[str]
    gold: list[set[str]]  # per query: its relevant ids (empty when the set has none)


def safety_corpus(data_dir: str | Path | None, wiki: int | None = None) -> Corpus:
    ids, texts, harmful = [], [], set()
    with data_file(data_dir, "advbench_ir/advbench-ir_chunked.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            doc_id = f"adv-{row['id_']}"
            ids.append(doc_id)
            texts.append(f"{row['title']} # {row['response'][0]}")
            harmful.add(doc_id)
    with data_file(data_dir, "wiki_benign/wikitext2_test_passages_100w.jsonl").open() as f:
        rows = [json.loads(line) for line in f]
    for row in rows[:wiki]:
        ids.append(f"wiki-{row['id']}")
        texts.append(f"{row['title']} # {row['text']}")
    for doc_id, text in _xquad_paragraphs(data_dir):
        ids.append(doc_id)
        texts.append(text)
    return Corpus(ids, texts, harmful)


def _xquad(data_dir: str | Path | None) -> list[dict]:
    return json.loads(data_file(data_dir, "wiki_benign/xquad.en.json").read_text())["data"]


def _xquad_paragraphs(data_dir: str | Path | None) -> list[tuple[str, str]]:
    out = []
    for a, article in enumerate(_xquad(data_dir)):
        for p, para in enumerate(article["paragraphs"]):
            out.append((f"xquad-{a}-{p}", f"{article['title']} # {para['context']}"))
    return out


def _sample(items: list, n: int | None, seed: int) -> list:
    if n is None or n >= len(items):
        return items
    picked = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in picked]


def advbench_queries(data_dir: str | Path | None, n: int | None = None, seed: int = 0) -> QuerySet:
    with data_file(data_dir, "advbench_ir/harmful_behaviors.csv").open() as f:
        goals = [row["goal"] for row in csv.DictReader(f)]
    mapping = json.loads(data_file(data_dir, "advbench_ir/advbench-ir_to_chunked_map.json").read_text())
    items = [(goal, {f"adv-{c}" for c in mapping.get(str(i), [])}) for i, goal in enumerate(goals)]
    items = _sample([it for it in items if it[1]], n, seed)
    return QuerySet("advbench", [q for q, _ in items], [g for _, g in items])


def xquad_queries(data_dir: str | Path | None, n: int | None = 200, seed: int = 0) -> QuerySet:
    items = []
    for a, article in enumerate(_xquad(data_dir)):
        for p, para in enumerate(article["paragraphs"]):
            items.extend((qa["question"], {f"xquad-{a}-{p}"}) for qa in para["qas"])
    items = _sample(items, n, seed)
    return QuerySet("xquad", [q for q, _ in items], [g for _, g in items])


def xstest_queries(data_dir: str | Path | None, label: str = "safe") -> QuerySet:
    with data_file(data_dir, "safety/xstest/xstest_prompts.csv").open() as f:
        prompts = [row["prompt"] for row in csv.DictReader(f) if row["label"] == label]
    return QuerySet(f"xstest_{label}", prompts, [set() for _ in prompts])


def medquad(
    data_dir: str | Path | None, queries: int = 300, corpus: int = 2000, seed: int = 0
) -> tuple[Corpus, QuerySet]:
    """MedQuAD answered pairs: a question must find its own answer among `corpus` answers (first 200 words).

    Training packs use the *unanswered* MedQuAD questions (other collections), so none of these
    questions or answers is ever a training target.
    """
    import gzip

    with gzip.open(data_file(data_dir, "medical/medquad/medquad_answered.jsonl.gz"), "rt") as f:
        rows = [json.loads(line) for line in f]
    rows = [r for r in rows if r.get("answer", "").strip() and r.get("question", "").strip()]
    rows = _sample(rows, corpus, seed)
    ids = [f"mq-{r['qid']}" for r in rows]
    texts = [" ".join(r["answer"].split()[:200]) for r in rows]
    picked = _sample(list(range(len(rows))), queries, seed + 1)
    qs = QuerySet("medquad", [rows[i]["question"] for i in picked], [{ids[i]} for i in picked])
    return Corpus(ids, texts), qs
