"""YAMNet's fixed numbers and the file names it is found by."""

SAMPLE_RATE = 16000
#: 0.975 s: the 0.96 s patch of 96 log-mel frames plus the 25 ms STFT window minus one 10 ms hop.
WINDOW_SAMPLES = 15600
#: 0.48 s between windows (YAMNet's ``patch_hop_seconds``).
HOP_SAMPLES = 7680
#: :meth:`YamnetModel.listen` runs that grid at this many phases (offsets of 0.48 s / phases), so a
#: query is heard in a window every 0.24 s. Why (core.yamnet.framing.phase_offsets): an event is
#: heard fully only when it lies inside one 0.975 s window, which the 0.48 s grid promises for events
#: up to 0.495 s and a 0.24 s grid for events up to 0.735 s (a bark, a sneeze, a crackle). Two phases
#: cost twice the model time (a 10 s note: 42.6 ms p50 of a 100 ms budget, bench/yamnet.py).
LISTEN_PHASES = 2
YAMNET_CLASSES = 521
AUDIOSET_CLASSES = 527
EMBEDDING_SIZE = 1024

CLASS_MAP_NAME = "yamnet_class_map.csv"
AUDIOSET_LABELS_NAME = "class_labels_indices.csv"

ONTOLOGY_NAME = "ontology.json"
