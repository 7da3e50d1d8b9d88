"""One thread's TFLite interpreter for either YAMNet layout (see the package docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelFileError
from core.yamnet.framing import frame_windows, pad_to_windows
from core.yamnet.params import EMBEDDING_SIZE, WINDOW_SAMPLES, YAMNET_CLASSES

def interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:  # pragma: no cover - only when LiteRT is not installed
        import tensorflow as tf

        return tf.lite.Interpreter


class Runner:
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
