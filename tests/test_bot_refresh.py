"""``/index refresh`` runs outside the serving process (issue 11 #1) and moderators are moderators
of *this* guild (#7): the real discord.py client and engine against the fake Discord and oEmbed.

The refresh child is stopped at a known point without any delay: the fake oEmbed *holds* the
answer for one indexed video until the test releases it (the child's request timeout is set far
beyond the test), so "while a refresh runs" is a state, not a race.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest
import pytest_asyncio

from bot.client import EchoVidsBot
from core.config import load_settings
from core.index.lock import refresh_lock
from core.index.store import open_current, read_pointer
from tests.bot_harness import BotEnv
from tests.fakes.discord_server import EPHEMERAL_FLAG, MANAGE_GUILD, MEMBER_PERMISSIONS, FakeDiscord, Recorded, wait_ready
from tests.fakes.oembed_server import GONE, FakeOEmbed
from tests.media import make_voice_note

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(small_index_dir, vggish_checkpoint, pca_params_path, audioset_meta, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("refreshbot") / "data"
    shutil.copytree(small_index_dir, data_dir, symlinks=True, ignore=shutil.ignore_patterns("liveness.sqlite*"))
    note = make_voice_note(tmp_path_factory.mktemp("notes") / "speech.ogg", seconds=3.0, kind="speech")
    fake = await FakeDiscord(heartbeat_interval_ms=250).start()
    oembed = FakeOEmbed()
    oembed_url = await oembed.start()
    settings = load_settings({
        "DISCORD_TOKEN": "test-token", "DISCORD_API_BASE": fake.api_base, "DISCORD_GATEWAY_URL": fake.gateway_url,
        "ECHOVIDS_DATA_DIR": str(data_dir), "ECHOVIDS_AUDIOSET_META": str(audioset_meta),
        "VGGISH_CHECKPOINT": str(vggish_checkpoint), "VGGISH_PCA_PARAMS": str(pca_params_path),
        "YOUTUBE_OEMBED_URL": oembed_url, "ECHOVIDS_MODERATOR_ROLE": str(fake.moderator_role_id),
        "ECHOVIDS_WORKERS": "2", "ECHOVIDS_LIVE_BUDGET_S": "2",
    }, dotenv=False)
    bot = EchoVidsBot(settings, cooldown_s=0.0, guild_ready_timeout=0.05,
                      refresh_options={"rate_per_s": None, "concurrency": 4, "timeout_s": 3600})
    task = asyncio.create_task(bot.start(settings.discord_token))
    await wait_ready(bot, task)
    bot.get_cog("Moderation").edit_interval_s = 0.1
    yield BotEnv(fake, oembed, bot, data_dir, {"note": note}, member_prefix="refresher")
    await bot.close()
    await asyncio.wait_for(task, 30)
    await oembed.stop()
    await fake.stop()


def _callback(payload: dict):
    return lambda r: r.method == "POST" and r.path.endswith(f"{payload['token']}/callback")


def _edit(payload: dict, text: str):
    return lambda r: r.method == "PATCH" and payload["token"] in r.path and text in r.content


async def _voice_note_answered(env: BotEnv) -> Recorded:
    user = env.user()
    att = env.fake.add_attachment(env.notes["note"], voice=True, duration_secs=3.0)
    before = len(env.fake.requests)
    await env.fake.send_message(user, guild=False, attachments=[att], voice=True)
    channel = env.fake.dm_channel_id(user)
    reply = await env.fake.wait_for(lambda r: r.method == "POST" and r.path == f"/channels/{channel}/messages"
                                    and r.status == 200, timeout=120, after=before)
    assert reply.embeds and "youtu.be/" in reply.embeds[0]["description"]
    return reply


def _expire_cache(env: BotEnv) -> None:
    from core.liveness.cache import CACHE_FILENAME

    path = env.data_dir / CACHE_FILENAME
    if path.exists():
        with sqlite3.connect(path) as db:
            db.execute("UPDATE checks SET expires_at = 0")


async def _child_held(env: BotEnv, held: str):
    """The running refresh child, once it is waiting for the held video's answer."""
    deadline = time.monotonic() + 120
    while env.moderation.refresh_process is None or env.oembed.waiting[held] < 1:
        assert time.monotonic() < deadline, "the refresh child never asked about the held video"
        task = env.moderation.refresh_task
        if task is not None and task.done():
            task.result()
        await asyncio.sleep(0.02)
    return env.moderation.refresh_process


def _group_gone(pgid: int) -> bool:
    from bot.refresh_process import group_members

    return group_members(pgid) == []


async def test_refresh_runs_in_a_child_while_the_bot_keeps_serving(env: BotEnv):
    moderator = env.user(roles=[env.fake.moderator_role_id])
    admin = env.user(permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    ids = sorted(open_current(env.data_dir).video_ids())
    held, gone = ids[0], set(ids[1:8])
    for vid in gone:
        env.oembed.script(vid, GONE)
    env.oembed.hold(held)
    _expire_cache(env)
    old_pointer, old_size = read_pointer(env.data_dir), env.bot.engine.index_size

    payload = await env.fake.slash(moderator, "index", [{"name": "refresh", "type": 1, "options": []}])
    cb = await env.fake.wait_for(_callback(payload), timeout=10)
    assert "refresh running" in cb.json["data"]["content"]
    child = await _child_held(env, held)
    # A separate process, the CLI in machine-readable mode, in its own process group.
    assert child.pid != os.getpid() and os.getpgid(child.pid) == child.pid
    cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes().split(b"\0")
    assert [b"bot.cli", b"index", b"refresh"] == cmdline[2:5] and b"--progress-json" in cmdline
    # It gives way to the bot on the CPU, as a whole session where the kernel groups sessions.
    assert os.getpriority(os.PRIO_PROCESS, child.pid) == os.getpriority(os.PRIO_PROCESS, 0) + 10
    if Path("/proc/self/autogroup").exists():
        assert Path(f"/proc/{child.pid}/autogroup").read_text().split()[-1] == "10"

    # Its progress reaches the moderator's message...
    progress = await env.fake.wait_for(_edit(payload, "check:"), timeout=60)
    assert "videos" in progress.content
    # ...the bot answers voice notes from the old build meanwhile...
    await _voice_note_answered(env)
    assert read_pointer(env.data_dir) == old_pointer
    # ...and a second refresh is refused while this one runs.
    payload2 = await env.fake.slash(admin, "index", [{"name": "refresh", "type": 1, "options": []}])
    cb2 = await env.fake.wait_for(_callback(payload2), timeout=10)
    assert "already running" in cb2.json["data"]["content"] and cb2.json["data"]["flags"] & EPHEMERAL_FLAG

    env.oembed.release(held)
    done = await env.fake.wait_for(_edit(payload, "✅"), timeout=300)
    assert "rebuilt" in done.content and "Replies now use the new index" in done.content
    assert read_pointer(env.data_dir) != old_pointer
    assert env.bot.engine.index_size < old_size
    assert not gone & set(open_current(env.data_dir).video_ids())
    # Reaped, and nothing of it left behind.
    assert child.proc.returncode == 0 and _group_gone(child.pid)
    reply = await _voice_note_answered(env)
    assert f"{env.bot.engine.index_size:,} indexed seconds" in reply.embeds[0]["footer"]["text"]


async def test_a_crashing_refresh_reports_one_line_and_the_old_build_stays(env: BotEnv):
    moderator = env.user(roles=[env.fake.moderator_role_id])
    ids = sorted(open_current(env.data_dir).video_ids())
    held = ids[-1]
    env.oembed.script(ids[-2], GONE)
    env.oembed.hold(held)
    _expire_cache(env)
    old_pointer, old_size = read_pointer(env.data_dir), env.bot.engine.index_size

    payload = await env.fake.slash(moderator, "index", [{"name": "refresh", "type": 1, "options": []}])
    await env.fake.wait_for(_callback(payload), timeout=10)
    child = await _child_held(env, held)
    os.killpg(child.pid, signal.SIGKILL)  # the child and its workers die without a word

    failed = await env.fake.wait_for(_edit(payload, "❌"), timeout=60)
    assert "\n" not in failed.content and "stopped by SIGKILL" in failed.content
    assert child.proc.returncode == -signal.SIGKILL and _group_gone(child.pid)
    env.oembed.release(held)
    assert read_pointer(env.data_dir) == old_pointer and env.bot.engine.index_size == old_size
    await _voice_note_answered(env)
    assert env.moderation.refresh_task.done()


async def test_a_refresh_running_in_another_process_is_respected(env: BotEnv):
    admin = env.user(permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    with refresh_lock(env.data_dir):  # e.g. `echovids index refresh` in a terminal
        payload = await env.fake.slash(admin, "index", [{"name": "refresh", "type": 1, "options": []}])
        cb = await env.fake.wait_for(_callback(payload), timeout=10)
    text = cb.json["data"]["content"]
    assert "already running in another process" in text and f"pid {os.getpid()}" in text
    assert env.moderation.refresh_task is None or env.moderation.refresh_task.done()


async def test_the_moderator_role_counts_only_in_its_own_guild(env: BotEnv):
    """A member of another guild whose role list holds the moderator role's id is refused there."""
    fake = env.fake
    other_guild = fake.snowflake()
    guild = fake.guild_payload()
    guild.update(id=str(other_guild), name="Another guild", members=[fake.member_payload(fake.bot_user)],
                 roles=[{**guild["roles"][0], "id": str(other_guild)}],
                 channels=[{**c, "id": str(fake.snowflake()), "guild_id": str(other_guild)} for c in guild["channels"][:1]])
    await fake.dispatch("GUILD_CREATE", guild)
    deadline = time.monotonic() + 30
    while env.bot.get_guild(other_guild) is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)

    intruder = env.user(roles=[fake.moderator_role_id])  # the id, but in the wrong guild
    payload = fake._interaction(intruder, {"id": str(fake._command_id("index")), "name": "index", "type": 1,
                                           "options": [{"name": "status", "type": 1, "options": []}]})
    channel_id = guild["channels"][0]["id"]
    payload.update(guild_id=str(other_guild), channel_id=channel_id,
                   authorizing_integration_owners={"0": str(other_guild)})
    payload["channel"] = {**payload["channel"], "id": channel_id, "guild_id": str(other_guild)}
    await fake.dispatch("INTERACTION_CREATE", payload)
    cb = await fake.wait_for(_callback(payload), timeout=10)
    assert "Only moderators" in cb.json["data"]["content"] and cb.json["data"]["flags"] & EPHEMERAL_FLAG

    # The same role id in the guild that owns the role still works.
    member = env.user(roles=[fake.moderator_role_id])
    payload = await fake.slash(member, "index", [{"name": "status", "type": 1, "options": []}])
    cb = await fake.wait_for(_callback(payload), timeout=10)
    assert "Only moderators" not in str(cb.json)
