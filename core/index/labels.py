"""AudioSet label names and the ontology: index ↔ mid ↔ name, descriptions, and text matching.

Text search (``--text``) has no audio to embed, so it goes through words: the query's words are
matched against label names (strongly) and ontology descriptions (weakly), and a matched label
also brings its ontology children along at a discount ("dog" should find "Bark" segments).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import BadQueryError, ConfigError, DownloadError
from core.fetch import download_file

CLASS_CSV = "class_labels_indices.csv"
ONTOLOGY = "ontology.json"
OFFICIAL_CLASS_CSV_URL = "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/class_labels_indices.csv"
OFFICIAL_ONTOLOGY_URL = "https://raw.githubusercontent.com/audioset/ontology/master/ontology.json"

#: Labels so common in AudioSet that sharing them says little: the "strict" metric ignores them,
#: and ranking (core.search, the bridge's "share" rule) weighs a match on them down.
UBIQUITOUS = ("Speech", "Music")

_STOP = {"a", "an", "the", "of", "and", "or", "in", "on", "at", "to", "with", "for", "by", "is", "are",
         "sound", "sounds", "noise", "like", "some", "from", "that", "this", "it", "as", "be", "its"}


def _stem(word: str) -> str:
    for suffix in ("ing", "ers", "er", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and word[-1] == word[-2]:  # "barking"→"bark", "humming"→"humm"→"hum"
        word = word[:-1]
    return word


def ubiquitous_ids(names: Sequence[str]) -> list[int]:
    """Positions of the :data:`UBIQUITOUS` labels in ``names`` (a build's or the class CSV's order)."""
    return [i for i, n in enumerate(names) if n in UBIQUITOUS]


def words(text: str) -> list[str]:
    return [_stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP]


@dataclass
class LabelSet:
    """The 527 AudioSet classes with their ontology entries."""

    names: list[str]
    mids: list[str]
    descriptions: list[str] = field(default_factory=list)
    children: dict[int, list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def family(self, name: str) -> set[int]:
        """The label called ``name`` and all its ontology descendants ("Dog" brings "Bark", "Howl"...):
        what counts as "the same kind of sound" when judging a result or a heard label."""
        root = self.names.index(name)
        out, todo = {root}, [root]
        while todo:
            for c in self.children.get(todo.pop(), []):
                if c not in out:
                    out.add(c)
                    todo.append(c)
        return out

    def name(self, index: int) -> str:
        return self.names[index] if 0 <= index < len(self.names) else f"label {index}"

    def match_text(self, text: str) -> dict[int, float]:
        """Label index → weight in (0, 1] for a free-text description; BadQueryError if nothing matches."""
        q = words(text)
        if not q:
            raise BadQueryError("the text query has no searchable words")
        qset = set(q)
        scores: dict[int, float] = {}
        for i, name in enumerate(self.names):
            name_words = set(words(name))
            desc_words = set(words(self.descriptions[i])) if self.descriptions else set()
            hit_name = len(qset & name_words)
            hit_desc = len((qset - name_words) & desc_words)
            if not hit_name and not hit_desc:
                continue
            s = (hit_name + 0.25 * hit_desc) / len(qset)
            if hit_name:
                # prefer labels whose name is mostly made of the query's words ("Dog" over "Dog food bowl")
                s *= 0.5 + 0.5 * hit_name / max(1, len(name_words))
            else:
                s *= 0.4
            scores[i] = max(scores.get(i, 0.0), s)
        for i, s in list(scores.items()):
            for c in self.children.get(i, []):
                scores[c] = max(scores.get(c, 0.0), 0.6 * s)
        if not scores:
            raise BadQueryError(f"no AudioSet label matches {text!r}; try words like 'dog', 'rain', 'guitar'")
        top = max(scores.values())
        return {i: s / top for i, s in scores.items() if s / top >= 0.2}


def load_labels(meta_dir: str | Path) -> LabelSet:
    meta_dir = Path(meta_dir)
    csv_path = meta_dir / CLASS_CSV
    if not csv_path.is_file():
        raise ConfigError(f"{CLASS_CSV} not found in {meta_dir} (ECHOVIDS_AUDIOSET_META)")
    names: list[str] = []
    mids: list[str] = []
    with csv_path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            idx = int(row["index"])
            while len(names) <= idx:
                names.append("")
                mids.append("")
            names[idx] = row["display_name"]
            mids[idx] = row["mid"]
    descriptions = [""] * len(names)
    children: dict[int, list[int]] = {}
    onto = meta_dir / ONTOLOGY
    if onto.is_file():
        by_mid = {m: i for i, m in enumerate(mids)}
        nodes = json.loads(onto.read_text(encoding="utf-8"))
        node_by_id = {n["id"]: n for n in nodes}
        for n in nodes:
            i = by_mid.get(n["id"])
            if i is None:
                continue
            descriptions[i] = n.get("description", "")
            kids: list[int] = []
            stack = list(n.get("child_ids", []))
            seen: set[str] = set()
            while stack:  # abstract intermediate nodes are not classes: look through them
                c = stack.pop()
                if c in seen:
                    continue
                seen.add(c)
                if c in by_mid:
                    kids.append(by_mid[c])
                elif c in node_by_id:
                    stack.extend(node_by_id[c].get("child_ids", []))
            if kids:
                children[i] = kids
    return LabelSet(names, mids, descriptions, children)


def resolve_meta_dir(meta: Path | None, data_dir: Path, *, mirror: str | None = None) -> Path:
    """The configured meta folder, else a cached download in ``DATA_DIR/meta`` (fetched once).

    The download goes through :func:`core.fetch.download_file` like every other file the project
    fetches (``.part`` file, atomic rename). ``mirror`` is a base URL holding both files by name,
    for an air-gapped mirror or a test server.
    """
    if meta is not None:
        if not (Path(meta) / CLASS_CSV).is_file():
            raise ConfigError(f"ECHOVIDS_AUDIOSET_META={meta} has no {CLASS_CSV}")
        return Path(meta)
    cache = Path(data_dir) / "meta"
    if (cache / CLASS_CSV).is_file():
        return cache
    # The class CSV last: its presence is what marks the cache as complete.
    for url, name in ((OFFICIAL_ONTOLOGY_URL, ONTOLOGY), (OFFICIAL_CLASS_CSV_URL, CLASS_CSV)):
        if mirror is not None:
            url = mirror.rstrip("/") + "/" + name
        try:
            download_file(url, cache / name, name=name)
        except DownloadError as err:
            reason = str(err).split("; ")[0]  # drop the downloader's model-fetch advice: not ours to give
            raise DownloadError(f"{reason}; set ECHOVIDS_AUDIOSET_META to a folder holding {name}") from None
    return cache
