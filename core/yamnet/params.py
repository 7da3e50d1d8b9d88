"""YAMNet's fixed numbers and the file names it is found by."""

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
