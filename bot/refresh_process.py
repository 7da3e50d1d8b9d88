"""``/index refresh`` as a child process: started, watched, relayed and reaped by the bot.

Why a child: a rebuild's process pool forked from the bot's multithreaded process inherited its
asyncio signal wake-up fd, and tearing the pool down made the bot's own loop see SIGTERM and shut
down (issue 11 #1). The refresh now runs as ``python -m bot.cli index refresh --progress-json`` in
its own session (process group): the bot's loop only reads its stdout lines, its crash cannot take
the bot with it, and stopping it stops its pool workers too (``killpg``). The child holds the data
directory's refresh lock itself (and, on the Milvus store, the lease in Milvus), so the CLI and
every bot process, on this machine or another, see a refresh in progress.
The child runs at a lower CPU priority (nice 10, for its whole session: see
``bot.terminal.index_refresh.give_way_on_cpu``) so a rebuild gives way to the replies, and it
watches its stdin pipe: if the bot dies without a word (SIGKILL), the pipe closes and the child
stops its group, so no orphan keeps a gigabyte of pool workers alive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from core.admin import RefreshReport
from core.config import PROJECT_ROOT, Settings
from core.progress import ProgressEvent

log = logging.getLogger("echovids.bot.refresh")

#: Seconds a stopping child gets between SIGTERM and SIGKILL of its process group.
STOP_GRACE_S = 5.0


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc (Linux); elsewhere a
    signal-0 probe says only whether any remain."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    return [pid for pid, _comm, fields_ in proc_stats()
            if int(fields_[2]) == pgid and fields_[0] not in ("Z", "X")]


def proc_stats() -> Iterator[tuple[int, str, list[str]]]:
    """Every process's ``/proc/<pid>/stat`` as (pid, command name, the fields after it: state ppid
    pgrp …); processes that vanish while being read are skipped."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        yield int(entry.name), stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()


class RefreshFailed(Exception):
    """The child ended without a report; ``str()`` is the one line a moderator reads."""


def child_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that makes the child's ``load_settings`` equal the bot's settings.

    The bot's settings may not come from ``os.environ`` (tests and benchmarks build them from a
    dict), so every value the refresh needs is written out. The bot token is not passed: a refresh
    never talks to Discord.
    """
    env = dict(os.environ if base is None else base)
    env.pop("DISCORD_TOKEN", None)

    def put(name: str, value: object | None) -> None:
        if value is None or value == "":
            env.pop(name, None)
        else:
            env[name] = str(value)

    put("ECHOVIDS_DATA_DIR", Path(settings.data_dir).resolve())
    put("ECHOVIDS_AUDIOSET_DIR", os.pathsep.join(str(Path(p).resolve()) for p in settings.audioset_dirs))
    put("ECHOVIDS_AUDIOSET_META", settings.audioset_meta and Path(settings.audioset_meta).resolve())
    put("VGGISH_CHECKPOINT", settings.vggish_checkpoint_env)
    put("VGGISH_PCA_PARAMS", settings.vggish_pca_params_env)
    put("YAMNET_MODEL", settings.yamnet_model_env)
    put("YOUTUBE_OEMBED_URL", settings.youtube_oembed_url)
    put("ECHOVIDS_TEST_DATA", Path(settings.test_data).resolve())
    put("ECHOVIDS_WORKERS", settings.workers)
    # the store: the child rebuilds into it, and on Milvus takes the cross-machine refresh lock there
    put("ECHOVIDS_VECTOR_STORE", settings.vector_store)
    put("ECHOVIDS_MILVUS_URI", settings.milvus_uri)
    put("ECHOVIDS_MILVUS_TOKEN", settings.milvus_token)
    put("ECHOVIDS_MILVUS_PREFIX", settings.milvus_prefix)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def child_command(settings: Settings, options: Mapping[str, Any] | None = None) -> list[str]:
    """``python -m bot.cli index refresh --progress-json ...`` with the bot's refresh options
    (``rate_per_s``, ``concurrency``, ``timeout_s``) as flags."""
    options = dict(options or {})
    cmd = [sys.executable, "-m", "bot.cli", "index", "refresh", "--index", str(Path(settings.data_dir).resolve()),
           "--progress-json", "--bot-child"]
    if "rate_per_s" in options:
        cmd += ["--rate", str(options.pop("rate_per_s") or 0)]
    if "concurrency" in options:
        cmd += ["--concurrency", str(int(options.pop("concurrency")))]
    if "timeout_s" in options:
        cmd += ["--timeout", str(float(options.pop("timeout_s")))]
    if options:
        log.warning("refresh options the child cannot take, ignored: %s", ", ".join(sorted(options)))
    return cmd


def report_from_json(data: dict) -> RefreshReport:
    known = {f.name for f in fields(RefreshReport)}
    return RefreshReport(**{k: v for k, v in data.items() if k in known})


def _exit_line(returncode: int, stderr_lines: list[str]) -> str:
    for line in reversed(stderr_lines):
        line = line.strip()
        if line.startswith("echovids: "):
            return line[len("echovids: "):]
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the refresh process was stopped by {name}"
    tail = next((ln.strip() for ln in reversed(stderr_lines) if ln.strip()), "")
    return f"the refresh process exited with status {returncode}" + (f" ({tail[:200]})" if tail else "")


class RefreshProcess:
    """One running child. ``await run()`` returns its RefreshReport or raises RefreshFailed."""

    def __init__(self, settings: Settings, options: Mapping[str, Any] | None = None, *,
                 on_progress: Callable[[ProgressEvent], None] | None = None):
        self.settings = settings
        self.options = dict(options or {})
        self.on_progress = on_progress
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def run(self) -> RefreshReport:
        self.proc = await asyncio.create_subprocess_exec(
            *child_command(self.settings, self.options), env=child_env(self.settings),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: killpg reaches its pool workers
            limit=1 << 20)
        log.info("index refresh started as pid %d", self.proc.pid)
        stderr_lines: list[str] = []
        report: dict | None = None
        try:
            reader = asyncio.create_task(self._read_stderr(stderr_lines))
            assert self.proc.stdout is not None
            async for raw in self.proc.stdout:
                try:
                    data = json.loads(raw)
                except ValueError:
                    continue  # not ours (a library printing on stdout): ignore
                if not isinstance(data, dict):
                    continue
                if data.get("event") == "progress" and self.on_progress is not None:
                    self.on_progress(ProgressEvent(str(data.get("stage", "")), int(data.get("done") or 0),
                                                   data.get("total"), str(data.get("unit") or "items"),
                                                   str(data.get("detail") or "")))
                elif data.get("event") == "report":
                    report = data
            await reader
            returncode = await self.proc.wait()
            await self._reap_group()
        except BaseException:
            await self.stop()
            raise
        log.info("index refresh pid %d exited with %d", self.proc.pid, returncode)
        if returncode == 0 and report is not None:
            return report_from_json(report)
        raise RefreshFailed(_exit_line(returncode, stderr_lines))

    async def _read_stderr(self, lines: list[str]) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                lines.append(line)
                del lines[:-50]
                log.debug("refresh child: %s", line)

    async def _reap_group(self, grace_s: float = STOP_GRACE_S) -> None:
        """After the child exits, its pool workers and resource tracker follow within moments;
        whatever is still there after ``grace_s`` is killed, so nothing outlives a refresh."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while group_members(self.proc.pid):
            if loop.time() > deadline:
                log.warning("refresh pid %d left processes behind; killing them", self.proc.pid)
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                return
            await asyncio.sleep(0.05)

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the child and everything it started (its process group), and reap it."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), wait)
                break
            except asyncio.TimeoutError:
                continue
        # The group may outlive its leader for a moment (pool workers): make sure none remain.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        await self._reap_group()
