"""Your own audio library as an index source: every audio/video file under a folder, one segment each.

Files go through the same path as a query (``core.audio`` decode → ``core.vggish`` embed +
post-process), so library vectors live in the AudioSet space. An optional ``library.csv``
(``path,url,title``; path relative to the folder) gives each file a link and a title; links that
support a start time (YouTube, or any URL we can append ``#t=`` to) get the matched second.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import EchoVidsError

AUDIO_EXTENSIONS = {".wav", ".mp3", ".ogg", ".opus", ".flac", ".m4a", ".aac", ".webm", ".mp4", ".mkv",
                    ".mov", ".wma", ".aiff", ".aif", ".oga"}


@dataclass
class LibraryItem:
    path: Path
    title: str
    url: str | None
    embeddings: np.ndarray  # uint8 [n,128]


def read_library_csv(folder: Path) -> dict[str, tuple[str | None, str | None]]:
    f = folder / "library.csv"
    if not f.is_file():
        return {}
    out: dict[str, tuple[str | None, str | None]] = {}
    with f.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            p = (row.get("path") or "").strip()
            if p:
                out[str(Path(p))] = ((row.get("url") or "").strip() or None, (row.get("title") or "").strip() or None)
    return out


def list_library(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise EchoVidsError(f"library folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def ingest_library(settings, folders: list[Path], *, on_file: Callable[[int, int, str], None] | None = None,
                   errors: list[str] | None = None) -> list[LibraryItem]:
    """Embed every file; a file that fails to decode is skipped and named in ``errors``."""
    from core.audio import AudioLimits, decode_audio
    from core.vggish import load_embedder

    embedder = load_embedder(settings)
    # Library files may be long (an hour each), unlike chat attachments.
    limits = AudioLimits.from_settings(settings, max_bytes=2 * 2**30, max_seconds=3600.0, timeout_s=600.0)
    items: list[LibraryItem] = []
    todo = [(folder, p) for folder in folders for p in list_library(Path(folder))]
    meta = {Path(folder): read_library_csv(Path(folder)) for folder in folders}
    for i, (folder, path) in enumerate(todo):
        rel = str(path.relative_to(folder))
        url, title = meta[Path(folder)].get(rel, (None, None))
        try:
            wave = decode_audio(path, limits)
            emb = np.asarray(embedder.embed(wave.samples), dtype=np.uint8)
        except EchoVidsError as err:
            if errors is not None:
                errors.append(f"{rel}: {err}")
            continue
        if len(emb):
            items.append(LibraryItem(path.resolve(), title or path.stem, url, emb))
        if on_file:
            on_file(i + 1, len(todo), rel)
    return items

