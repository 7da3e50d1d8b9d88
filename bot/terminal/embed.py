"""`echovids embed AUDIO_FILE`: print VGGish vectors of a file (post-processed, or raw floats).

The work is :meth:`core.admin.Admin.embed` (models checked, then decoded, then TensorFlow loaded, so
a missing model or a bad file is reported in well under a second); this module only prints.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from core.admin import Admin
from core.config import Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    result = Admin(settings).embed(args.audio_file, checkpoint=args.checkpoint, pca_params=args.pca_params,
                                   raw=args.raw)
    vectors = result.vectors
    if args.json:
        rows = vectors.tolist() if args.raw else vectors.astype(int).tolist()
        json.dump({"seconds": len(rows), "embeddings": rows}, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
    else:
        kind = "raw float32 (pre-PCA)" if args.raw else "uint8 post-processed (AudioSet space)"
        print(f"{args.audio_file}: {result.duration_s:.2f} s of audio -> {len(vectors)} vectors x 128, {kind}")
        if result.note:
            print(f"note: {result.note}")
        with np.printoptions(linewidth=10_000, threshold=10_000, precision=4, suppress=True):
            for i, row in enumerate(vectors):
                print(f"{i * 0.96:7.2f}s  " + " ".join(str(v) for v in row.tolist()))
    return 0
