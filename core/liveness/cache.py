"""What YouTube said about each video, and until when we believe it.

The cache is its own SQLite file in the data directory, not part of an index build, so a rebuild
(or a refresh's swap) keeps every answer. WAL mode lets the bot read while ``index refresh`` (often
another process) writes; every thread gets its own connection because sqlite3 connections are
not shareable across threads. Each answer is committed on its own, so a refresh killed at any
moment keeps everything it had learned (WAL + ``synchronous=NORMAL`` survives a process crash).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.liveness.oembed import DEAD_STATES, OEmbedResult

CACHE_FILENAME = "liveness.sqlite"

DAY = 86400.0


@dataclass(frozen=True)
class TTL:
    """How long each state is believed, seconds. Live changes slowly (days); dead rarely comes back
    (weeks); unknown is a network hiccup and must be retried soon (minutes)."""

    live: float = 7 * DAY
    unembeddable: float = 7 * DAY
    private: float = 14 * DAY
    gone: float = 28 * DAY
    invalid: float = 90 * DAY
    unknown: float = 10 * 60.0

    def of(self, state: str) -> float:
        return float(getattr(self, state, self.unknown))


@dataclass(frozen=True)
class CacheEntry:
    video_id: str
    state: str
    title: str | None
    channel: str | None
    checked_at: float          # wall-clock seconds since the epoch
    expires_at: float

    def fresh(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.expires_at

    @property
    def dead(self) -> bool:
        return self.state in DEAD_STATES


_SCHEMA = """
CREATE TABLE IF NOT EXISTS checks (
    video_id    TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    title       TEXT,
    channel     TEXT,
    http_status INTEGER,
    checked_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS checks_state ON checks(state);
"""

# An "unknown" answer must not erase what we knew: keep the old title/channel. Its state does
# replace the old one (the old one has expired, or we would not have asked).
_UPSERT = """
INSERT INTO checks (video_id, state, title, channel, http_status, checked_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(video_id) DO UPDATE SET
    state = excluded.state,
    title = COALESCE(excluded.title, checks.title),
    channel = COALESCE(excluded.channel, checks.channel),
    http_status = excluded.http_status,
    checked_at = excluded.checked_at,
    expires_at = excluded.expires_at
"""

_CHUNK = 500  # ids per IN (...) query; well under SQLite's variable limit


@dataclass
class LivenessCache:
    """Thread-safe access to the cache file (one connection per thread)."""

    path: Path
    ttl: TTL = field(default_factory=TTL)
    busy_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._conn()  # create the schema now so readers in other processes find it

    @classmethod
    def for_data_dir(cls, data_dir: Path, **kwargs) -> LivenessCache:
        return cls(Path(data_dir) / CACHE_FILENAME, **kwargs)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Each thread uses only its own connection; check_same_thread=False merely lets
            # close() release them all from whichever thread closes the cache.
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # pragma: no cover - only on filesystems without WAL
                raise sqlite3.OperationalError(f"liveness cache {self.path} cannot use WAL (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            self._local.conn = conn
            with self._guard:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._guard:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.ProgrammingError:  # closed from another thread's object; harmless
                pass
        self._local = threading.local()

    # -- reads -------------------------------------------------------------------------------
    def get_many(self, video_ids: Iterable[str]) -> dict[str, CacheEntry]:
        """Entries for the ids that have one (fresh or not; callers decide)."""
        ids = list(dict.fromkeys(v for v in video_ids if v))
        out: dict[str, CacheEntry] = {}
        conn = self._conn()
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT video_id, state, title, channel, checked_at, expires_at FROM checks "
                f"WHERE video_id IN ({marks})",
                chunk,
            ).fetchall()
            for row in rows:
                out[row[0]] = CacheEntry(*row)
        return out

    def get(self, video_id: str) -> CacheEntry | None:
        return self.get_many([video_id]).get(video_id)

    def iter_states(self) -> Iterator[tuple[str, str, float]]:
        """(video_id, state, expires_at) of every entry, streamed (refresh over millions of ids)."""
        cur = self._conn().execute("SELECT video_id, state, expires_at FROM checks")
        while True:
            rows = cur.fetchmany(10000)
            if not rows:
                return
            yield from rows

    def stale_ids(self, video_ids: Iterable[str], now: float | None = None) -> list[str]:
        """The ids (in the given order) with no entry or an expired one."""
        now = time.time() if now is None else now
        fresh = {vid for vid, _state, expires in self.iter_states() if expires > now}
        return [v for v in dict.fromkeys(video_ids) if v not in fresh]

    def dead_ids(self, states: Iterable[str] = DEAD_STATES) -> set[str]:
        """Every id whose latest answer says the link does not work (whatever its age: a dead
        video is dead until a later check says otherwise)."""
        wanted = tuple(states)
        marks = ",".join("?" * len(wanted))
        rows = self._conn().execute(f"SELECT video_id FROM checks WHERE state IN ({marks})", wanted)
        return {r[0] for r in rows}

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM checks").fetchone()[0])

    # -- writes ------------------------------------------------------------------------------
    def put(self, result: OEmbedResult, now: float | None = None) -> None:
        self.put_many([result], now=now)

    def put_many(self, results: Iterable[OEmbedResult], now: float | None = None) -> None:
        """Store answers in one transaction. ``unknown`` from a back-off pause (no request made) is
        stored too: it stops every query from re-asking during the pause."""
        now = time.time() if now is None else now
        rows = [
            (r.video_id, r.state, r.title, r.channel, r.http_status, now, now + self._ttl_for(r))
            for r in results
            if r.video_id
        ]
        if not rows:
            return
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_UPSERT, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _ttl_for(self, result: OEmbedResult) -> float:
        ttl = self.ttl.of(result.state)
        if result.state == "unknown" and result.retry_after:
            # Never re-ask sooner than the server allowed.
            ttl = max(ttl, result.retry_after)
        return ttl
