"""The Discord client: one process holding the index, the model and the liveness cache.

``EchoVidsBot.setup_hook`` runs once, after the REST login and before the gateway connects, so the
heavy loading (TensorFlow, VGGish, the ScaNN index, resampy's compiled kernels) happens before the
first event can arrive, and never on the event loop itself: it runs in the job pool's threads,
through the engine's one warm-up (``Engine.warm_up(audio=True)``, which also applies the one
TensorFlow thread policy for ``ECHOVIDS_WORKERS`` concurrent searches).

Works without the privileged message-content intent: slash commands, the context menu, DMs and
messages that mention the bot all carry their attachments without it. The intent is requested only
when ``ECHOVIDS_LISTEN_CHANNELS`` is set (and must then be enabled in the developer portal).

Promises kept here for every front-end path (the cogs only describe *what* to send):

* **No pings.** The client's ``allowed_mentions`` is "none", whatever a caller passes, and no code
  sends with its own: the bot never needs to ping, and echoed input must not make it.
* **Graceful stop.** :meth:`EchoVidsBot.graceful_stop` (what SIGTERM/SIGINT call) closes admission,
  lets every search in flight (:meth:`EchoVidsBot.track`) finish within ``stop_grace_s``, answers
  the rest with one line, then closes.
* **One error handler for application commands** (:meth:`EchoVidsBot.on_app_command_error`, the
  tree's ``on_error``): a command that raises gets the one line ``bot.render.error_line`` words
  for that error, ephemerally (:meth:`EchoVidsBot.tell`), and the failure is logged by one policy
  (:func:`log_failure`); the cogs raise rather than answer failures themselves.
* **Replies outlast outages** (:attr:`EchoVidsBot.replies`, see ``bot.delivery``) and **downloads
  come from Discord only, within bounded time** (:attr:`EchoVidsBot.download_timeouts`, see
  ``bot.attachments``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.attachments import DownloadTimeouts, allowed_hosts, fetch_attachment
from bot.delivery import DeliveryFailed, ReplyRetry
from bot.jobs import JobPool, LoopLagMonitor
from bot.render import error_line
from core.config import Settings
from core.errors import EchoVidsError, IndexMissingError
from core.results import Query, SearchResponse

if TYPE_CHECKING:  # the engine's modules load TensorFlow-side code: imported when first needed
    from core.engine import Engine, LivenessChecker

log = logging.getLogger("echovids.bot")

#: Extensions loaded by setup_hook; each is a module with ``async def setup(bot)``.
COGS = ("bot.cogs.soundalike", "bot.cogs.moderation", "bot.cogs.help")

#: How long in-flight searches may take to finish once the bot is told to stop.
DEFAULT_STOP_GRACE_S = 10.0

_DEFAULT_API_BASE = "https://discord.com/api/v10"
_DEFAULT_GATEWAY = "wss://gateway.discord.gg/"


def log_failure(err: BaseException, what: str = "search") -> None:
    """The one logging policy for a failed request: an expected refusal (:class:`EchoVidsError`)
    is INFO, Discord refusing a reply is WARNING, anything else is a bug and logged with its
    traceback."""
    if isinstance(err, (EchoVidsError, app_commands.CheckFailure)):
        log.info("%s refused: %s", what, err)
    elif isinstance(err, discord.HTTPException):
        log.warning("%s: Discord refused a reply: %s", what, err)
    else:
        log.error("%s failed", what, exc_info=err)


class EchoVidsBot(commands.Bot):
    """The bot. ``engine``/``liveness`` may be injected (tests, benchmarks); else built in setup_hook."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        liveness: LivenessChecker | None = None,
        checkpoint: str | os.PathLike | None = None,
        pca_params: str | os.PathLike | None = None,
        cooldown_s: float = 3.0,
        max_queued: int | None = None,
        sync_commands: bool = True,
        warm_up: bool = True,
        refresh_options: dict[str, Any] | None = None,
        stop_grace_s: float = DEFAULT_STOP_GRACE_S,
        grace_wait: Callable[[float], Awaitable[object]] = asyncio.sleep,
        replies: ReplyRetry | None = None,
        download_timeouts: DownloadTimeouts | None = None,
        **client_options: Any,
    ):
        intents = discord.Intents.default()
        # Privileged: only needed to read voice messages in listen channels (no mention).
        intents.message_content = bool(settings.listen_channels)
        intents.presences = False
        intents.members = False
        # Never ping anyone, whatever the caller asked: nothing the bot says needs a ping, and
        # user input is echoed in some lines.
        client_options["allowed_mentions"] = discord.AllowedMentions.none()
        client_options.setdefault("max_messages", 200)
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None,
                         **client_options)
        self.settings: Settings = settings
        self.engine: Engine | None = engine
        self.liveness: LivenessChecker | None = liveness
        self.checkpoint = checkpoint
        self.pca_params = pca_params
        self.sync_commands = sync_commands
        self.warm_up = warm_up
        #: The refresh child's politeness options (``rate_per_s``, ``concurrency``, ``timeout_s``; e.g. for a local fake).
        self.refresh_options: dict[str, Any] = dict(refresh_options or {})
        self.jobs: JobPool = JobPool(settings.workers, max_queued=max_queued, cooldown_s=cooldown_s)
        self.lag: LoopLagMonitor = LoopLagMonitor()
        self.session: aiohttp.ClientSession | None = None
        self.engine_error: str | None = None
        self._engine_lock = asyncio.Lock()
        self._saved_endpoints: tuple[str, yarl.URL] | None = None
        self._owns_liveness = liveness is None
        self._closing = False
        #: Seconds in-flight searches get to finish on stop; ``grace_wait(seconds)`` is how that
        #: time passes (injected by tests, which end the grace period with an event).
        self.stop_grace_s: float = stop_grace_s
        self.grace_wait: Callable[[float], Awaitable[object]] = grace_wait
        self.replies: ReplyRetry = replies or ReplyRetry()
        self.download_timeouts: DownloadTimeouts = download_timeouts or DownloadTimeouts()
        self.attachment_hosts: frozenset[str] = allowed_hosts(settings)
        self.tree.error(self.on_app_command_error)
        #: Set once a stop begins (admission is closed from then on).
        self.stopping = asyncio.Event()
        self._inflight: dict[asyncio.Task[Any], Callable[[], Awaitable[Any]]] = {}
        self._stop_task: asyncio.Task[None] | None = None

    # -- endpoints (applied before login, which already calls the REST API) -----------------
    def apply_endpoints(self) -> None:
        """Point discord.py at ``DISCORD_API_BASE``/``DISCORD_GATEWAY_URL`` (a proxy or a test fake).

        Both are class attributes in discord.py, so the previous values are kept and restored on close.
        """
        if self._saved_endpoints is None:
            self._saved_endpoints = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        base = self.settings.discord_api_base.rstrip("/")
        if base != _DEFAULT_API_BASE or discord.http.Route.BASE != _DEFAULT_API_BASE:
            discord.http.Route.BASE = base
        gateway = self.settings.discord_gateway_url
        if gateway != _DEFAULT_GATEWAY or str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) != _DEFAULT_GATEWAY:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)

    def restore_endpoints(self) -> None:
        if self._saved_endpoints is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved_endpoints
            self._saved_endpoints = None

    async def login(self, token: str) -> None:
        self.apply_endpoints()
        await super().login(token)

    # -- start-up --------------------------------------------------------------------------
    async def setup_hook(self) -> None:
        loop = asyncio.get_running_loop()
        self.lag.start()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60, sock_connect=10))
        if self.engine is None:
            if self.liveness is None:
                from core.engine import live_checker

                self.liveness = live_checker(self.settings)
            await self.load_engine()
        if self.warm_up:
            await loop.run_in_executor(self.jobs.executor, self._warm_up)
        for name in COGS:
            await self.load_extension(name)
        if self.sync_commands:
            synced = await self.tree.sync()
            log.info("synced %d application commands", len(synced))
        if self.warm_up:
            settle_heap()

    async def load_engine(self) -> Engine:
        """Create the engine and load the current build now (not on the first query).

        A missing index is reported, not fatal: the engine re-reads the current-build pointer on
        every query, so a build made later (CLI or ``/index refresh``) is picked up without a restart.
        """
        async with self._engine_lock:
            loop = asyncio.get_running_loop()
            if self.engine is None:
                self.engine = await loop.run_in_executor(self.jobs.executor, self._make_engine)
            try:
                await loop.run_in_executor(self.jobs.executor, self.engine.reload)
                self.engine_error = None
                log.info("index loaded: %s vectors", getattr(self.engine, "index_size", "?"))
            except EchoVidsError as err:
                self.engine_error = str(err)
                log.warning("index not loaded: %s", err)
            return self.engine

    def _make_engine(self) -> Engine:
        from core.engine import Engine

        return Engine(self.settings, checkpoint=self.checkpoint, pca_params=self.pca_params,
                      liveness=self.liveness)

    def _warm_up(self) -> None:
        """Pay one-off costs now, not on a user's query: the engine's one warm-up, never fatal."""
        engine = self.engine
        if engine is None:
            return
        try:
            engine.warm_up(audio=True)
        except EchoVidsError as err:
            log.warning("warm-up incomplete: %s", err)
        except Exception:
            log.exception("warm-up failed")

    # -- the one search path every trigger uses --------------------------------------------
    async def answer(self, query: Query) -> SearchResponse:
        """Search off the event loop, in the job pool's threads.

        The engine re-reads the current-build pointer on every search, so a build swapped in by a
        refresh (here or from the CLI in another process) is used without a restart.
        """
        engine = self.engine or await self.load_engine()
        if engine is None:  # pragma: no cover - load_engine always creates one
            raise IndexMissingError(self.engine_error or "no index is loaded")
        return await engine.answer(query, executor=self.jobs.executor)

    async def download(self, attachment: discord.Attachment) -> bytes:
        """Fetch an attachment now (its signed URL expires): from Discord's CDN only, never more
        than the size limit, within a time budget derived from its size (``bot.attachments``)."""
        assert self.session is not None
        return await fetch_attachment(self.session, attachment.url, limit=self.settings.max_attachment_bytes,
                                      declared_size=attachment.size, hosts=self.attachment_hosts,
                                      timeouts=self.download_timeouts)

    # -- replies and the one error handler ---------------------------------------------------
    async def deliver(self, attempt: Callable[[], Awaitable[Any]], what: str, *, retry: bool = True) -> None:
        """Send one reply through outages (``retry``), or try once (while stopping); log, never
        raise, on failure: the caller has nothing better to say."""
        try:
            if retry:
                await self.replies.send(attempt, what)
            else:
                await attempt()
        except DeliveryFailed:
            pass  # logged at WARNING by the delivery
        except discord.HTTPException as err:
            log.warning("sending %s failed: %s", what, err)

    async def tell(self, interaction: discord.Interaction, text: str, *, retry: bool = True) -> None:
        """One line only the asker sees. Before any response it is the ephemeral response; after a
        (public) defer, the "thinking…" message is deleted first, so the follow-up is a new
        ephemeral message rather than an edit of the public one."""
        if not interaction.response.is_done():
            await self.deliver(lambda: interaction.response.send_message(text, ephemeral=True), "a reply", retry=retry)
            return
        try:
            await interaction.delete_original_response()
        except discord.HTTPException as err:
            log.info("could not remove the deferred message (%s); replying in it", err)
        await self.deliver(lambda: interaction.followup.send(text, ephemeral=True), "an error reply", retry=retry)

    async def on_app_command_error(self, interaction: discord.Interaction,
                                   error: app_commands.AppCommandError) -> None:
        """The one error handler for application commands (the tree's ``on_error``): log by the
        one policy, answer with the one line for that error, ephemerally — never a command left
        "thinking…"."""
        err = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        log_failure(err, getattr(interaction.command, "qualified_name", None) or "command")
        await self.tell(interaction, error_line(err, self.settings))

    # -- in-flight searches and the graceful stop ---------------------------------------------
    async def track(self, work: Awaitable[None], apologise: Callable[[], Awaitable[Any]]) -> None:
        """Run one admitted request's work as a task the stop can wait for; if the grace period
        ends first, the stop cancels it and awaits ``apologise()`` (the one "restarting" line)."""
        task = asyncio.ensure_future(work)
        self._inflight[task] = apologise
        try:
            await task
        except asyncio.CancelledError:
            if task.cancelled() and self._stop_task is not None:
                return  # cut short by the stop, which answers the user
            raise
        finally:
            self._inflight.pop(task, None)

    def request_stop(self, why: str = "stop requested") -> asyncio.Task[None]:
        """Begin a graceful stop (idempotent): what the SIGTERM/SIGINT handlers call."""
        if self._stop_task is None:
            log.info("%s: finishing %d search(es) in flight (up to %g s), then shutting down",
                     why, len(self._inflight), self.stop_grace_s)
            self._stop_task = asyncio.get_running_loop().create_task(self.graceful_stop(),
                                                                     name="echovids-graceful-stop")
        return self._stop_task

    async def graceful_stop(self) -> None:
        """Stop admitting, let in-flight searches finish within the grace period, answer the rest
        with one line each, then close."""
        self.jobs.stop_admitting()
        self.stopping.set()
        pending = set(self._inflight)
        if pending:
            everyone = asyncio.ensure_future(asyncio.wait(pending))
            grace = asyncio.ensure_future(self.grace_wait(self.stop_grace_s))
            await asyncio.wait({everyone, grace}, return_when=asyncio.FIRST_COMPLETED)
            for waiter in (everyone, grace):
                waiter.cancel()
        late = {task: self._inflight[task] for task in pending if not task.done() and task in self._inflight}
        if late:
            log.warning("grace period over: %d search(es) unfinished, telling their users to resend", len(late))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            results = await asyncio.gather(*(apologise() for apologise in late.values()), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    log.warning("could not tell a user about the restart: %s", result)
        await self.close()

    # -- events ----------------------------------------------------------------------------
    async def on_message(self, message: discord.Message, /) -> None:
        # No prefix commands: triggers are handled by the soundalike cog's listener.
        return

    async def on_ready(self) -> None:
        log.info("logged in as %s (%s) in %d guild(s)", self.user, getattr(self.user, "id", "?"), len(self.guilds))

    # -- shutdown --------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closing:
            return await super().close()
        self._closing = True
        try:
            await super().close()
        finally:
            await self.lag.stop()
            if self.session is not None:
                await self.session.close()
            if self.liveness is not None and self._owns_liveness:
                try:
                    await self.liveness.close()
                except Exception:
                    log.exception("closing the liveness checker failed")
            self.jobs.shutdown()
            self.restore_endpoints()
            gc.unfreeze()  # an embedding process (tests) gets ordinary collection back


def settle_heap() -> None:
    """Exempt everything loaded so far from the cyclic garbage collector's full passes.

    After warm-up the process holds ~330 k tracked objects (TensorFlow, discord.py, ScaNN), all
    alive until exit, and every automatic full collection walks them on whichever thread triggered
    it — often the event loop: 250–290 ms here, the bot's one loop stall of that size in the refresh
    soak (bench/refresh_soak.py), with and without a refresh running. ``gc.freeze`` moves them to
    CPython's permanent generation, so later full passes only see what was allocated since; one
    collection first, so no garbage is frozen with them.
    """
    gc.collect()
    gc.freeze()
    log.debug("heap settled: %d objects frozen", gc.get_freeze_count())


class ShardedEchoVidsBot(EchoVidsBot, commands.AutoShardedBot):
    """The same bot over the gateway shards in ``ECHOVIDS_SHARD_COUNT``/``ECHOVIDS_SHARD_IDS``, so N
    processes (on N machines, sharing one Milvus index) split the guilds between them."""


def create_bot(settings: Settings, **options: Any) -> EchoVidsBot:
    """The bot class the settings ask for: one connection, or ``AutoShardedBot`` over given shards."""
    if settings.shard_count is None:
        return EchoVidsBot(settings, **options)
    options.setdefault("shard_count", settings.shard_count)
    if settings.shard_ids is not None:
        options.setdefault("shard_ids", list(settings.shard_ids))
    return ShardedEchoVidsBot(settings, **options)
