"""``Engine.warm_up`` is the one warm-up entry point (issue 12): front ends call only it, and with
``audio=True`` it loads what the engine will use, so the first user's query loads nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Settings
from core.errors import IndexMissingError
from core.results import Query
from tests.media import make_voice_note


def _settings(data_dir: Path, audioset_meta: Path, yamnet: Path) -> Settings:
    return Settings(data_dir=data_dir, audioset_meta=audioset_meta, yamnet_model_env=yamnet,
                    vggish_checkpoint_env=data_dir / "no-vggish.ckpt")


def test_after_warm_up_the_first_audio_query_loads_no_model(small_index_dir, audioset_meta, yamnet_model_path,
                                                            tmp_path, monkeypatch):
    from core import yamnet
    from core.engine import Engine
    from core.yamnet import model as yamnet_model

    monkeypatch.setattr(yamnet_model, "_CACHE", {})  # no model loaded by an earlier test in this process
    engine = Engine(_settings(small_index_dir, audioset_meta, yamnet_model_path))
    engine.warm_up(audio=True)

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded by a user's query")

    monkeypatch.setattr(yamnet.YamnetModel, "__init__", no_loading)
    note = make_voice_note(tmp_path / "note.ogg", seconds=3.0, kind="speech")
    resp = engine.search(Query(kind="audio", audio=str(note), top=3, live_check=False))
    assert resp.query.model == "yamnet" and resp.results


def test_warm_up_without_any_audio_model_still_serves_text(small_index_dir, audioset_meta, tmp_path):
    from core.engine import Engine

    engine = Engine(_settings(small_index_dir, audioset_meta, tmp_path / "no-yamnet.tflite"))
    engine.warm_up(audio=True)  # nothing to warm for audio: not an error
    assert engine.search(Query(kind="text", text="dog barking", top=3, live_check=False)).results


def test_warm_up_reports_a_missing_index(tmp_path, audioset_meta, yamnet_model_path):
    from core.engine import Engine

    with pytest.raises(IndexMissingError):
        Engine(_settings(tmp_path, audioset_meta, yamnet_model_path)).warm_up()
