"""The VGGish network in TensorFlow 2: examples [n, 96, 64] → raw embeddings [n, 128].

Plain TF ops in one ``tf.function`` with a fixed input signature (batch dimension free), so it is
traced once and every later call — from any worker thread — reuses the graph. Measured on the
2-core target (docs/architecture.md): batches of 10–60 examples cost about 12 ms per second of audio this way,
while ``model.predict`` is ~1.7× slower for small batches. Layout follows the reference slim model:
3×3 SAME convs + ReLU, 2×2/2 SAME max-pools, NHWC flatten, fc 4096 → 4096 → 128 (last is linear).
"""

from __future__ import annotations

import os
import threading

import numpy as np

from core.vggish import params

_THREADS_SET = False
_THREADS_LOCK = threading.Lock()


def configure_threads(workers: int = 1) -> None:
    """The one TensorFlow thread policy of the project: threads of all concurrent inferences
    together never exceed the cores.

    ``workers`` is how many threads may run an inference at once (the bot's ``ECHOVIDS_WORKERS``;
    1 for a CLI command). Each inference gets ``cores // workers`` intra-op threads (at least 1,
    at most 4: VGGish gains little beyond), so on a small machine TF does not take every core and
    stall the bot's event loop (heartbeats, other users' replies); inter-op is 1 because the
    network is a chain of ops with nothing to run side by side (1 vs 2 measured the same).

    TensorFlow accepts this only before its runtime starts and the setting is process-wide, so
    the first call wins: the engine's ``warm_up`` calls it with the configured worker count before
    loading a model, and :class:`VGGishModel` calls it (with 1) for everyone else.
    """
    global _THREADS_SET
    with _THREADS_LOCK:
        if _THREADS_SET:
            return
        _THREADS_SET = True
        import tensorflow as tf

        intra = max(1, min(4, (os.cpu_count() or 1) // max(1, workers)))
        try:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # TF's runtime already started (e.g. a test wrote a checkpoint in this process)


class VGGishModel:
    """Holds the weights as TF variables and a traced forward function."""

    def __init__(self, weights: dict[str, np.ndarray]):
        configure_threads()
        import tensorflow as tf

        self._tf = tf
        self._layers: list[tuple[str, tf.Variable, tf.Variable]] = []
        for scope, _shape in params.LAYERS:
            w = tf.Variable(weights[f"{scope}/weights"], trainable=False, name=scope.replace("/", "_") + "_w")
            b = tf.Variable(weights[f"{scope}/biases"], trainable=False, name=scope.replace("/", "_") + "_b")
            self._layers.append((scope, w, b))
        spec = tf.TensorSpec([None, params.NUM_FRAMES, params.NUM_BANDS], tf.float32)
        self._forward = tf.function(self._graph, input_signature=[spec], reduce_retracing=True)

    def _graph(self, examples):  # type: ignore[no-untyped-def]
        tf = self._tf
        net = tf.reshape(examples, [-1, params.NUM_FRAMES, params.NUM_BANDS, 1])
        for scope, w, b in self._layers:
            if len(w.shape) == 4:
                net = tf.nn.bias_add(tf.nn.conv2d(net, w, strides=1, padding="SAME"), b)
            else:
                if len(net.shape) == 4:
                    net = tf.reshape(net, [-1, int(np.prod(net.shape[1:]))])  # NHWC flatten
                net = tf.nn.bias_add(tf.matmul(net, w), b)
            if scope not in params.LINEAR_LAYERS:
                net = tf.nn.relu(net)
            if scope in params.POOL_AFTER:
                net = tf.nn.max_pool2d(net, ksize=2, strides=2, padding="SAME")
        return net

    def __call__(self, examples: np.ndarray) -> np.ndarray:
        """float32 [n, 128] for float32 [n, 96, 64] (one batch; callers split big inputs)."""
        x = np.ascontiguousarray(examples, dtype=np.float32)
        return self._forward(self._tf.constant(x)).numpy()
