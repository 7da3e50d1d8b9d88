"""Speed of the Discord bot end to end, printed as JSON (not a timed test).

The real discord.py client and the real engine over the full bal_train index, against the local
fake Discord (tests/fakes/discord_server.py) and a fake YouTube oEmbed answering every live check
after ``--oembed-ms`` (default 30 ms). VGGish runs with random weights in the official layout when
no real checkpoint is configured: the same network, so the same speed.

1. **Warm latency**: time from dispatching MESSAGE_CREATE (a DM with a 10 s OGG/Opus voice note)
   to the reply POST arriving at the fake, one note at a time, after warm-up. The liveness cache
   is emptied before each note, so every reply waits for real (fake-remote) live checks.
2. **Burst**: 10 voice notes from 10 users at once; event-loop lag (a 20 ms sleeper's lateness)
   p50/p99/max while they are processed, the longest gap between gateway heartbeats, and the time
   until all ten are answered.

``os.getloadavg()`` before and after is recorded: the machine is shared, figures move with load.

usage: python bench/bot.py [--work DIR] [--index DATA_DIR] [--warm N] [--oembed-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _ms(values: list[float]) -> dict:
    v = sorted(x * 1000 for x in values)
    if not v:
        return {}

    def pct(q: float) -> float:
        return v[min(len(v) - 1, max(0, int(round(q / 100 * len(v) + 0.5)) - 1))]

    return {"n": len(v), "p50_ms": round(statistics.median(v), 1), "p90_ms": round(pct(90), 1),
            "p99_ms": round(pct(99), 1), "max_ms": round(v[-1], 1)}


def prepare(work: Path, index: Path | None) -> tuple[Path, Path, Path]:
    """(data dir with a current bal_train build, VGGish checkpoint, PCA params)."""
    from core.config import load_settings
    from core.index.store import read_pointer

    base = load_settings(dotenv=False)
    shared = Path(base.test_data)
    pca = base.vggish_pca_params() if base.vggish_pca_params().is_file() else shared / "vggish" / "vggish_pca_params.npz"
    ckpt = base.vggish_checkpoint()
    if not ckpt.is_file():
        ckpt = work / "vggish_random.ckpt"
        if not ckpt.is_file():
            # In a subprocess: TensorFlow initialised here would make the bot's thread caps a no-op.
            subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
                            "from tests.vggish_checkpoint import write_random_checkpoint as w;"
                            "from pathlib import Path; w(Path(sys.argv[2]), Path(sys.argv[3]))",
                            str(ROOT), str(ckpt), str(pca)], check=True, stdout=sys.stderr)
    data = index or work / "data"
    if read_pointer(data) is None:
        bal = shared / "audioset_v1_embeddings" / "bal_train"
        meta = shared / "audioset_meta"
        t0 = time.time()
        # Through the CLI in a subprocess, for the same reason as the checkpoint above.
        subprocess.run([sys.executable, "-m", "bot.cli", "index", "build", "--audioset", str(bal), "--index", str(data)],
                       check=True, cwd=ROOT, env={**os.environ, "ECHOVIDS_AUDIOSET_META": str(meta)}, stdout=sys.stderr)
        print(f"built bal_train index in {time.time() - t0:.0f} s", file=sys.stderr)
    return data, ckpt, pca


@contextlib.asynccontextmanager
async def running_bot(data: Path, ckpt: Path, pca: Path, *, oembed_ms: float, workers: int,
                      close_timeout: float, **bot_options):
    """The real bot over ``data``, connected to a started fake Discord, with a fake oEmbed answering
    after ``oembed_ms``: yields (bot, fake Discord, fake oEmbed, seconds from start to ready), and
    closes the bot, then both fakes."""
    from bot.client import EchoVidsBot
    from core.config import load_settings
    from tests.fakes.discord_server import FakeDiscord
    from tests.fakes.oembed_server import FakeOEmbed

    fake = await FakeDiscord(heartbeat_interval_ms=1000).start()
    oembed = FakeOEmbed(latency_s=oembed_ms / 1000)
    oembed_url = await oembed.start()
    settings = load_settings({
        "DISCORD_TOKEN": "bench", "DISCORD_API_BASE": fake.api_base, "DISCORD_GATEWAY_URL": fake.gateway_url,
        "ECHOVIDS_DATA_DIR": str(data), "VGGISH_CHECKPOINT": str(ckpt), "VGGISH_PCA_PARAMS": str(pca),
        "YOUTUBE_OEMBED_URL": oembed_url, "ECHOVIDS_WORKERS": str(workers),
    }, dotenv=False)
    bot = EchoVidsBot(settings, cooldown_s=0.0, guild_ready_timeout=0.05, **bot_options)
    t_start = time.monotonic()
    task = asyncio.create_task(bot.start("bench"))
    while not bot.is_ready():
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield bot, fake, oembed, time.monotonic() - t_start
    finally:
        await bot.close()
        await asyncio.wait_for(task, close_timeout)
        await oembed.stop()
        await fake.stop()


async def run(args: argparse.Namespace) -> dict:
    from core.liveness.cache import CACHE_FILENAME
    from tests.media import make_voice_note

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data, ckpt, pca = prepare(work, Path(args.index) if args.index else None)
    notes = [make_voice_note(work / f"note{i}.ogg", seconds=10.0, kind=k)
             for i, k in enumerate(["speech", "noise", "tone", "speech", "noise"])]

    load_before = os.getloadavg()
    async with running_bot(data, ckpt, pca, oembed_ms=args.oembed_ms, workers=args.workers,
                           close_timeout=30) as (bot, fake, _, startup_s):
        # Record the engine's own share (decode + embed + search, in the worker thread) per query, so
        # the bot's overhead (download, queue, live checks, REST) can be told apart from it.
        engine_times: list[float] = []
        real_search = bot.engine.search

        def timed_search(query):
            t = time.perf_counter()
            try:
                return real_search(query)
            finally:
                engine_times.append(time.perf_counter() - t)

        bot.engine.search = timed_search
        cache_path = data / CACHE_FILENAME

        def clear_cache() -> None:
            if cache_path.exists():
                with sqlite3.connect(cache_path) as db:
                    db.execute("DELETE FROM checks")

        async def one(user, note: Path, after: int) -> tuple[float, int]:
            att = fake.add_attachment(note, voice=True, duration_secs=10.0)
            t0 = time.monotonic()
            await fake.send_message(user, guild=False, attachments=[att], voice=True)
            dm = f"/channels/{fake.dm_channel_id(user)}/messages"
            rec = await fake.wait_for(lambda r: r.method == "POST" and r.path == dm and r.status == 200,
                                      timeout=300, after=after)
            return rec.at - t0, len(rec.embeds[0]["description"]) if rec.embeds else 0

        user = fake.add_member("bench")
        for i in range(3):  # warm-up: first TF traces, numba, page cache
            clear_cache()
            await one(user, notes[i % len(notes)], len(fake.requests))
        warm: list[float] = []
        engine_times.clear()
        for i in range(args.warm):
            clear_cache()
            latency, size = await one(user, notes[i % len(notes)], len(fake.requests))
            assert size > 0, "reply without an embed"
            warm.append(latency)
        warm_engine = list(engine_times)
        # Cached live checks (the steady state for popular videos).
        cached: list[float] = []
        for i in range(min(5, args.warm)):
            latency, _ = await one(user, notes[i % len(notes)], len(fake.requests))
            cached.append(latency)

        clear_cache()
        users = [fake.add_member(f"burst{i}") for i in range(10)]
        after = len(fake.requests)
        beats_from = len(fake.heartbeats)
        bot.lag.reset()
        t0 = time.monotonic()
        results = await asyncio.gather(*(one(u, notes[i % len(notes)], after) for i, u in enumerate(users)))
        burst_s = time.monotonic() - t0
        lag = list(bot.lag.samples)
        beats = [t0] + [b for b in fake.heartbeats[beats_from:] if b >= t0] + [time.monotonic()]
        gaps = [b - a for a, b in zip(beats, beats[1:])]
        load_after = os.getloadavg()
        return {
            "bench": "bot",
            "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                        "loadavg_after": [round(x, 2) for x in load_after]},
            "setup": {"index_vectors": bot.engine.index_size, "workers": bot.settings.workers,
                      "voice_note_s": 10.0, "oembed_latency_ms": args.oembed_ms,
                      "vggish": "configured checkpoint" if ckpt == bot.settings.vggish_checkpoint() and
                      not str(ckpt).startswith(str(work)) else "random weights, official layout (same speed)",
                      "startup_to_ready_s": round(startup_s, 2)},
            "warm_message_to_reply": {**_ms(warm), "live_checks": "uncached, answered by fake oEmbed"},
            "warm_engine_search_only": {**_ms(warm_engine), "what": "decode + VGGish + ANN + ranking, worker thread"},
            "warm_message_to_reply_cached_live": _ms(cached),
            "burst_10_at_once": {
                "all_answered_s": round(burst_s, 2),
                "reply_latency": _ms([r[0] for r in results]),
                "event_loop_lag": _ms(lag),
                "heartbeat_interval_ms": fake.heartbeat_interval_ms,
                "heartbeat_max_gap_ms": round(max(gaps) * 1000, 1),
            },
            "targets": {"warm_p50_ms": 600, "loop_lag_p99_ms": 50},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "echovids-bench-bot"),
                        help="cache for the bal_train index, checkpoint and voice notes (reused)")
    parser.add_argument("--index", help="use this data directory's current build instead")
    parser.add_argument("--warm", type=int, default=20, help="sequential warm notes to time")
    parser.add_argument("--oembed-ms", type=float, default=30.0, help="fake oEmbed answer latency")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("discord").setLevel(logging.ERROR)
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
