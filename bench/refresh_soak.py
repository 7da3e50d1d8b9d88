"""Soak: the bot survives ``/index refresh`` ten times in a row while serving voice notes (JSON).

The real discord.py client and engine against the local fake Discord and a fake YouTube oEmbed
(as ``bench/bot.py``). Before each refresh a few more indexed videos are scripted "gone" and the
liveness cache is expired, so every refresh checks every video and really rebuilds (in its child
process) and the bot switches builds. Meanwhile a user sends a voice note every ``--note-every``
seconds. Reported:

- refreshes that ended ✅ / ❌, their durations, and whether each switched the bot to the new build;
- the event loop's lag (``LoopLagMonitor``, a 20 ms sleeper's lateness) during refreshes: max, p99,
  and apart from that the lag while the bot switches to the new build (``Engine.reload`` loading the
  new ScaNN searcher, whose C++ loader holds the GIL) versus the rest of the refresh;
- the same lag figures for ``--baseline-s`` of voice-note traffic *without* a refresh (the bot's
  own searches also cost loop time: this tells the refresh's share apart);
- voice notes sent / answered during the soak;
- self-inflicted shutdowns (the bot closed, or any log line about SIGTERM / shutting down);
- processes left behind: members of each refresh child's process group after it ended, and the
  bot process's own children at the end (spawned pool workers, zombies).

The index is a bal_train slice (``--shards``, default 600 files ≈ 3,000 clips) so ten rebuilds take
minutes, not half an hour; ``--shards 0`` uses all of bal_train. ``os.getloadavg()`` is recorded.

usage: python bench/refresh_soak.py [--work DIR] [--refreshes 10] [--shards 600] [--note-every 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class ShutdownWatch(logging.Handler):
    """Counts log records that announce a shutdown or a SIGTERM (the issue's failure)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.hits: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "SIGTERM" in text or "shutting down" in text.lower():
            self.hits.append(f"{record.name}: {text}"[:300])


def _children(pid: int) -> list[str]:
    from bot.refresh_process import proc_stats
    return [f"{child} {fields[0]} {comm}" for child, comm, fields in proc_stats() if int(fields[1]) == pid]


def _source_slice(work: Path, shards: int) -> Path:
    from core.config import load_settings

    bal = Path(load_settings(dotenv=False).test_data) / "audioset_v1_embeddings" / "bal_train"
    if shards <= 0:
        return bal
    src = work / f"bal_train_{shards}"
    if not src.is_dir():
        src.mkdir(parents=True)
        for p in sorted(bal.glob("*.tfrecord"))[:shards]:
            (src / p.name).symlink_to(p)
    return src


def _cpu_times() -> list[int]:
    """The machine's CPU time counters (``/proc/stat``'s first line), or [] off Linux."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return []


def _steal_share(before: list[int], after: list[int]) -> float | None:
    """Share of CPU time the hypervisor gave to other guests (``steal``) over the run: a virtual
    machine's vCPUs can be descheduled for tens of milliseconds, and no code in here can help it."""
    if len(before) < 8 or len(after) < 8:
        return None
    delta = [a - b for a, b in zip(after, before)]
    return round(delta[7] / max(1, sum(delta[:8])), 3)


#: Innermost frames of a thread that is waiting, not running Python (or holding the GIL in a call).
IDLE_FRAMES = ("threading.py", "concurrent/futures/thread.py", "unix_events.py", "selectors.py", "queue.py",
               "discord/gateway.py", "refresh_soak.py", "asyncio/base_events.py")


def read_stalls(path: Path) -> dict:
    """What the stall dumps say: how many stalls, and in how many some thread was running Python
    (or sat in a call from Python: a GIL holder) rather than waiting — with those frames. A stall
    with every thread waiting is the process not getting the CPU (other load, the VM's steal)."""
    if not path.is_file():
        return {"dumps": 0}
    dumps = [d for d in path.read_text(errors="replace").split("Timeout (") if d.strip()]
    running = [[f for f in _innermost(d) if not any(mark in f for mark in IDLE_FRAMES)] for d in dumps]
    busy: dict[str, int] = {}
    for frames in running:
        for f in frames:
            busy[f] = busy.get(f, 0) + 1
    return {"dumps": len(dumps), "dumps_with_a_running_thread": sum(bool(f) for f in running),
            "running_frames": dict(sorted(busy.items(), key=lambda kv: -kv[1])[:10])}


def _innermost(dump: str) -> list[str]:
    """Each thread's innermost frame ("path", line N in function) in one faulthandler dump."""
    out = []
    for thread in dump.split("\nThread ")[1:]:
        frames = [ln.strip()[5:] for ln in thread.splitlines()[1:] if ln.strip().startswith("File ")]
        if frames:
            out.append(frames[0])
    return out


async def dump_stalls(path: Path, limit_s: float = 0.1) -> None:
    """Where a stall happens: faulthandler's watchdog is a C thread that needs no GIL, so when the
    loop fails to re-arm it within ``limit_s`` it writes every thread's Python stack *during* the
    stall — the thread holding the GIL (or the loop's own long callback) among them."""
    with path.open("a") as fh:
        while True:
            faulthandler.dump_traceback_later(limit_s, file=fh)
            await asyncio.sleep(0.02)


async def run(args: argparse.Namespace) -> dict:
    from bench.bot import prepare, running_bot
    from bot.refresh_process import group_members
    from core.index.store import open_current, read_pointer
    from core.liveness.cache import CACHE_FILENAME
    from tests.fakes.discord_server import MANAGE_GUILD, MEMBER_PERMISSIONS
    from tests.fakes.oembed_server import GONE
    from tests.media import make_voice_note

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"data_{args.shards}"
    if read_pointer(data) is None:
        import subprocess

        subprocess.run([sys.executable, "-m", "bot.cli", "index", "build", "--audioset", str(_source_slice(work, args.shards)),
                        "--index", str(data)], check=True, cwd=ROOT, stdout=sys.stderr)
    _, ckpt, pca = prepare(work, data)
    note = make_voice_note(work / "soak_note.ogg", seconds=5.0, kind="speech")

    watch = ShutdownWatch()
    logging.getLogger().addHandler(watch)
    load_before = os.getloadavg()
    cpu_before = _cpu_times()
    async with running_bot(data, ckpt, pca, oembed_ms=args.oembed_ms, workers=2, close_timeout=60,
                           refresh_options={"rate_per_s": None, "concurrency": 32}) as (bot, fake, oembed, _):
        cog = bot.get_cog("Moderation")
        cog.edit_interval_s = 1.0
        # Timestamped lag (the bot's monitor keeps values only) and the build-switch windows.
        stamped: list[tuple[float, float]] = []
        switches: list[tuple[float, float]] = []
        real_switch = cog._switch_build

        async def timed_switch() -> str:
            t = time.monotonic()
            try:
                return await real_switch()
            finally:
                switches.append((t, time.monotonic()))

        cog._switch_build = timed_switch

        async def stamp_lag() -> None:
            loop = asyncio.get_running_loop()
            while True:
                before = loop.time()
                await asyncio.sleep(0.02)
                stamped.append((time.monotonic(), max(0.0, loop.time() - before - 0.02)))

        lag_task = asyncio.create_task(stamp_lag())
        stall_task = asyncio.create_task(dump_stalls(Path(args.stall_dump))) if args.stall_dump else None
        moderator = fake.add_member("soak-mod", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
        sent = answered = 0
        stop_traffic = asyncio.Event()

        async def traffic() -> None:
            nonlocal sent, answered
            i = 0
            while not stop_traffic.is_set():
                i += 1
                user = fake.add_member(f"soak{i}")
                att = fake.add_attachment(note, voice=True, duration_secs=5.0)
                after = len(fake.requests)
                await fake.send_message(user, guild=False, attachments=[att], voice=True)
                sent += 1
                dm = f"/channels/{fake.dm_channel_id(user)}/messages"
                try:
                    await fake.wait_for(lambda r: r.method == "POST" and r.path == dm and r.status == 200,
                                        timeout=120, after=after)
                    answered += 1
                except asyncio.TimeoutError:
                    pass
                try:
                    await asyncio.wait_for(stop_traffic.wait(), args.note_every)
                except asyncio.TimeoutError:
                    pass

        runs: list[dict] = []
        all_lag: list[float] = []
        windows: list[tuple[float, float]] = []
        start_build = await asyncio.to_thread(open_current, data)
        ids, start_vectors = sorted(start_build.video_ids()), start_build.size
        per_round = max(1, min(20, len(ids) // (4 * args.refreshes)))
        traffic_task = asyncio.create_task(traffic())
        try:
            # Baseline: the same voice-note traffic with no refresh, for the same lag figures.
            await asyncio.sleep(args.baseline_s)
            baseline = [x for _, x in stamped]
            stamped.clear()
            for n in range(args.refreshes):
                for vid in ids[n * per_round:(n + 1) * per_round]:
                    oembed.script(vid, GONE)
                cache = data / CACHE_FILENAME
                if cache.exists():
                    with sqlite3.connect(cache) as db:
                        db.execute("UPDATE checks SET expires_at = 0")
                before_pointer = read_pointer(data)
                bot.lag.reset()
                t0 = time.monotonic()
                payload = await fake.slash(moderator, "index", [{"name": "refresh", "type": 1, "options": []}])
                end = await fake.wait_for(lambda r: r.method == "PATCH" and payload["token"] in r.path
                                          and ("✅" in r.content or "❌" in r.content), timeout=args.timeout)
                took = time.monotonic() - t0
                windows.append((t0, time.monotonic()))
                lag = list(bot.lag.samples)
                all_lag += lag
                child = cog.refresh_process
                left = group_members(child.pid) if child is not None and child.pid else []
                # off the loop: opening a build verifies it (the bot itself never does this on its loop)
                serving = await asyncio.to_thread(lambda: bot.engine.build.build_id)
                runs.append({
                    "ok": "✅" in end.content, "seconds": round(took, 1),
                    "switched": read_pointer(data) != before_pointer and serving == read_pointer(data),
                    "loop_lag_max_ms": round(max(lag, default=0) * 1000, 1),
                    "child_exit": child.proc.returncode if child is not None and child.proc else None,
                    "left_in_child_group": len(left),
                    "message": end.content.splitlines()[0][:160],
                })
                print(json.dumps({"refresh": n + 1, **runs[-1]}), file=sys.stderr)
            stop_traffic.set()
            await asyncio.wait_for(traffic_task, 180)
            leftover = [c for c in _children(os.getpid())]
            lag_ms = sorted(x * 1000 for x in all_lag)

            def inside(t: float, x: float, spans: list[tuple[float, float]]) -> bool:
                # a sample stamped at t measured the interval [t - 20 ms - lag, t]: does it overlap a span?
                return any(a <= t and t - 0.02 - x <= b for a, b in spans)

            in_refresh = [(t, x) for t, x in stamped if inside(t, x, windows)]
            at_switch = [x for t, x in in_refresh if inside(t, x, switches)]
            elsewhere = [x for t, x in in_refresh if not inside(t, x, switches)]
            return {
                "bench": "refresh_soak",
                "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                            "cpu_steal_share": _steal_share(cpu_before, _cpu_times())},
                "setup": {"index_vectors_at_start": start_vectors, "videos": len(ids),
                          "shards": args.shards or "all bal_train", "gone_per_refresh": per_round,
                          "note_every_s": args.note_every, "oembed_latency_ms": args.oembed_ms},
                "refreshes": {"runs": len(runs), "ok": sum(r["ok"] for r in runs),
                              "switched_build": sum(r["switched"] for r in runs),
                              "seconds_p50": round(statistics.median(r["seconds"] for r in runs), 1),
                              "seconds_max": max(r["seconds"] for r in runs)},
                "event_loop_lag_during_refresh": {
                    "samples": len(lag_ms), "p50_ms": round(statistics.median(lag_ms), 1) if lag_ms else None,
                    "p99_ms": round(lag_ms[min(len(lag_ms) - 1, int(0.99 * len(lag_ms)))], 1) if lag_ms else None,
                    "max_ms": round(lag_ms[-1], 1) if lag_ms else None, "target_max_ms": 100,
                    "max_ms_while_switching_build": round(max(at_switch, default=0) * 1000, 1),
                    "max_ms_rest_of_refresh": round(max(elsewhere, default=0) * 1000, 1),
                    "switch_seconds_max": round(max((b - a for a, b in switches), default=0), 2)},
                "event_loop_lag_baseline_no_refresh": {
                    "seconds": args.baseline_s, "samples": len(baseline),
                    "p99_ms": round(sorted(baseline)[min(len(baseline) - 1, int(0.99 * len(baseline)))] * 1000, 1)
                    if baseline else None,
                    "max_ms": round(max(baseline, default=0) * 1000, 1)},
                "voice_notes": {"sent": sent, "answered": answered},
                "self_inflicted_shutdowns": {"bot_closed": bot.is_closed(), "log_lines": watch.hits},
                "processes_left_behind": {"in_refresh_groups": sum(r["left_in_child_group"] for r in runs),
                                          "bot_children_at_end": leftover},
                **({"stalls_over_100ms": read_stalls(Path(args.stall_dump))} if args.stall_dump else {}),
                "per_refresh": runs,
            }
        finally:
            lag_task.cancel()
            if stall_task is not None:
                stall_task.cancel()
                faulthandler.cancel_dump_traceback_later()
            stop_traffic.set()
            traffic_task.cancel()
            await asyncio.gather(traffic_task, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "echovids-bench-soak"),
                        help="cache for the index, checkpoint and voice note (reused between runs)")
    parser.add_argument("--refreshes", type=int, default=10)
    parser.add_argument("--shards", type=int, default=600, help="bal_train files to index (0 = all)")
    parser.add_argument("--note-every", type=float, default=1.0, help="seconds between voice notes")
    parser.add_argument("--oembed-ms", type=float, default=5.0, help="fake oEmbed answer latency")
    parser.add_argument("--timeout", type=float, default=900.0, help="longest one refresh may take")
    parser.add_argument("--stall-dump", default=None, metavar="FILE",
                        help="append every thread's stack to FILE whenever the loop stalls over 100 ms")
    parser.add_argument("--baseline-s", type=float, default=30.0,
                        help="seconds of voice-note traffic without a refresh first (lag baseline)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("discord").setLevel(logging.ERROR)
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
