"""`echovids embed AUDIO_FILE`: print VGGish vectors of a file (post-processed, or raw floats).

Model files are checked before decoding and decoding happens before TensorFlow is loaded, so a
missing model or a bad file is reported in well under a second.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from core.audio import AudioLimits, decode_audio
from core.config import Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    from core.vggish.embedder import check_model_files, load_embedder

    check_model_files(settings, args.checkpoint, args.pca_params, raw=args.raw)
    wave = decode_audio(args.audio_file, AudioLimits.from_settings(settings))
    embedder = load_embedder(settings, args.checkpoint, args.pca_params, raw=args.raw)
    vectors = embedder.embed_raw(wave.samples) if args.raw else embedder.embed(wave.samples)
    if args.json:
        rows = vectors.tolist() if args.raw else vectors.astype(int).tolist()
        json.dump({"seconds": len(rows), "embeddings": rows}, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
    else:
        kind = "raw float32 (pre-PCA)" if args.raw else "uint8 post-processed (AudioSet space)"
        print(f"{args.audio_file}: {wave.duration_s:.2f} s of audio -> {len(vectors)} vectors x 128, {kind}")
        if wave.note:
            print(f"note: {wave.note}")
        with np.printoptions(linewidth=10_000, threshold=10_000, precision=4, suppress=True):
            for i, row in enumerate(vectors):
                print(f"{i * 0.96:7.2f}s  " + " ".join(str(v) for v in row.tolist()))
    return 0
