"""The VGGish constants, exactly as in the reference ``vggish_params.py``.

They fix the space the released AudioSet embeddings live in: change one and queries stop being
comparable with the index.
"""

from __future__ import annotations

# Architecture
NUM_FRAMES = 96          # frames per example (0.96 s)
NUM_BANDS = 64           # mel bands per frame
EMBEDDING_SIZE = 128

# Audio front end
SAMPLE_RATE = 16000
STFT_WINDOW_LENGTH_SECONDS = 0.025
STFT_HOP_LENGTH_SECONDS = 0.010
NUM_MEL_BINS = NUM_BANDS
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01        # avoids log(0)
EXAMPLE_WINDOW_SECONDS = 0.96
EXAMPLE_HOP_SECONDS = 0.96

# Post-processing
PCA_EIGEN_VECTORS_NAME = "pca_eigen_vectors"
PCA_MEANS_NAME = "pca_means"
QUANTIZE_MIN_VAL = -2.0
QUANTIZE_MAX_VAL = +2.0

# Checkpoint layout: variable scope → (weights shape); every layer also has ``<scope>/biases``.
LAYERS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("vggish/conv1", (3, 3, 1, 64)),
    ("vggish/conv2", (3, 3, 64, 128)),
    ("vggish/conv3/conv3_1", (3, 3, 128, 256)),
    ("vggish/conv3/conv3_2", (3, 3, 256, 256)),
    ("vggish/conv4/conv4_1", (3, 3, 256, 512)),
    ("vggish/conv4/conv4_2", (3, 3, 512, 512)),
    ("vggish/fc1/fc1_1", (6 * 4 * 512, 4096)),
    ("vggish/fc1/fc1_2", (4096, 4096)),
    ("vggish/fc2", (4096, EMBEDDING_SIZE)),
)
#: Max-pool (2×2, stride 2, SAME) after these layers.
POOL_AFTER = frozenset({"vggish/conv1", "vggish/conv2", "vggish/conv3/conv3_2", "vggish/conv4/conv4_2"})
#: No ReLU after the last layer (the reference's ``activation_fn=None`` on fc2).
LINEAR_LAYERS = frozenset({"vggish/fc2"})
