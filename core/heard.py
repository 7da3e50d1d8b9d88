"""What a query *is*: the one "Heard" policy every path uses (YAMNet, the VGGish label head, CLI, bot).

A person who sends a dog bark wants to read "Bark", not "Animal" or "Domestic animals, pets" —
true, but they name a whole branch of the ontology, not the sound. So the policy is:

* **the most specific labels the model is confident of**: a label is confident when its clip score
  reaches :data:`CONFIDENT` (see there for why that number);
* **an ancestor only when no descendant is confident**: a confident label is hidden when any of its
  ontology descendants (``ontology.json``'s ``child_ids``, followed through) is confident too — the
  descendant already says it, more precisely. "Animal" alone is shown when the model is sure of an
  animal but of no particular one;
* **from the query's own scores only**: never a label that only the results (or the query's acoustic
  neighbours) carry — "heard" describes the voice note, the results list describes the matches;
* **specific sounds first**: labels with no descendants (a sound: "Sneeze", "Bark") come before
  the branch labels shown for want of a confident descendant ("Speech", "Vehicle"), each by score;
* **never a label the ontology marks ambiguous**: ``ontology.json`` flags 12 of the 527 classes
  ``blacklist`` (e.g. "Patter", "Clatter", "Vibration": too ambiguous for its raters); YAMNet and the
  label head still score them, often highly for any rustle, and they name nothing a person would
  recognise (measured: "Patter" was the first guess for most crackling-fire recordings);
* **the sound before the room**: the ontology's "Acoustic environment" labels ("Inside, small room",
  "Outside, rural or natural", "Reverberation", "Echo"...) say where a clip was recorded, not what
  sounds in it; YAMNet gives them to many quiet indoor recordings (a ticking clock was heard first as
  "Inside, small room"), so they come after every label that names a sound, and still show when
  nothing else is heard;
* when nothing is confident, the same rule runs over the labels within :data:`FALLBACK_RELATIVE` of
  the best score, so a quiet or unusual clip still names its best *specific* guess (with its low
  score, which the front ends show as a percentage) instead of nothing or a generic parent.

Clip scores come from per-window (YAMNet, 0.96 s windows every 0.48 s) or per-second (label head)
scores pooled by :func:`clip_scores`: the mean of each label's best :data:`POOL_TOP` windows. A
plain mean lets a two-second bark in a ten-second note fade to a fifth of its strength; a plain max
lets one odd window speak for the clip (measured on a synthesized chirp: Synthesizer 0.89, Keyboard
0.82 above Music). An event of about a second or more covers two or three windows, so the mean of
the best three keeps it at full strength while one stray window is outvoted. (Ranking is another
question — results should sound like the note as a whole — so the label bridge keeps the mean; see
core.bridge.query_profile for the measurements.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from core.results import Heard

#: Clip score from which a label counts as heard. YAMNet's and the label head's outputs are
#: independent sigmoids trained on AudioSet, where a clip carries 2–3 of 527 labels, so a score is
#: close to a probability: at 0.2 a label is ~40–70× above its base rate (0.3–0.5 % for most
#: labels), yet below the 0.3–0.9 such models give a clearly present sound, so a specific label
#: that is really there is seldom missed and can hide its parent. (On the ESC-10 development clips
#: first-heard accuracy moved by under 2 points for any threshold from 0.1 to 0.4: the ontology rule,
#: not the number, is what names the sound.)
CONFIDENT = 0.2
#: When nothing reaches :data:`CONFIDENT`: labels within this share of the best score stand in for
#: "confident" (so the best guess is named, and refined to a descendant scored nearly as high).
FALLBACK_RELATIVE = 0.5
#: Windows (or seconds) averaged per label when pooling a clip (see the module docstring).
POOL_TOP = 3
#: The contract: at most five heard labels.
MAX_HEARD = 5


@dataclass(frozen=True)
class Ontology:
    """Label names in score order, and each label's ontology descendants (indices, transitively)."""

    names: tuple[str, ...]
    descendants: tuple[frozenset[int], ...]
    #: Labels ``ontology.json`` restricts as ``blacklist`` (ambiguous): never heard, no search weight.
    ambiguous: frozenset[int] = frozenset()
    #: Labels under ``ontology.json``'s "Acoustic environment": where a clip was recorded, shown last.
    environment: frozenset[int] = frozenset()

    @classmethod
    def from_children(cls, names: Sequence[str], children: Mapping[int, Sequence[int]],
                      ambiguous: Iterable[int] = (), environment: Iterable[int] = ()) -> Ontology:
        """From direct children per label index (``LabelSet.children``: abstract nodes already
        looked through), closed transitively."""
        n = len(names)
        memo: dict[int, frozenset[int]] = {}

        def below(i: int, path: frozenset[int]) -> frozenset[int]:
            if i in memo:
                return memo[i]
            out: set[int] = set()
            for c in children.get(i, ()):
                if 0 <= c < n and c != i and c not in path:
                    out.add(c)
                    out |= below(c, path | {c})
            memo[i] = frozenset(out)
            return memo[i]

        return cls(tuple(names), tuple(below(i, frozenset({i})) for i in range(n)), frozenset(ambiguous),
                   frozenset(environment))

    @classmethod
    def from_labelset(cls, labels, ontology_json: Path | None = None) -> Ontology:
        """From a :class:`core.index.labels.LabelSet` (a build's, or one loaded from the meta folder);
        the ``blacklist`` restrictions are read from ``ontology_json`` when that file exists."""
        nodes = _ontology_nodes(ontology_json)
        return cls.from_children(labels.names, labels.children, ambiguous_labels(labels.mids, nodes),
                                 environment_labels(labels.mids, nodes))

    @classmethod
    def of_build(cls, build, settings) -> Ontology:
        """A :class:`core.index.store.IndexBuild`'s labels and ontology children, with the flags of
        ``ontology.json`` from the meta folder (the build does not store them; without the file nothing
        is flagged): what the engine and the held-out evaluation both judge "heard" with."""
        meta = getattr(settings, "audioset_meta", None) or Path(settings.data_dir) / "meta"
        return cls.from_labelset(build.labelset(), Path(meta) / "ontology.json")

    @classmethod
    def flat(cls, names: Sequence[str]) -> Ontology:
        """No ontology known: every label is a leaf (nothing is hidden)."""
        return cls(tuple(names), tuple(frozenset() for _ in names))

    @cached_property
    def ancestors(self) -> tuple[frozenset[int], ...]:
        """Each label's ontology ancestors (indices, transitively): the inverse of ``descendants``,
        for views where a label implies its parents (the bridge's stage 1)."""
        up: list[set[int]] = [set() for _ in self.names]
        for parent, below in enumerate(self.descendants):
            for child in below:
                up[child].add(parent)
        return tuple(frozenset(a) for a in up)

    def __len__(self) -> int:
        return len(self.names)


#: ``ontology.json`` id of "Acoustic environment" (abstract): its descendants describe the recording place.
ACOUSTIC_ENVIRONMENT = "/t/dd00093"


def _ontology_nodes(ontology_json: Path | None) -> list[dict]:
    """``ontology.json``'s nodes, or none when the file is absent or unreadable (an unreadable ontology
    only costs the filters that need it, never a query)."""
    if ontology_json is None or not Path(ontology_json).is_file():
        return []
    try:
        nodes = json.loads(Path(ontology_json).read_text(encoding="utf-8"))
        return [n for n in nodes if isinstance(n, dict) and "id" in n]
    except (ValueError, TypeError):
        return []


def ambiguous_labels(mids: Sequence[str], nodes: Sequence[dict]) -> frozenset[int]:
    """Indices (in ``mids`` order) of the labels ``ontology.json`` restricts as ``blacklist``."""
    flagged = {n["id"] for n in nodes if "blacklist" in (n.get("restrictions") or [])}
    return frozenset(i for i, m in enumerate(mids) if m in flagged)


def environment_labels(mids: Sequence[str], nodes: Sequence[dict]) -> frozenset[int]:
    """Indices (in ``mids`` order) of the labels below :data:`ACOUSTIC_ENVIRONMENT` in ``ontology.json``."""
    children = {n["id"]: list(n.get("child_ids") or []) for n in nodes}
    below: set[str] = set()
    todo = list(children.get(ACOUSTIC_ENVIRONMENT, []))
    while todo:
        mid = todo.pop()
        if mid not in below:
            below.add(mid)
            todo.extend(children.get(mid, []))
    return frozenset(i for i, m in enumerate(mids) if m in below)


def clip_scores(scores: np.ndarray, top: int = POOL_TOP) -> np.ndarray:
    """``[labels]`` clip score from per-window scores ``[n, labels]`` (or ``[labels]``): each label's
    mean over its best ``top`` windows (all of them when the clip has fewer), clipped to 0–1."""
    s = np.asarray(scores, dtype=np.float32)
    if s.ndim == 1:
        return np.clip(s, 0.0, 1.0)
    if s.ndim != 2 or s.shape[0] == 0:
        raise ValueError(f"scores must be [windows, labels] with at least one window, got shape {s.shape}")
    k = max(1, min(int(top), s.shape[0]))
    best = -np.partition(-s, k - 1, axis=0)[:k] if k < s.shape[0] else s
    return np.clip(best.mean(axis=0), 0.0, 1.0)


def heard(clip: np.ndarray, ontology: Ontology, top: int = MAX_HEARD, *,
          confident: float = CONFIDENT) -> list[Heard]:
    """The policy of the module docstring over clip scores ``[labels]`` (in ``ontology.names`` order)."""
    p = np.asarray(clip, dtype=np.float32)
    if p.ndim != 1 or p.shape[0] != len(ontology):
        raise ValueError(f"clip scores have shape {p.shape}, the ontology has {len(ontology)} labels")
    if top <= 0 or p.size == 0:
        return []
    p = np.nan_to_num(np.clip(p, 0.0, 1.0))
    if ontology.ambiguous:
        p[list(ontology.ambiguous)] = 0.0
    best = float(p.max())
    if best <= 0.0:
        return []
    floor = confident if best >= confident else best * FALLBACK_RELATIVE
    sure = set(np.flatnonzero(p >= floor).tolist())
    shown = [i for i in sure if not (ontology.descendants[i] & sure)]
    shown.sort(key=lambda i: (i in ontology.environment, bool(ontology.descendants[i]), -float(p[i]), i))
    return [Heard(label=ontology.names[i], score=float(p[i])) for i in shown[:top]]
