"""``echovids search``: one query (audio file, --like, --text, --embeddings) → results on stdout."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np

from core.errors import BadQueryError
from core.results import Query, SearchResponse


def _load_embeddings(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise BadQueryError(f"embeddings file not found: {path}")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise BadQueryError(f"{path} is not a .npy array ({err})") from None
    if not isinstance(arr, np.ndarray):
        raise BadQueryError(f"{path} is not a single .npy array")
    if arr.dtype != np.uint8:
        raise BadQueryError(f"embeddings must be uint8, got {arr.dtype}")
    if arr.ndim not in (2, 3) or arr.shape[-1] != 128 or 0 in arr.shape:
        raise BadQueryError(f"embeddings must have shape [n,128] or [Q,n,128], got {list(arr.shape)}")
    return arr


def _liveness(settings, wanted: bool):
    if not wanted:
        return None
    from core.engine import live_checker

    return live_checker(settings)


async def _answer_all(engine, queries: list[Query]) -> list[SearchResponse]:
    try:
        return [await engine.answer(q) for q in queries]
    finally:
        if engine.liveness is not None:
            await engine.liveness.close()


def _print_human(resp: SearchResponse) -> None:
    if resp.heard:
        print("heard: " + ", ".join(f"{h.label} {h.score:.0%}" for h in resp.heard[:5]))
    if not resp.results:
        print("no matches")
    for i, m in enumerate(resp.results, 1):
        where = m.url
        live = "" if m.live == "unchecked" else f"  [{m.live}]"
        title = f"  {m.title}" if m.title else ""
        labels = ", ".join(m.labels[:4])
        print(f"{i:>2}. {m.score:5.0%}  {where}{title}  {labels}{live}")
    print(f"({resp.index_size:,} indexed seconds, {resp.elapsed_s:.2f}s)", file=sys.stderr)


def run(args, settings) -> int:
    from core.engine import Engine

    given = [x for x in (args.audio_file, args.like, args.text, args.embeddings) if x]
    if len(given) != 1:
        raise BadQueryError("give exactly one of AUDIO_FILE, --like, --text or --embeddings")
    if args.top < 1 or args.top > 100:
        raise BadQueryError("--top must be between 1 and 100")
    batch = False
    if args.embeddings:
        arr = _load_embeddings(args.embeddings)
        batch = arr.ndim == 3
        queries = [Query(kind="embeddings", embeddings=a, top=args.top, live_check=not args.no_live_check)
                   for a in (arr if batch else [arr])]
    elif args.like:
        queries = [Query(kind="like", like=args.like, top=args.top, live_check=not args.no_live_check)]
    elif args.text:
        queries = [Query(kind="text", text=args.text, top=args.top, live_check=not args.no_live_check)]
    else:
        path = Path(args.audio_file)
        if not path.is_file():
            raise BadQueryError(f"audio file not found: {args.audio_file}")
        queries = [Query(kind="audio", audio=str(path), top=args.top, live_check=not args.no_live_check)]
    engine = Engine(settings, checkpoint=args.checkpoint, pca_params=args.pca_params,
                    liveness=_liveness(settings, not args.no_live_check))
    engine.warm_up()
    if batch and engine.liveness is None:
        responses = engine.search_many([q.embeddings for q in queries], args.top)
    else:
        responses = asyncio.run(_answer_all(engine, queries))
    if batch:
        print(json.dumps([r.to_json() for r in responses]))
    elif args.json:
        print(json.dumps(responses[0].to_json(), indent=2))
    else:
        _print_human(responses[0])
    return 0
