"""PCA + clip + 8-bit quantization: the step that puts a query in the released AudioSet space.

Mirrors the reference ``vggish_postprocess.Postprocessor``: ``E @ (x - mean)`` in float64, clip
to [-2, 2], scale to [0, 255] and cast with truncation. Never skip it for queries (docs/architecture.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from core.errors import ModelFileError, ModelMissingError
from core.vggish import params


class Postprocessor:
    def __init__(self, pca_params_path: str | Path):
        path = Path(pca_params_path)
        if not path.is_file():
            raise ModelMissingError(
                f"VGGish PCA params not found at {path}; run `echovids model fetch` or set VGGISH_PCA_PARAMS"
            )
        try:
            with np.load(path) as npz:
                matrix = np.asarray(npz[params.PCA_EIGEN_VECTORS_NAME], dtype=np.float64)
                means = np.asarray(npz[params.PCA_MEANS_NAME], dtype=np.float64)
        except Exception as err:
            raise ModelFileError(f"{path} is not a VGGish PCA params file ({type(err).__name__}: {err})") from None
        size = params.EMBEDDING_SIZE
        if matrix.shape != (size, size) or means.reshape(-1).shape != (size,):
            raise ModelFileError(
                f"{path} has PCA shapes {matrix.shape} and {means.shape}; expected ({size}, {size}) and ({size},)"
            )
        self.path = path
        self.pca_matrix = matrix
        self.pca_means = means.reshape(size, 1)
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()

    def project(self, raw: np.ndarray) -> np.ndarray:
        """float64 [n,128] PCA-applied values before clipping (for tests and diagnostics)."""
        x = np.asarray(raw)
        if x.ndim != 2 or x.shape[1] != params.EMBEDDING_SIZE:
            raise ValueError(f"expected [n, {params.EMBEDDING_SIZE}] embeddings, got shape {x.shape}")
        return np.dot(self.pca_matrix, (x.T - self.pca_means)).T

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        clipped = np.clip(self.project(raw), params.QUANTIZE_MIN_VAL, params.QUANTIZE_MAX_VAL)
        scaled = (clipped - params.QUANTIZE_MIN_VAL) * (255.0 / (params.QUANTIZE_MAX_VAL - params.QUANTIZE_MIN_VAL))
        return scaled.astype(np.uint8)
