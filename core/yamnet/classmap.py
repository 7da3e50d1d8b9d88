"""YAMNet's 521 classes and where each lands among AudioSet's 527 indices (by label id, the ``mid``)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import ModelFileError, ModelMissingError
from core.yamnet.params import YAMNET_CLASSES


@dataclass(frozen=True)
class ClassMap:
    """YAMNet's classes and where each lands among AudioSet's indices."""

    mids: tuple[str, ...]
    names: tuple[str, ...]
    #: ``[521]`` AudioSet index of each YAMNet class, -1 where AudioSet has no such mid.
    to_audioset: np.ndarray | None = None
    audioset_names: tuple[str, ...] = ()


def read_class_map(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(mids, display names) of ``yamnet_class_map.csv`` (index,mid,display_name; CRLF is fine)."""
    rows = _read_label_csv(path, "YAMNet class map")
    if len(rows) != YAMNET_CLASSES:
        raise ModelFileError(f"YAMNet class map {path} has {len(rows)} classes, expected {YAMNET_CLASSES}")
    return tuple(r[0] for r in rows), tuple(r[1] for r in rows)


def read_audioset_labels(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(mids, display names) of AudioSet's ``class_labels_indices.csv``, in index order."""
    rows = _read_label_csv(path, "AudioSet label list")
    return tuple(r[0] for r in rows), tuple(r[1] for r in rows)


def _read_label_csv(path: Path, what: str) -> list[tuple[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise ModelMissingError(f"{what} not found at {path}")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = sorted(((int(r["index"]), r["mid"].strip(), r["display_name"].strip()) for r in reader))
    except (KeyError, ValueError, TypeError, UnicodeDecodeError, csv.Error) as exc:
        raise ModelFileError(f"{what} {path} is not an index,mid,display_name CSV ({exc})") from None
    if [r[0] for r in rows] != list(range(len(rows))):
        raise ModelFileError(f"{what} {path} does not number its classes 0..{len(rows) - 1}")
    return [(r[1], r[2]) for r in rows]


def audioset_index_map(yamnet_mids: Sequence[str], audioset_mids: Sequence[str]) -> np.ndarray:
    """``[521]`` int: the AudioSet index of each YAMNet class by mid (-1 when AudioSet lacks it)."""
    where = {mid: i for i, mid in enumerate(audioset_mids)}
    return np.array([where.get(mid, -1) for mid in yamnet_mids], dtype=np.int64)
