"""``echovids eval``: held-out retrieval quality (P@5, strict P@5) beside the seed-style baselines, as JSON."""

from __future__ import annotations

import json
import sys

from core.errors import ConfigError


def run(args, settings) -> int:
    from core.evaluate import evaluate

    dirs = args.audioset or list(settings.audioset_dirs)
    if not dirs:
        raise ConfigError("no AudioSet data: pass --audioset DIR or set ECHOVIDS_AUDIOSET_DIR")
    if not 0 < args.holdout < 1:
        raise ConfigError("--holdout must be between 0 and 1")
    result = evaluate(settings, dirs, seed=args.seed, holdout=args.holdout, max_queries=args.queries,
                      progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2))
    return 0
