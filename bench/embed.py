"""Benchmark: a 10 s Discord-like voice note through decode → resample → VGGish, and batch throughput.

Prints one JSON object. Warm figures (model loaded, numba compiled, TF traced), median of repeated
runs. The machine is shared, so the load average before and after is part of the figures.

    .venv/bin/python bench/embed.py [--runs 15] [--checkpoint PATH] [--pca-params PATH]

Without a checkpoint (no network on this machine) a random one with the official shapes is written
to a temp dir: weights do not change the speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


CPU: dict[str, float] = {}  # stage → median process CPU ms (all threads); robust to other load


def _median_ms(fn, runs: int, stage: str | None = None) -> tuple[float, object]:
    times, cpus, out = [], [], None
    for _ in range(runs):
        c = time.process_time()
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    if stage:
        CPU[stage] = round(statistics.median(cpus) * 1000, 1)
    return round(statistics.median(times) * 1000, 1), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--checkpoint")
    parser.add_argument("--pca-params")
    parser.add_argument("--throughput-seconds", type=float, default=120.0)
    args = parser.parse_args()

    from core import audio
    from core.config import load_settings
    from core.vggish import VGGishEmbedder
    from core.vggish.frontend import waveform_to_examples
    from tests.media import make_voice_note

    load_before = os.getloadavg()
    settings = load_settings()
    tmp = Path(tempfile.mkdtemp(prefix="echovids-bench-"))
    pca = Path(args.pca_params) if args.pca_params else settings.vggish_pca_params()
    if not pca.is_file():
        pca = settings.test_data / "vggish" / "vggish_pca_params.npz"
    ckpt = Path(args.checkpoint) if args.checkpoint else settings.vggish_checkpoint()
    checkpoint_kind = "given"
    if not ckpt.exists():
        from tests.vggish_checkpoint import write_random_checkpoint

        ckpt = write_random_checkpoint(tmp / "vggish_model.ckpt", pca)
        checkpoint_kind = "random weights, official shapes"

    note = make_voice_note(tmp / "note.ogg", seconds=10.0, kind="speech")
    data = note.read_bytes()

    t = time.perf_counter()
    embedder = VGGishEmbedder(ckpt, pca)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    embedder.warm_up()
    warm_s = time.perf_counter() - t
    limits = audio.AudioLimits()

    decode_ms, (mono48, rate) = _median_ms(lambda: audio._decode_soundfile(data, None, limits.max_seconds), args.runs, 'decode')
    resample_ms, samples = _median_ms(lambda: audio.resample_to_target(mono48, rate), args.runs, 'resample')
    decode_audio_ms, wave = _median_ms(lambda: audio.decode_audio(data, limits), args.runs)
    frontend_ms, examples = _median_ms(lambda: waveform_to_examples(wave.samples), args.runs, 'frontend')
    network_ms, raw = _median_ms(lambda: embedder.embed_examples_raw(examples), args.runs, 'network')
    post_ms, _ = _median_ms(lambda: embedder.postprocessor(raw), args.runs)
    e2e_ms, vectors = _median_ms(lambda: embedder.embed(audio.decode_audio(data, limits).samples), args.runs, 'end_to_end')

    import resampy

    def _resampy(filt: str) -> float:
        return _median_ms(lambda: resampy.resample(mono48, rate, audio.TARGET_RATE, filter=filt), 3)[0]

    filters = {
        "ours_kaiser_best_fir_ms": resample_ms,
        "resampy_kaiser_best_ms": _resampy("kaiser_best"),
        "resampy_kaiser_fast_ms": _resampy("kaiser_fast"),
    }
    ffmpeg_ms, _ = _median_ms(lambda: audio._decode_ffmpeg(data, None, limits.max_seconds, limits.timeout_s), 5)

    rng = np.random.default_rng(0)
    long = (0.1 * rng.standard_normal(int(args.throughput_seconds * audio.TARGET_RATE))).astype(np.float32)
    embedder.embed(long)
    tput_ms, tput_vectors = _median_ms(lambda: embedder.embed(long), 3, 'throughput_120s')
    n = len(tput_vectors)
    net_only_ms, _ = _median_ms(lambda: embedder.embed_examples_raw(waveform_to_examples(long)), 3)

    result = {
        "benchmark": "embed",
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "checkpoint": checkpoint_kind,
        "cold": {"model_load_s": round(load_s, 2), "warm_up_s": round(warm_s, 2)},
        "voice_note_10s": {
            "format": "OGG/Opus 48 kHz mono (Discord-like)",
            "vectors": int(len(vectors)),
            "decode_ms": decode_ms,
            "resample_ms": resample_ms,
            "decode_audio_total_ms": decode_audio_ms,
            "frontend_ms": frontend_ms,
            "network_ms": network_ms,
            "postprocess_ms": post_ms,
            "end_to_end_ms": e2e_ms,
            "target_end_to_end_ms": 250,
            "runs": args.runs,
        },
        "cpu_ms_all_threads": CPU,
        "resample_10s_48k": filters,
        "ffmpeg_decode_10s_ms": ffmpeg_ms,
        "throughput": {
            "audio_seconds": args.throughput_seconds,
            "vectors": n,
            "wall_ms": tput_ms,
            "audio_seconds_per_second": round(args.throughput_seconds / (tput_ms / 1000), 1),
            "network_ms_per_audio_second": round(net_only_ms / n, 2),
            "batch_size": embedder.batch_size,
            "target_audio_seconds_per_second": 70,
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
