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
on this machine: 77–157 ms vs 82–124 ms under load). A warm 10 s voice note takes ~30 ms on the
0.48 s grid (20 windows); ``listen`` runs the grid at two phases (a window every 0.24 s, 40
windows; why in ``params.LISTEN_PHASES``), bench/yamnet.py measures what it costs.

Modules (the layout of ``core/vggish``): ``params`` (window/hop sizes, class counts, file names),
``classmap`` (YAMNet's class map and its mapping into AudioSet's indices), ``framing`` (the window
grid and input checks), ``runner`` (one thread's TFLite interpreter, both layouts) and ``model``
(:class:`YamnetModel`: scores, AudioSet scores, what a clip is heard as; the per-path cache).
"""

from core.yamnet.classmap import ClassMap, audioset_index_map, read_audioset_labels, read_class_map
from core.yamnet.framing import frame_count, frame_windows, pad_to_windows, phase_offsets, phased_frame_count
from core.yamnet.model import Listening, YamnetModel, get_model, load_yamnet
from core.yamnet.params import (
    AUDIOSET_CLASSES,
    AUDIOSET_LABELS_NAME,
    CLASS_MAP_NAME,
    EMBEDDING_SIZE,
    HOP_SAMPLES,
    LISTEN_PHASES,
    ONTOLOGY_NAME,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    YAMNET_CLASSES,
)

__all__ = [
    "AUDIOSET_CLASSES", "AUDIOSET_LABELS_NAME", "CLASS_MAP_NAME", "EMBEDDING_SIZE", "HOP_SAMPLES", "LISTEN_PHASES",
    "ONTOLOGY_NAME",
    "SAMPLE_RATE", "WINDOW_SAMPLES", "YAMNET_CLASSES", "ClassMap", "Listening", "YamnetModel", "audioset_index_map",
    "frame_count", "frame_windows", "get_model", "load_yamnet", "pad_to_windows", "phase_offsets",
    "phased_frame_count", "read_audioset_labels",
    "read_class_map",
]
