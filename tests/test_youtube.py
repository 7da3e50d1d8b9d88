"""YouTube links, read and written in one module (core.youtube)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import BadQueryError
from core.youtube import is_youtube_url, link_text, parse_youtube, timestamped_url, watch_url, youtube_url


def test_parse_youtube_forms():
    assert parse_youtube("--cB2ZVjpnA") == ("--cB2ZVjpnA", None)
    assert parse_youtube("https://www.youtube.com/watch?v=--cB2ZVjpnA&t=75") == ("--cB2ZVjpnA", 75)
    assert parse_youtube("https://youtu.be/--cB2ZVjpnA?t=75s") == ("--cB2ZVjpnA", 75)
    assert parse_youtube("youtu.be/--cB2ZVjpnA?t=1m15s") == ("--cB2ZVjpnA", 75)
    assert parse_youtube("https://m.youtube.com/shorts/--cB2ZVjpnA") == ("--cB2ZVjpnA", None)
    assert parse_youtube("https://www.youtube.com/embed/--cB2ZVjpnA?start=30") == ("--cB2ZVjpnA", 30)
    assert parse_youtube("https://www.youtube.com/watch?v=--cB2ZVjpnA#t=1h0m5s") == ("--cB2ZVjpnA", 3605)
    for bad in ("https://vimeo.com/123", "https://youtu.be/short", "", "https://www.youtube.com/watch?v=--cB2ZVjpnA&t=abc"):
        with pytest.raises(BadQueryError):
            parse_youtube(bad)


def test_links_written_for_a_video():
    assert youtube_url("--cB2ZVjpnA", 0) == "https://youtu.be/--cB2ZVjpnA"
    assert youtube_url("--cB2ZVjpnA", 75) == "https://youtu.be/--cB2ZVjpnA?t=75"
    assert watch_url("--cB2ZVjpnA") == "https://www.youtube.com/watch?v=--cB2ZVjpnA"
    assert link_text("--cB2ZVjpnA") == "youtu.be/--cB2ZVjpnA"
    assert parse_youtube(youtube_url("--cB2ZVjpnA", 75)) == ("--cB2ZVjpnA", 75)
    assert parse_youtube(watch_url("--cB2ZVjpnA")) == ("--cB2ZVjpnA", None)


def test_the_same_hosts_count_as_youtube_for_reading_and_for_library_links():
    for url in ("https://www.youtube.com/watch?v=x", "https://m.youtube.com/x", "https://youtu.be/x",
                "https://music.youtube.com/watch?v=x", "https://www.youtube-nocookie.com/embed/x"):
        assert is_youtube_url(url), url
    assert not is_youtube_url("https://notyoutube.com/watch?v=x")
    assert not is_youtube_url("https://vimeo.com/1")


def test_library_links_get_the_matched_second(tmp_path: Path):
    assert timestamped_url("https://www.youtube.com/watch?v=abcdefghijk&t=5", None, 42) == \
        "https://www.youtube.com/watch?v=abcdefghijk&t=42"
    assert timestamped_url("https://youtu.be/abcdefghijk", None, 0) == "https://youtu.be/abcdefghijk"
    assert timestamped_url("https://example.org/a.mp3", None, 7) == "https://example.org/a.mp3#t=7"
    assert timestamped_url("https://example.org/a.mp3#x", None, 7) == "https://example.org/a.mp3#x"
    f = tmp_path / "a.wav"
    assert timestamped_url(None, str(f), 7) == f.resolve().as_uri()
    assert timestamped_url(None, None, 7) == ""
