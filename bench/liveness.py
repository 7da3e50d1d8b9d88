"""Liveness speed against the local fake oEmbed server (50 ms per answer by default), as JSON.

    .venv/bin/python bench/liveness.py [--latency 0.05] [--refresh-videos 1000] [--queries 200]

Figures:
- refresh throughput (videos/s) at the polite default (concurrency 8, 10 req/s) and with the
  rate limit lifted (what the concurrency alone allows: ≈ concurrency / latency);
- query-time overhead of ``LivenessChecker.filter`` with a warm cache (target ≤ 5 ms) and a cold
  one (bounded by the budget), and with a server slower than the budget (the budget must hold).
The fake runs in its own process so it does not share the client's event loop or GIL. The machine
is shared; ``loadavg`` records how busy it was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import Settings  # noqa: E402
from core.liveness.checker import LivenessChecker  # noqa: E402
from core.liveness.oembed import DEFAULT_CONCURRENCY, DEFAULT_RATE_PER_S  # noqa: E402
from core.admin.refresh import arefresh_index  # noqa: E402
from core.results import Match  # noqa: E402
from core.youtube import youtube_url  # noqa: E402


def start_fake(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.oembed_server", "--latency", str(latency)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1"):
        proc.kill()
        raise SystemExit(f"fake oEmbed server did not start (got {url!r})")
    return proc, url


def vids(prefix: str, n: int) -> list[str]:
    width = 11 - len(prefix)
    assert n <= 10 ** width, "prefix too long for n distinct 11-character ids"
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def candidates(ids: list[str]) -> list[Match]:
    return [Match(v, 5, youtube_url(v, 5), 1.0 - i / 100, ["Speech"]) for i, v in enumerate(ids)]


def ms_stats(xs: list[float]) -> dict:
    xs = sorted(x * 1000 for x in xs)
    return {
        "n": len(xs),
        "p50_ms": round(statistics.median(xs), 3),
        "p95_ms": round(xs[min(len(xs) - 1, int(0.95 * len(xs)))], 3),
        "max_ms": round(xs[-1], 3),
        "mean_ms": round(statistics.fmean(xs), 3),
    }


async def refresh_throughput(url: str, n: int, concurrency: int, rate: float | None, prefix: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), youtube_oembed_url=url)
        report = await arefresh_index(settings, video_ids=vids(prefix, n), dry_run=True,
                                      concurrency=concurrency, rate_per_s=rate)
    return {
        "videos": report.checked,
        "concurrency": concurrency,
        "rate_limit_per_s": rate,
        "seconds": report.check_s,
        "videos_per_s": round(report.checked / report.check_s, 1) if report.check_s else None,
    }


async def query_overhead(url: str, queries: int, want: int, n_cand: int, budget: float, *,
                         rate: float | None, cold: bool, prefix: str, space_s: float = 0.0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), youtube_oembed_url=url)
        checker = LivenessChecker(settings, rate_per_s=rate)
        try:
            warm_ids = vids(prefix, n_cand)
            if not cold:
                await checker.filter(candidates(warm_ids), want, 5.0)
                await asyncio.sleep(0.2)  # let the cache writes land
            times, unknown, returned = [], 0, 0
            for q in range(queries):
                ids = vids(f"{prefix}{q:03d}", n_cand) if cold else warm_ids
                cands = candidates(ids)
                t0 = time.perf_counter()
                out = await checker.filter(cands, want, budget)
                times.append(time.perf_counter() - t0)
                unknown += sum(m.live == "unknown" for m in out)
                returned += len(out)
                if space_s:
                    await asyncio.sleep(space_s)
            sent = checker.client.requests_sent
        finally:
            await checker.close()
    return {**ms_stats(times), "budget_s": budget, "want": want, "candidates": n_cand,
            "rate_limit_per_s": rate, "unknown_fraction": round(unknown / max(1, returned), 3),
            "requests": sent}


async def main_async(args) -> dict:
    out: dict = {
        "benchmark": "liveness",
        "fake_latency_s": args.latency,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    proc, url = start_fake(args.latency)
    try:
        out["refresh"] = {
            "polite_default": await refresh_throughput(url, args.polite_videos, DEFAULT_CONCURRENCY,
                                                       DEFAULT_RATE_PER_S, "p"),
            "concurrency_bound": await refresh_throughput(url, args.refresh_videos, DEFAULT_CONCURRENCY, None, "c"),
            "concurrency_32": await refresh_throughput(url, args.refresh_videos, 32, None, "d"),
        }
        out["query_warm"] = await query_overhead(url, args.queries, 5, 15, 1.5, rate=DEFAULT_RATE_PER_S,
                                                 cold=False, prefix="w")
        out["query_cold_unlimited_rate"] = await query_overhead(url, 30, 5, 15, 1.5, rate=None, cold=True,
                                                                prefix="u")
        # At the polite default a burst of cold queries is rate-bound (8 checks per query at 10/s);
        # spaced as real users would be, each is one round trip.
        out["query_cold_polite_spaced_1s"] = await query_overhead(url, 10, 5, 15, 1.5, rate=DEFAULT_RATE_PER_S,
                                                                  cold=True, prefix="s", space_s=1.0)
        out["query_cold_polite_burst"] = await query_overhead(url, 10, 5, 15, 1.5, rate=DEFAULT_RATE_PER_S,
                                                              cold=True, prefix="b")
    finally:
        proc.terminate()
        proc.wait(5)
    slow, slow_url = start_fake(3.0)
    try:
        out["query_cold_server_slower_than_budget"] = await query_overhead(
            slow_url, 5, 5, 15, 0.5, rate=None, cold=True, prefix="z")
    finally:
        slow.terminate()
        slow.wait(5)
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out["warm_target_met"] = out["query_warm"]["p95_ms"] <= 5.0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--refresh-videos", type=int, default=1000)
    p.add_argument("--polite-videos", type=int, default=100)
    p.add_argument("--queries", type=int, default=200)
    args = p.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
