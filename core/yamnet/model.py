"""The YAMNet model object: scores per window, the same in AudioSet's label order, what a clip is
heard as (core.heard's policy), and a per-path cache so every caller shares one loaded model."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import ModelFileError, ModelMissingError
from core.heard import Ontology, clip_scores
from core.heard import heard as heard_policy
from core.results import Heard
from core.yamnet.classmap import ClassMap, audioset_index_map, read_audioset_labels, read_class_map
from core.yamnet.framing import as_waveform, phase_offsets, window_starts
from core.yamnet.params import AUDIOSET_LABELS_NAME, CLASS_MAP_NAME, LISTEN_PHASES, ONTOLOGY_NAME
from core.yamnet.runner import Runner, interpreter_class

if TYPE_CHECKING:
    from core.config import Settings


class YamnetModel:
    """One YAMNet TFLite model plus its class map; safe to share between threads.

    ``class_map_path`` defaults to ``yamnet_class_map.csv`` next to the model. AudioSet's label list
    (``class_labels_indices.csv``) is needed only to map into AudioSet indices; it defaults to the
    file of that name next to the model and is read on first use.
    """

    def __init__(
        self,
        model_path: str | Path,
        class_map_path: str | Path | None = None,
        audioset_labels_path: str | Path | None = None,
    ):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelMissingError(
                f"YAMNet model not found at {self.model_path}; run `echovids model fetch` or set YAMNET_MODEL"
            )
        self.class_map_path = Path(class_map_path) if class_map_path else self.model_path.with_name(CLASS_MAP_NAME)
        if not self.class_map_path.is_file():
            raise ModelMissingError(
                f"YAMNet class map not found at {self.class_map_path} (it belongs next to the model); "
                "run `echovids model fetch`"
            )
        self.audioset_labels_path = (
            Path(audioset_labels_path) if audioset_labels_path else self.model_path.with_name(AUDIOSET_LABELS_NAME)
        )
        self.mids, self.names = read_class_map(self.class_map_path)
        self._content = self.model_path.read_bytes()
        self._interpreter_cls = interpreter_class()
        self._local = threading.local()
        self._map_lock = threading.Lock()
        self._to_audioset: np.ndarray | None = None
        self._audioset_names: tuple[str, ...] = ()
        self._spaces: dict[tuple[str, ...], np.ndarray] = {}
        self._ontology: Ontology | None = None
        # Load once here so a broken file fails at start-up with one line, not at the first query.
        self._runner()

    # -- layout ---------------------------------------------------------------------------------
    @property
    def layout(self) -> str:
        """``"window"`` (fixed 15,600-sample input) or ``"waveform"`` (variable-length input)."""
        return self._runner().layout

    def _runner(self) -> Runner:
        runner = getattr(self._local, "runner", None)
        if runner is None:
            runner = Runner(self._interpreter_cls, self._content, self.model_path)
            self._local.runner = runner
        return runner

    # -- AudioSet mapping -------------------------------------------------------------------------
    def _mapping(self) -> tuple[np.ndarray, tuple[str, ...]]:
        with self._map_lock:
            if self._to_audioset is None:
                if not self.audioset_labels_path.is_file():
                    raise ModelMissingError(
                        f"AudioSet label list not found at {self.audioset_labels_path}; "
                        "set ECHOVIDS_AUDIOSET_META to the folder holding class_labels_indices.csv"
                    )
                mids, names = read_audioset_labels(self.audioset_labels_path)
                mapping = audioset_index_map(self.mids, mids)
                if (mapping < 0).all():
                    raise ModelFileError(
                        f"no YAMNet class of {self.class_map_path} is in {self.audioset_labels_path} (mids differ)"
                    )
                self._to_audioset, self._audioset_names = mapping, names
            return self._to_audioset, self._audioset_names

    @property
    def audioset_names(self) -> tuple[str, ...]:
        return self._mapping()[1]

    @property
    def class_map(self) -> ClassMap:
        mapping, names = self._mapping()
        return ClassMap(self.mids, self.names, mapping, names)

    # -- inference ------------------------------------------------------------------------------
    def scores(self, samples_16k: np.ndarray) -> np.ndarray:
        """``float32 [windows, 521]`` per-window class scores (0–1, independent sigmoids)."""
        return self._run(samples_16k)[0]

    def phased_scores(self, samples_16k: np.ndarray, phases: int = LISTEN_PHASES) -> np.ndarray:
        """``float32 [windows, 521]``: :meth:`scores` of the grid run at ``phases`` offsets
        (:data:`~core.yamnet.params.LISTEN_PHASES`), the windows of all phases in order of start time."""
        x = as_waveform(samples_16k)
        offsets = phase_offsets(len(x), phases)
        if len(offsets) == 1:
            return self._run(x)[0]
        runs = [self._run(x[off:])[0] for off in offsets]
        starts = np.concatenate([window_starts(len(x), off) for off in offsets])
        return np.concatenate(runs)[np.argsort(starts, kind="stable")]

    def embeddings(self, samples_16k: np.ndarray) -> np.ndarray:
        """``float32 [windows, 1024]``; only waveform-layout (official) models have them."""
        scores, emb = self._run(samples_16k, want_embeddings=True)
        if emb is None:
            raise ModelFileError(f"YAMNet model {self.model_path} has no embeddings output (converted window model)")
        return emb

    def audioset_scores(self, samples_16k: np.ndarray, label_mids: Sequence[str] | None = None) -> np.ndarray:
        """``float32 [windows, 527]``: scores at AudioSet indices; AudioSet classes YAMNet lacks are 0.

        ``label_mids`` maps into another label list instead (e.g. the one an index build stores, so
        the columns are that build's label indices whatever CSV this process found).
        """
        return self.to_audioset(self.scores(samples_16k), label_mids)

    def to_audioset(self, scores: np.ndarray, label_mids: Sequence[str] | None = None) -> np.ndarray:
        """Scatter ``[n, 521]`` YAMNet scores into AudioSet order (or ``label_mids`` order)."""
        if label_mids is None:
            mapping, names = self._mapping()
            width = len(names)
        else:
            mapping, width = self.label_space(label_mids), len(label_mids)
        out = np.zeros((scores.shape[0], width), dtype=np.float32)
        keep = mapping >= 0
        out[:, mapping[keep]] = scores[:, keep]
        return out

    def label_space(self, label_mids: Sequence[str]) -> np.ndarray:
        """``[521]`` index of each YAMNet class in ``label_mids`` (-1 if absent); cached per list."""
        key = tuple(label_mids)
        with self._map_lock:
            mapping = self._spaces.get(key)
            if mapping is None:
                mapping = audioset_index_map(self.mids, key)
                if (mapping < 0).all():
                    raise ModelFileError("no YAMNet class is in the index's label list (mids differ)")
                self._spaces[key] = mapping
            return mapping

    def heard(self, samples_16k: np.ndarray, top: int = 5) -> list[Heard]:
        """What the clip is heard as, by the one policy of :mod:`core.heard` (AudioSet names)."""
        return self.listen(samples_16k, top=top).heard

    @property
    def ontology(self) -> Ontology:
        """AudioSet's labels with their ontology (``ontology.json`` beside the AudioSet label list),
        for a "heard" line outside an index build; without those files, YAMNet's names, flat."""
        with self._map_lock:
            if self._ontology is None:
                self._ontology = self._load_ontology()
            return self._ontology

    def _load_ontology(self) -> Ontology:
        if not self.audioset_labels_path.is_file():
            return Ontology.flat(self.names)
        from core.index.labels import load_labels

        meta = self.audioset_labels_path.parent
        return Ontology.from_labelset(load_labels(meta), meta / ONTOLOGY_NAME)

    def listen(
        self,
        samples_16k: np.ndarray,
        label_mids: Sequence[str] | None = None,
        ontology: Ontology | None = None,
        *,
        top: int = 5,
    ) -> Listening:
        """One YAMNet pass giving both what a query is heard as and its label probabilities for search.

        ``label_mids``/``ontology`` are an index build's label list and ontology (the engine passes
        them, so heard labels and search columns are that build's); by default AudioSet's, found
        next to the model (:attr:`ontology`).

        The clip is framed every 0.24 s (:meth:`phased_scores`; why: ``params.LISTEN_PHASES``).
        Silent windows are left out of both: a voice note with three seconds of speech and four of
        trailing silence would otherwise be "heard" as Silence 71 %, Speech 28 % and matched to clips
        labelled Silence (measured). A window is silent when YAMNet's top class for it is Silence;
        when every window is, the clip *is* silence and is reported as such. In the search
        probabilities the Silence class is zeroed for sounding clips: it is the absence of sound, not
        something to sound like.
        """
        scores = self.phased_scores(samples_16k)
        silence = self.silence_index
        sounding = np.ones(len(scores), dtype=bool)
        if silence is not None:
            sounding = scores.argmax(axis=1) != silence
            if not sounding.any():
                sounding[:] = True
        kept = scores[sounding]
        search = kept.copy()
        if silence is not None and (kept.argmax(axis=1) != silence).any():
            search[:, silence] = 0.0
        probs = None
        if label_mids is not None or self.audioset_labels_path.is_file():
            probs = self.to_audioset(search, label_mids)
            onto = ontology if ontology is not None else self.ontology
            if len(onto) != probs.shape[1]:
                raise ValueError(f"the ontology has {len(onto)} labels, the label list {probs.shape[1]}")
            heard = heard_policy(clip_scores(self.to_audioset(kept, label_mids)), onto, top)
        else:  # no AudioSet label list: YAMNet's own names, no ontology
            heard = heard_policy(clip_scores(kept), Ontology.flat(self.names), top)
        return Listening(scores=scores, sounding=sounding, heard=heard, probs=probs)

    @property
    def silence_index(self) -> int | None:
        try:
            return self.names.index("Silence")
        except ValueError:
            return None

    def _run(self, samples_16k: np.ndarray, want_embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        samples = as_waveform(samples_16k)
        return self._runner().run(samples, want_embeddings)


@dataclass(frozen=True)
class Listening:
    """What :meth:`YamnetModel.listen` found in one clip."""

    #: ``[windows, 521]`` raw per-window scores, windows every 0.24 s (:meth:`YamnetModel.phased_scores`).
    scores: np.ndarray
    #: ``[windows]`` True for windows that are not silence (all True for an all-silent clip).
    sounding: np.ndarray
    #: What the sounding windows are heard as (:func:`core.heard.heard`).
    heard: list[Heard]
    #: ``[sounding windows, labels]`` probabilities in AudioSet (or the given ``label_mids``) order
    #: for the label bridge, Silence zeroed; None when no AudioSet label list is known.
    probs: np.ndarray | None


# -- loading with a per-path cache -----------------------------------------------------------------
_CACHE: dict[tuple[str, str, str, int], YamnetModel] = {}
_CACHE_LOCK = threading.Lock()


def get_model(
    model_path: str | Path,
    class_map_path: str | Path | None = None,
    audioset_labels_path: str | Path | None = None,
) -> YamnetModel:
    """A :class:`YamnetModel` shared per (paths, model mtime) within the process."""
    path = Path(model_path)
    if not path.is_file():
        raise ModelMissingError(f"YAMNet model not found at {path}; run `echovids model fetch` or set YAMNET_MODEL")
    key = (
        str(path.resolve()),
        str(Path(class_map_path).resolve()) if class_map_path else "",
        str(Path(audioset_labels_path).resolve()) if audioset_labels_path else "",
        path.stat().st_mtime_ns,
    )
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = YamnetModel(path, class_map_path, audioset_labels_path)
            _CACHE[key] = model
        return model


def load_yamnet(settings: Settings, model: str | Path | None = None) -> YamnetModel:
    """The YAMNet model the settings name (flag > ``YAMNET_MODEL`` > ``DATA_DIR/models``), cached.

    The class map is looked for next to the model, then in ``DATA_DIR/models``; AudioSet's label list
    next to the model, then in ``ECHOVIDS_AUDIOSET_META``, ``DATA_DIR/meta`` and ``DATA_DIR/models``.
    """
    path = settings.yamnet_model(model)
    class_map = _first_file(path.with_name(CLASS_MAP_NAME), settings.models_dir / CLASS_MAP_NAME)
    labels = _first_file(
        path.with_name(AUDIOSET_LABELS_NAME),
        settings.audioset_meta / AUDIOSET_LABELS_NAME if settings.audioset_meta else None,
        settings.data_dir / "meta" / AUDIOSET_LABELS_NAME,  # core.index.labels caches a download there
        settings.models_dir / AUDIOSET_LABELS_NAME,
    )
    return get_model(path, class_map, labels)


def _first_file(*candidates: Path | None) -> Path | None:
    for c in candidates:
        if c is not None and c.is_file():
            return c
    return None
