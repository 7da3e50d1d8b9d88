"""A local stand-in for YouTube's oEmbed endpoint (aiohttp on 127.0.0.1).

Each video id can be given a script of replies (the last one repeats): the statuses YouTube uses,
429 with ``Retry-After``, 5xx, slow answers, malformed JSON and connection resets. The server counts
requests per video, so tests can assert that a cache hit sent nothing and that a resumed refresh
asked nothing twice. It checks the request the way YouTube would need it (``url`` is a watch URL,
``format=json``) and answers 400 otherwise, so a wrong request shape fails tests loudly.

Run it in the test's own loop (``await fake.start()``) or in a background thread
(``fake.start_in_thread()``) for synchronous code and subprocesses.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

from aiohttp import web


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``kind`` is one of: live, unembeddable, private, gone, invalid,
    ratelimit, error, slow, malformed, reset."""

    kind: str
    delay_s: float = 0.0
    status: int | None = None         # for "error" (default 503)
    retry_after: str | None = None    # header value for "ratelimit"/"error"
    title: str | None = None
    channel: str | None = None


LIVE = Reply("live")
UNEMBEDDABLE = Reply("unembeddable")
PRIVATE = Reply("private")
GONE = Reply("gone")
INVALID = Reply("invalid")
MALFORMED = Reply("malformed")
RESET = Reply("reset")


def ratelimit(retry_after: str | float | None = "1") -> Reply:
    return Reply("ratelimit", retry_after=None if retry_after is None else str(retry_after))


def error(status: int = 503, retry_after: str | None = None) -> Reply:
    return Reply("error", status=status, retry_after=retry_after)


def slow(delay_s: float, then: str = "live") -> Reply:
    return Reply(then, delay_s=delay_s)


_STATUS = {"unembeddable": 401, "private": 403, "gone": 404, "invalid": 400}


class FakeOEmbed:
    def __init__(self, *, latency_s: float = 0.0, default: Reply = LIVE):
        self.latency_s = latency_s
        self.default = default
        self.scripts: dict[str, list[Reply]] = {}
        self.requests: Counter[str] = Counter()     # per video id, every request received
        self.completed: Counter[str] = Counter()    # per video id, answers fully sent
        self.log: list[tuple[str, float]] = []      # (video id, monotonic time) per request
        self.malformed_requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.held: dict[str, asyncio.Event] = {}
        self.waiting: Counter[str] = Counter()      # per video id, requests now held

    # -- programming ---------------------------------------------------------------------------
    def script(self, video_id: str, *replies: Reply) -> None:
        """Answer ``video_id`` with these replies in turn; the last one repeats."""
        with self._lock:
            self.scripts[video_id] = list(replies)

    def hold(self, video_id: str) -> None:
        """Keep requests for ``video_id`` waiting (no answer, no timeout here) until :meth:`release`:
        a test can stop a client at a known point without relying on delays."""
        with self._lock:
            self.held.setdefault(video_id, asyncio.Event())

    def release(self, video_id: str | None = None) -> None:
        """Let held requests (all, or those for ``video_id``) be answered; thread-safe."""
        with self._lock:
            gates = [self.held.pop(video_id)] if video_id in self.held else [] if video_id else list(self.held.values())
            if video_id is None:
                self.held.clear()
        for gate in gates:
            if self._loop is not None and self._thread is not None:
                self._loop.call_soon_threadsafe(gate.set)
            else:
                gate.set()

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.completed.clear()
            self.log.clear()
            self.max_in_flight = 0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def _next_reply(self, video_id: str) -> Reply:
        with self._lock:
            script = self.scripts.get(video_id)
            if not script:
                return self.default
            return script.pop(0) if len(script) > 1 else script[0]

    # -- HTTP ----------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        url = request.query.get("url", "")
        parsed = urlparse(url)
        ids = parse_qs(parsed.query).get("v", [])
        if (request.query.get("format") != "json" or parsed.scheme != "https"
                or parsed.netloc != "www.youtube.com" or parsed.path != "/watch" or len(ids) != 1):
            with self._lock:
                self.malformed_requests += 1
            return web.Response(status=400, text="Bad Request")
        vid = ids[0]
        with self._lock:
            self.requests[vid] += 1
            self.log.append((vid, time.monotonic()))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            gate = self.held.get(vid)
            if gate is not None:
                with self._lock:
                    self.waiting[vid] += 1
                try:
                    await gate.wait()
                finally:
                    with self._lock:
                        self.waiting[vid] -= 1
            reply = self._next_reply(vid)
            delay = self.latency_s + reply.delay_s
            if delay > 0:
                await asyncio.sleep(delay)
            response = self._respond(request, vid, reply)
            if response is not None:
                with self._lock:
                    self.completed[vid] += 1
                return response
            return web.Response(status=500)  # never sent: the connection is already reset
        finally:
            with self._lock:
                self.in_flight -= 1

    def _respond(self, request: web.Request, vid: str, reply: Reply) -> web.Response | None:
        kind = reply.kind
        if kind == "live":
            body = {
                "title": reply.title or f"Video {vid}",
                "author_name": reply.channel or f"Channel of {vid}",
                "author_url": f"https://www.youtube.com/@{vid}",
                "type": "video",
                "provider_name": "YouTube",
                "html": f'<iframe src="https://www.youtube.com/embed/{vid}?feature=oembed"></iframe>',
            }
            return web.json_response(body)
        if kind in _STATUS:
            return web.Response(status=_STATUS[kind], text=kind)
        if kind == "ratelimit":
            headers = {"Retry-After": reply.retry_after} if reply.retry_after is not None else {}
            return web.Response(status=429, text="Too Many Requests", headers=headers)
        if kind == "error":
            headers = {"Retry-After": reply.retry_after} if reply.retry_after is not None else {}
            return web.Response(status=reply.status or 503, text="Server Error", headers=headers)
        if kind == "malformed":
            return web.Response(status=200, text='{"title": "broken', content_type="application/json")
        if kind == "reset":
            transport = request.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:  # linger 0 → the close sends RST, not FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            return None
        raise ValueError(f"unknown reply kind {kind!r}")

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_get("/oembed", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/oembed"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_in_thread(self) -> str:
        """Serve from a background thread with its own loop (for sync code and subprocesses)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as err:  # pragma: no cover - reported to the caller
                failure.append(err)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:  # slow answers still sleeping: end them quietly
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=main, name="fake-oembed", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self.url

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None
            self._loop = None

    def __enter__(self) -> FakeOEmbed:
        self.start_in_thread()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_thread()


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.oembed_server --latency 0.05``: serve in this process (benchmarks run
    the fake apart from the client so the two do not share a CPU-bound event loop); prints the URL."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    async def serve() -> None:
        fake = FakeOEmbed(latency_s=args.latency)
        print(await fake.start(args.port), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await fake.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
