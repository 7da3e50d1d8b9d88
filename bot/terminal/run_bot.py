"""``echovids bot``: run the Discord bot until Ctrl-C or SIGTERM.

Shutdown is graceful on both signals (the Docker image gets SIGTERM, and ``docker stop`` waits
10 s before SIGKILL): admission closes at once, searches in flight get the grace period
(``EchoVidsBot.stop_grace_s``, 10 s) to finish and the rest are told "I'm restarting; please send
it again in a minute."; then the gateway, HTTP sessions and the liveness cache are closed and the
exit status is 0. A second signal during that wait closes at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from core.config import Settings
from core.errors import ConfigError, EchoVidsError


class BotLoginError(EchoVidsError):
    """Discord refused the token or the requested intents."""


def _configure_logging() -> None:
    """The operator's log on stderr: Echo-Vids' lines from INFO and discord.py's warnings (gateway
    trouble is the operator's business); other libraries' records go to the debug log (``bot.quiet``)."""
    from bot.quiet import route_logging

    route_logging(logging.INFO, "%(asctime)s %(levelname)-7s %(name)s: %(message)s", own=("echovids", "discord"))
    logging.getLogger("discord").setLevel(logging.WARNING)
    logging.getLogger("discord.client").setLevel(logging.ERROR)  # "PyNaCl is not installed": no voice needed


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install_signal_handlers(bot: Any) -> Callable[[], None]:
    """SIGTERM/SIGINT begin the bot's graceful stop (a second one closes at once). Returns a
    function that removes the handlers. The tests install exactly this and send a real SIGTERM."""
    loop = asyncio.get_running_loop()
    log = logging.getLogger("echovids.bot")
    installed: list[int] = []

    def on_signal(sig: int) -> None:
        name = signal.Signals(sig).name
        if bot.stopping.is_set():
            log.info("%s received again: closing now", name)
            loop.create_task(bot.close())
            return
        bot.request_stop(f"{name} received")

    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix or not main thread
            pass

    def remove() -> None:
        for sig in installed:
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass

    return remove


async def serve(settings: Settings, **bot_options: Any) -> None:
    """Start the bot and return when it is closed (by a signal or by ``bot.close()``)."""
    import discord

    from bot.client import create_bot

    bot = create_bot(settings, **bot_options)
    remove_handlers = install_signal_handlers(bot)
    try:
        async with bot:
            await bot.start(settings.discord_token or "")
    except discord.LoginFailure:
        raise BotLoginError("Discord rejected DISCORD_TOKEN (improper token); copy the bot token from the "
                            "Developer Portal → your application → Bot → Reset Token") from None
    except discord.PrivilegedIntentsRequired:
        raise BotLoginError("ECHOVIDS_LISTEN_CHANNELS needs the Message Content intent: enable it in the "
                            "Developer Portal → Bot → Privileged Gateway Intents, or unset ECHOVIDS_LISTEN_CHANNELS") from None
    finally:
        remove_handlers()


def run(args: Any, settings: Settings) -> int:
    if not settings.discord_token:
        raise ConfigError("DISCORD_TOKEN is not set: put your bot token in .env or the environment "
                          "(see README, \"Run the Discord bot\")")
    _configure_logging()
    asyncio.run(serve(settings))
    return 0
