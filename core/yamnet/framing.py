"""The window grid YAMNet sees (0.975 s windows every 0.48 s, the tail padded into one last window)
and the checks a waveform passes before it is framed."""

from __future__ import annotations

import numpy as np

from core.errors import BadQueryError
from core.yamnet.params import HOP_SAMPLES, WINDOW_SAMPLES

def frame_count(num_samples: int) -> int:
    """Windows YAMNet yields for ``num_samples``: short input is one window, the tail gets its own."""
    if num_samples <= WINDOW_SAMPLES:
        return 1
    return 1 + -(-(num_samples - WINDOW_SAMPLES) // HOP_SAMPLES)


def phase_offsets(num_samples: int, phases: int) -> list[int]:
    """Start offsets (samples) of the shifted grids a clip of ``num_samples`` is framed at.

    Phase ``j`` is the same 0.48 s grid started ``j * 0.48 s / phases`` later. A clip no longer than
    one window gets only phase 0: its one (padded) window already holds all of it.
    """
    if phases <= 1 or num_samples <= WINDOW_SAMPLES:
        return [0]
    return [j * HOP_SAMPLES // phases for j in range(phases)]


def phased_frame_count(num_samples: int, phases: int) -> int:
    """Windows over all phases of :func:`phase_offsets` (what ``listen`` scores)."""
    return sum(frame_count(num_samples - off) for off in phase_offsets(num_samples, phases))


def window_starts(num_samples: int, offset: int = 0) -> np.ndarray:
    """Start sample of each window of the grid begun at ``offset``."""
    return offset + HOP_SAMPLES * np.arange(frame_count(num_samples - offset))


def pad_to_windows(samples: np.ndarray) -> np.ndarray:
    """Zero-pad so the waveform covers exactly ``frame_count`` windows (the official padding rule)."""
    n = frame_count(len(samples))
    want = (n - 1) * HOP_SAMPLES + WINDOW_SAMPLES
    if len(samples) == want:
        return samples
    return np.pad(samples, (0, want - len(samples)))


def frame_windows(samples: np.ndarray) -> np.ndarray:
    """``[n, 15600]`` view of 0.975 s windows every 0.48 s (after :func:`pad_to_windows`)."""
    padded = pad_to_windows(samples)
    n = frame_count(len(samples))
    return np.lib.stride_tricks.as_strided(
        padded, shape=(n, WINDOW_SAMPLES), strides=(HOP_SAMPLES * padded.strides[0], padded.strides[0]), writeable=False
    )


def as_waveform(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise BadQueryError(f"YAMNet needs mono samples (one dimension), got shape {x.shape}")
    if x.size == 0:
        raise BadQueryError("YAMNet got no audio samples")
    if x.dtype.kind in "iu":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise BadQueryError("audio samples contain NaN or infinity")
    return x
