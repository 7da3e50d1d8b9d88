"""A random-weight VGGish checkpoint in the official layout (TF1, V1 single-file format).

The real weights are not available offline, so tests check our network against an independent
NumPy forward pass on these. Scaling, so the post-processed bytes say something (not all 0/255):
convs and fc1 use He (uniform) initialisation (activation scale stays near the log-mel input's); fc2 is
``E⁻¹ G`` with E the real PCA matrix and G small, and its bias is the PCA means, so after
``E @ (x - mean)`` each component is ``G h``, centred on 0 with a spread well inside [-2, 2].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.vggish import params
from core.vggish.checkpoint import variable_shapes

#: Target std of the PCA-projected output on typical log-mel input (quantization range is ±2).
PROJECTED_STD = 0.6
#: Rough RMS of fc1_2 activations for log-mel input under He initialisation (measured ≈ 3–5).
_HIDDEN_RMS = 4.0


def random_weights(pca_params_path: str | Path, seed: int = 1234) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    with np.load(pca_params_path) as npz:
        eigen = np.asarray(npz[params.PCA_EIGEN_VECTORS_NAME], dtype=np.float64)
        means = np.asarray(npz[params.PCA_MEANS_NAME], dtype=np.float64).reshape(-1)
    weights: dict[str, np.ndarray] = {}
    for name, shape in variable_shapes().items():
        scope = name.rsplit("/", 1)[0]
        if name.endswith("/biases"):
            if scope == "vggish/fc2":
                weights[name] = means.astype(np.float32)
            else:
                weights[name] = (0.01 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
            continue
        if scope == "vggish/fc2":
            hidden = shape[0]
            g = rng.standard_normal((params.EMBEDDING_SIZE, hidden)) * (PROJECTED_STD / (_HIDDEN_RMS * np.sqrt(hidden)))
            weights[name] = np.linalg.solve(eigen, g).T.astype(np.float32)  # [hidden, 128] with E @ W.T = G
            continue
        # He-uniform: U(-a, a) with a = sqrt(3 * 2 / fan_in); uniform draws are twice as fast as
        # normal ones for these 72 M values, and the fixture is shared by several test modules
        fan_in = int(np.prod(shape[:-1]))
        w = rng.random(shape, dtype=np.float32)
        w -= np.float32(0.5)
        w *= np.float32(2.0 * np.sqrt(6.0 / fan_in))
        weights[name] = w
    return weights


def save_v1_checkpoint(path: str | Path, weights: dict[str, np.ndarray]) -> Path:
    """Write ``weights`` with a TF1 ``Saver`` in the V1 single-file format, like Google's file."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf1 = tf.compat.v1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        feeds = {}
        variables = []
        for name, value in weights.items():
            ph = tf1.placeholder(tf.float32, shape=value.shape)
            var = tf1.Variable(ph, name=name, trainable=False)
            feeds[ph] = value
            variables.append(var)
        saver = tf1.train.Saver(var_list={v.op.name: v for v in variables}, write_version=tf1.train.SaverDef.V1)
        with tf1.Session(graph=graph) as sess:
            sess.run([v.initializer for v in variables], feed_dict=feeds)
            saver.save(sess, str(path), write_meta_graph=False, write_state=False)
    return path


def write_random_checkpoint(path: str | Path, pca_params_path: str | Path, seed: int = 1234) -> Path:
    """The `vggish_checkpoint` fixture's file: official names and shapes, random weights."""
    return save_v1_checkpoint(path, random_weights(pca_params_path, seed))
