"""Progress of long jobs (index build, refresh, downloads), reported without printing.

The engine never prints; it calls a :data:`ProgressCallback` and each front end renders the
event its own way (a terminal bar in the CLI, an edited message in Discord).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    stage: str            # short name of what is running: "download", "ingest", "embed", "check", ...
    done: int             # units finished so far
    total: int | None     # units in all, when known
    unit: str = "items"   # what a unit is ("bytes", "files", "videos", ...)
    detail: str = ""      # optional one-line note


ProgressCallback = Callable[[ProgressEvent], None]


def no_progress(_event: ProgressEvent) -> None:
    """The default callback: ignore progress."""
