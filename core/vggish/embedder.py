"""Samples in, per-second VGGish vectors out; one loaded model per process.

The bot calls :meth:`VGGishEmbedder.embed` from worker threads (never on the event loop); the
traced TF function is safe to call concurrently, and loading is guarded so a burst of first queries
loads the 290 MB checkpoint once. :func:`load_embedder` caches instances per model paths.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelMissingError
from core.vggish import params
from core.vggish.checkpoint import load_weights, missing_message
from core.vggish.frontend import waveform_to_examples
from core.vggish.postprocess import Postprocessor

#: Examples per forward pass: big enough for good throughput, small enough to bound memory
#: (activations of 64 examples ≈ 100 MB).
BATCH_SIZE = 64


class VGGishEmbedder:
    def __init__(self, checkpoint_path: str | Path, pca_params_path: str | Path | None = None, *,
                 batch_size: int = BATCH_SIZE, model: Any = None):
        from core.vggish.model import VGGishModel

        self.checkpoint_path = Path(checkpoint_path)
        self.postprocessor = Postprocessor(pca_params_path) if pca_params_path is not None else None
        self.model = model if model is not None else VGGishModel(load_weights(self.checkpoint_path))
        self.batch_size = batch_size

    # -- raw -----------------------------------------------------------------------------
    def embed_examples_raw(self, examples: np.ndarray) -> np.ndarray:
        """float32 [n, 128] for log-mel examples [n, 96, 64], in batches."""
        if len(examples) == 0:
            return np.zeros((0, params.EMBEDDING_SIZE), dtype=np.float32)
        parts = [self.model(examples[i:i + self.batch_size]) for i in range(0, len(examples), self.batch_size)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def embed_raw(self, samples_16k: np.ndarray) -> np.ndarray:
        """Pre-PCA float32 [n, 128], one row per 0.96 s (at least one)."""
        return self.embed_examples_raw(waveform_to_examples(samples_16k))

    # -- post-processed --------------------------------------------------------------------
    def _post(self) -> Postprocessor:
        if self.postprocessor is None:
            raise ModelMissingError("VGGish PCA params were not loaded; run `echovids model fetch` or set VGGISH_PCA_PARAMS")
        return self.postprocessor

    def embed(self, samples_16k: np.ndarray) -> np.ndarray:
        """uint8 [n, 128] in the released AudioSet embedding space."""
        post = self._post()
        return post(self.embed_raw(samples_16k))

    def warm_up(self) -> None:
        """Trace the TF function now (done on load): the first real query must not pay for it.
        Decoding's own one-off costs are the engine's business (``Engine.warm_up``)."""
        self.embed_raw(np.zeros(16000, dtype=np.float32))


_CACHE: dict[tuple[str, str | None], VGGishEmbedder] = {}
_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def check_model_files(settings: Any, checkpoint: str | Path | None = None, pca_params: str | Path | None = None,
                      *, raw: bool = False) -> tuple[Path, Path | None]:
    """Resolve the model paths (flag > environment > DATA_DIR/models) and check they exist.

    Cheap (no TensorFlow): front ends call it before decoding so a missing model is reported first.
    """
    ckpt = Path(settings.vggish_checkpoint(checkpoint)).expanduser()
    if not ckpt.exists() and not Path(str(ckpt) + ".index").exists():
        raise ModelMissingError(missing_message(ckpt))
    pca: Path | None = None
    if not raw:
        pca = Path(settings.vggish_pca_params(pca_params)).expanduser()
        if not pca.is_file():
            raise ModelMissingError(
                f"VGGish PCA params not found at {pca}; run `echovids model fetch` or set VGGISH_PCA_PARAMS"
            )
    return ckpt, pca


def load_embedder(settings: Any, checkpoint: str | Path | None = None, pca_params: str | Path | None = None, *,
                  raw: bool = False, warm: bool = True) -> VGGishEmbedder:
    """The process-wide embedder for these model paths (flag > environment > DATA_DIR/models).

    A new embedder is warmed (TF function traced, resampy's numba loop compiled) unless
    ``warm=False``, so the first user query does not pay ~2 s of compilation.

    With ``raw=True`` the PCA file is not needed (``embed_raw`` only). Raises ModelMissingError
    with the fix when a file is missing, before TensorFlow is even imported.
    """
    ckpt, pca = check_model_files(settings, checkpoint, pca_params, raw=raw)
    key = (str(ckpt.resolve()), str(pca.resolve()) if pca else None)
    with _LOCK:
        found = _CACHE.get(key)
        if found is not None:
            return found
        model = _MODELS.get(key[0])
        embedder = VGGishEmbedder(ckpt, pca, model=model)
        if warm and model is None:
            embedder.warm_up()
        _MODELS[key[0]] = embedder.model
        _CACHE[key] = embedder
        return embedder


def clear_cache() -> None:
    """Forget loaded models (tests; or after `model fetch` replaced the files)."""
    with _LOCK:
        _CACHE.clear()
        _MODELS.clear()
