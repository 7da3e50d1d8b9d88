"""``/index status`` and ``/index refresh``: keeping the index fresh from Discord.

``default_permissions(manage_guild=True)`` only hides the commands from ordinary members by
default — server admins can re-grant them to anyone — so every call is also checked here: the
member needs Manage Server (or Administrator) or the ``ECHOVIDS_MODERATOR_ROLE`` role.

A refresh re-checks liveness and rebuilds the index, which takes minutes to hours. It runs in a
child process (:mod:`bot.refresh_process`), never inside the serving process: the bot keeps
answering from the old build meanwhile, relays the child's progress into one message it edits (at
most every ``edit_interval_s``), and ends with the engine switching to the new build — or with
one ❌ line if the child fails or dies, the old build still served. One refresh at a time: the
child holds the data directory's refresh lock, which the bot probes before starting one, so a
refresh run from the CLI counts too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.formatting import age, clock, progress_line, size
from bot.refresh_process import RefreshFailed, RefreshProcess
from bot.refresh_summary import summary
from bot.render import NotModerator, error_line
from core.admin import Admin, IndexStatus
from core.progress import ProgressEvent

if TYPE_CHECKING:
    from core.admin import RefreshHolder
    from bot.client import EchoVidsBot

log = logging.getLogger("echovids.bot.moderation")

#: Interaction tokens expire after 15 minutes; after this long, progress goes to a channel message.
TOKEN_LIFETIME_S = 14 * 60


def is_moderator(interaction: discord.Interaction, moderator_role: int | None) -> bool:
    """Manage Server / Administrator in this guild, or the configured moderator role *of this guild*.

    The role counts only if it is a role of the guild the command came from and the member is that
    guild's member: a member elsewhere whose role list happens to hold the id (issue 11 #7) is not
    a moderator here.
    """
    guild = interaction.guild
    if guild is None or interaction.guild_id is None:
        return False
    perms = interaction.permissions
    if perms.manage_guild or perms.administrator:
        return True
    user = interaction.user
    if moderator_role is None or not isinstance(user, discord.Member):
        return False
    if getattr(user.guild, "id", None) != interaction.guild_id:
        return False
    role = guild.get_role(moderator_role) if isinstance(guild, discord.Guild) else None
    if role is None or role.guild.id != interaction.guild_id:
        return False
    return any(r.id == role.id for r in user.roles)


def status_embed(status: IndexStatus, last_refresh: tuple[float, Any] | None) -> discord.Embed:
    """The ``/index status`` embed, from the admin service's one status (as the CLI prints it)."""
    counts = status.counts
    embed = discord.Embed(title="Index status", colour=discord.Colour(0x3B82F6))
    fallback = status.fallback
    if fallback:
        embed.colour = discord.Colour(0xF59E0B)
        embed.add_field(name="⚠️ Fallback build", value=(
            f"The current build `{fallback['current']}` is broken ({fallback['reason']}); serving the older "
            f"build `{fallback['serving']}`. Run `/index refresh` or `echovids index build` to repair.")[:1024],
            inline=False)
    embed.add_field(name="Size", value=(
        f"{counts.get('vectors', 0):,} seconds · {counts.get('segments', 0):,} clips · "
        f"{status.videos:,} videos · {size(status.disk_bytes)} on disk"), inline=False)
    sources = status.manifest.get("sources") or {}
    lines = [f"AudioSet: `{Path(p).name}`" for p in sources.get("audioset", [])]
    lines += [f"Library: `{Path(p).name}`" for p in sources.get("library", [])]
    embed.add_field(name="Sources", value=("\n".join(lines) or "—")[:1024], inline=False)
    built = status.manifest.get("built_at")
    built_ago = "unknown"
    if built:
        try:
            when = dt.datetime.strptime(built, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
            built_ago = f"{age(time.time() - when.timestamp())} ago (<t:{int(when.timestamp())}:f>)"
        except ValueError:
            built_ago = built
    embed.add_field(name="Built", value=f"{built_ago} · build `{status.build_id}`", inline=False)
    if status.live_share is not None:
        share = f"{status.live_share:.0%} still on YouTube ({status.checked:,} of {status.videos:,} videos checked)"
    else:
        share = "not checked yet — run `/index refresh`"
    embed.add_field(name="Live share", value=share, inline=False)
    if last_refresh is not None:
        when, report = last_refresh
        text = f"{age(time.time() - when)} ago: {_outcome(report)}"
    elif status.newest_check:
        text = f"no refresh from this bot yet; newest liveness check {age(time.time() - status.newest_check)} ago"
    else:
        text = "never"
    embed.add_field(name="Last refresh", value=text[:1024], inline=False)
    return embed


def _outcome(report: Any) -> str:
    """A finished refresh's summary, or the one line for why it failed."""
    if isinstance(report, (RefreshFailed, OSError)):
        return f"failed: {report}"
    if isinstance(report, BaseException):
        return f"failed: {error_line(report)}"
    return summary(report)


def _progress_text(event: ProgressEvent | None, started: float, stage_started: float) -> str:
    head = f"🔄 Index refresh running ({clock(time.monotonic() - started)})"
    if event is None:
        return head + " — starting…"
    if event.stage == "done":
        # The child's build is finished but the refresh is not until the bot has switched to it:
        # only the final ✅ message may say "done".
        return f"{head}\nnew build ready{f' ({event.detail})' if event.detail else ''}; switching to it…"
    return f"{head}\n{progress_line(event, time.monotonic() - stage_started)[:1500]}"


class _ProgressMessage:
    """Edits the interaction's reply; after the token's lifetime, a channel message instead."""

    def __init__(self, interaction: discord.Interaction):
        self.interaction = interaction
        self.created = time.monotonic()
        self.fallback: discord.Message | None = None
        self.last_text = ""

    async def show(self, text: str) -> None:
        if text == self.last_text:
            return
        self.last_text = text
        try:
            if self.fallback is not None:
                await self.fallback.edit(content=text)
            elif time.monotonic() - self.created < TOKEN_LIFETIME_S:
                await self.interaction.edit_original_response(content=text)
            else:
                channel = self.interaction.channel
                if isinstance(channel, discord.abc.Messageable):
                    self.fallback = await channel.send(text)
        except discord.HTTPException as err:
            log.info("progress edit failed: %s", err)


#: Seconds the refresh command waits for "who holds the refresh lock" before answering anyway.
HOLDER_PROBE_S = 2.0


def _holder_text(holder: RefreshHolder) -> str:
    """" (pid 123)", " (pid 123 on host-b)" for a holder seen through Milvus, or "" when unknown."""
    if not holder.pid:
        return f" (on {holder.host})" if holder.host else ""
    return f" (pid {holder.pid} on {holder.host})" if holder.host else f" (pid {holder.pid})"


class Moderation(commands.Cog):
    """Index upkeep for moderators."""

    index = app_commands.Group(
        name="index", description="Index upkeep (moderators)", guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, bot: EchoVidsBot, *, edit_interval_s: float = 2.0):
        self.bot = bot
        self.edit_interval_s = edit_interval_s
        self.refresh_task: asyncio.Task[None] | None = None
        self.refresh_process: RefreshProcess | None = None
        self.refresh_started: float = 0.0
        self.refresh_by: str = ""
        self.last_refresh: tuple[float, Any] | None = None
        self.admin = Admin(bot.settings)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        if not is_moderator(interaction, self.bot.settings.moderator_role):
            raise NotModerator("moderators only")
        return True

    @index.command(name="status", description="Index size, sources, age, live share and last refresh")
    async def status(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        loop = asyncio.get_running_loop()
        try:
            status = await loop.run_in_executor(None, self.admin.status)
        except Exception as err:
            await interaction.followup.send(error_line(err, self.bot.settings), ephemeral=True)
            return
        embed = status_embed(status, self.last_refresh)
        if self.refresh_task is not None and not self.refresh_task.done():
            embed.set_footer(text=f"A refresh is running (started {age(time.monotonic() - self.refresh_started)} ago)")
        elif (holder := await asyncio.to_thread(self.admin.refresh_holder)) is not None:
            embed.set_footer(text=f"A refresh is running in another process{_holder_text(holder)}")
        await interaction.followup.send(embed=embed, ephemeral=True)

    @index.command(name="refresh", description="Re-check which videos are still on YouTube and rebuild without the gone ones")
    async def refresh(self, interaction: discord.Interaction) -> None:
        holder = None
        if self.refresh_task is None or self.refresh_task.done():
            # a CLI refresh, or another bot (on Milvus: on any machine). Off the loop, as it may ask
            # Milvus, and bounded: Discord wants the first answer within 3 s. No answer in time →
            # start; the refresh child takes the locks itself and reports a busy one.
            try:
                holder = await asyncio.wait_for(asyncio.to_thread(self.admin.refresh_holder), HOLDER_PROBE_S)
            except asyncio.TimeoutError:
                pass
        if self.refresh_task is not None and not self.refresh_task.done():  # also one started meanwhile
            await interaction.response.send_message(
                f"A refresh is already running (started {age(time.monotonic() - self.refresh_started)} ago "
                f"by {self.refresh_by}).", ephemeral=True)
            return
        if holder is not None:
            await interaction.response.send_message(
                f"A refresh is already running in another process{_holder_text(holder)}.", ephemeral=True)
            return
        self.refresh_started = time.monotonic()
        self.refresh_by = interaction.user.display_name
        await interaction.response.send_message(_progress_text(None, self.refresh_started, self.refresh_started))
        self.refresh_task = asyncio.create_task(self._run_refresh(_ProgressMessage(interaction)),
                                                name="echovids-index-refresh")

    async def _run_refresh(self, message: _ProgressMessage) -> None:
        latest: list[ProgressEvent | None] = [None]
        stage_started = [time.monotonic()]  # when the latest event's stage began (for rate and ETA)

        def progress(event: ProgressEvent) -> None:
            if latest[0] is None or latest[0].stage != event.stage:
                stage_started[0] = time.monotonic()
            latest[0] = event

        started = self.refresh_started
        child = RefreshProcess(self.bot.settings, self.bot.refresh_options, on_progress=progress)
        self.refresh_process = child
        work = asyncio.create_task(child.run(), name="echovids-index-refresh-child")
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=self.edit_interval_s)
                if not work.done():
                    await message.show(_progress_text(latest[0], started, stage_started[0]))
        finally:
            if not work.done():  # we are being cancelled (cog unload, bot closing): stop the child
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        took = clock(time.monotonic() - started)
        try:
            report = work.result()
        except (RefreshFailed, OSError) as err:
            log.error("index refresh failed: %s", err)
            self.last_refresh = (time.time(), err)
            await message.show(f"❌ Index refresh failed after {took}: {err}")
            return
        except Exception as err:
            log.error("index refresh failed", exc_info=err)
            self.last_refresh = (time.time(), err)
            await message.show(f"❌ Index refresh failed after {took}: {error_line(err, self.bot.settings)}")
            return
        self.last_refresh = (time.time(), report)
        switched = ""
        if getattr(report, "rebuilt", False):
            switched = await self._switch_build()
        await message.show(f"✅ Index refresh done in {took}:\n{summary(report)}\n{switched}".rstrip())

    async def _switch_build(self) -> str:
        """Make the running engine use the new build now (no restart)."""
        loop = asyncio.get_running_loop()
        engine = self.bot.engine
        try:
            if engine is None:
                engine = await self.bot.load_engine()
            else:
                await loop.run_in_executor(self.bot.jobs.executor, engine.reload)
        except Exception as err:
            log.error("switching to the new build failed", exc_info=err)
            return f"Could not switch to the new build yet: {error_line(err, self.bot.settings)}"
        seconds = getattr(engine, "index_size", None)
        return f"Replies now use the new index ({seconds:,} seconds)." if isinstance(seconds, int) else ""

    async def cog_unload(self) -> None:
        """The bot is stopping: stop the refresh child and its workers and reap them (no orphans)."""
        task = self.refresh_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.refresh_process is not None:
            await self.refresh_process.stop()


async def setup(bot: EchoVidsBot) -> None:
    await bot.add_cog(Moderation(bot))
