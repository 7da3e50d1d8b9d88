"""The engine answers real audio without VGGish weights through YAMNet and the label bridge, says what
it heard, and still prefers VGGish when its checkpoint is there (CLI included, in a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings
from core.errors import ModelMissingError
from core.results import Query
from tests.media import make_media, make_voice_note

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _speech_family(audioset_meta: Path) -> set[str]:
    from core.index.labels import load_labels

    labels = load_labels(audioset_meta)
    return {labels.names[i] for i in labels.family("Speech")}


def _settings(data_dir: Path, audioset_meta: Path, yamnet: Path | None) -> Settings:
    return Settings(data_dir=data_dir, audioset_meta=audioset_meta,
                    yamnet_model_env=yamnet if yamnet is not None else data_dir / "no-such-yamnet.tflite")


def test_voice_note_without_vggish_is_answered_by_the_label_bridge(small_index_dir, yamnet_model_path,
                                                                   audioset_meta, tmp_path):
    from core.engine import Engine

    engine = Engine(_settings(small_index_dir, audioset_meta, yamnet_model_path))
    note = make_voice_note(tmp_path / "note.ogg", seconds=6.0, kind="speech")
    resp = engine.search(Query(kind="audio", audio=str(note), top=5, live_check=False))
    speech = _speech_family(audioset_meta)
    assert resp.query.model == "yamnet" and resp.query.kind == "audio" and resp.query.seconds == 6
    assert resp.heard and resp.heard[0].label in speech and 0 < resp.heard[0].score <= 1
    assert len(resp.results) >= 5
    for m in resp.results[:5]:
        assert set(m.labels) & speech, m.labels
        assert m.segment_start <= m.start_seconds < m.segment_end
        assert m.url.endswith(f"?t={m.start_seconds}") or m.start_seconds == 0
    assert len({m.video_id for m in resp.results}) == len(resp.results)  # one result per video
    beep = make_media(tmp_path / "beep.wav", "wav", 3.0, "tone", frequency=1000)
    resp = engine.search(Query(kind="audio", audio=str(beep), top=5, live_check=False))
    assert resp.heard[0].label == "Beep, bleep"
    assert "Beep, bleep" in resp.results[0].labels


def test_vggish_is_preferred_and_yamnet_says_what_was_heard(small_index_dir, yamnet_model_path, audioset_meta,
                                                           vggish_checkpoint, pca_params_path, tmp_path):
    from core.engine import Engine

    engine = Engine(_settings(small_index_dir, audioset_meta, yamnet_model_path),
                    checkpoint=vggish_checkpoint, pca_params=pca_params_path)
    note = make_voice_note(tmp_path / "note.ogg", seconds=4.0, kind="speech")
    resp = engine.search(Query(kind="audio", audio=str(note), top=5, live_check=False))
    assert resp.query.model == "vggish"
    assert resp.heard[0].label in _speech_family(audioset_meta)  # YAMNet heard it (random VGGish weights)


def test_no_model_at_all_is_one_clear_line(small_index_dir, audioset_meta, tmp_path):
    from core.engine import Engine

    engine = Engine(_settings(small_index_dir, audioset_meta, None))
    note = make_voice_note(tmp_path / "note.ogg", seconds=2.0, kind="speech")
    with pytest.raises(ModelMissingError) as info:
        engine.search(Query(kind="audio", audio=str(note), top=5, live_check=False))
    assert "VGGish" in str(info.value) and "YAMNet" in str(info.value) and "\n" not in str(info.value)


def test_cli_search_of_a_voice_note_offline(small_index_dir, yamnet_model_path, audioset_meta, tmp_path):
    note = make_voice_note(tmp_path / "note.ogg", seconds=5.0, kind="speech")
    env = {**os.environ, "YAMNET_MODEL": str(yamnet_model_path), "ECHOVIDS_AUDIOSET_META": str(audioset_meta),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("VGGISH_CHECKPOINT", None)
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "search", str(note), "--json", "--no-live-check",
                           "--index", str(small_index_dir)], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["query"]["model"] == "yamnet"
    assert out["heard"] and out["heard"][0]["label"] in _speech_family(audioset_meta)
    assert out["results"] and all("?t=" in r["url"] or r["start_seconds"] == 0 for r in out["results"])
