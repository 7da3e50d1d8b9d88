"""Graceful stop: what users in flight get when the operator stops the bot (``docker stop`` sends
SIGTERM). The real client, the real engine and a real signal to this process, through the same
handler ``echovids bot`` installs; the grace period is injected as an event, so nothing here waits
on the clock and the test is as fast on a loaded machine as on an idle one.

Its own module (and bot): the scenario ends with the bot closed.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import pytest_asyncio

from bot.render import RESTARTING_LINE
from bot.terminal.run_bot import install_signal_handlers
from tests.bot_harness import running_bot
from tests.fakes.discord_server import EPHEMERAL_FLAG, FakeDiscord
from tests.media import make_voice_note

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stoppable(small_index_dir, vggish_checkpoint, pca_params_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stop")
    note = make_voice_note(tmp / "note.ogg", seconds=3.0, kind="speech")
    async with running_bot(tmp, small_index_dir, vggish_checkpoint, pca_params_path) as running:
        yield running.discord, running.bot, running.task, note


def _dm_post(fake: FakeDiscord, user):
    path = f"/channels/{fake.dm_channel_id(user)}/messages"
    return lambda r: r.method == "POST" and r.path == path and r.status == 200


async def test_sigterm_finishes_in_flight_searches_and_answers_the_rest(stoppable):
    fake, bot, task, note = stoppable
    grace_over = asyncio.Event()
    asked: list[float] = []

    async def grace(seconds: float) -> None:  # the grace period ends when the test says so
        asked.append(seconds)
        await grace_over.wait()

    bot.grace_wait = grace
    finisher, slasher, dmer, late = (fake.add_member(n) for n in ("finisher", "slasher", "dmer", "late"))
    # Three searches in flight, each held at its download by the CDN until the test lets it go.
    a = fake.add_attachment(note, voice=True, duration_secs=3.0, stall=True)
    b = fake.add_attachment(note, filename="clip.ogg", stall=True)
    c = fake.add_attachment(note, voice=True, duration_secs=3.0, stall=True)
    await fake.send_message(finisher, guild=False, attachments=[a], voice=True)
    slash = await fake.slash(slasher, "soundalike", [{"name": "audio", "type": 11, "value": b["id"]}],
                             attachments=[b])
    await fake.send_message(dmer, guild=False, attachments=[c], voice=True)
    for att in (a, b, c):
        await fake.wait_for(lambda r, att=att: r.is_attachment_fetch and att["id"] in r.path, timeout=60)
    deferred = await fake.wait_for(lambda r: r.path.endswith(f"{slash['token']}/callback"), timeout=30)
    assert deferred.json["type"] == 5

    remove = install_signal_handlers(bot)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(bot.stopping.wait(), 30)

        # Admission is closed: a new search is told at once, ephemerally.
        newcomer = await fake.slash(late, "soundalike", [{"name": "text", "type": 3, "value": "dog barking"}])
        cb = await fake.wait_for(lambda r: r.path.endswith(f"{newcomer['token']}/callback"), timeout=30)
        assert cb.json["type"] == 4 and cb.json["data"]["flags"] & EPHEMERAL_FLAG
        assert cb.json["data"]["content"] == RESTARTING_LINE

        # A search that can finish within the grace period finishes, with its real answer.
        fake.release(a)
        answered = await fake.wait_for(_dm_post(fake, finisher), timeout=120)
        assert "https://youtu.be/" in answered.embeds[0]["description"]
        assert not task.done()

        # The grace period ends: the rest get one line each, the deferred slash command included.
        grace_over.set()
        follow = await fake.wait_for(lambda r: r.method == "POST" and r.path.startswith("/webhooks/")
                                     and slash["token"] in r.path and r.status == 200, timeout=60)
        assert follow.content == RESTARTING_LINE and follow.flags & EPHEMERAL_FLAG
        told = await fake.wait_for(_dm_post(fake, dmer), timeout=60)
        assert told.content == RESTARTING_LINE
        await asyncio.wait_for(task, 60)  # and then the bot closes
    finally:
        remove()
    assert asked == [10.0]  # the default grace period
    assert bot.is_closed()
    # One answer each, no more: the finisher got no apology after its result.
    assert [r for r in fake.requests if _dm_post(fake, finisher)(r)] == [answered]
    assert not [r for r in fake.requests if _dm_post(fake, late)(r)]
