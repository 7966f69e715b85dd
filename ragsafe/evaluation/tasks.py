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

from ragsafe.datadir import DataError, data_file, resolve_data_dir


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

    Training packs use the *unanswered* MedQuAD questions (other collections), so none of these answers
    is ever a training target; the templated questions do recur across collections, so the training
    side drops every answered question's text (`ragsafe.train.queries.HELD_OUT_FILES`).
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


# ---------------------------------------------------------------- reasoning and general families


@dataclass
class RetrievalTask:
    """Queries against a corpus with graded relevance (qrels[i]: doc id -> grade > 0)."""

    name: str
    corpus: Corpus
    queries: list[str]
    qrels: list[dict[str, int]]

    def subsample(self, queries: int | None, corpus: int | None, seed: int = 0) -> RetrievalTask:
        """`queries` random queries over a corpus of at most `corpus` documents, the same for every
        embedder (LLM-side document passes must stay affordable on a CPU). The corpus holds the
        sampled queries' relevant documents first, then random others; where the relevant ones alone
        exceed the cap (NFCorpus judges ~50 per query) a random subset of them is kept and the qrels are
        cut to it, as if the collection were that small; queries left with nothing relevant are dropped."""
        picked = _sample(list(range(len(self.queries))), queries, seed)
        qs = [self.queries[i] for i in picked]
        qrels = [self.qrels[i] for i in picked]
        if corpus is None or corpus >= len(self.corpus.ids):
            return RetrievalTask(self.name, self.corpus, qs, qrels)
        relevant = sorted({d for rel in qrels for d in rel})
        if len(relevant) > corpus:
            relevant = _sample(relevant, corpus, seed + 2)
        kept = set(relevant)
        others = [i for i, d in enumerate(self.corpus.ids) if d not in kept]
        extra = set(_sample(others, max(0, corpus - len(kept)), seed + 1))
        keep = [i for i, d in enumerate(self.corpus.ids) if d in kept or i in extra]
        sub = Corpus([self.corpus.ids[i] for i in keep], [self.corpus.texts[i] for i in keep])
        cut = [({d: g for d, g in rel.items() if d in kept}, q) for rel, q in zip(qrels, qs, strict=True)]
        cut = [(rel, q) for rel, q in cut if rel]
        return RetrievalTask(self.name, sub, [q for _, q in cut], [rel for rel, _ in cut])


def _words(text: str, limit: int | None) -> str:
    return " ".join(text.split()[:limit]) if limit else " ".join(text.split())


def theoremqa(data_dir: str | Path | None, doc_words: int | None = None) -> RetrievalTask:
    """TheoremQA question -> the theorem it needs (BRIGHT's TheoremQA-theorems task, built from its
    source): questions that need a picture are left out; theorem names match case-insensitively."""
    theorems = json.loads(data_file(data_dir, "reasoning/theoremqa/all_theorems.json").read_text())
    by_name = {name.strip().lower(): name for name in theorems}
    ids = [f"thm-{name}" for name in theorems]
    corpus = Corpus(ids, [f"{name}: {_words(text, doc_words)}" for name, text in theorems.items()])
    queries, qrels = [], []
    for row in json.loads(data_file(data_dir, "reasoning/theoremqa/theoremqa_test.json").read_text()):
        name = by_name.get(str(row.get("theorem", "")).strip().lower())
        if name is None or str(row.get("Picture", "None")) not in ("None", "", "null"):
            continue
        queries.append(row["Question"])
        qrels.append({f"thm-{name}": 1})
    return RetrievalTask("TheoremQA", corpus, queries, qrels)


def nfcorpus(data_dir: str | Path | None, doc_words: int | None = None) -> RetrievalTask:
    """NFCorpus, original release (test split): title queries, graded 3-2-1 qrels."""
    ids, texts = [], []
    for line in data_file(data_dir, "nfcorpus_original/test.docs").read_text().splitlines():
        doc_id, _, text = line.partition("\t")
        ids.append(doc_id)
        texts.append(_words(text, doc_words))
    titles = {}
    for line in data_file(data_dir, "nfcorpus_original/test.titles.queries").read_text().splitlines():
        qid, _, text = line.partition("\t")
        titles[qid] = text
    judged: dict[str, dict[str, int]] = {}
    for line in data_file(data_dir, "nfcorpus_original/test.3-2-1.qrel").read_text().splitlines():
        qid, _, doc_id, grade = line.split()
        if int(grade) > 0:
            judged.setdefault(qid, {})[doc_id] = int(grade)
    qids = [q for q in titles if q in judged]
    return RetrievalTask("NFCorpus", Corpus(ids, texts), [titles[q] for q in qids], [judged[q] for q in qids])


def arguana(data_dir: str | Path | None, doc_words: int | None = None) -> RetrievalTask:
    """ArguAna (original counterargs corpus): an argument must find its best counter-argument. The
    query's own text is removed from its candidates, as MTEB does."""
    docs = [json.loads(line) for line in data_file(data_dir, "arguana_original/arguana_test_corpus.jsonl").open()]
    corpus = Corpus([d["id"] for d in docs], [_words(f"{d['title']} {d['text']}", doc_words) for d in docs])
    queries = {}
    for line in data_file(data_dir, "arguana_original/arguana_test_queries.jsonl").open():
        row = json.loads(line)
        queries[row["id"]] = row["text"]
    judged: dict[str, dict[str, int]] = {}
    with data_file(data_dir, "arguana_original/arguana_test_qrels.tsv").open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if int(row["score"]) > 0 and row["corpus-id"] != row["query-id"]:
                judged.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    qids = [q for q in queries if q in judged]
    return RetrievalTask("ArguAna", corpus, [queries[q] for q in qids], [judged[q] for q in qids])


def pubmedqa(data_dir: str | Path | None, doc_words: int | None = None) -> RetrievalTask:
    """PubMedQA (PQA-L): a biomedical question must find its own abstract among the 1,000.

    No benchmark reports it and no training pack reads it: a development set, for choices (such as
    gen_hybrid's β) that must not be made on a benchmark."""
    rows = json.loads(data_file(data_dir, "medical/pubmedqa/ori_pqal.json").read_text())
    ids = [f"pmid-{pmid}" for pmid in rows]
    corpus = Corpus(ids, [_words(" ".join(r["CONTEXTS"]), doc_words) for r in rows.values()])
    return RetrievalTask("PubMedQA", corpus, [r["QUESTION"] for r in rows.values()], [{i: 1} for i in ids])


def _smart(path: Path) -> dict[str, str]:
    """SMART-format records (`.I n` then `.W` text) as {id: text}."""
    out: dict[str, str] = {}
    current, field_name = None, None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(".I"):
            current, field_name = line.split()[1], None
            out[current] = ""
        elif line.startswith(".") and len(line) >= 2 and line[1].isalpha() and len(line.split()[0]) == 2:
            field_name = line[1]
        elif current is not None and field_name == "W":
            out[current] += " " + line.strip()
    return {k: " ".join(v.split()) for k, v in out.items()}


def med(data_dir: str | Path | None, doc_words: int | None = None) -> RetrievalTask:
    """Medline (MED), the classic Glasgow collection: 30 queries, 1,033 abstracts."""
    docs = _smart(data_file(data_dir, "retrieval_classic/med/MED.ALL"))
    queries = _smart(data_file(data_dir, "retrieval_classic/med/MED.QRY"))
    judged: dict[str, dict[str, int]] = {}
    for line in data_file(data_dir, "retrieval_classic/med/MED.REL").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            judged.setdefault(parts[0], {})[f"med-{parts[2]}"] = 1
    corpus = Corpus([f"med-{k}" for k in docs], [_words(v, doc_words) for v in docs.values()])
    qids = [q for q in queries if q in judged]
    return RetrievalTask("MED", corpus, [queries[q] for q in qids], [judged[q] for q in qids])


@dataclass
class PairTask:
    """Sentence pairs with a gold similarity score (STS)."""

    name: str
    first: list[str]
    second: list[str]
    scores: list[float]

    def subsample(self, n: int | None, seed: int = 0) -> PairTask:
        picked = _sample(list(range(len(self.scores))), n, seed)
        return PairTask(
            self.name,
            [self.first[i] for i in picked],
            [self.second[i] for i in picked],
            [self.scores[i] for i in picked],
        )

    def sentences(self) -> list[str]:
        """Every sentence once, first sides first, in order."""
        return list(dict.fromkeys([*self.first, *self.second]))

    def without_sentences_of(self, others: list[PairTask]) -> PairTask:
        """The pairs none of whose sentences occurs in the other tasks, compared on letters and digits
        only (STS12 is tokenised: "a horse ." is STS-B's "A horse."): STS-B's splits reuse STS12-16
        pairs, so a development split must be cleaned of the benchmarks' sentences."""

        def key(text: str) -> str:
            return "".join(c for c in text.casefold() if c.isalnum())

        seen = {key(t) for o in others for t in (*o.first, *o.second)}
        keep = [
            i
            for i, (a, b) in enumerate(zip(self.first, self.second, strict=True))
            if key(a) not in seen and key(b) not in seen
        ]
        return PairTask(
            self.name,
            [self.first[i] for i in keep],
            [self.second[i] for i in keep],
            [self.scores[i] for i in keep],
        )


STS_TASKS = ("STSBenchmark", "STS12", "STS13", "STS14", "STS15", "STS16", "BIOSSES")
STSB_FILES = {"STSBenchmark": "sts-test.csv", "STSBenchmark-dev": "sts-dev.csv", "STSBenchmark-train": "sts-train.csv"}


def sts(data_dir: str | Path | None, name: str) -> PairTask:
    """STS-B test (or its dev and train splits, "STSBenchmark-dev", "STSBenchmark-train"), SemEval
    STS12-16 (all their scored subsets) or BIOSSES (mean annotator score)."""
    first, second, scores = [], [], []
    if name in STSB_FILES:
        for line in data_file(data_dir, f"sts/stsbenchmark/{STSB_FILES[name]}").read_text().splitlines():
            cols = line.split("\t")
            if len(cols) >= 7:
                scores.append(float(cols[4]))
                first.append(cols[5])
                second.append(cols[6])
    elif name == "BIOSSES":
        with data_file(data_dir, "sts/biosses/biosses.tsv").open() as f:
            for row in csv.DictReader(f, delimiter="\t"):
                first.append(row["sentence1"])
                second.append(row["sentence2"])
                scores.append(float(row["mean_score"]))
    elif name in STS_TASKS:
        folder = resolve_data_dir(data_dir) / f"sts/sts12-16/{name}-en-test"
        if not folder.is_dir():
            raise DataError(f"Missing data folder {folder} (expected as 'sts/sts12-16/{name}-en-test').")
        for gs in sorted(folder.glob("STS.gs.*.txt")):
            inputs = folder / gs.name.replace("STS.gs.", "STS.input.")
            if gs.name == "STS.gs.ALL.txt" or not inputs.is_file():  # STS13's SMT text is withheld upstream
                continue
            pairs = inputs.read_text(errors="replace").splitlines()
            for score, pair in zip(gs.read_text().splitlines(), pairs, strict=False):
                cols = pair.split("\t")
                if score.strip() and len(cols) >= 2:
                    scores.append(float(score))
                    first.append(cols[0])
                    second.append(cols[1])
    else:
        raise ValueError(f"unknown STS task {name!r}; known: {', '.join([*STS_TASKS, 'STSBenchmark-dev'])}")
    return PairTask(name, first, second, scores)


@dataclass
class ClassificationTask:
    name: str
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]


def banking77(data_dir: str | Path | None, per_class: int | None = None, test: int | None = None, seed: int = 0):
    """Banking77 intents; `per_class` training examples per intent (MTEB samples a few per class too)."""

    def read(name: str) -> list[tuple[str, str]]:
        with data_file(data_dir, f"classification/banking77/{name}.csv").open() as f:
            return [(row["text"], row["category"]) for row in csv.DictReader(f)]

    train, by_label = read("train"), {}
    for text, label in train:
        by_label.setdefault(label, []).append(text)
    picked = [(t, label) for label, texts in sorted(by_label.items()) for t in _sample(texts, per_class, seed)]
    tests = _sample(read("test"), test, seed + 1)
    return ClassificationTask(
        "Banking77",
        [t for t, _ in picked],
        [lab for _, lab in picked],
        [t for t, _ in tests],
        [lab for _, lab in tests],
    )
