"""Listen channels: with ECHOVIDS_LISTEN_CHANNELS set the bot asks for the message-content intent
and answers every *voice message* there, mention or not — and nothing else, nowhere else."""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.bot_harness import running_bot
from tests.fakes.discord_server import MESSAGE_CONTENT_INTENT
from tests.media import make_voice_note

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def listening(small_index_dir, vggish_checkpoint, pca_params_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("listen")
    note = make_voice_note(tmp / "note.ogg", seconds=3.0, kind="speech")
    async with running_bot(tmp, small_index_dir, vggish_checkpoint, pca_params_path,
                           lambda fake: {"ECHOVIDS_LISTEN_CHANNELS": str(fake.listen_channel_id)}) as running:
        yield running.discord, note


async def test_voice_messages_in_listen_channels_are_answered_without_mention(listening):
    fake, note = listening
    assert int(fake.identify["intents"]) & MESSAGE_CONTENT_INTENT
    user = fake.add_member("speaker")
    before = len(fake.requests)

    # Elsewhere in the guild, or not a voice message: ignored.
    await fake.send_message(user, attachments=[fake.add_attachment(note, voice=True, duration_secs=3.0)], voice=True)
    await fake.send_message(user, channel_id=fake.listen_channel_id,
                            attachments=[fake.add_attachment(note, filename="song.ogg")])
    await fake.send_message(user, channel_id=fake.listen_channel_id, content="hello")

    sent = await fake.send_message(user, channel_id=fake.listen_channel_id,
                                   attachments=[fake.add_attachment(note, voice=True, duration_secs=3.0)], voice=True)
    reply = await fake.wait_for(lambda r: r.method == "POST" and r.path.endswith("/messages") and r.status == 200,
                                timeout=120, after=before)
    assert reply.path == f"/channels/{fake.listen_channel_id}/messages"
    assert reply.json["message_reference"]["message_id"] == int(sent["id"])
    assert "https://youtu.be/" in reply.embeds[0]["description"]

    # A marker the bot does answer (a DM), sent last: events are handled in order, so once it is
    # answered every message above was handled too — no sleeping and hoping.
    await fake.send_message(user, guild=False, content="hello")
    dm = f"/channels/{fake.dm_channel_id(user)}/messages"
    marker = await fake.wait_for(lambda r: r.method == "POST" and r.path == dm, timeout=60, after=before)
    posts = [r for r in fake.requests[before:] if r.method == "POST" and r.path.endswith("/messages")]
    assert posts == [reply, marker]
