"""YAMNet: what a query sounds like, in AudioSet's own label space, without VGGish weights.

YAMNet's 521 classes are AudioSet ontology labels, so its per-window scores can be scattered into
AudioSet's 527 indices (by label id, the ``mid``) and compared with the labels the index carries.
That makes it the *label bridge*: a query can be answered when the VGGish checkpoint is absent, and
every audio reply can say what was heard.

Two model layouts are accepted, told apart by their tensors rather than by file name:

* **window** models take exactly one 0.975 s window (15,600 samples, ``[1, 15600]`` or ``[15600]``)
  and give ``[1, 521]`` scores — the converted copy in ``shared/data/yamnet/`` and the official
  ``lite-model/yamnet/classification/tflite/1``. We frame the waveform ourselves (0.975 s windows,
  0.48 s hop, the tail zero-padded into one last window — the official model's own padding rule, so
  both layouts give the same number of windows for the same audio) and invoke once per window.
* **waveform** models take a variable-length waveform ``[n]`` and give ``[frames, 521]`` scores plus
  embeddings and a spectrogram — the official ``lite-model/yamnet/tflite/1``. We pad the waveform to
  the same window grid and invoke once.

Interpreter: ``ai_edge_litert`` (LiteRT) is used; ``tf.lite.Interpreter`` only as a fallback when
LiteRT is not installed. Measured here (2-core AVX2, converted model, one window): LiteRT 1.33–1.49 ms
median vs tf.lite 1.54–1.79 ms, in either import order next to tensorflow-cpu 2.20 + scann 1.4.2;
LiteRT imports in ~10 ms without importing TensorFlow (a YAMNet-only process skips TF's ~2.5 s
start-up), and TF 2.20 deprecates ``tf.lite.Interpreter`` with a warning on every interpreter.
(The two runtimes differ by up to 0.012 in a score: different XNNPACK builds, not a bug.)

Thread safety: a TFLite interpreter holds mutable tensors, so each thread gets its own interpreter
(built from model bytes read once; ~1 ms) with one XNNPACK thread — concurrent queries then use the
cores instead of serialising on a lock (two XNNPACK threads were no faster for one 20-window query
on this machine: 77–157 ms vs 82–124 ms under load). A warm 10 s voice note (20 windows) takes
~40 ms (bench/yamnet.py).
"""

from __future__ import annotations

import csv
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import BadQueryError, ModelFileError, ModelMissingError
from core.heard import Ontology, clip_scores
from core.heard import heard as heard_policy
from core.results import Heard

if TYPE_CHECKING:
    from core.config import Settings

SAMPLE_RATE = 16000
#: 0.975 s: the 0.96 s patch of 96 log-mel frames plus the 25 ms STFT window minus one 10 ms hop.
WINDOW_SAMPLES = 15600
#: 0.48 s between windows (YAMNet's ``patch_hop_seconds``).
HOP_SAMPLES = 7680
YAMNET_CLASSES = 521
AUDIOSET_CLASSES = 527
EMBEDDING_SIZE = 1024

CLASS_MAP_NAME = "yamnet_class_map.csv"
AUDIOSET_LABELS_NAME = "class_labels_indices.csv"

ONTOLOGY_NAME = "ontology.json"


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


def frame_count(num_samples: int) -> int:
    """Windows YAMNet yields for ``num_samples``: short input is one window, the tail gets its own."""
    if num_samples <= WINDOW_SAMPLES:
        return 1
    return 1 + -(-(num_samples - WINDOW_SAMPLES) // HOP_SAMPLES)


def pad_to_windows(samples: np.ndarray) -> np.ndarray:
    """Zero-pad so the waveform covers exactly ``frame_count`` windows (the official padding rule)."""
    n = frame_count(len(samples))
    want = (n - 1) * HOP_SAMPLES + WINDOW_SAMPLES
    if len(samples) == want:
        return samples
    return np.pad(samples, (0, want - len(samples)))


def frame_windows(samples: np.ndarray) -> np.ndarray:
    """``[n, 15600]`` view of 0.975 s windows every 0.48 s (after :func:`pad_to_windows`)."""
    padded = pad_to_windows(samples)
    n = frame_count(len(samples))
    return np.lib.stride_tricks.as_strided(
        padded, shape=(n, WINDOW_SAMPLES), strides=(HOP_SAMPLES * padded.strides[0], padded.strides[0]), writeable=False
    )


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:  # pragma: no cover - only when LiteRT is not installed
        import tensorflow as tf

        return tf.lite.Interpreter


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
        self._interpreter_cls = _interpreter_class()
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

    @property
    def has_embeddings(self) -> bool:
        return self._runner().embeddings_index is not None

    def _runner(self) -> _Runner:
        runner = getattr(self._local, "runner", None)
        if runner is None:
            runner = _Runner(self._interpreter_cls, self._content, self.model_path)
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

        Silent windows are left out of both: a voice note with three seconds of speech and four of
        trailing silence would otherwise be "heard" as Silence 71 %, Speech 28 % and matched to clips
        labelled Silence (measured). A window is silent when YAMNet's top class for it is Silence;
        when every window is, the clip *is* silence and is reported as such. In the search
        probabilities the Silence class is zeroed for sounding clips: it is the absence of sound, not
        something to sound like.
        """
        scores = self.scores(samples_16k)
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
        samples = _as_waveform(samples_16k)
        return self._runner().run(samples, want_embeddings)


@dataclass(frozen=True)
class Listening:
    """What :meth:`YamnetModel.listen` found in one clip."""

    #: ``[windows, 521]`` raw per-window scores.
    scores: np.ndarray
    #: ``[windows]`` True for windows that are not silence (all True for an all-silent clip).
    sounding: np.ndarray
    #: What the sounding windows are heard as (:func:`core.heard.heard`).
    heard: list[Heard]
    #: ``[sounding windows, labels]`` probabilities in AudioSet (or the given ``label_mids``) order
    #: for the label bridge, Silence zeroed; None when no AudioSet label list is known.
    probs: np.ndarray | None


def _as_waveform(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise BadQueryError(f"YAMNet needs mono samples (one dimension), got shape {x.shape}")
    if x.size == 0:
        raise BadQueryError("YAMNet got no audio samples")
    if x.dtype.kind in "iu":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise BadQueryError("audio samples contain NaN or infinity")
    return x


class _Runner:
    """One thread's interpreter, with the tensor indices YAMNet's layout needs."""

    def __init__(self, interpreter_cls: Any, content: bytes, path: Path):
        try:
            try:
                self.it = interpreter_cls(model_content=content, num_threads=1)
            except TypeError:  # pragma: no cover - runtimes without num_threads
                self.it = interpreter_cls(model_content=content)
            self.it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"YAMNet model {path} is not a usable TFLite file: {first}") from None
        inputs = self.it.get_input_details()
        outputs = self.it.get_output_details()
        if len(inputs) != 1:
            raise ModelFileError(f"YAMNet model {path} has {len(inputs)} inputs, expected one waveform input")
        self.inp = inputs[0]
        signature = list(self.inp.get("shape_signature", self.inp["shape"]))
        if any(d == -1 for d in signature):
            if len(signature) != 1:
                raise ModelFileError(f"YAMNet model {path} has a variable input of shape {signature}, expected [n]")
            self.layout = "waveform"
            self.current_len = int(self.inp["shape"][0])
        else:
            if int(np.prod(signature)) != WINDOW_SAMPLES:
                raise ModelFileError(
                    f"YAMNet model {path} takes input of shape {signature}, expected {WINDOW_SAMPLES} samples"
                )
            self.layout = "window"
            self.window_shape = tuple(int(d) for d in self.inp["shape"])
        self.scores_index = self.embeddings_index = None
        for d in outputs:
            last = int(d["shape"][-1]) if len(d["shape"]) else 0
            if last == YAMNET_CLASSES and self.scores_index is None:
                self.scores_out = d
                self.scores_index = d["index"]
            elif last == EMBEDDING_SIZE and self.embeddings_index is None:
                self.embeddings_index = d["index"]
        if self.scores_index is None:
            shapes = [list(d["shape"]) for d in outputs]
            raise ModelFileError(f"YAMNet model {path} has no [.., {YAMNET_CLASSES}] scores output (outputs {shapes})")
        self.in_quant = self._quant(self.inp)
        self.out_quant = self._quant(self.scores_out)

    @staticmethod
    def _quant(detail: dict) -> tuple[float, int] | None:
        if detail["dtype"] in (np.float32, np.float64):
            return None
        scale, zero = detail.get("quantization", (0.0, 0))
        return (float(scale) or 1.0, int(zero))

    def _set_input(self, x: np.ndarray) -> None:
        if self.in_quant is not None:
            scale, zero = self.in_quant
            info = np.iinfo(self.inp["dtype"])
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(self.inp["dtype"])
        self.it.set_tensor(self.inp["index"], x)

    def _scores(self) -> np.ndarray:
        s = self.it.get_tensor(self.scores_index)
        if self.out_quant is not None:
            scale, zero = self.out_quant
            s = (s.astype(np.float32) - zero) * scale
        return np.array(s, dtype=np.float32).reshape(-1, YAMNET_CLASSES)

    def run(self, samples: np.ndarray, want_embeddings: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if self.layout == "window":
            windows = frame_windows(samples)
            out = np.empty((len(windows), YAMNET_CLASSES), dtype=np.float32)
            for k, window in enumerate(windows):
                self._set_input(np.ascontiguousarray(window).reshape(self.window_shape))
                self.it.invoke()
                out[k] = self._scores()[0]
            return out, None
        padded = pad_to_windows(samples)
        if len(padded) != self.current_len:
            self.it.resize_tensor_input(self.inp["index"], [len(padded)], strict=True)
            self.it.allocate_tensors()
            self.current_len = len(padded)
        self._set_input(padded)
        self.it.invoke()
        scores = self._scores()
        emb = None
        if want_embeddings and self.embeddings_index is not None:
            emb = np.array(self.it.get_tensor(self.embeddings_index), dtype=np.float32).reshape(-1, EMBEDDING_SIZE)
        return scores, emb


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
