"""The result embed: links at the matched second, m:ss, match %, labels, heard line, limits."""

from __future__ import annotations

import re

from bot.formatting import clock
from bot.render import percent, render_response
from core.results import Heard, Match, QueryInfo, SearchResponse
from core.youtube import youtube_url


def _match(vid: str, t: int, score: float = 0.9, **kw) -> Match:
    return Match(video_id=vid, start_seconds=t, url=youtube_url(vid, t), score=score,
                 labels=kw.pop("labels", ["Dog", "Bark"]), **kw)


def _response(results, **kw) -> SearchResponse:
    return SearchResponse(query=kw.pop("query", QueryInfo(kind="audio", seconds=7, model="vggish")),
                          results=results, **kw)


def test_clock_and_percent():
    assert clock(0) == "0:00"
    assert clock(75) == "1:15"
    assert clock(3725) == "1:02:05"
    assert percent(0.914) == "91 %"
    assert percent(1.7) == "100 %" and percent(-0.2) == "0 %"


def test_results_are_timestamped_links_with_titles_labels_and_percent():
    resp = _response([_match("--cB2ZVjpnA", 33, 0.91, title="Good boy barks", live="live"),
                      _match("abcdefghijk", 75, 0.5, labels=["Speech"])],
                     elapsed_s=0.42, index_size=220270)
    embed = render_response(resp)
    d = embed.description
    assert "[Good boy barks](https://youtu.be/--cB2ZVjpnA?t=33)" in d
    assert "**0:33**" in d and "91 % match" in d
    assert "Dog, Bark" in d
    # No title known: the short link stands in as the name.
    assert "[youtu.be/abcdefghijk](https://youtu.be/abcdefghijk?t=75)" in d and "**1:15**" in d
    assert d.index("--cB2ZVjpnA") < d.index("abcdefghijk")
    footer = embed.footer.text
    assert "0:07" in footer and "220,270 indexed seconds" in footer and "0.4 s" in footer
    assert "Heard" not in d


def test_heard_line_when_the_query_has_labels():
    resp = _response([_match("--cB2ZVjpnA", 33)], heard=[Heard("Dog", 0.82), Heard("Bark", 0.77)])
    embed = render_response(resp)
    assert embed.description.splitlines()[0] == "Heard: Dog 82 %, Bark 77 %"


def test_duplicate_urls_are_shown_once():
    resp = _response([_match("--cB2ZVjpnA", 33), _match("--cB2ZVjpnA", 33, 0.8), _match("--cB2ZVjpnA", 40)])
    d = render_response(resp).description
    urls = re.findall(r"\((https://youtu\.be/[^)]+)\)", d)
    assert urls == ["https://youtu.be/--cB2ZVjpnA?t=33", "https://youtu.be/--cB2ZVjpnA?t=40"]


def test_embed_stays_within_discord_limits_with_huge_titles_and_labels():
    results = [_match(f"vid{i:08d}", i * 61, title="🐶 " + "Very long [title] *with* markdown " * 20,
                      labels=[f"Label number {j}" * 5 for j in range(30)]) for i in range(10)]
    resp = _response(results, heard=[Heard("X" * 500, 0.5)] * 5, elapsed_s=1.0, index_size=10**9)
    embed = render_response(resp, searched="a" * 5000)
    assert len(embed.title) <= 256
    assert len(embed.description) <= 4096
    assert len(embed.footer.text) <= 2048
    assert len(embed) <= 6000
    assert len(embed.fields) <= 25
    # Brackets in titles must not break the link markup.
    assert "[title]" not in embed.description


def test_no_results_is_a_friendly_embed():
    embed = render_response(_response([], heard=[Heard("Silence", 0.9)]))
    assert "No sound-alikes found" in embed.description
    assert "Heard: Silence 90 %" in embed.description


def test_library_match_and_unknown_liveness():
    lib = Match(video_id=None, start_seconds=5, url="https://example.org/a.mp3", score=0.7,
                labels=[], source="library", title="My clip")
    unk = _match("abcdefghijk", 0, live="unknown")
    d = render_response(_response([lib, unk])).description
    assert "[My clip](https://example.org/a.mp3)" in d
    assert "(https://youtu.be/abcdefghijk)" in d  # t=0 is dropped by youtube_url
    assert "could not confirm" in d


def test_text_query_title_and_footer():
    resp = _response([_match("--cB2ZVjpnA", 33)], query=QueryInfo(kind="text"))
    embed = render_response(resp, searched='"dog barking"')
    assert embed.title == "Sounds like"
    assert embed.footer.text.startswith('Searched "dog barking"')


def test_error_lines_are_friendly_single_lines():
    from bot.render import error_line
    from core import audio
    from core.config import Settings
    from core.errors import BadQueryError, DownloadError, IndexMissingError, ModelMissingError

    settings = Settings(max_attachment_mb=8, max_audio_seconds=90)
    cases = {
        audio.NotAudioError("x"): "couldn't read that as audio",
        audio.NoAudioStreamError("x"): "no sound track",
        audio.AudioTooLargeError("x"): "limit is 8 MB",
        audio.AudioTooLongError("x"): "limit is 1:30",
        audio.AudioTooShortError("x"): "too short",
        audio.DecodeTimeoutError("x"): "took too long",
        IndexMissingError("no index in /x"): "index isn't loaded",
        ModelMissingError("VGGish checkpoint not found"): "model isn't installed",
        DownloadError("x"): "couldn't download",
        BadQueryError("video abc is not in the index"): "video abc is not in the index",
        RuntimeError("boom /secret/path"): "went wrong on my side",
    }
    for err, words in cases.items():
        line = error_line(err, settings)
        assert words in line, (err, line)
        assert "\n" not in line and "/secret/path" not in line


def test_error_lines_match_by_type_not_by_name():
    """The audio errors live in core.errors (still importable from core.audio); a subclass gets its
    parent's line, and an unrelated class that merely shares a name does not."""
    from bot.attachments import AttachmentHostError
    from bot.render import error_line
    from core import audio, errors

    assert audio.NotAudioError is errors.NotAudioError and issubclass(errors.AudioError, errors.EchoVidsError)

    class TruncatedOgg(errors.NotAudioError):
        pass

    class NotAudioError(Exception):  # same name, not ours: a bug, not a user's bad file
        pass

    assert "couldn't read that as audio" in error_line(TruncatedOgg("x"))
    assert "went wrong on my side" in error_line(NotAudioError("x"))
    assert "broken" in error_line(errors.IndexBrokenError("x"))  # before its parent IndexMissingError
    assert "Discord's own servers" in error_line(AttachmentHostError("x"))  # before DownloadError


def test_refusal_lines_say_what_happened():
    from bot.render import refusal_line

    assert refusal_line("cooldown", 2.2) == "Please wait 3 s between searches."
    assert refusal_line("busy", 4).startswith("I'm busy") and "4 s" in refusal_line("busy", 4)
    assert refusal_line("stopping", 60) == "I'm restarting; please send it again in a minute."


def test_echoed_input_in_error_lines_cannot_mention_or_format():
    from bot.render import error_line
    from core.errors import BadQueryError

    line = error_line(BadQueryError("not a YouTube video URL or id: 'x<@123456789012345678>y @everyone **b**'"))
    assert line.startswith("I can't search that: ")
    assert "123456789012345678" in line  # still shown...
    assert not re.search(r"<@!?&?\d+>|@everyone|@here", line)  # ...but not as a mention
    assert "**b**" not in line  # nor as formatting


def test_one_formatter_set_for_sizes_durations_and_ages():
    from bot.formatting import age, size

    assert [size(n) for n in (0, 1023, 1536, 5 * 2**20, 3 * 2**30, 5000 * 2**30)] == [
        "0 B", "1023 B", "1.5 KiB", "5.0 MiB", "3.0 GiB", "5000.0 GiB"]
    assert [age(s) for s in (-3, 40, 60, 7199, 86400 * 3 + 5)] == ["0 s", "40 s", "1 min", "1 h", "3 d"]


def test_one_progress_text_for_the_terminal_and_the_bot():
    from bot.formatting import progress_line
    from bot.terminal.progress import TerminalProgress
    from core.progress import ProgressEvent

    event = ProgressEvent("check", 250, 1000, "videos", "3 dead, 0 unknown")
    line = progress_line(event, 10.0, width=8)
    assert line == "check: [██░░░░░░] 25% 250/1,000 videos · 25 videos/s · ETA 0:30 · 3 dead, 0 unknown"
    terminal = TerminalProgress(width=8).render(event, 10.0)
    assert terminal == line.replace("██░░░░░░", "##------")  # the same text; only the bar's glyphs differ
    download = progress_line(ProgressEvent("download", 3 * 2**20, None, "bytes"), 2.0)
    assert download == "download: 3.0 MiB · 1.5 MiB/s · 0:02"
    # under one step a second the pace is time per step, not "0 shards/s"
    slow = progress_line(ProgressEvent("scann", 1, 4, "shards"), 6.0, width=8)
    assert slow == "scann: [██░░░░░░] 25% 1/4 shards · 0:06 per shard · ETA 0:18"


def test_the_moderator_refusal_is_error_lines_wording():
    from bot.render import NotModerator, error_line
    from core.config import Settings

    assert error_line(NotModerator("x"), Settings()) == "Only moderators can do that: you need the Manage Server permission."
    assert error_line(NotModerator("x"), Settings(moderator_role=42)).endswith("permission or the moderator role.")


def test_one_refresh_summary_names_the_build_not_its_path():
    from bot.refresh_summary import summary
    from core.admin import RefreshReport

    report = RefreshReport(indexed=10, stale=4, checked=4, states={"live": 3, "gone": 1}, dead=1,
                           dead_by_state={"gone": 1}, dead_sample=["abcdefghijk"], check_s=2.0,
                           data_dir="/srv/data", excluded=1, rebuilt=True, new_build="/srv/data/builds/20261202-1",
                           build_s=3.5)
    text = summary(report)
    assert text.splitlines() == [
        "10 indexed videos: 4 needed a check, 6 were fresh in the cache",
        "checked 4 in 2.0 s (2.0/s): 3 live, 1 gone",
        "1 indexed videos no longer play (1 gone)",
        "rebuilt without 1 dead videos in 3.5 s; now current: 20261202-1",
    ]
    assert "/srv" not in text
