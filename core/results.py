"""The shapes every front end renders: one query in, one :class:`SearchResponse` out.

These mirror the ``--json`` contract in docs/architecture.md field for field, so the CLI prints
``response.to_json()`` and the bot renders the same object; a field added here shows up in both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

QueryKind = Literal["audio", "like", "text", "embeddings"]
ModelName = Literal["vggish", "yamnet"]
LiveState = Literal["live", "unembeddable", "unknown", "unchecked"]
Source = Literal["audioset", "library"]


@dataclass
class QueryInfo:
    kind: QueryKind
    seconds: int | None = None
    model: ModelName | None = None


@dataclass
class Heard:
    label: str
    score: float


@dataclass
class Match:
    """One (video, start second) answer."""

    video_id: str | None
    start_seconds: int
    url: str
    score: float
    labels: list[str]
    live: LiveState = "unchecked"
    title: str | None = None
    source: Source = "audioset"
    segment_start: int = 0
    segment_end: int = 0
    channel: str | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data["score"] = round(float(self.score), 4)
        if data["channel"] is None:
            del data["channel"]
        return data


@dataclass
class SearchResponse:
    query: QueryInfo
    results: list[Match] = field(default_factory=list)
    heard: list[Heard] = field(default_factory=list)
    #: Wall time spent answering, seconds (front ends show it; not part of the JSON contract).
    elapsed_s: float = 0.0
    #: Number of indexed vectors searched (front ends show it in footers).
    index_size: int = 0

    def to_json(self) -> dict:
        return {
            "query": asdict(self.query),
            "heard": [{"label": h.label, "score": round(float(h.score), 4)} for h in self.heard[:5]],
            "results": [m.to_json() for m in self.results],
        }


@dataclass
class Query:
    """One question to the engine; exactly one of ``audio``/``like``/``text``/``embeddings`` is set.

    ``audio`` is raw file bytes or a path (decoded by ``core.audio``); ``embeddings`` is a uint8
    ``[n, 128]`` array of post-processed vectors.
    """

    kind: QueryKind
    audio: bytes | str | None = None
    like: str | None = None
    text: str | None = None
    embeddings: object | None = None
    top: int = 5
    live_check: bool = True
