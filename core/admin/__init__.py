"""The admin facade: what moderators and the command line do to an index, beside the query engine.

The query path has one entry (:class:`core.engine.Engine`); the admin path had none, so each front
end (the ``echovids`` subcommands, the Discord moderation cog) opened builds, read the liveness
cache and loaded the embedder on its own, and "index status" was written once per front end. An
:class:`Admin` answers those questions once, as plain data, and each front end only renders.

Build, status, refresh, embedding and model fetch live here. The refresh's orchestration (check →
rebuild → swap, :mod:`core.admin.refresh`) sits here too, so liveness only checks and records and
the index stage only builds: neither drives the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.config import Settings
from core.index.lock import RefreshHolder  # light (fcntl): what refresh_holder() answers
from core.progress import ProgressCallback

if TYPE_CHECKING:
    from core.admin.refresh import RefreshReport
    from core.fetch import FetchResult

__all__ = ["Admin", "BuildResult", "Embedding", "IndexStatus", "RefreshHolder", "RefreshReport", "SlicedBuild"]


@dataclass(frozen=True)
class IndexStatus:
    """What the current build holds and how much of it is known to be still on YouTube."""

    data_dir: Path
    build_id: str
    path: Path
    manifest: dict[str, Any]
    disk_bytes: int
    videos: int
    #: Liveness state → number of this build's videos in that state ("live", "gone", ...); only
    #: videos that were ever checked count, so the values may sum to less than ``videos``.
    live_states: dict[str, int] = field(default_factory=dict)
    #: Unix time of the most recent check of any of this build's videos (None: never checked).
    newest_check: float | None = None
    #: Set when the current build is broken and an older intact one is served instead: what the
    #: pointer names, and why it was not opened (both front ends say so first).
    pointer: str | None = None
    fallback_reason: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        return self.manifest.get("counts", {})

    @property
    def checked(self) -> int:
        """How many of this build's videos have a liveness answer."""
        return sum(self.live_states.values())

    @property
    def live_share(self) -> float | None:
        """Of the checked videos, the share that still plays (None: none checked yet)."""
        playing = self.live_states.get("live", 0) + self.live_states.get("unembeddable", 0)
        return playing / self.checked if self.checked else None

    @property
    def fallback(self) -> dict[str, str] | None:
        if not self.fallback_reason:
            return None
        return {"current": self.pointer or "", "serving": self.build_id, "reason": self.fallback_reason}

    def to_json(self) -> dict[str, Any]:
        """The ``echovids index status --json`` document."""
        return {"data_dir": str(self.data_dir), "current": self.build_id, "path": str(self.path),
                "size_bytes": self.disk_bytes, "fallback": self.fallback, "videos": self.videos,
                "live_states": dict(self.live_states), "newest_check": self.newest_check,
                "manifest": self.manifest}


@dataclass(frozen=True)
class BuildResult:
    """A build this run made current (``built``), or the one already current."""

    path: Path
    manifest: dict[str, Any]
    built: bool

    @property
    def counts(self) -> dict[str, int]:
        return self.manifest.get("counts", {})


@dataclass(frozen=True)
class Embedding:
    """VGGish vectors of one file: uint8 post-processed ``[n, 128]`` (AudioSet space), or pre-PCA
    float32 with ``raw``; one row per 0.96 s example."""

    vectors: np.ndarray
    raw: bool
    duration_s: float
    #: Set when the decoder changed what was asked (e.g. trimmed to the length limit).
    note: str | None = None


def __getattr__(name: str) -> Any:
    """``RefreshReport`` on first use: the refresh pulls in aiohttp, which ``embed`` never needs."""
    if name == "RefreshReport":
        from core.admin.refresh import RefreshReport

        return RefreshReport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class SlicedBuild:
    """What one ``index build --shard K/N`` / ``--finalize`` run did."""

    #: This slice's counts (``milvus_ingest.ingest_slice``), when a slice was ingested.
    ingested: dict[str, Any] | None
    #: The published build, when this run was the one that found every file in and published it.
    published: BuildResult | None
    #: Input files not ingested yet, when nothing was published.
    missing: int


class Admin:
    """Facade over index builds, the liveness cache and the embedder, for moderators and the CLI."""

    def __init__(self, settings: Settings):
        self.settings = settings

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.data_dir)

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> IndexStatus:
        """The current build's facts (IndexMissingError when there is none). Blocking file and
        SQLite reads: a front end with an event loop runs it in a thread."""
        from core.index.store import open_current
        from core.liveness.cache import CACHE_FILENAME, LivenessCache

        build = open_current(self.data_dir)
        ids = build.video_ids()
        states: dict[str, int] = {}
        newest: float | None = None
        cache_path = self.data_dir / CACHE_FILENAME
        if ids and cache_path.is_file():  # never create a cache just to read it
            cache = LivenessCache(cache_path)
            try:
                for entry in cache.get_many(ids).values():
                    states[entry.state] = states.get(entry.state, 0) + 1
                    newest = entry.checked_at if newest is None else max(newest, entry.checked_at)
            finally:
                cache.close()
        return IndexStatus(data_dir=self.data_dir, build_id=build.build_id, path=build.path,
                           manifest=build.manifest, disk_bytes=build.disk_bytes(), videos=len(ids),
                           live_states=states, newest_check=newest, pointer=build.pointer,
                           fallback_reason=build.fallback_reason)

    # -- build ------------------------------------------------------------------------------------
    def current(self) -> BuildResult | None:
        """The current build, opened the checked way, or None when there is none yet."""
        from core.errors import IndexMissingError
        from core.index.store import open_current

        try:
            build = open_current(self.data_dir)
        except IndexMissingError:
            return None
        return BuildResult(path=build.path, manifest=build.manifest, built=False)

    def build(self, *, audioset_dirs=None, library_dirs=None, progress: ProgressCallback | None = None) -> BuildResult:
        """Build a new index and make it current atomically (the old one serves until the swap).
        Blocking and CPU-heavy: run it in a thread or a child process from an event loop."""
        from core.index.builder import build_index
        from core.index.store import IndexBuild

        path = build_index(self.settings, audioset_dirs=audioset_dirs, library_dirs=library_dirs, progress=progress)
        return BuildResult(path=path, manifest=IndexBuild(path).manifest, built=True)

    def build_slices(self, *, audioset_dirs=None, shard: str | None = None,
                     progress: ProgressCallback | None = None) -> SlicedBuild:
        """One slice (``shard`` = ``"K/N"``) of a parallel Milvus ingest, then the publish step,
        which only the run that finds every file ingested completes."""
        from core.index import milvus_ingest
        from core.index.store import IndexBuild

        pending = milvus_ingest.open_pending(self.settings, audioset_dirs or self.settings.audioset_dirs)
        ingested = None
        if shard:
            k, n = milvus_ingest.parse_slice(shard)
            ingested = milvus_ingest.ingest_slice(self.settings, pending, k, n, progress=progress)
        path = milvus_ingest.finalize(self.settings, pending, progress=progress)
        if path is None:
            return SlicedBuild(ingested=ingested, published=None, missing=len(pending.missing()))
        return SlicedBuild(ingested=ingested, published=BuildResult(path=path, manifest=IndexBuild(path).manifest,
                                                                     built=True), missing=0)

    # -- refresh ----------------------------------------------------------------------------------
    def refresh(self, *, dry_run: bool = False, progress: ProgressCallback | None = None,
                **options: Any) -> RefreshReport:
        """Re-check liveness, rebuild without the dead videos, swap (blocking; its own event loop).
        ``options``: those of :func:`core.admin.refresh.arefresh_index` (rate, concurrency, ...)."""
        from core.admin.refresh import refresh_index

        return refresh_index(self.settings, dry_run=dry_run, progress=progress, **options)

    async def arefresh(self, *, dry_run: bool = False, progress: ProgressCallback | None = None,
                       **options: Any) -> RefreshReport:
        """:meth:`refresh` from inside a running event loop."""
        from core.admin.refresh import arefresh_index

        return await arefresh_index(self.settings, dry_run=dry_run, progress=progress, **options)

    def refresh_holder(self) -> RefreshHolder | None:
        """Who runs a refresh now — on this data directory, or (with the Milvus store) on any
        machine sharing the Milvus server and prefix — or None: a front end refuses a second
        refresh before starting it. Blocking (with Milvus, a network round trip): a front end with
        an event loop runs it in a thread. An unreachable Milvus answers None here: the refresh
        itself then reports the error in full."""
        from core.errors import EchoVidsError
        from core.index.lock import refresh_holder_of

        try:
            return refresh_holder_of(self.settings)
        except EchoVidsError:
            return None

    # -- embedding --------------------------------------------------------------------------------
    def embed(self, audio: bytes | str | Path, *, checkpoint: str | Path | None = None,
              pca_params: str | Path | None = None, raw: bool = False) -> Embedding:
        """Embed a file or its bytes the way queries are embedded.

        Model files are checked first and the audio is decoded before TensorFlow loads, so a missing
        model or a bad file is reported in well under a second (ModelMissingError, AudioError).
        """
        from core.audio import AudioLimits, decode_audio
        from core.vggish.embedder import check_model_files, load_embedder

        check_model_files(self.settings, checkpoint, pca_params, raw=raw)
        wave = decode_audio(audio, AudioLimits.from_settings(self.settings))
        embedder = load_embedder(self.settings, checkpoint, pca_params, raw=raw)
        vectors = embedder.embed_raw(wave.samples) if raw else embedder.embed(wave.samples)
        return Embedding(vectors=vectors, raw=raw, duration_s=wave.duration_s, note=wave.note)

    # -- model files ------------------------------------------------------------------------------
    def fetch_models(self, *, yamnet: bool = True, force: bool = False,
                     progress: ProgressCallback | None = None) -> list[FetchResult]:
        """Download the missing or corrupt model files into their configured places, sha256-verified.

        Every file is attempted; failures come back as ``"failed"`` results (not raised) so a front
        end can say what did arrive before reporting what did not.
        """
        from core.fetch import DEFAULT_NAMES, fetch_models

        names = [n for n in DEFAULT_NAMES if yamnet or not n.startswith("yamnet")]
        return fetch_models(self.settings, names, force=force, progress=progress, raise_on_error=False)
