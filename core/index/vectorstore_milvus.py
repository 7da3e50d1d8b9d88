"""The ``milvus`` vector store: per-second vectors in a Milvus collection, one collection per build.

Why this shape:

* **Nothing per-row in the serving process.** A row's primary key *is* its place:
  ``id = segment_key << 16 | second``, so a hit's (segment, second) comes back with the hit itself
  and needs no row map; vectors for exact re-alignment are fetched by key (``id in [...]``);
  "not this video" is a scalar filter on ``segment``. The process keeps per-segment arrays only.
* **Builds are collections, switched by an alias** (``<prefix>_current``): a build writes a new
  collection, builds the SCANN index, tunes ``nprobe``/``reorder_k`` for recall@10 against exact
  search on leave-segment-out queries (seconds of clips left out of both answers: stand-ins for
  new recordings), verifies the row count and the recall, and only then is the alias moved in
  one call — readers see the old collection or the new one, never a half-built one. The previous
  collection survives one more build (readers that loaded it keep working), older ones are dropped.
* Milvus 2.3 stores float32 (no int8 vectors), so rows are the dequantized bytes ``q*4/255-2``
  and its "L2" is squared L2: distances match the ScaNN store's.
* Milvus's SCANN is IVF + 4-bit fast-scan PQ + exact re-rank (Knowhere), not Google's ScaNN;
  ``nlist`` ≈ 2·√(rows of a segment) (a power of two; Milvus builds one IVF per segment),
  searched with the tuned ``nprobe`` and ``reorder_k``.

Segment keys: a plain build uses the dense segment id as the key; a sharded build
(``core.index.milvus_ingest``) uses ``input shard << 20 | record`` so machines never coordinate
ids, and the build keeps the sorted keys (one per segment) to map them back.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from core.errors import EchoVidsError, IndexMissingError, RowsGoneError
from core.index.ann import cheapest_reaching, dequantize, exact_search, left_out_queries
from core.index.vectorstore import BuildContext, Neighbours, RowBatch, VectorStore

SECOND_BITS = 16
TARGET_RECALL = 0.97        # what tuning aims for (the ScaNN store's target)
VERIFY_RECALL = 0.95        # below this a build is refused and its collection dropped
INSERT_ROWS = 20_000        # rows per insert call (~10 MB of float32: well under gRPC's 64 MB)
QUERY_IDS = 8_000           # primary keys per `id in [...]` fetch
CACHE_SEGMENTS = 20_000     # clips whose vectors a serving process keeps (~26 MB at 10 s each)
NPROBES = (8, 16, 32, 64, 128, 256)
REORDERS = (100, 200, 400)
SEGMENT_ROWS = 250_000     # rows of a sealed segment (see choose_nlist)
SETTLE_POLL_S = 1.0
SETTLE_TIMEOUT_S = 4 * 3600
TUNING_QUERIES = 200       # segments left out, one query second each
#: One-sided 95 %: a setting is taken when the lower bound of its tuning recall reaches TARGET_RECALL.
#: Without it the 1 M bench's pick flipped between nprobe 16 (tuning recall 0.9705, held-out 0.933)
#: and 32 (0.977, 0.966) from one build to the next.
CONFIDENCE_Z = 1.645


class MilvusStoreError(EchoVidsError):
    """The Milvus server cannot be reached, or a build on it failed verification."""


def _pymilvus():
    """pymilvus, imported quietly (it warns about pkg_resources on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pymilvus
    return pymilvus


_connections: dict[tuple[str, str | None], str] = {}
_conn_lock = threading.Lock()


def connect(settings: Any) -> str:
    """A pymilvus connection alias for the configured server, opened once per (URI, token)."""
    key = (settings.milvus_uri, settings.milvus_token)
    with _conn_lock:
        alias = _connections.get(key)
        if alias is not None:
            return alias
        pm = _pymilvus()
        alias = f"echovids-{uuid.uuid4().hex[:8]}"
        kwargs: dict = {"uri": settings.milvus_uri, "timeout": 10}
        if settings.milvus_token:
            kwargs["token"] = settings.milvus_token
        try:
            pm.connections.connect(alias, **kwargs)
        except Exception as err:  # pymilvus raises MilvusException and plain gRPC errors alike
            raise MilvusStoreError(f"cannot reach Milvus at {settings.milvus_uri} ({_reason(err)}); "
                                   "check ECHOVIDS_MILVUS_URI and ECHOVIDS_MILVUS_TOKEN") from None
        _connections[key] = alias
        return alias


@contextlib.contextmanager
def milvus_errors(doing: str):
    """Turn pymilvus/gRPC failures into one typed line (the CLI and the bot print it, no traceback)."""
    try:
        yield
    except EchoVidsError:
        raise
    except Exception as err:
        if type(err).__module__.split(".")[0] not in ("pymilvus", "grpc"):
            raise
        raise MilvusStoreError(f"Milvus failed while {doing} ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    text = getattr(err, "message", None) or str(err)
    return text.strip().splitlines()[0][:200] if text.strip() else type(err).__name__


def alias_name(settings: Any) -> str:
    return f"{settings.milvus_prefix}_current"


def collection_name(settings: Any, build_id: str) -> str:
    return f"{settings.milvus_prefix}_b{re.sub(r'[^0-9A-Za-z]', '_', build_id)}"


def choose_nlist(n: int) -> int:
    """IVF lists ≈ 2·√(rows of one segment) as a power of two: 1024 from bal_train's 220 k up.

    Milvus builds one IVF per *segment*, not per collection, and a standalone with the default
    settings seals segments at ~250 k rows of 128-d float32 (``dataCoord.segment.maxSize`` 512 MB ×
    ``sealProportion`` 0.23), later merged to ~1 M by compaction. Sizing nlist from the whole
    collection (2048 at 1 M) gave 250 k-row segments 120 rows a list and cost 135 s of k-means per
    segment on 2 cores; 1024 halves that, and the tuner finds the nprobe for the recall.
    """
    rows = min(n, SEGMENT_ROWS)
    return int(min(65536, max(16, 2 ** round(math.log2(max(1.0, 2 * math.sqrt(rows)))))))


def create_collection(settings: Any, name: str, *, drop_existing: bool = True):
    """An empty collection with the Echo-Vids row schema (id, segment, vector)."""
    pm = _pymilvus()
    using = connect(settings)
    if pm.utility.has_collection(name, using=using):
        if not drop_existing:
            return pm.Collection(name, using=using)
        pm.utility.drop_collection(name, using=using)
    fields = [
        pm.FieldSchema("id", pm.DataType.INT64, is_primary=True, auto_id=False,
                       description="segment_key << 16 | second"),
        pm.FieldSchema("segment", pm.DataType.INT64, description="segment key"),
        pm.FieldSchema("vector", pm.DataType.FLOAT_VECTOR, dim=128, description="q*4/255-2 of the uint8 bytes"),
    ]
    schema = pm.CollectionSchema(fields, description="Echo-Vids per-second AudioSet/VGGish vectors")
    return pm.Collection(name, schema, using=using, consistency_level="Bounded")


def insert_rows(collection, vectors_u8: np.ndarray, keys: np.ndarray, seconds: np.ndarray, *,
                upsert: bool = False) -> None:
    """Write rows in gRPC-sized chunks; ``upsert`` makes re-sending a row harmless (resumed ingest)."""
    write = collection.upsert if upsert else collection.insert
    keys = np.asarray(keys, np.int64)
    seconds = np.asarray(seconds, np.int64)
    for lo in range(0, len(vectors_u8), INSERT_ROWS):
        hi = min(len(vectors_u8), lo + INSERT_ROWS)
        k = keys[lo:hi]
        # lists, not arrays: pymilvus flattens vectors element by element, and Python floats are
        # ~8x quicker for it than NumPy scalars
        write([((k << SECOND_BITS) | seconds[lo:hi]).tolist(), k.tolist(), dequantize(vectors_u8[lo:hi]).tolist()])


def count_rows(collection) -> int:
    """Live rows (``num_entities`` also counts rows replaced by upserts until compaction)."""
    res = collection.query(expr="", output_fields=["count(*)"])
    return int(res[0]["count(*)"])


def _settle(collection) -> None:
    """Wait until every segment, including ones merged meanwhile, has its index; then load.

    Milvus compacts small sealed segments only once they are indexed (here ~1 min into the index
    build), then indexes the merged segment again. ``create_index`` returned before that re-index,
    so tuning measured a segment layout that was about to change, and searches right after a build
    competed with the re-index (p95 0.3–0.9 s at 1 M). A manual ``compact()`` is no help: it
    rewrites each segment on its own and indexes every one a second time.
    """
    pm = _pymilvus()
    deadline = time.monotonic() + SETTLE_TIMEOUT_S  # a hang guard: an index that never finishes
    while True:  # a merged segment counts as pending until its index is built
        progress = pm.utility.index_building_progress(collection.name, using=collection._using)
        if not progress.get("pending_index_rows") and progress.get("indexed_rows") == progress.get("total_rows"):
            break
        if time.monotonic() > deadline:
            raise MilvusStoreError(f"collection {collection.name}: Milvus still indexes {progress.get('pending_index_rows')} "
                                   f"rows after {SETTLE_TIMEOUT_S / 60:.0f} min")
        time.sleep(SETTLE_POLL_S)
    collection.load()


def _tuning_set(truth_vectors: np.ndarray, truth_keys: np.ndarray, truth_seconds: np.ndarray, n: int,
                seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Leave-segment-out queries (``ann.left_out_queries``): one second of each of ``n`` random
    segments; returns the queries, the primary keys and distances of their exact top 10 among the
    *other* segments' rows, and the filter that leaves their segments out of Milvus's answer.

    Noisy copies of indexed seconds (σ 0.25–1.0) measured easier than new recordings: at 1 M they
    tuned to nprobe 16 of 2048 (recall 0.970 on them) and gave 0.922 for held-out seconds.
    """
    keys = np.asarray(truth_keys, np.int64)
    rows = left_out_queries(keys, n, seed)
    out = np.unique(keys[rows])
    kept = np.flatnonzero(~np.isin(keys, out))
    q = truth_vectors[rows]
    exact, exact_d = exact_search(truth_vectors[kept], q, 10)
    exact = kept[exact]
    exact_pk = (keys[exact] << SECOND_BITS) | np.asarray(truth_seconds, np.int64)[exact]
    return q, exact_pk, exact_d, segment_filter(out.tolist(), inside=False)


def _recall_with_ties(got_pk: np.ndarray, got_d: np.ndarray, exact_pk: np.ndarray, exact_d: np.ndarray) -> np.ndarray:
    """Each query's recall@10, where a hit as near as the exact 10th counts: real clips repeat seconds
    exactly (silence, clipped tones), and of equally near rows exact search and Milvus keep different ones."""
    tol = 1e-4 * (1 + np.abs(exact_d[:, -1:]))
    as_near = (got_d <= exact_d[:, -1:] + tol) & (got_pk >= 0)
    found = [len(set(g) & set(e)) for g, e in zip(got_pk.tolist(), exact_pk.tolist())]
    return np.maximum(np.array(found), as_near.sum(1)).clip(max=10) / exact_pk.shape[1]


def index_and_tune(settings: Any, collection, expected_rows: int, truth_vectors: np.ndarray,
                   truth_keys: np.ndarray, truth_seconds: np.ndarray, *, queries: int = TUNING_QUERIES,
                   seed: int = 0) -> dict:
    """Flush, build the SCANN index, load, tune (nprobe, reorder_k), verify; the manifest's search part.

    ``truth_vectors`` are all indexed rows (uint8) with their segment keys and seconds: exact search
    over them is the recall reference.
    """
    collection.flush()
    nlist = choose_nlist(expected_rows)
    index = {"index_type": "SCANN", "metric_type": "L2", "params": {"nlist": nlist, "with_raw_data": True}}
    collection.create_index("vector", index)
    _settle(collection)
    rows = count_rows(collection)  # counting needs a loaded collection
    if rows != expected_rows:
        raise MilvusStoreError(f"collection {collection.name} holds {rows:,} rows, expected {expected_rows:,}")
    q, exact_pk, exact_d, leave_out = _tuning_set(truth_vectors, truth_keys, truth_seconds, queries, seed)
    qf = dequantize(q)

    def recall(nprobe: int, reorder: int) -> np.ndarray:
        res = collection.search(qf, "vector", {"metric_type": "L2", "params": {"nprobe": nprobe, "reorder_k": reorder}},
                                limit=10, expr=leave_out)
        got = np.array([list(h.ids) + [-1] * (10 - len(h.ids)) for h in res], dtype=np.int64)
        got_d = np.array([list(h.distances) + [np.inf] * (10 - len(h.ids)) for h in res], dtype=np.float32)
        return _recall_with_ties(got, got_d, exact_pk, exact_d)

    best, tried = cheapest_reaching([p for p in NPROBES if p <= nlist], REORDERS, recall, TARGET_RECALL,
                                    confidence_z=CONFIDENCE_Z)
    if best is None:
        best = max(tried, key=lambda t: t[2])
    if best[2] < VERIFY_RECALL:
        raise MilvusStoreError(f"collection {collection.name}: recall@10 {best[2]:.3f} < {VERIFY_RECALL} "
                               f"even at nprobe {best[0]}, reorder_k {best[1]}")
    return {"rows": rows, "index": {"index_type": "SCANN", "nlist": nlist, "metric_type": "L2"},
            "search": {"nprobe": int(best[0]), "reorder_k": int(best[1])},
            "tuned_recall_at_10": round(float(best[2]), 4), "tuning_queries": int(len(q)),
            "tuning_kind": "leave-segment-out", "tuning_tried": tried}


def switch_alias(settings: Any, collection: str) -> str | None:
    """Point ``<prefix>_current`` at ``collection`` atomically; returns the collection it pointed at."""
    pm = _pymilvus()
    using = connect(settings)
    alias = alias_name(settings)
    previous = current_collection(settings)
    if previous is None:
        pm.utility.create_alias(collection, alias, using=using)
    elif previous != collection:
        pm.utility.alter_alias(collection, alias, using=using)
    return previous


def current_collection(settings: Any) -> str | None:
    """The collection the alias points at, or None when there is no alias yet."""
    pm = _pymilvus()
    using = connect(settings)
    for name in pm.utility.list_collections(using=using):
        if name.startswith(settings.milvus_prefix + "_b") and alias_name(settings) in pm.utility.list_aliases(name, using=using):
            return name
    return None


def open_collection(settings: Any, name: str):
    """The existing collection ``name`` on the configured server (not loaded: searches need ``load``)."""
    return _pymilvus().Collection(name, using=connect(settings))


def segment_filter(keys: Iterable[int], *, inside: bool = True) -> str:
    """The scalar filter on rows whose ``segment`` is (``inside``) or is not one of ``keys``."""
    return f"segment {'in' if inside else 'not in'} [{','.join(str(int(k)) for k in keys)}]"


def segment_keys_of(build: Any) -> np.ndarray | None:
    """The Milvus ``segment`` key of each of a build's segments (a sharded ingest's sparse keys), or
    None when the keys are the dense segment ids."""
    ann = build.manifest["ann"]
    if ann.get("segment_keys") in (None, "dense"):
        return None
    return np.load(build.path / ann["segment_keys"])


def rows_of_segments(collection, keys: Sequence[int], *, strong: bool = True) -> int:
    """Live rows whose ``segment`` is one of ``keys``; Strong consistency sees every write and
    delete acknowledged before the call (readers search with Bounded, a moment behind)."""
    if not len(keys):
        return 0
    kw = {"consistency_level": "Strong"} if strong else {}
    res = collection.query(expr=segment_filter(keys), output_fields=["count(*)"], **kw)
    return int(res[0]["count(*)"])


def delete_segments(settings: Any, collection_name: str, keys: Sequence[int], *,
                    visible_timeout_s: float = 600.0) -> int:
    """Delete every row of the segments ``keys`` in ONE request, then wait until it is visible.

    One delete request carries one timestamp, so a search sees all of the deletion or none of it.
    "Visible" is a real condition: a Strong-consistency count of those segments' rows is 0 (it
    normally is on the first ask: the delete was acknowledged before it). Returns the rows Milvus
    reports deleted (0 when they were already gone: a repeated delete is harmless).
    """
    with milvus_errors("deleting rows"):
        collection = open_collection(settings, collection_name)
        if not len(keys):
            return 0
        res = collection.delete(expr=segment_filter(keys))
        deadline = time.monotonic() + visible_timeout_s  # a hang guard, not a wait
        poll = 0.05
        while (left := rows_of_segments(collection, keys)) > 0:
            if time.monotonic() > deadline:
                raise MilvusStoreError(f"collection {collection_name} still shows {left:,} deleted rows "
                                       f"after {visible_timeout_s:.0f} s")
            time.sleep(poll)
            poll = min(1.0, poll * 2)
        return int(getattr(res, "delete_count", 0) or 0)


PUBLISHED = "milvus-published.json"


def drop_superseded(settings: Any, keep: Sequence[str]) -> list[str]:
    """Drop collections this data directory published earlier, except ``keep`` (the grace period is
    one build: the previous collection stays for readers that still have it loaded). Collections
    never published here (a sharded ingest still pending, another deployment's) are left alone."""
    import json
    from pathlib import Path

    pm = _pymilvus()
    using = connect(settings)
    ledger = Path(settings.data_dir) / PUBLISHED
    try:
        published = json.loads(ledger.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        published = []
    published = list(dict.fromkeys([*published, *keep]))
    dropped = []
    for name in published:
        if name not in keep:
            if pm.utility.has_collection(name, using=using):
                pm.utility.drop_collection(name, using=using)
            dropped.append(name)
    tmp = ledger.with_suffix(f".{uuid.uuid4().hex[:6]}")
    tmp.write_text(json.dumps([n for n in published if n not in dropped]), encoding="utf-8")
    tmp.replace(ledger)
    return dropped


class MilvusStore(VectorStore):
    kind = "milvus"

    def __init__(self, collection, ann: dict, seg_first: np.ndarray, seg_keys: np.ndarray | None):
        self.collection = collection
        self.ann = ann
        self.seg_first = np.asarray(seg_first, np.int64)
        self.seg_keys = None if seg_keys is None else np.asarray(seg_keys, np.int64)
        self.params = dict(ann["search"])
        self._seg_len = np.diff(np.append(self.seg_first, int(ann["rows"])))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    # -- writing -----------------------------------------------------------------------------------
    @classmethod
    def build(cls, batches: Iterable[RowBatch], ctx: BuildContext) -> dict:
        """Dense keys (segment id); every batch is inserted, then indexed, tuned and verified.

        ``batches`` is read twice (insert, then exact ground truth), so pass a list.
        """
        with milvus_errors("building the collection"):
            settings = ctx.settings
            adopt = ctx.options.get("adopt_collection")
            seg_keys = ctx.options.get("segment_keys")  # sparse keys of a sharded ingest, one per segment
            name = adopt or collection_name(settings, ctx.build_id)
            batches = list(batches)
            total = int(sum(len(b.vectors) for b in batches))
            if adopt:  # the slices already wrote every row (core.index.milvus_ingest)
                collection = open_collection(settings, name)
            else:
                collection = create_collection(settings, name)
            try:
                done = 0
                for b in batches:
                    if not adopt:
                        insert_rows(collection, b.vectors, b.segment, b.second)
                    done += len(b.vectors)
                    ctx.progress(done, total)
                truth = batches[0].vectors if len(batches) == 1 else np.concatenate([b.vectors for b in batches])
                seg = np.concatenate([b.segment for b in batches]).astype(np.int64)
                sec = np.concatenate([b.second for b in batches]).astype(np.int64)
                keys = seg if seg_keys is None else np.asarray(seg_keys, np.int64)[seg]
                tuned = index_and_tune(settings, collection, total, truth, keys, sec)
            except BaseException:
                if not adopt:  # a sharded ingest stays for a retried finalize
                    drop_quietly(settings, name)  # the build's own error is the one to report
                raise
            key_file = "dense"
            if seg_keys is not None:
                key_file = "segment_keys.npy"
                np.save(ctx.out_dir / key_file, np.asarray(seg_keys, np.int64))
            return {"store": cls.kind, "collection": name, "alias": alias_name(settings),
                    "metric": "squared_l2", "space": "dequantized", "segment_keys": key_file, **tuned}

    @classmethod
    def publish(cls, settings: Any, ann: dict) -> None:
        with milvus_errors("moving the alias"):
            previous = switch_alias(settings, ann["collection"])
            drop_superseded(settings, [c for c in (ann["collection"], previous) if c])

    @classmethod
    def discard(cls, settings: Any, ann: dict) -> None:
        if ann.get("collection"):
            drop_quietly(settings, ann["collection"])

    # -- reading -----------------------------------------------------------------------------------
    @classmethod
    def open(cls, build: Any, settings: Any) -> MilvusStore:
        with milvus_errors("opening the collection"):
            pm = _pymilvus()
            ann = build.manifest["ann"]
            using = connect(settings)
            name = ann["collection"]
            if not pm.utility.has_collection(name, using=using):
                raise IndexMissingError(f"the current index's Milvus collection {name} is gone from "
                                        f"{settings.milvus_uri}; run `echovids index build` again")
            collection = pm.Collection(name, using=using)
            collection.load()  # a no-op when loaded; reloads after a server restart
            return cls(collection, ann, build.segments["seg_first_row"], segment_keys_of(build))

    def _seg_of_key(self, keys: np.ndarray) -> np.ndarray:
        if self.seg_keys is None:
            return keys
        return np.searchsorted(self.seg_keys, keys)

    def _key_of_seg(self, seg: np.ndarray) -> np.ndarray:
        return seg if self.seg_keys is None else self.seg_keys[seg]

    def search(self, queries_u8: np.ndarray, k: int, *,
               exclude_segments: np.ndarray | None = None) -> Neighbours:
        with milvus_errors("searching"):
            q = dequantize(np.atleast_2d(queries_u8))
            expr = None
            if exclude_segments is not None and len(exclude_segments):
                keys = self._key_of_seg(np.asarray(exclude_segments, np.int64))
                expr = segment_filter(keys.tolist(), inside=False)
            params = {"metric_type": "L2",
                      "params": {"nprobe": self.params["nprobe"], "reorder_k": max(k, self.params["reorder_k"])}}
            res = self.collection.search(q, "vector", params, limit=k, expr=expr)
            ids = np.zeros((len(q), k), np.int64)
            dist = np.full((len(q), k), np.inf, np.float32)
            for i, hits in enumerate(res):
                got = list(hits.ids)
                if got:
                    m = len(got)
                    ids[i, :m] = got
                    dist[i, :m] = hits.distances
                    ids[i, m:] = got[-1]  # padding: a real row with zero weight (distance ∞)
            keys = ids >> SECOND_BITS
            return Neighbours(self._seg_of_key(keys), ids & ((1 << SECOND_BITS) - 1), dist)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Rows of whole segments, fetched by primary key and kept in a bounded per-segment cache.

        The ranker asks for every second of ~180 candidate segments per query; popular label
        candidates recur across queries, so the cache (``CACHE_SEGMENTS`` clips, ~1.3 KB each)
        saves most round trips while memory stays bounded whatever the index size.
        """
        with milvus_errors("fetching vectors"):
            rows = np.asarray(rows, np.int64)
            if len(rows) == 0:
                return np.zeros((0, 128), np.uint8)
            seg = np.searchsorted(self.seg_first, rows, side="right") - 1
            sec = rows - self.seg_first[seg]
            segs = np.unique(seg)
            with self._cache_lock:
                cached = {int(x): self._cache[int(x)] for x in segs if int(x) in self._cache}
            missing = np.array([x for x in segs if int(x) not in cached], np.int64)
            if len(missing):
                cached.update(self._fetch_segments(missing))
            parts = [cached[int(x)] for x in segs]
            offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])[:-1]]).astype(np.int64)
            flat = np.concatenate(parts)
            where = offsets[np.searchsorted(segs, seg)] + sec
            return flat[where]

    def _fetch_segments(self, segs: np.ndarray) -> dict[int, np.ndarray]:
        lens = self._seg_len[segs]
        seg_of = np.repeat(segs, lens)
        sec = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        pk = (self._key_of_seg(seg_of) << SECOND_BITS) | sec
        out = np.zeros((len(pk), 128), np.float32)
        for lo in range(0, len(pk), QUERY_IDS):
            part = pk[lo:lo + QUERY_IDS]
            got = self.collection.query(expr=f"id in [{','.join(map(str, part.tolist()))}]", output_fields=["vector"])
            got_ids = np.fromiter((g["id"] for g in got), np.int64, len(got))
            if len(got) != len(part):
                lost = np.setdiff1d(part, got_ids) >> SECOND_BITS
                raise RowsGoneError(f"Milvus collection {self.collection.name} lacks "
                                    f"{len(part) - len(got)} of the rows asked for",
                                    self._seg_of_key(np.unique(lost)).tolist())
            order = np.argsort(part)
            where = order[np.searchsorted(part[order], got_ids)] + lo
            out[where] = np.asarray([g["vector"] for g in got], np.float32).reshape(len(got), 128)
        q = np.clip(np.rint((out + 2.0) * (255.0 / 4.0)), 0, 255).astype(np.uint8)
        bounds = np.concatenate([[0], np.cumsum(lens)])
        fetched = {int(x): q[bounds[i]:bounds[i + 1]] for i, x in enumerate(segs)}
        with self._cache_lock:
            for x, v in fetched.items():
                self._cache[x] = v
            while len(self._cache) > CACHE_SEGMENTS:
                self._cache.popitem(last=False)
        return fetched

    @property
    def size(self) -> int:
        """Live rows: ``ann["rows"]`` is the dense row span the build numbered (kept when a refresh
        deletes clips in place), less the rows deleted."""
        return int(self.ann["rows"]) - int((self.ann.get("deleted") or {}).get("rows", 0))

    def recall_settings(self) -> dict:
        return {"store": self.kind, "collection": self.collection.name, **self.ann["index"], **self.params,
                "tuned_recall_at_10": self.ann.get("tuned_recall_at_10")}

    def tune(self, *, nprobe: int | None = None, reorder_k: int | None = None) -> None:
        if nprobe:
            self.params["nprobe"] = int(nprobe)
        if reorder_k:
            self.params["reorder_k"] = int(reorder_k)

    def close(self) -> None:
        self.collection = None


def drop_quietly(settings: Any, name: str) -> Exception | None:
    """Drop collection ``name`` if it exists, for clean-up paths: the error is returned, not raised,
    because the caller's own outcome (a failed build, a released lock) is the one to report."""
    try:
        pm = _pymilvus()
        using = connect(settings)
        if pm.utility.has_collection(name, using=using):
            pm.utility.drop_collection(name, using=using)
    except Exception as err:  # noqa: BLE001 - reported by the caller, or not at all
        return err
    return None
