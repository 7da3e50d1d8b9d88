"""``echovids bot``: run the Discord bot until Ctrl-C or SIGTERM.

Shutdown is graceful on both signals (the Docker image gets SIGTERM): the gateway is closed
properly, in-flight HTTP sessions and the liveness cache are closed, and the exit status is 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from core.config import Settings
from core.errors import ConfigError, EchoVidsError


class BotLoginError(EchoVidsError):
    """Discord refused the token or the requested intents."""


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("discord").setLevel(logging.WARNING)
    logging.getLogger("discord.client").setLevel(logging.ERROR)  # "PyNaCl is not installed": no voice needed


async def serve(settings: Settings, **bot_options: Any) -> None:
    """Start the bot and return when it is closed (by a signal or by ``bot.close()``)."""
    import discord

    from bot.client import EchoVidsBot

    bot = EchoVidsBot(settings, **bot_options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, lambda s=sig: (logging.getLogger("echovids.bot").info(
                "%s received, shutting down", signal.Signals(s).name), loop.create_task(bot.close())))
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix or not main thread
            pass
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
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass


def run(args: Any, settings: Settings) -> int:
    if not settings.discord_token:
        raise ConfigError("DISCORD_TOKEN is not set: put your bot token in .env or the environment "
                          "(see README, \"Run the Discord bot\")")
    _configure_logging()
    asyncio.run(serve(settings))
    return 0
