"""Every way to ask for sound-alikes: ``/soundalike``, the "Find sound-alikes" menu, voice notes.

All triggers go through the same steps, in this order, because each protects the next:

1. **Metadata check** (type, size, duration of the attachment as Discord describes it, and that its
   URL is on Discord's CDN) — answered at once and, for interactions, ephemerally: no download, no
   queue place, no defer.
2. **Admission** to the job pool (per-user cooldown, global queue cap, download bound; closed while
   the bot stops) — refusals are immediate too.
3. **Defer** (interactions must be answered within 3 s) and **download at once** (signed attachment
   URLs expire) under the download bound, not holding a CPU-queue place, refusing anything that
   streams past the size limit or takes too long.
4. **Search** in a worker slot, off the event loop; the reply is the one embed from ``bot.render``.
   A failure of an interaction is raised to the bot's one error handler for application commands
   (``EchoVidsBot.on_app_command_error``: the line from ``bot.render.error_line``, ephemeral); a
   failure for a message gets the same line as a reply.

Steps 3–4 run as a tracked request (:meth:`EchoVidsBot.track`) so a graceful stop can wait for them
or answer them with one line; every reply goes through the bot's retrying delivery.

Without the message-content intent, Discord still delivers attachments of DMs and of messages
that mention the bot; in listen channels (intent required) only voice messages are answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.attachments import AttachmentHostError, check_host
from bot.client import log_failure
from bot.delivery import DeliveryFailed, is_transient
from bot.jobs import Refused, Ticket
from bot.formatting import clock
from bot.render import RESTARTING_LINE, echo, error_line, refusal_line, render_response
from core.results import Query, SearchResponse

if TYPE_CHECKING:
    from bot.client import EchoVidsBot

log = logging.getLogger("echovids.bot.soundalike")

CONTEXT_MENU_NAME = "Find sound-alikes"
MEDIA_EXTENSIONS = frozenset({
    ".ogg", ".oga", ".opus", ".mp3", ".wav", ".flac", ".m4a", ".aac", ".webm", ".mp4", ".mov", ".mkv",
    ".wma", ".aif", ".aiff", ".amr", ".3gp", ".caf", ".m4v", ".avi",
})
MAX_TEXT = 200


def is_media(attachment: discord.Attachment) -> bool:
    """Audio or video by Discord's content type, or by extension when the type is missing/generic."""
    if attachment.is_voice_message():
        return True
    ctype = (attachment.content_type or "").split(";")[0].strip().lower()
    if ctype.startswith(("audio/", "video/")) or ctype in ("application/ogg",):
        return True
    if ctype and ctype != "application/octet-stream":
        return False
    return PurePosixPath(attachment.filename.lower()).suffix in MEDIA_EXTENSIONS


def precheck(attachment: discord.Attachment, settings, hosts: frozenset[str] | None = None) -> str | None:
    """The error visible from metadata alone, or None. Answered before any download."""
    if not is_media(attachment):
        return (f"`{echo(attachment.filename, 80)}` isn't audio or video. "
                "Send a voice message or an audio/video file.")
    if hosts is not None:
        try:
            check_host(attachment.url, hosts)
        except AttachmentHostError as err:
            return error_line(err, settings)
    if attachment.size > settings.max_attachment_bytes:
        return f"That file is too large: the limit is {settings.max_attachment_mb:g} MB."
    duration = attachment.duration
    if duration is not None and duration > settings.max_audio_seconds + 0.5:
        return f"That recording is too long: the limit is {clock(settings.max_audio_seconds)}. Send a shorter clip."
    return None


def pick_attachment(message: discord.Message) -> discord.Attachment | None:
    """The message's voice note, else its first audio/video attachment."""
    for att in message.attachments:
        if att.is_voice_message():
            return att
    for att in message.attachments:
        if is_media(att):
            return att
    return None


def _described(attachment: discord.Attachment) -> str:
    if attachment.is_voice_message():
        return "your voice message"
    name = discord.utils.escape_markdown(attachment.filename)
    return f"`{name[:60]}`"


class Soundalike(commands.Cog):
    """The searching half of the bot."""

    def __init__(self, bot: EchoVidsBot):
        self.bot = bot
        self.menu = app_commands.ContextMenu(
            name=CONTEXT_MENU_NAME, callback=self.find_from_message,
            allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True, private_channel=True))
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    # -- /soundalike ----------------------------------------------------------------------
    @app_commands.command(name="soundalike", description="Find YouTube moments that sound like your audio, a video or words")
    @app_commands.describe(
        audio="a voice note or an audio/video file",
        link="a YouTube link of an indexed video (t= picks the moment)",
        text='a description, e.g. "dog barking"',
        results="how many results (1-10)",
    )
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
    async def soundalike(
        self,
        interaction: discord.Interaction,
        audio: discord.Attachment | None = None,
        link: str | None = None,
        text: str | None = None,
        results: app_commands.Range[int, 1, 10] | None = None,
    ) -> None:
        given = [x for x in (audio, link, text) if x]
        if len(given) != 1:
            await interaction.response.send_message(
                "Give exactly one of `audio`, `link` or `text`.", ephemeral=True)
            return
        top = int(results or self.bot.settings.results)
        if audio is not None:
            await self._interaction_audio(interaction, audio, top)
            return
        if link is not None:
            link = link.strip().strip("<>")
            query = Query(kind="like", like=link, top=top)
            searched = f"<{link[:200]}>"
        else:
            assert text is not None
            text = " ".join(text.split())
            if len(text) > MAX_TEXT:
                await interaction.response.send_message(
                    f"Please keep the description under {MAX_TEXT} characters.", ephemeral=True)
                return
            query = Query(kind="text", text=text, top=top)
            searched = f'"{discord.utils.escape_markdown(text)}"'
        await self._interaction_search(interaction, query=query, searched=searched)

    # -- "Find sound-alikes" ----------------------------------------------------------------
    async def find_from_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        attachment = pick_attachment(message)
        if attachment is None:
            await interaction.response.send_message(
                "That message has no voice note or audio/video attachment.", ephemeral=True)
            return
        await self._interaction_audio(interaction, attachment, self.bot.settings.results)

    # -- interactions: shared path ------------------------------------------------------------
    async def _interaction_audio(self, interaction: discord.Interaction, attachment: discord.Attachment,
                                 top: int) -> None:
        problem = precheck(attachment, self.bot.settings, self.bot.attachment_hosts)
        if problem:
            await self.bot.tell(interaction, problem)
            return
        await self._interaction_search(interaction, attachment=attachment, top=top,
                                       searched=_described(attachment))

    async def _interaction_search(self, interaction: discord.Interaction, *, query: Query | None = None,
                                  attachment: discord.Attachment | None = None, top: int = 5,
                                  searched: str) -> None:
        started = time.perf_counter()
        try:
            ticket = self.bot.jobs.admit(interaction.user.id, download=attachment is not None)
        except Refused as refused:
            await self.bot.tell(interaction, refusal_line(refused.reason, refused.retry_after))
            return
        await self.bot.track(
            self._interaction_work(interaction, ticket, query=query, attachment=attachment, top=top,
                                   searched=searched, started=started),
            apologise=lambda: self.bot.tell(interaction, RESTARTING_LINE, retry=False))

    async def _interaction_work(self, interaction: discord.Interaction, ticket: Ticket, *, query: Query | None,
                                attachment: discord.Attachment | None, top: int, searched: str,
                                started: float) -> None:
        try:
            await interaction.response.defer(thinking=True)
        except Exception:
            self.bot.jobs.cancel(ticket)
            raise
        # Any failure from here on is raised to the bot's one error handler, which answers it.
        response = await self._search(ticket, query=query, attachment=attachment, top=top)
        response.elapsed_s = max(response.elapsed_s, time.perf_counter() - started)
        embed = render_response(response, searched=searched)
        try:
            await self.bot.replies.send(lambda: interaction.followup.send(embed=embed), "a search result")
        except DeliveryFailed:
            return  # logged; Discord is down for longer than any reply can wait

    async def _search(self, ticket: Ticket, *, query: Query | None, attachment: discord.Attachment | None,
                      top: int) -> SearchResponse:
        try:
            if attachment is not None:
                # Now (the URL expires), under the download bound: no CPU-queue place is held yet.
                async with self.bot.jobs.downloading(ticket):
                    data = await self.bot.download(attachment)
                query = Query(kind="audio", audio=data, top=top)
            assert query is not None
            return await self.bot.jobs.run(ticket, lambda: self.bot.answer(query))
        finally:
            self.bot.jobs.cancel(ticket)  # no-op once run() has taken it

    # -- messages: DMs, mentions, listen channels -----------------------------------------
    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or self.bot.user is None or message.author.id == self.bot.user.id:
            return
        in_dm = message.guild is None
        mentioned = self.bot.user.mentioned_in(message) and not message.mention_everyone
        listening = (not in_dm and message.channel.id in self.bot.settings.listen_channels
                     and message.flags.voice)
        if not (in_dm or mentioned or listening):
            return
        attachment = pick_attachment(message)
        if attachment is None:
            if message.attachments:
                await self._reply(message, precheck(message.attachments[0], self.bot.settings)
                                  or "I couldn't find audio in that message.")
            elif in_dm or mentioned:
                await self._reply(message, "Send me a voice message or an audio/video file (or use `/soundalike`), "
                                           "and I'll find YouTube moments that sound like it. `/help` explains more.")
            return
        problem = precheck(attachment, self.bot.settings, self.bot.attachment_hosts)
        if problem:
            await self._reply(message, problem)
            return
        started = time.perf_counter()
        try:
            ticket = self.bot.jobs.admit(message.author.id, download=True)
        except Refused as refused:
            await self._reply(message, refusal_line(refused.reason, refused.retry_after))
            return
        await self.bot.track(self._message_work(message, ticket, attachment, started),
                             apologise=lambda: self._reply(message, RESTARTING_LINE, retry=False))

    async def _message_work(self, message: discord.Message, ticket: Ticket, attachment: discord.Attachment,
                            started: float) -> None:
        typing = asyncio.create_task(self._typing(message.channel))
        try:
            response = await self._search(ticket, query=None, attachment=attachment, top=self.bot.settings.results)
            response.elapsed_s = max(response.elapsed_s, time.perf_counter() - started)
            embed = render_response(response, searched=_described(attachment))
        except Exception as err:
            log_failure(err)
            await self._reply(message, error_line(err, self.bot.settings))
            return
        finally:
            typing.cancel()
        await self._reply(message, embed=embed)

    @staticmethod
    async def _typing(channel: discord.abc.Messageable) -> None:
        """Best-effort "is typing…": never delays or breaks the reply (one call lasts ~10 s)."""
        try:
            await channel.typing()
        except Exception as err:
            log.debug("typing indicator failed: %s", err)

    async def _reply(self, message: discord.Message, content: str | None = None, *,
                     embed: discord.Embed | None = None, retry: bool = True) -> None:
        async def attempt() -> None:
            try:
                await message.reply(content=content, embed=embed, mention_author=False)
            except discord.HTTPException as err:
                if is_transient(err):
                    raise  # an outage: the delivery tries again later
                # The message may be gone or replies not allowed: fall back to a plain send.
                log.info("reply failed (%s); sending without reference", err)
                await message.channel.send(content=content, embed=embed)

        await self.bot.deliver(attempt, "a reply", retry=retry)


async def setup(bot: EchoVidsBot) -> None:
    await bot.add_cog(Soundalike(bot))
