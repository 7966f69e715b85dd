"""Passages in Qdrant: one collection per corpus, one named vector per embedder.

Embedded mode (a folder on disk, the default) suits up to about 20k points; past that, or for
several machines, point `url` at a Qdrant server or cluster (the API key is read from the
environment variable named by `api_key_env`, never passed on a command line).

Every embedder is a named vector of the same point, so embedders are compared on identical
passages. Upserts are batched and keyed by passage id (a UUID made from the passage's content
hash): re-indexing the same corpus adds nothing, and an interrupted run finishes on the next one
without duplicates, because a point is only written once all its vectors are computed (and new
points must carry every vector the collection declares).

BM25 is stored hashed (`BM25Embedder(hashed=True)`): Qdrant applies the idf at query time from the
collection's live document frequencies, so adding passages writes only the new points, however large
the collection. The length normalisation keeps the average passage length of the first indexing.
A collection made before that (a vocabulary and idf in its statistics) keeps working: there, adding
passages refits the statistics and re-encodes the stored sparse vectors, marked incomplete until
that is done, so a run killed in between is repaired by the next one, whatever it adds.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from qdrant_client import QdrantClient, models

from ragsafe.corpus import Passage
from ragsafe.embedders.base import Embedder
from ragsafe.embedders.bm25 import BM25Embedder
from ragsafe.embedders.identity import document_space
from ragsafe.progress import make_progress

TIE_MARGIN = 16  # extra hits fetched so that ties at the k-th score are broken the same way every time


class IndexStoreError(RuntimeError):
    """The index cannot serve this request (missing collection, wrong embedder, dimension mismatch)."""


@dataclass
class Pruned:
    removed: int  # stale points of the corpus, deleted
    unmarked: int  # points of no known corpus (an earlier ragsafe's), which pruning cannot judge


@dataclass
class Hit:
    id: str
    score: float
    text: str
    metadata: dict


def default_index_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(os.environ.get("RAGSAFE_INDEX", Path(base) / "ragsafe" / "qdrant"))


def point_id(passage_id: str) -> str:
    """Qdrant wants a UUID (or an integer): ragsafe's hex ids map onto one, any other id is hashed first."""
    # an id of hex digits only (ragsafe's own, a sha1 or sha256) keeps its first 32 as earlier versions did;
    # any other is hashed whole: a prefix would merge "<md5>-0" with "<md5>-1", padding "1" with "10"
    head = passage_id[:32]
    if len(passage_id) < 32 or not all(c in "0123456789abcdefABCDEF" for c in passage_id):
        head = hashlib.sha256(passage_id.encode("utf-8")).hexdigest()[:32]
    return str(uuid.UUID(hex=head))


def _under(source: object, spared: set[str] | frozenset[str]) -> bool:
    """Whether a point's source is one of these paths or lies in a folder among them."""
    if not isinstance(source, str):
        return False
    parts = Path(source).parts  # from no part at all, "." (the corpus folder itself), to the whole path
    return any(str(Path(*parts[:n])) in spared for n in range(len(parts) + 1))


def check_k(k: object) -> None:
    """k is a count of passages: a whole number, at least 1 (a float or a string is a caller's mistake)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be a whole number, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def storage_name(emb: Embedder) -> str:
    """The named vector an embedder's documents live in; gen_asym documents *are* teacher vectors. Documents
    the backbone embeds (gen, llm_mean) carry a digest of their weights in the name, so an index never
    serves one checkpoint's queries against another checkpoint's documents."""
    if getattr(emb, "documents", None) == "teacher":
        return "teacher"
    space = document_space(emb)
    return emb.name if space is None else f"{emb.name}-{space}"


def _sparse(row: sp.csr_matrix) -> models.SparseVector:
    row = row.tocsr()
    return models.SparseVector(indices=row.indices.tolist(), values=row.data.astype(float).tolist())


class _SharedLocalClients:
    """Embedded Qdrant locks its folder for one client, so the Index objects of one process that open the
    same folder share its client; the last one to close closes it. (Process-wide, as that lock is.)"""

    def __init__(self) -> None:
        # reentrant: the garbage collector can finalize a dropped Index (which releases its folder) in the
        # middle of `acquire`, on the same thread; a plain lock would wait for itself forever
        self._guard = threading.RLock()
        self._open: dict[Path, list] = {}  # folder -> [client, how many Index objects hold it]

    def acquire(self, folder: Path) -> QdrantClient:
        """The client of `folder`, which must be resolved (the key `release` gets back)."""
        with self._guard:
            entry = self._open.get(folder)
            if entry is None:
                try:
                    client = QdrantClient(path=str(folder))
                except RuntimeError as err:
                    if "already accessed" not in str(err):
                        raise
                    raise IndexStoreError(
                        f"The index folder {folder} is open in another process; embedded Qdrant allows one "
                        "at a time. Wait for it, or run a Qdrant server and pass --qdrant-url."
                    ) from err
                entry = self._open[folder] = [client, 0]
            entry[1] += 1
            return entry[0]

    def release(self, folder: Path) -> None:
        with self._guard:
            entry = self._open.get(folder)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                entry[0].close()
                del self._open[folder]


_LOCAL_CLIENTS = _SharedLocalClients()


class Index:
    META = "__ragsafe_meta"

    def __init__(
        self, name: str, path: str | Path | None = None, url: str | None = None, api_key_env: str = "QDRANT_API_KEY"
    ) -> None:
        if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
            raise IndexStoreError(f"Index name must be letters, digits, '-' or '_', got {name!r}.")
        self.name = name
        self.folder: Path | None = None
        self._release = None  # closes or releases the client, once: at close() or when the Index is dropped
        if url:
            self.client = QdrantClient(url=url, api_key=os.environ.get(api_key_env))
            try:  # the client connects lazily: a wrong URL would surface deep inside the first command
                self.client.get_collections()
            except Exception as err:
                self.client.close()
                raise IndexStoreError(f"Cannot reach the Qdrant server at {url}: {err}") from err
        else:
            folder = Path(path) if path else default_index_path()
            if folder.exists() and not folder.is_dir():
                raise IndexStoreError(f"The index folder {folder} is a file; give a folder (made if missing).")
            folder.mkdir(parents=True, exist_ok=True)
            self.folder = folder.resolve()
            self.client = _LOCAL_CLIENTS.acquire(self.folder)
            # an Index dropped without close() must still let its folder go, as a lone client's __del__ did
            self._release = weakref.finalize(self, _LOCAL_CLIENTS.release, self.folder)

    def close(self) -> None:
        if self._release is not None:
            self._release()  # a finalizer runs once: a second close releases nothing other Indexes share
        else:
            self.client.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ schema
    def exists(self) -> bool:
        return self.client.collection_exists(self.name)

    def require(self) -> None:
        """Fail, saying how to make it, when this index does not exist."""
        if not self.exists():
            raise IndexStoreError(f"No index named '{self.name}'. Create it with: ragsafe index DIR --name {self.name}")

    def vector_names(self) -> dict[str, int | None]:
        """Embedder name -> dimension (None for sparse) of the existing collection."""
        self.require()
        params = self.client.get_collection(self.name).config.params
        dense = {k: v.size for k, v in (params.vectors or {}).items()}
        sparse = dict.fromkeys(params.sparse_vectors or {})
        return {**dense, **sparse}

    def check_vectors(self, names: set[str]) -> None:
        """Fail before any model loads when an existing collection lacks one of these named vectors."""
        if not self.exists():
            return
        lacking = sorted(names - set(self.vector_names()))
        if lacking:
            raise IndexStoreError(
                f"Index '{self.name}' has vectors {sorted(self.vector_names())}, not {lacking}: a collection's "
                "vectors are fixed when it is made. Index into a new name for these embedders."
            )

    def ensure(self, embedders: list[Embedder]) -> None:
        """Create the collection for these embedders, or check that the existing one matches them."""
        if not self.exists():
            if self.client.collection_exists(self._meta_collection()):  # left by a collection deleted since
                self.client.delete_collection(self._meta_collection())
            self.client.create_collection(
                self.name,
                vectors_config={
                    storage_name(e): models.VectorParams(size=e.dim, distance=models.Distance.COSINE)
                    for e in embedders
                    if not e.sparse
                },
                sparse_vectors_config={
                    storage_name(e): models.SparseVectorParams(modifier=models.Modifier.IDF)
                    for e in embedders
                    if e.sparse
                },
            )
            return
        self.check_vectors({storage_name(e) for e in embedders})
        have = self.vector_names()
        for e in embedders:
            name = storage_name(e)
            if not e.sparse and have[name] != e.dim:
                raise IndexStoreError(
                    f"Index '{self.name}' stores '{name}' vectors of dimension {have[name]}, but this "
                    f"embedder gives {e.dim} (another checkpoint or teacher?). Use a new index name."
                )

    # ------------------------------------------------------------ bm25 statistics
    def _meta_collection(self) -> str:
        return f"{self.name}{self.META}"

    def save_bm25(self, bm25: BM25Embedder, complete: bool = True) -> None:
        """complete=False marks statistics whose stored vectors are still being re-encoded: a run killed
        then leaves a mark the next one sees (`_bm25_complete`) and repairs."""
        meta = self._meta_collection()
        if not self.client.collection_exists(meta):
            self.client.create_collection(
                meta, vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT)
            )
        payload = {"bm25": json.dumps(bm25.state()), "complete": complete}
        self.client.upsert(meta, [models.PointStruct(id=0, vector=[0.0], payload=payload)])

    def load_bm25(self) -> BM25Embedder:
        self.vector_names()  # a missing index is named as such, not as missing BM25 statistics
        meta = self._bm25_meta()
        if meta is None:
            raise IndexStoreError(f"Index '{self.name}' has no BM25 statistics; re-index with the bm25 embedder.")
        return BM25Embedder().load_state(json.loads(meta["bm25"]))

    def _bm25_meta(self) -> dict | None:
        """The stored BM25 payload: the statistics, and whether the stored vectors are all encoded with them."""
        meta = self._meta_collection()
        points = self.client.retrieve(meta, [0]) if self.client.collection_exists(meta) else []
        return points[0].payload if points else None

    def _bm25_complete(self) -> bool:
        meta = self._bm25_meta()
        return meta is not None and meta.get("complete", True)

    def _stored_texts(self) -> dict[str | int, str]:
        """Point id -> passage text of every point stored."""
        out: dict[str | int, str] = {}
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.name, limit=1024, offset=offset, with_payload=["text"], with_vectors=False
            )
            out.update({p.id: p.payload.get("text", "") for p in points})
            if offset is None:
                return out

    def _idf_in_store(self, name: str = "bm25") -> bool:
        params = self.client.get_collection(self.name).config.params.sparse_vectors or {}
        return name in params and params[name].modifier == models.Modifier.IDF

    def _prepare_bm25(self, bm25: BM25Embedder, new: list[Passage]) -> None:
        """Give `bm25` the collection's statistics, fitting them on the first passages it gets."""
        if not self._idf_in_store(storage_name(bm25)):
            self._refresh_bm25(bm25, new)
            return
        meta = self._bm25_meta()
        if meta is not None:
            bm25.load_state(json.loads(meta["bm25"]))
        elif new:
            bm25.hashed = True
            bm25.fit([p.text for p in new])
            self.save_bm25(bm25)  # before any point is written, so every stored vector used these

    def _refresh_bm25(self, bm25: BM25Embedder, new: list[Passage]) -> None:
        """Fit `bm25` on everything the index will hold, and keep the stored sparse vectors in step.

        The statistics (vocabulary, idf, average length) belong to the whole collection: a stored
        vector is only comparable with a query encoded by the statistics it was made with, so when new
        passages change them, every stored bm25 vector is re-encoded (seconds for tens of thousands).
        """
        meta = self._bm25_meta()
        if not new and meta is not None and meta.get("complete", True):
            bm25.load_state(json.loads(meta["bm25"]))
            return
        name, stored = storage_name(bm25), self._stored_texts()
        bm25.hashed = False
        bm25.fit([*stored.values(), *(p.text for p in new)])
        self.save_bm25(bm25, complete=False)
        ids = list(stored)
        with make_progress(transient=True) as progress:
            task = progress.add_task("bm25: re-encoding stored passages", total=len(ids), info="", visible=bool(ids))
            for start in range(0, len(ids), 512):
                chunk = ids[start : start + 512]
                vectors = bm25.encode_documents([stored[i] for i in chunk])
                points = [models.PointVectors(id=i, vector={name: _sparse(vectors[r])}) for r, i in enumerate(chunk)]
                self.client.update_vectors(self.name, points, wait=True)
                progress.advance(task, len(chunk))
        self.save_bm25(bm25, complete=True)

    # ------------------------------------------------------------ write
    def missing(self, passages: list[Passage]) -> list[Passage]:
        """Passages not stored yet (checked by id, in batches)."""
        out = []
        for start in range(0, len(passages), 256):
            chunk = passages[start : start + 256]
            found = {p.id for p in self.client.retrieve(self.name, [point_id(q.id) for q in chunk], with_payload=False)}
            out.extend(q for q in chunk if point_id(q.id) not in found)
        return out

    def holds(self, passages: list[Passage], vectors: set[str]) -> bool:
        """Whether every passage is stored with all these named vectors, so a rerun has nothing to embed."""
        if not self.exists() or not vectors <= set(self.vector_names()):
            return False
        if "bm25" in vectors and not self._bm25_complete():
            return False
        return not self.missing(passages)

    def add(
        self,
        passages: list[Passage],
        embedders: list[Embedder],
        batch_size: int = 64,
        show_progress=True,
        corpus: str | None = None,
    ) -> int:
        """Embed and upsert the passages not stored yet; returns how many were added.

        `corpus` (e.g. the folder's resolved path) marks the new points, so `prune` can later drop
        those whose files changed or went away.

        A BM25 embedder takes the collection's statistics, whatever it had (see the module docstring).
        """
        if passages is None or isinstance(passages, (str, Passage)):
            raise TypeError("Index.add takes a list of Passage objects (see ragsafe.corpus.load_corpus)")
        wrong = next((i for i, p in enumerate(passages) if not isinstance(p, Passage)), None)
        if wrong is not None:
            raise TypeError(
                f"passage {wrong} is a {type(passages[wrong]).__name__}, not a Passage (see ragsafe.corpus.load_corpus)"
            )
        if not embedders:
            raise ValueError("Index.add needs at least one embedder: points without vectors could never be found")
        if not passages:
            return 0
        self.ensure(embedders)
        # one point per id: a repeated id would be embedded twice, stored once and counted twice
        todo = self.missing(list({point_id(p.id): p for p in passages}.values()))
        lacking = sorted(set(self.vector_names()) - {storage_name(e) for e in embedders})
        if todo and lacking:
            raise IndexStoreError(
                f"Index '{self.name}' also stores {lacking} vectors; add passages with those embedders too, "
                "so that no passage lacks one (or index into a new name)."
            )
        for e in embedders:
            if isinstance(e, BM25Embedder):
                self._prepare_bm25(e, todo)
        mark = {"corpus": [corpus]} if corpus else {}
        with make_progress(transient=False) as progress:
            task = progress.add_task(
                f"indexing {self.name}", total=len(todo), info="", visible=show_progress and bool(todo)
            )
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                texts = [p.text for p in chunk]
                vectors = {}
                for e in embedders:  # one document pass per stored vector, however many embedders share it
                    if storage_name(e) not in vectors:
                        vectors[storage_name(e)] = e.encode_documents(texts)
                points = [
                    models.PointStruct(
                        id=point_id(p.id),
                        vector={
                            name: _sparse(v[row]) if sp.issparse(v) else np.asarray(v[row]).tolist()
                            for name, v in vectors.items()
                        },
                        payload={**p.metadata, **mark, "passage_id": p.id, "text": p.text},
                    )
                    for row, p in enumerate(chunk)
                ]
                self.client.upsert(self.name, points, wait=True)
                progress.advance(task, len(chunk))
        return len(todo)

    def claim(self, corpus: str, passages: list[Passage]) -> int:
        """Mark the stored points of these passages as also `corpus`'s; returns how many took the mark.

        A passage id hashes its path inside its folder and its text, so the same file in two folders
        indexed into one collection is one point. It carries both folders' marks, and pruning one
        folder only takes that folder's mark off (`prune`); the point goes when no folder holds it."""
        if not self.exists():
            return 0
        by_marks: dict[tuple[str, ...], list] = {}
        for start in range(0, len(passages), 256):
            ids = [point_id(p.id) for p in passages[start : start + 256]]
            for point in self.client.retrieve(self.name, ids, with_payload=["corpus"]):
                marks = _marks(point.payload)
                if corpus not in marks:
                    by_marks.setdefault(tuple(marks), []).append(point.id)
        for marks, ids in by_marks.items():
            self.client.set_payload(self.name, {"corpus": [*marks, corpus]}, points=ids, wait=True)
        return sum(len(ids) for ids in by_marks.values())

    def prune(self, corpus: str, keep: list[Passage], spare: set[str] | frozenset[str] = frozenset()) -> Pruned:
        """Delete the points indexed from `corpus` (see `add`) that are not among `keep`: passages of files
        since edited or removed. Points whose `source` is in `spare` or under a folder there (what could not
        be read this time: `CorpusReport.unread`) stay, and so do other corpora's: a point another
        folder also holds only loses this folder's mark. The points of `keep` take this corpus's mark first
        (`claim`); unmarked points (added by an earlier ragsafe, or through the API without a corpus)
        outside `keep` are only counted."""
        if not self.exists():
            return Pruned(0, 0)
        self.claim(corpus, keep)
        wanted = {point_id(p.id) for p in keep}
        unmarked = models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="corpus"))])
        strangers = sum(1 for point in self._scroll(unmarked, []) if str(point.id) not in wanted)
        # a list payload matches when any of its values does: the points this corpus marks, alone or shared
        mine = models.Filter(must=[models.FieldCondition(key="corpus", match=models.MatchValue(value=corpus))])
        stale, shared = [], {}
        for point in self._scroll(mine, ["source", "corpus"]):
            if str(point.id) in wanted or _under(point.payload.get("source"), spare):
                continue
            others = tuple(m for m in _marks(point.payload) if m != corpus)
            if others:
                shared.setdefault(others, []).append(point.id)
            else:
                stale.append(point.id)
        for others, ids in shared.items():
            self.client.set_payload(self.name, {"corpus": list(others)}, points=ids, wait=True)
        if stale:
            self.client.delete(self.name, models.PointIdsList(points=stale), wait=True)
            meta = self._bm25_meta()
            if meta is not None and not self._idf_in_store():  # legacy statistics still count the deleted ones
                self.save_bm25(BM25Embedder().load_state(json.loads(meta["bm25"])), complete=False)
                self._refresh_bm25(BM25Embedder(), [])  # refit and re-encode; a kill here is repaired later
        return Pruned(len(stale), strangers)

    def _scroll(self, where: models.Filter, payload: list[str]) -> Iterator[models.Record]:
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.name, scroll_filter=where, limit=1024, offset=offset, with_payload=payload, with_vectors=False
            )
            yield from points
            if offset is None:
                return

    def count(self) -> int:
        return self.client.count(self.name, exact=True).count

    # ------------------------------------------------------------ read
    def search(
        self,
        query_vector,
        embedder_name: str,
        k: int = 10,
        only: list[str] | None = None,
        where: models.Filter | None = None,
    ) -> list[Hit]:
        """The k nearest passages; `only`: point ids (`point_id(passage id)`) to search among; `where`: a
        Qdrant filter on the passages' payload (their metadata)."""
        have = self.vector_names()
        if embedder_name not in have:
            family = embedder_name.split("-")[0]
            other = any(h.split("-")[0] == family for h in have)
            hint = f": its '{family}' documents were embedded with other weights (another checkpoint)" if other else ""
            raise IndexStoreError(f"Index '{self.name}' has no '{embedder_name}' vectors (has {sorted(have)}){hint}.")
        check_k(k)
        if sp.issparse(query_vector):
            if query_vector.shape[0] != 1:
                raise ValueError(f"one query vector at a time, got {query_vector.shape[0]} rows")
            query = _sparse(query_vector)
        else:
            dense = np.asarray(query_vector, dtype=np.float32)
            if dense.ndim > 2 or (dense.ndim == 2 and dense.shape[0] != 1):
                raise ValueError(f"one query vector at a time, got an array of shape {dense.shape}")
            query = dense.ravel().tolist()
            if have[embedder_name] is not None and len(query) != have[embedder_name]:
                raise IndexStoreError(
                    f"The query vector has {len(query)} values; '{embedder_name}' vectors in '{self.name}' have "
                    f"{have[embedder_name]} (another embedder or checkpoint?)."
                )
        clauses = ([] if only is None else [models.HasIdCondition(has_id=only)]) + ([] if where is None else [where])
        among = models.Filter(must=clauses) if clauses else None
        # a few more than k, then ties broken by passage id: equal scores (the same text in two files, BM25's
        # exact ties) otherwise come back in storage order, which changes when the collection is reopened;
        # scores equal to 6 decimals tie (a reopened collection's arithmetic moves the last bits)
        result = self.client.query_points(
            self.name, query=query, using=embedder_name, limit=k + TIE_MARGIN, with_payload=True, query_filter=among
        )
        hits = [
            Hit(
                id=point.payload.get("passage_id", str(point.id)),
                score=float(point.score),
                text=point.payload.get("text", ""),
                metadata={k: v for k, v in point.payload.items() if k not in ("text", "passage_id")},
            )
            for point in result.points
        ]
        return sorted(hits, key=lambda hit: (-round(hit.score, 6), hit.id))[:k]


def _marks(payload: dict | None) -> list[str]:
    """The corpora a point's payload names: a list, or one string (points an earlier ragsafe marked)."""
    value = (payload or {}).get("corpus")
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
