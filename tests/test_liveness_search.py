"""End to end: `echovids search` shows only videos that still play (or are marked unknown), with titles."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.fakes.oembed_server import GONE, PRIVATE, FakeOEmbed, Reply, slow


@pytest.fixture
def fake():
    with FakeOEmbed() as server:
        yield server


@pytest.mark.slow
def test_search_drops_dead_videos_and_shows_titles(fake, tmp_path, small_index_dir, monkeypatch, capsys):
    from bot.cli import main
    from core.index.store import open_current

    data = tmp_path / "data"  # a private copy: this test writes a liveness cache beside the build
    shutil.copytree(small_index_dir, data, symlinks=True, ignore=shutil.ignore_patterns("liveness.sqlite*"))
    query_video = open_current(data).video_ids()[0]
    monkeypatch.setenv("YOUTUBE_OEMBED_URL", fake.url)

    # First, without live checks: the raw top results.
    assert main(["search", f"--like=https://www.youtube.com/watch?v={query_video}", "--top", "5", "--json", "--index", str(data),
                 "--no-live-check"]) == 0
    raw = json.loads(capsys.readouterr().out)["results"]
    assert len(raw) == 5 and all(r["live"] == "unchecked" for r in raw)
    assert fake.total_requests == 0

    # Kill two of them on "YouTube", slow a third beyond the budget, give one a title.
    dead = {raw[0]["video_id"], raw[2]["video_id"]}
    fake.script(raw[0]["video_id"], GONE)
    fake.script(raw[2]["video_id"], PRIVATE)
    fake.script(raw[1]["video_id"], Reply("live", title="A dog barks", channel="Dogs Inc"))
    fake.script(raw[3]["video_id"], slow(10))
    monkeypatch.setenv("ECHOVIDS_LIVE_BUDGET_S", "1.0")
    assert main(["search", f"--like=https://www.youtube.com/watch?v={query_video}", "--top", "5", "--json", "--index", str(data)]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == 5                                  # refilled from later candidates
    assert not dead & {r["video_id"] for r in results}         # dead links never shown
    assert all(r["live"] in ("live", "unembeddable", "unknown") for r in results)
    by_id = {r["video_id"]: r for r in results}
    assert by_id[raw[1]["video_id"]]["title"] == "A dog barks"
    assert by_id[raw[3]["video_id"]]["live"] == "unknown"      # too slow for the budget: kept, marked
    assert all(r["title"] for r in results if r["live"] == "live")
