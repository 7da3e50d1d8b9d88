"""``echovids bot`` as a process: a clear line without a token or with a bad one, endpoints from the
environment, and a graceful exit on SIGTERM (what Docker sends)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from core.config import PROJECT_ROOT
from tests.fakes.discord_server import FakeDiscord


def _env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "ECHOVIDS_", "VGGISH_"))}
    env.update(ECHOVIDS_DATA_DIR=str(tmp_path / "data"), VGGISH_CHECKPOINT=str(tmp_path / "none.ckpt"),
               ECHOVIDS_AUDIOSET_DIR=str(tmp_path / "none"), PYTHONPATH=str(PROJECT_ROOT),
               TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def _cli(tmp_path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot.cli", "bot"], env=_env(tmp_path, **extra), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_missing_token_is_one_clear_line(tmp_path):
    proc = _cli(tmp_path, DISCORD_TOKEN="")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "DISCORD_TOKEN is not set" in lines[0]


async def test_bad_token_is_one_clear_line(tmp_path):
    async with FakeDiscord() as fake:
        fake.rejected_tokens.add("bad-token")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "bot", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=_env(tmp_path, DISCORD_TOKEN="bad-token", DISCORD_API_BASE=fake.api_base,
                     DISCORD_GATEWAY_URL=fake.gateway_url))
        _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 1
    last = err.decode().strip().splitlines()[-1]
    assert last.startswith("echovids: Discord rejected DISCORD_TOKEN")
    assert "Traceback" not in err.decode()


async def _serve_then_sigterm(tmp_path, env: dict[str, str], fake: FakeDiscord,
                              when_identified: Callable[[], None] = lambda: None) -> tuple[int, str]:
    """Run ``echovids bot`` until it has identified (setup_hook, warm-up included, is done), call
    ``when_identified``, send SIGTERM; the exit status and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "bot", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        await fake.wait_until_identified(timeout=180)
        when_identified()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, err.decode()


@pytest.mark.slow
async def test_runs_against_the_configured_endpoints_and_stops_cleanly_on_sigterm(tmp_path):
    async with FakeDiscord() as fake:
        stop_sent: list[float] = []

        def identified() -> None:
            assert fake.identify["token"] == "good-token"
            assert {c["name"] for c in fake.commands} >= {"soundalike", "help", "index"}
            stop_sent.append(time.monotonic())

        code, text = await _serve_then_sigterm(
            tmp_path, _env(tmp_path, DISCORD_TOKEN="good-token", DISCORD_API_BASE=fake.api_base,
                           DISCORD_GATEWAY_URL=fake.gateway_url), fake, identified)
        assert code == 0, text[-2000:]
        assert time.monotonic() - stop_sent[0] < 15
        assert "SIGTERM received" in text and "Traceback" not in text
        assert "index not loaded" in text  # no index yet: reported, not fatal
        await asyncio.sleep(0.2)
        assert not fake._sockets  # the gateway connection was closed


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR|CRITICAL)\s+(echovids|discord)[\w.]*: ")


@pytest.mark.slow
async def test_the_bot_log_holds_only_echovids_lines(tmp_path, small_index_dir, yamnet_model_path, audioset_meta):
    """With an index and YAMNet the warm-up loads LiteRT (which announces its XNNPACK delegate on
    fd 2) and TensorFlow (oneDNN notes): none of that reaches the operator's log; it is kept in the
    debug log."""
    data = tmp_path / "data"
    data.mkdir()
    for entry in small_index_dir.iterdir():
        if entry.name != "logs":
            (data / entry.name).symlink_to(entry)
    async with FakeDiscord() as fake:
        env = _env(tmp_path, DISCORD_TOKEN="good-token", DISCORD_API_BASE=fake.api_base,
                   DISCORD_GATEWAY_URL=fake.gateway_url, YAMNET_MODEL=str(yamnet_model_path),
                   ECHOVIDS_AUDIOSET_META=str(audioset_meta))
        env.pop("TF_CPP_MIN_LOG_LEVEL")
        code, text = await _serve_then_sigterm(tmp_path, env, fake)
    assert code == 0, text[-2000:]
    assert "index loaded" in text and "SIGTERM received" in text
    strays = [line for line in text.splitlines() if not LOG_LINE.match(line)]
    assert not strays, strays
    assert "XNNPACK" in (data / "logs" / "debug.log").read_text(errors="replace")
