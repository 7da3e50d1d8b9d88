"""Several bot processes: ECHOVIDS_SHARD_COUNT / ECHOVIDS_SHARD_IDS make the bot an AutoShardedBot that
identifies on exactly the given gateway shards (real discord.py client against the local fake)."""

from __future__ import annotations

import asyncio

import pytest
from discord.ext import commands

from bot.client import EchoVidsBot, create_bot
from core.config import load_settings
from core.errors import ConfigError
from tests.fakes.discord_server import FakeDiscord, wait_ready


def test_shard_settings_are_checked():
    s = load_settings({"ECHOVIDS_SHARD_COUNT": "4", "ECHOVIDS_SHARD_IDS": "3, 1"}, dotenv=False)
    assert s.shard_count == 4 and s.shard_ids == (1, 3)
    assert load_settings({}, dotenv=False).shard_count is None
    with pytest.raises(ConfigError, match="ECHOVIDS_SHARD_COUNT"):
        load_settings({"ECHOVIDS_SHARD_IDS": "0"}, dotenv=False)
    with pytest.raises(ConfigError, match="0..1"):
        load_settings({"ECHOVIDS_SHARD_COUNT": "2", "ECHOVIDS_SHARD_IDS": "2"}, dotenv=False)


def test_one_process_by_default():
    bot = create_bot(load_settings({}, dotenv=False))
    assert type(bot) is EchoVidsBot and not isinstance(bot, commands.AutoShardedBot)


@pytest.mark.slow
async def test_bot_serves_only_its_gateway_shards(small_index_dir):
    fake = await FakeDiscord().start()
    settings = load_settings({
        "DISCORD_API_BASE": fake.api_base, "DISCORD_GATEWAY_URL": fake.gateway_url,
        "ECHOVIDS_DATA_DIR": str(small_index_dir),
        "ECHOVIDS_SHARD_COUNT": "3", "ECHOVIDS_SHARD_IDS": "2",
    }, dotenv=False)
    bot = create_bot(settings, cooldown_s=0.0, warm_up=False, guild_ready_timeout=0.05)
    assert isinstance(bot, commands.AutoShardedBot) and isinstance(bot, EchoVidsBot)
    task = asyncio.create_task(bot.start("token"))
    try:
        await wait_ready(bot, task, timeout=180)  # a hang guard while TF and the index load, not a speed check
        assert fake.identify.get("shard") == [2, 3], fake.identify
        assert list(bot.shards) == [2] and bot.shard_count == 3
    finally:
        await bot.close()
        await asyncio.wait_for(task, 30)
        await fake.stop()
