"""YAMNet speed and what it hears on synthesized audio; prints JSON.

    .venv/bin/python bench/yamnet.py [--model PATH] [--compare-tf]

* speed: model load, first call, warm 10 s voice note (decoded OGG/Opus 48 kHz → 16 kHz), per window;
* runtime: LiteRT vs ``tf.lite.Interpreter`` on one window (``--compare-tf`` imports TensorFlow and
  ScaNN first, as the bot process does, to show both run side by side);
* heard: the "heard" line (core.heard) with mean, top-3 mean or max over windows, for speech, tones, noise, chirp and a chord sequence,
  the measurement behind ``core.heard.clip_scores`` (pooling).
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


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("ECHOVIDS_TEST_DATA", ROOT.parent / "shared" / "data")).resolve()


def _ms(values: list[float]) -> dict:
    return {"p50_ms": round(statistics.median(values) * 1e3, 2), "min_ms": round(min(values) * 1e3, 2),
            "max_ms": round(max(values) * 1e3, 2)}


def _timed(fn, n: int) -> dict:
    """Wall time of ``n`` calls of ``fn()``, summarised by :func:`_ms`."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return _ms(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=SHARED / "yamnet" / "yamnet.tflite")
    ap.add_argument("--compare-tf", action="store_true")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    out: dict = {"model": str(args.model), "load_avg_start": round(os.getloadavg()[0], 2)}

    if args.compare_tf:
        t = time.perf_counter()
        import scann  # noqa: F401
        import tensorflow as tf

        out["import_tf_scann_s"] = round(time.perf_counter() - t, 2)

    from core.audio import decode_audio, warm_up
    from core.heard import clip_scores
    from core.heard import heard as heard_policy
    from core.yamnet import YamnetModel
    from tests.media import make_media, make_voice_note

    t = time.perf_counter()
    model = YamnetModel(args.model, audioset_labels_path=SHARED / "audioset_meta" / "class_labels_indices.csv")
    out["load_ms"] = round((time.perf_counter() - t) * 1e3, 2)
    out["layout"] = model.layout
    warm_up()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        note = make_voice_note(tmp / "note.ogg", seconds=10.0, kind="speech")
        samples = decode_audio(note).samples
        t = time.perf_counter()
        model.heard(samples)
        out["first_call_10s_ms"] = round((time.perf_counter() - t) * 1e3, 2)
        out["voice_note_10s_warm"] = (_timed(lambda: model.heard(samples), args.repeat)
                                      | {"windows": int(model.listen(samples).scores.shape[0])})
        out["audioset_scores_10s_warm"] = _timed(lambda: model.audioset_scores(samples), args.repeat)
        out["listen_10s_warm (heard + bridge probs, what the engine calls)"] = _timed(
            lambda: model.listen(samples), args.repeat)
        one = samples[:15600].copy()
        out["one_window_litert"] = _timed(lambda: model.scores(one), args.repeat * 5)

        if args.compare_tf:
            it = tf.lite.Interpreter(model_path=str(args.model))
            it.allocate_tensors()
            i, o = it.get_input_details()[0], it.get_output_details()[0]
            x = one.reshape(i["shape"])

            def tf_lite_window() -> None:
                it.set_tensor(i["index"], x)
                it.invoke()
                it.get_tensor(o["index"])

            out["one_window_tf_lite"] = _timed(tf_lite_window, args.repeat * 5)

        sounds = {
            "speech (voice note)": note,
            "tone 1 kHz": make_media(tmp / "t1k.wav", "wav", 3.0, "tone", frequency=1000),
            "tone 440 Hz": make_media(tmp / "t440.wav", "wav", 3.0, "tone", frequency=440),
            "white noise": make_media(tmp / "noise.wav", "wav", 3.0, "noise"),
            "chirp": make_media(tmp / "chirp.wav", "wav", 4.0, "chirp"),
            "chord sequence": _chords(tmp / "chords.wav"),
        }
        heard = {}
        for name, path in sounds.items():
            s = model.to_audioset(model.scores(decode_audio(path).samples))
            pooled = {"mean": s.mean(axis=0), "top3": clip_scores(s), "max": s.max(axis=0)}
            heard[name] = {agg: [f"{h.label} {h.score:.2f}" for h in heard_policy(clip, model.ontology)]
                           for agg, clip in pooled.items()}
        out["heard"] = heard
    out["load_avg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))


def _chords(path: Path) -> Path:
    import subprocess

    from tests.test_yamnet import CHORDS

    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", CHORDS, str(path)],
                   check=True, capture_output=True)
    return path


if __name__ == "__main__":
    main()
