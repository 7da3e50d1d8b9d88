"""Turn one :class:`core.results.SearchResponse` into one Discord embed, within Discord's limits.

Every trigger (voice note, ``/soundalike``, the context menu) replies with this same embed, so
the look of an answer is decided here only. Discord rejects an embed over its limits (title 256,
description 4096, field value 1024, 25 fields, 6000 characters in all) and merges embeds that
share a URL, so the result list is written into the description as links (one per line, each URL
once) and trimmed line by line rather than cut mid-link.
"""

from __future__ import annotations

import discord
from discord import app_commands

from bot.attachments import AttachmentHostError
from bot.formatting import clock
from core.errors import (
    AudioTooLargeError,
    AudioTooLongError,
    AudioTooShortError,
    BadQueryError,
    DecodeTimeoutError,
    DownloadError,
    EchoVidsError,
    IndexBrokenError,
    IndexMissingError,
    ModelFileError,
    ModelMissingError,
    NoAudioStreamError,
    NotAudioError,
)
from core.results import Match, SearchResponse
from core.youtube import link_text

TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FOOTER_LIMIT = 2048
TOTAL_LIMIT = 6000

#: Embed colour: a calm blue, and a muted grey for "nothing found".
COLOUR = discord.Colour(0x3B82F6)
COLOUR_EMPTY = discord.Colour(0x6B7280)

_KIND_TITLES = {
    "audio": "Sound-alikes",
    "like": "More like this",
    "text": "Sounds like",
    "embeddings": "Sound-alikes",
}


def percent(score: float) -> str:
    """Match score in 0–1 as a whole percentage, clamped (scores are similarities, not probabilities)."""
    return f"{round(max(0.0, min(1.0, float(score))) * 100)} %"


def _escape(text: str) -> str:
    """Titles come from YouTube: keep them from breaking the markdown link around them."""
    text = discord.utils.escape_markdown(text.replace("\n", " ").strip())
    return text.replace("[", "(").replace("]", ")")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def _match_line(rank: int, match: Match) -> str:
    name = _shorten(_escape(match.title), 90) if match.title else (
        link_text(match.video_id) if match.video_id else "Library clip")
    line = f"**{rank}.** [{name}]({match.url}) at **{clock(match.start_seconds)}** · {percent(match.score)} match"
    if match.labels:
        line += "\n" + _shorten("↳ " + ", ".join(match.labels[:4]), 200)
    if match.live == "unknown":
        line += " · *(could not confirm it is still online)*"
    return line


def heard_line(response: SearchResponse) -> str:
    """``'Heard: Dog 82 %, Bark 77 %'`` from the query's own top labels (empty when none)."""
    if not response.heard:
        return ""
    parts = [f"{_escape(h.label)} {percent(h.score)}" for h in response.heard[:5]]
    return "Heard: " + ", ".join(parts)


def _query_text(response: SearchResponse, searched: str | None) -> str:
    q = response.query
    if searched:
        what = searched
    elif q.kind == "audio":
        what = "your audio"
    elif q.kind == "like":
        what = "a YouTube video"
    elif q.kind == "text":
        what = "a description"
    else:
        what = "embeddings"
    if q.seconds:
        what += f" ({clock(q.seconds)})"
    return what


def footer_text(response: SearchResponse, searched: str | None = None) -> str:
    parts = [f"Searched {_query_text(response, searched)}"]
    if response.index_size:
        parts.append(f"{response.index_size:,} indexed seconds")
    if response.query.model:
        parts.append(response.query.model)
    parts.append(f"{response.elapsed_s:.1f} s")
    return _shorten(" · ".join(parts), FOOTER_LIMIT)


def unique_results(results: list[Match]) -> list[Match]:
    """Drop repeated URLs: Discord merges identical links, and a repeat tells the user nothing."""
    seen: set[str] = set()
    out = []
    for m in results:
        if m.url in seen:
            continue
        seen.add(m.url)
        out.append(m)
    return out


def render_response(response: SearchResponse, *, searched: str | None = None,
                    title: str | None = None) -> discord.Embed:
    """One embed for one answer. ``searched`` names the query in the footer (e.g. a file name)."""
    results = unique_results(response.results)
    embed_title = _shorten(title or _KIND_TITLES.get(response.query.kind, "Sound-alikes"), TITLE_LIMIT)
    footer = footer_text(response, searched)
    heard = heard_line(response)

    if not results:
        description = "No sound-alikes found. Try a longer or clearer recording."
        if heard:
            description = f"{heard}\n\n{description}"
        embed = discord.Embed(title=embed_title, description=description, colour=COLOUR_EMPTY)
        embed.set_footer(text=footer)
        return embed

    budget = min(DESCRIPTION_LIMIT, TOTAL_LIMIT - len(embed_title) - len(footer) - 16)
    lines: list[str] = []
    used = 0
    if heard:
        head = _shorten(heard, 300)
        lines.append(head)
        used += len(head) + 2
    shown = 0
    for rank, match in enumerate(results, 1):
        line = _match_line(rank, match)
        cost = len(line) + 2
        if used + cost > budget:
            break
        lines.append(line)
        used += cost
        shown += 1
    if shown < len(results):
        more = f"… and {len(results) - shown} more"
        if used + len(more) + 2 <= budget:
            lines.append(more)

    embed = discord.Embed(title=embed_title, description="\n\n".join(lines)[:DESCRIPTION_LIMIT], colour=COLOUR)
    embed.set_footer(text=footer)
    return embed


# -- errors: one friendly line each (core raises typed errors; the wording users see lives here) --

#: The one line for a search that cannot be finished because the bot is stopping (or a new one
#: that arrives while it stops).
RESTARTING_LINE = "I'm restarting; please send it again in a minute."


def echo(text: str, limit: int = 300) -> str:
    """User input quoted back in a line: shortened, and unable to mention anyone or to format.

    Messages are sent with no allowed mentions anyway (the client default); escaping as well means
    the echoed ``<@id>``/``@everyone`` does not even *look* like a mention, and stays harmless if a
    message ever went out another way.
    """
    return discord.utils.escape_mentions(discord.utils.escape_markdown(_shorten(text, limit)))


class NotModerator(app_commands.CheckFailure):
    """A moderator command from a member without Manage Server or the moderator role."""


def error_line(err: BaseException, settings: object | None = None) -> str:
    """The one line a user sees for a failed request: the wording of every typed error lives here
    (the bot's one error handler and the message listener both ask), matched with ``isinstance``
    — subclasses first — so a new subclass gets its parent's line, not the generic one."""
    if isinstance(err, NotModerator):
        role = " or the moderator role" if getattr(settings, "moderator_role", None) else ""
        return f"Only moderators can do that: you need the Manage Server permission{role}."
    if isinstance(err, NotAudioError):
        return "I couldn't read that as audio. Send a voice message or an audio/video file (OGG, MP3, WAV, M4A, MP4…)."
    if isinstance(err, NoAudioStreamError):
        return "That file has no sound track, so there is nothing to match."
    if isinstance(err, AudioTooLargeError):
        return f"That file is too large: the limit is {getattr(settings, 'max_attachment_mb', 25):g} MB."
    if isinstance(err, AudioTooLongError):
        return (f"That recording is too long: the limit is {clock(getattr(settings, 'max_audio_seconds', 120))}. "
                "Send a shorter clip.")
    if isinstance(err, AudioTooShortError):
        return "That recording is too short or silent to match. Try a few seconds of clear sound."
    if isinstance(err, DecodeTimeoutError):
        return "Decoding that file took too long. Try a shorter or simpler file."
    if isinstance(err, IndexBrokenError):
        return "The sound index is broken; a moderator needs to rebuild it."
    if isinstance(err, IndexMissingError):
        return "The sound index isn't loaded yet. A moderator can build it (`echovids index build`) and try again."
    if isinstance(err, (ModelMissingError, ModelFileError)):
        return "The audio model isn't installed on this bot yet, so audio searches are off. Try `text:` or `link:` searches."
    if isinstance(err, AttachmentHostError):
        return ("I only download attachments from Discord's own servers, and that one is elsewhere. "
                "Upload the file to Discord and try again.")
    if isinstance(err, DownloadError):
        return "I couldn't download that attachment. Please send it again."
    if isinstance(err, BadQueryError):
        return f"I can't search that: {echo(str(err))}"
    if isinstance(err, EchoVidsError):
        return echo(str(err)) or "That search failed."
    return "Something went wrong on my side. Please try again in a moment."


def refusal_line(reason: str, retry_after: float) -> str:
    """Reply when a job is not admitted: the user's cooldown (a pause between searches, which may
    follow a search that already finished), a full queue, or a bot that is stopping."""
    wait = max(1, int(retry_after + 0.999))
    if reason == "cooldown":
        return f"Please wait {wait} s between searches."
    if reason == "stopping":
        return RESTARTING_LINE
    return f"I'm busy with other searches right now. Please try again in {wait} s."
