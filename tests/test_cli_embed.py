"""`echovids embed` end to end: real files, the random-weight checkpoint, JSON contract, and one
clear line with exit 1 for every bad input or missing model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.cli import main
from core.vggish.frontend import waveform_to_examples
from core.vggish.postprocess import Postprocessor
from tests.media import make_media, make_voice_note

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for var in ("VGGISH_CHECKPOINT", "VGGISH_PCA_PARAMS", "ECHOVIDS_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env, and ./index_data is empty


@pytest.fixture(scope="module")
def note(tmp_path_factory) -> Path:
    return make_voice_note(tmp_path_factory.mktemp("cli") / "note.ogg", seconds=3.0, kind="speech")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("echovids: ")
    return lines[0]


@pytest.mark.slow
def test_embed_json_agrees_with_independent_reference(capsys, note, vggish_checkpoint, pca_params_path):
    import tensorflow as tf

    from core.audio import decode_audio
    from tests.test_vggish import _assert_bytes_equal, _projection_error_bound, numpy_vggish

    code, out, err = _run(capsys, "embed", str(note), "--json", "--checkpoint", str(vggish_checkpoint),
                          "--pca-params", str(pca_params_path))
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"seconds", "embeddings"} and doc["seconds"] == 3
    got = np.array(doc["embeddings"])
    assert got.shape == (3, 128) and got.min() >= 0 and got.max() <= 255
    assert all(isinstance(v, int) for v in doc["embeddings"][0])

    reader = tf.train.load_checkpoint(str(vggish_checkpoint))
    weights = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
    ref = numpy_vggish(waveform_to_examples(decode_audio(note).samples), weights)
    code, out, _ = _run(capsys, "embed", str(note), "--json", "--raw", "--checkpoint", str(vggish_checkpoint))
    raw = np.array(json.loads(out)["embeddings"])
    assert code == 0 and raw.shape == (3, 128)
    assert np.max(np.abs(raw - ref)) <= 1e-3 * np.max(np.abs(ref))
    post = Postprocessor(pca_params_path)
    _assert_bytes_equal(got.astype(np.uint8), post.project(ref), _projection_error_bound(post, raw, ref))


def test_raw_needs_no_pca_file_and_env_paths_work(capsys, monkeypatch, note, vggish_checkpoint, pca_params_path,
                                                  tmp_path):
    monkeypatch.setenv("VGGISH_CHECKPOINT", str(vggish_checkpoint))
    short = make_media(tmp_path / "short.wav", "wav", seconds=0.3, channels=1)
    code, out, err = _run(capsys, "embed", str(short), "--json", "--raw")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["seconds"] == 1 and isinstance(doc["embeddings"][0][0], float)  # short clip: one vector
    monkeypatch.setenv("VGGISH_PCA_PARAMS", str(pca_params_path))
    code, out, _ = _run(capsys, "embed", str(note))  # human-readable form
    assert code == 0 and "3 vectors" in out and len(out.splitlines()) == 4


def test_missing_model_files_say_how_to_get_them(capsys, monkeypatch, note, vggish_checkpoint, tmp_path):
    monkeypatch.setenv("ECHOVIDS_TEST_DATA", str(tmp_path))  # no bundled model files either
    code, out, err = _run(capsys, "embed", str(note), "--json", "--index", str(tmp_path / "empty"))
    line = _one_error_line(err)
    assert code == 1 and out == ""
    assert "VGGish checkpoint not found" in line and "echovids model fetch" in line
    code, _, err = _run(capsys, "embed", str(note), "--checkpoint", str(vggish_checkpoint),
                        "--index", str(tmp_path / "empty"))
    assert code == 1 and "PCA params not found" in _one_error_line(err)


@pytest.mark.parametrize("kind", ["empty", "random", "text", "truncated", "video", "missing"])
def test_bad_input_is_one_line_and_exit_1(capsys, kind, note, tmp_path, vggish_checkpoint, pca_params_path):
    path = tmp_path / f"{kind}.ogg"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("not a voice note\n" * 100)
    elif kind == "truncated":
        path.write_bytes(note.read_bytes()[: note.stat().st_size // 2])
    elif kind == "video":
        path = make_media(tmp_path / "video.mp4", "mp4-noaudio", seconds=1.0)
    code, out, err = _run(capsys, "embed", str(path), "--json", "--checkpoint", str(vggish_checkpoint),
                          "--pca-params", str(pca_params_path))
    assert code == 1 and out == ""
    line = _one_error_line(err)
    expected = {"empty": "empty", "random": "not audio", "text": "not audio", "truncated": "truncated",
                "video": "no audio track", "missing": "no such file"}[kind]
    assert expected in line


def test_real_process_bad_file_is_fast_and_clean(tmp_path, vggish_checkpoint, pca_params_path):
    bad = tmp_path / "doc.ogg"
    bad.write_bytes(b"%PDF-1.4\n" + b"0" * 5000)
    env = {**os.environ, "VGGISH_CHECKPOINT": str(vggish_checkpoint), "VGGISH_PCA_PARAMS": str(pca_params_path)}
    proc = subprocess.run([sys.executable, "-m", "bot", "embed", str(bad), "--json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["echovids: the file is not audio or video that can be decoded (corrupt or unsupported)"]


@pytest.mark.slow
def test_real_process_embeds(tmp_path, note, vggish_checkpoint, pca_params_path):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bot", "embed", str(note), "--json", "--checkpoint",
                           str(vggish_checkpoint), "--pca-params", str(pca_params_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["seconds"] == 3 and len(doc["embeddings"][2]) == 128
