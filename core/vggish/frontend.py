"""Waveform → log-mel examples [n, 96, 64], the reference ``mel_features``/``vggish_input`` in NumPy.

Written from the reference formulas (periodic Hann, |rfft| with 512 points, HTK mel matrix with its
DC row zeroed, ``log(mel + 0.01)``, 96-frame examples without overlap, tail dropped). One change,
on purpose: input shorter than one example is zero-padded to one example, so a short voice note
still gives a vector instead of nothing.
"""

from __future__ import annotations

import functools

import numpy as np

from core.vggish import params

_MEL_BREAK_FREQUENCY_HERTZ = 700.0
_MEL_HIGH_FREQUENCY_Q = 1127.0

WINDOW_SAMPLES = int(round(params.SAMPLE_RATE * params.STFT_WINDOW_LENGTH_SECONDS))  # 400
HOP_SAMPLES = int(round(params.SAMPLE_RATE * params.STFT_HOP_LENGTH_SECONDS))        # 160
FFT_LENGTH = 2 ** int(np.ceil(np.log2(WINDOW_SAMPLES)))                              # 512
FRAMES_PER_SECOND = 1.0 / params.STFT_HOP_LENGTH_SECONDS
EXAMPLE_FRAMES = int(round(params.EXAMPLE_WINDOW_SECONDS * FRAMES_PER_SECOND))       # 96
EXAMPLE_HOP_FRAMES = int(round(params.EXAMPLE_HOP_SECONDS * FRAMES_PER_SECOND))      # 96
#: Samples needed for exactly one example: 400 + 95 * 160 = 15,600.
MIN_SAMPLES = WINDOW_SAMPLES + (EXAMPLE_FRAMES - 1) * HOP_SAMPLES


def hertz_to_mel(frequencies_hertz: np.ndarray | float) -> np.ndarray:
    return _MEL_HIGH_FREQUENCY_Q * np.log(1.0 + np.asarray(frequencies_hertz, dtype=np.float64) / _MEL_BREAK_FREQUENCY_HERTZ)


def periodic_hann(window_length: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi / window_length * np.arange(window_length))


@functools.lru_cache(maxsize=4)
def mel_matrix(num_mel_bins: int = params.NUM_MEL_BINS, num_spectrogram_bins: int = FFT_LENGTH // 2 + 1,
               sample_rate: int = params.SAMPLE_RATE, lower_edge_hertz: float = params.MEL_MIN_HZ,
               upper_edge_hertz: float = params.MEL_MAX_HZ) -> np.ndarray:
    """[num_spectrogram_bins, num_mel_bins] triangular HTK-mel weights (reference layout)."""
    nyquist = sample_rate / 2.0
    if not 0.0 <= lower_edge_hertz < upper_edge_hertz <= nyquist:
        raise ValueError("mel band edges must satisfy 0 <= lower < upper <= nyquist")
    bins_mel = hertz_to_mel(np.linspace(0.0, nyquist, num_spectrogram_bins))
    edges = np.linspace(hertz_to_mel(lower_edge_hertz), hertz_to_mel(upper_edge_hertz), num_mel_bins + 2)
    weights = np.empty((num_spectrogram_bins, num_mel_bins))
    for i in range(num_mel_bins):
        lower, center, upper = edges[i:i + 3]
        lower_slope = (bins_mel - lower) / (center - lower)
        upper_slope = (upper - bins_mel) / (upper - center)
        weights[:, i] = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
    weights[0, :] = 0.0  # the reference zeroes the DC bin
    weights.setflags(write=False)
    return weights


def log_mel_spectrogram(samples: np.ndarray) -> np.ndarray:
    """[frames, 64] log-mel of 16 kHz mono samples (no padding)."""
    x = np.asarray(samples, dtype=np.float64)
    if len(x) < WINDOW_SAMPLES:
        return np.zeros((0, params.NUM_MEL_BINS))
    frames = np.lib.stride_tricks.sliding_window_view(x, WINDOW_SAMPLES)[::HOP_SAMPLES]
    spectrogram = np.abs(np.fft.rfft(frames * periodic_hann(WINDOW_SAMPLES), FFT_LENGTH))
    return np.log(spectrogram @ mel_matrix() + params.LOG_OFFSET)


def waveform_to_examples(samples_16k: np.ndarray) -> np.ndarray:
    """float32 [n, 96, 64] log-mel examples; input shorter than 0.975 s is zero-padded to one."""
    x = np.asarray(samples_16k, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {x.shape}")
    if len(x) < MIN_SAMPLES:
        x = np.pad(x, (0, MIN_SAMPLES - len(x)))
    log_mel = log_mel_spectrogram(x)
    n = 1 + (len(log_mel) - EXAMPLE_FRAMES) // EXAMPLE_HOP_FRAMES
    starts = np.arange(n) * EXAMPLE_HOP_FRAMES
    examples = np.stack([log_mel[s:s + EXAMPLE_FRAMES] for s in starts])
    return examples.astype(np.float32)
