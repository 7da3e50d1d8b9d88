"""One ranked place in the index, the currency between the rankers and the engine.

Both rankers produce it — ``core.search`` (acoustic alignment + labels) and ``core.bridge`` (labels
only) — and the engine alone turns it into the contract's :class:`core.results.Match` by looking
up the segment's video, title and labels.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hit:
    segment: int
    #: Second of the segment the result is placed at: where the query's second 0 lands (core.search;
    #: may lie outside the segment for a partial overlap, the engine clips it) or the segment's
    #: strongest second (core.bridge).
    offset: int = 0
    #: Ranking score in [0, 1], higher first.
    score: float = 0.0
