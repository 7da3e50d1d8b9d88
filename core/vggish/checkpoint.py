"""Read the official VGGish TF1 checkpoint (V1 single-file format) into NumPy arrays by name.

``tf.train.load_checkpoint`` reads both the V1 single file (``vggish_model.ckpt``, what Google
published) and V2 prefixes, without building a TF1 graph, so the network itself can be plain TF2.
Every expected variable is checked by name and shape, so a wrong file is one clear
:class:`ModelFileError` instead of a shape error deep inside TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import ModelFileError, ModelMissingError
from core.vggish import params


def variable_shapes() -> dict[str, tuple[int, ...]]:
    """Every checkpoint variable the network needs → its shape (official names)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for scope, weights in params.LAYERS:
        shapes[f"{scope}/weights"] = weights
        shapes[f"{scope}/biases"] = (weights[-1],)
    return shapes


def missing_message(path: Path) -> str:
    return f"VGGish checkpoint not found at {path}; run `echovids model fetch` or set VGGISH_CHECKPOINT"


def load_weights(path: str | Path) -> dict[str, np.ndarray]:
    """Name → float32 array for every variable in :func:`variable_shapes`."""
    path = Path(path)
    if not path.exists() and not Path(str(path) + ".index").exists():
        raise ModelMissingError(missing_message(path))
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(path))
        available = reader.get_variable_to_shape_map()
    except Exception as err:  # DataLossError, NotFoundError, ... for a file that is not a checkpoint
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"{path} is not a readable TensorFlow checkpoint ({first[:200]})") from None
    weights: dict[str, np.ndarray] = {}
    for name, shape in variable_shapes().items():
        if name not in available:
            raise ModelFileError(f"{path} is not a VGGish checkpoint: variable {name} is missing")
        if tuple(available[name]) != shape:
            raise ModelFileError(f"{path}: {name} has shape {tuple(available[name])}, expected {shape}")
        weights[name] = np.asarray(reader.get_tensor(name), dtype=np.float32)
    return weights
