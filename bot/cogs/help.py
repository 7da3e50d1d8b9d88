"""``/help``: what the bot does and every way to use it, in one ephemeral embed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.soundalike import CONTEXT_MENU_NAME
from bot.formatting import clock

if TYPE_CHECKING:
    from bot.client import EchoVidsBot


def help_embed(settings) -> discord.Embed:
    embed = discord.Embed(
        title="Echo-Vids: YouTube moments that sound like your audio",
        description=(
            "Send a voice note (or any audio/video file) and I answer with YouTube videos that *sound like it*, "
            "each linked at the second where the match is strongest, with a match percentage and what the "
            "sound is (AudioSet labels). Only videos still online are shown."),
        colour=discord.Colour(0x3B82F6),
    )
    embed.add_field(name="Ways to ask", value=(
        "• **DM me** a voice message or an audio/video file\n"
        "• **Mention me** in a message with a voice message or file attached\n"
        f"• Right-click a message → **Apps → {CONTEXT_MENU_NAME}**\n"
        "• `/soundalike audio:` a file · `link:` a YouTube link (with `t=`) for more like it · "
        "`text:` a description like \"dog barking\" · `results:` 1–10"), inline=False)
    embed.add_field(name="Limits", value=(
        f"Files up to {settings.max_attachment_mb:g} MB and {clock(settings.max_audio_seconds)} long; "
        "a few seconds between one person's searches."), inline=False)
    embed.add_field(name="Moderators", value=(
        "`/index status` shows what the index holds; `/index refresh` re-checks which videos are gone "
        "and rebuilds the index in the background (needs Manage Server or the moderator role)."), inline=False)
    embed.set_footer(text="Sounds come from Google's AudioSet (VGGish embeddings); matches are by sound, not by words.")
    return embed


class Help(commands.Cog):
    def __init__(self, bot: EchoVidsBot):
        self.bot = bot

    @app_commands.command(name="help", description="What Echo-Vids does and how to use it")
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
    async def help(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(embed=help_embed(self.bot.settings), ephemeral=True)


async def setup(bot: EchoVidsBot) -> None:
    await bot.add_cog(Help(bot))
