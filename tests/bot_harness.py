"""The real bot against the fake Discord and the fake oEmbed, for the test modules that each need
a bot of their own (one that listens in a channel, one that ends stopped)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.client import EchoVidsBot
from core.config import load_settings
from core.liveness import LivenessChecker
from tests.fakes.discord_server import FakeDiscord, wait_ready
from tests.fakes.oembed_server import FakeOEmbed


@dataclass
class BotEnv:
    """What a module's bot fixture hands its tests: the fakes, the running bot, its data and notes."""

    fake: FakeDiscord
    oembed: FakeOEmbed
    bot: EchoVidsBot
    data_dir: Path
    notes: dict[str, Path]
    member_prefix: str = "user"
    counter: int = 0

    def user(self, **kw):
        """A fresh guild member (a new name each call, so cooldowns never carry over)."""
        self.counter += 1
        return self.fake.add_member(f"{self.member_prefix}{self.counter}", **kw)

    @property
    def moderation(self):
        return self.bot.get_cog("Moderation")


@dataclass
class RunningBot:
    discord: FakeDiscord
    bot: EchoVidsBot
    task: asyncio.Task


@asynccontextmanager
async def running_bot(tmp: Path, index_dir: Path, checkpoint: Path, pca_params: Path,
                      extra_env: Callable[[FakeDiscord], dict[str, str]] | None = None) -> AsyncIterator[RunningBot]:
    """A started, ready bot; closed on exit unless the test already stopped it."""
    discord = await FakeDiscord().start()
    oembed = FakeOEmbed()
    env = {
        "DISCORD_API_BASE": discord.api_base, "DISCORD_GATEWAY_URL": discord.gateway_url,
        "ECHOVIDS_DATA_DIR": str(index_dir), "VGGISH_CHECKPOINT": str(checkpoint),
        "VGGISH_PCA_PARAMS": str(pca_params), "YOUTUBE_OEMBED_URL": await oembed.start(),
        **(extra_env(discord) if extra_env else {}),
    }
    settings = load_settings(env, dotenv=False)
    # The liveness cache goes to a private file: the shared index folder stays untouched.
    liveness = LivenessChecker(settings, cache_path=tmp / "liveness.sqlite")
    bot = EchoVidsBot(settings, liveness=liveness, cooldown_s=0.0, warm_up=False, guild_ready_timeout=0.05)
    task = asyncio.create_task(bot.start("token"))
    await wait_ready(bot, task)
    try:
        yield RunningBot(discord, bot, task)
    finally:
        if not task.done():
            await bot.close()
        await asyncio.wait_for(task, 60)
        await liveness.close()
        await oembed.stop()
        await discord.stop()
