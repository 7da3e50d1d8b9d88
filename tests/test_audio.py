"""Decoding real media made by real tools, and every kind of bad input, against core.audio."""

from __future__ import annotations

import os
import subprocess
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.audio import (
    TARGET_RATE,
    AudioError,
    AudioLimits,
    AudioTooLargeError,
    AudioTooLongError,
    AudioTooShortError,
    DecodeTimeoutError,
    NoAudioStreamError,
    NotAudioError,
    Waveform,
    decode_audio,
    resample_to_target,
)
from tests.media import make_lying_wav, make_media, make_voice_note


def _peak_hz(w: Waveform) -> float:
    spectrum = np.abs(np.fft.rfft(w.samples * np.hanning(len(w.samples))))
    return float(np.argmax(spectrum) * TARGET_RATE / len(w.samples))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    files = {fmt: make_media(d / f"tone.{fmt.replace('-', '.')}", fmt, seconds=2.0, kind="tone", frequency=440.0)
             for fmt in ("mp3", "wav", "flac", "m4a", "webm", "mp4", "mp4-noaudio")}
    files["voice"] = make_voice_note(d / "voice.ogg", seconds=4.0, kind="speech")
    files["voice_tone"] = make_voice_note(d / "voice_tone.ogg", seconds=3.0, kind="tone")
    return files


def test_discord_voice_note_decodes_to_16k_mono(media):
    assert sf.info(str(media["voice"])).samplerate == 48000  # made like Discord's
    w = decode_audio(media["voice"])
    assert w.sample_rate == TARGET_RATE and w.samples.dtype == np.float32 and w.samples.ndim == 1
    assert w.duration_s == pytest.approx(4.0, abs=0.01) and len(w.samples) == pytest.approx(64000, abs=160)
    assert 0.05 < np.max(np.abs(w.samples)) <= 1.0 and w.note is None
    # same answer from bytes (what the bot has) as from a path
    assert np.array_equal(decode_audio(media["voice"].read_bytes()).samples, w.samples)


@pytest.mark.parametrize("fmt", ["voice_tone", "mp3", "wav", "flac", "m4a", "webm", "mp4"])
def test_every_format_decodes_with_the_right_pitch(media, fmt):
    w = decode_audio(media[fmt])
    assert w.sample_rate == TARGET_RATE
    expected = 3.0 if fmt == "voice_tone" else 2.0
    assert w.duration_s == pytest.approx(expected, abs=0.06)  # AAC adds a few ms of priming
    assert np.max(np.abs(w.samples)) <= 1.0
    assert _peak_hz(w) == pytest.approx(440.0, abs=3.0)  # wrong rate handling would move the pitch


def test_stereo_44k_wav_is_downmixed(tmp_path):
    t = np.arange(44100) / 44100
    left = 0.6 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), 44100, subtype="PCM_16")
    w = decode_audio(path)
    assert np.max(np.abs(w.samples)) == pytest.approx(0.3, abs=0.01)  # mean of the two channels
    sf.write(path, np.stack([left, -left], axis=1), 44100, subtype="PCM_16")
    with pytest.raises(AudioTooShortError, match="silent"):  # opposite channels cancel
        decode_audio(path)


def test_soundfile_formats_do_not_start_ffmpeg(media, monkeypatch):
    def no_subprocess(*a, **k):
        raise AssertionError("ffmpeg was started")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    for key in ("voice", "wav", "flac"):
        assert decode_audio(media[key]).duration_s > 1.0


def test_resampling_is_resampy_kaiser_best():
    import resampy

    rng = np.random.default_rng(3)
    for rate in (48000, 44100, 32000):
        x = (0.3 * rng.standard_normal(rate + 123)).astype(np.float32)
        ours = resample_to_target(x, rate)
        ref = resampy.resample(x, rate, TARGET_RATE, filter="kaiser_best")
        assert ours.shape == ref.shape
        assert np.max(np.abs(ours - ref)) < 1e-5


def test_video_without_audio(media):
    with pytest.raises(NoAudioStreamError, match="no audio track"):
        decode_audio(media["mp4-noaudio"])


# ---------------------------------------------------------------------------------------------
# bad input: each one a typed error, quickly


def _quick(source, limits=None, expect=AudioError) -> AudioError:
    start = time.monotonic()
    with pytest.raises(expect) as err:
        decode_audio(source, limits)
    assert time.monotonic() - start < 5.0
    assert "\n" not in str(err.value)
    return err.value


def test_empty_input(tmp_path):
    empty = tmp_path / "empty.ogg"
    empty.write_bytes(b"")
    _quick(empty, expect=NotAudioError)
    _quick(b"", expect=NotAudioError)


def test_random_bytes_pdf_and_text_named_ogg(tmp_path):
    rng = np.random.default_rng(0)
    cases = {
        "random.ogg": rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes(),
        "doc.ogg": b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n" * 50 + b"%%EOF\n",
        "notes.ogg": b"This is a text file, not a voice message.\n" * 200,
        "fake_header.ogg": b"OggS" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        _quick(path, expect=NotAudioError)
        _quick(data, expect=NotAudioError)


def test_truncated_ogg(media, tmp_path):
    data = media["voice"].read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 200):
        path = tmp_path / f"cut{cut}.ogg"
        path.write_bytes(data[:cut])
        err = _quick(path, expect=NotAudioError)
        assert "truncated" in str(err) or "not audio" in str(err)


def test_ten_hour_header_over_tiny_file_costs_nothing(tmp_path):
    lying = make_lying_wav(tmp_path / "ten_hours.wav", declared_seconds=36_000, actual_seconds=1.0)
    header = lying.read_bytes()[:44]
    declared_bytes = int.from_bytes(header[40:44], "little")
    assert declared_bytes / (8000 * 2) >= 36_000  # the data chunk claims ten hours at 8 kHz/16 bit
    assert lying.stat().st_size < 20_000
    tracemalloc.start()
    try:
        _quick(lying, expect=AudioTooShortError)  # what is really there is 1 s of silence
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20  # ten hours of float32 at 8 kHz would be 1.15 GB
    _quick(lying.read_bytes(), expect=AudioTooShortError)  # same from bytes (in-memory reader)
    # with sound in it, the real second is decoded; the claimed hours are ignored
    loud = make_lying_wav(tmp_path / "loud.wav", declared_seconds=36_000, actual_seconds=1.0, silent=False)
    assert decode_audio(loud).duration_s == pytest.approx(1.0, abs=0.01)


def test_long_audio_refused_or_trimmed_and_never_fully_decoded(tmp_path):
    # 10 minutes of tone at 8 kHz in a small FLAC: the limit is met by decoding only limit + 1 frame
    flac = make_media(tmp_path / "long.flac", "flac", seconds=600.0, kind="tone", sample_rate=8000)
    assert flac.stat().st_size < 3 * 2**20
    limits = AudioLimits(max_seconds=30.0)
    tracemalloc.start()
    try:
        err = _quick(flac, limits, expect=AudioTooLongError)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "30 s" in str(err)
    assert peak < 40 * 2**20  # 600 s would be 19 MB of float32 at 8 kHz plus resampling copies
    w = decode_audio(flac, AudioLimits(max_seconds=30.0, trim=True))
    assert w.duration_s == pytest.approx(30.0, abs=0.01) and "first 30 s" in (w.note or "")
    # the ffmpeg path is bounded too (-t): a 6 s MP3 against a 3 s limit
    mp3 = make_media(tmp_path / "six.mp3", "mp3", seconds=6.0)
    _quick(mp3, AudioLimits(max_seconds=3.0), expect=AudioTooLongError)
    assert decode_audio(mp3, AudioLimits(max_seconds=3.0, trim=True)).duration_s == pytest.approx(3.0, abs=0.01)


def test_encoder_padding_just_over_the_limit_is_not_refused(media):
    # AAC priming makes a 2 s M4A decode to ~2.02 s: cut silently to the limit, no refusal, no note
    w = decode_audio(media["m4a"], AudioLimits(max_seconds=2.0))
    assert w.duration_s == pytest.approx(2.0, abs=1e-3) and w.note is None


def test_too_short_and_silent(tmp_path):
    blip = make_media(tmp_path / "blip.wav", "wav", seconds=0.05, channels=1)
    err = _quick(blip, expect=AudioTooShortError)
    assert "too short" in str(err)
    silent = make_voice_note(tmp_path / "silent.ogg", seconds=2.0, kind="silence")
    assert "silent" in str(_quick(silent, expect=AudioTooShortError))


def test_byte_limit_is_checked_before_reading(tmp_path):
    big = tmp_path / "big.ogg"
    with big.open("wb") as fh:  # sparse: 30 MiB on paper, nothing to read
        fh.truncate(30 * 2**20)
    err = _quick(big, expect=AudioTooLargeError)
    assert "25 MiB" in str(err)
    _quick(b"x" * 2048, AudioLimits(max_bytes=1024), expect=AudioTooLargeError)


def test_decoder_wall_time_limit(media):
    _quick(media["mp3"], AudioLimits(timeout_s=0.001), expect=DecodeTimeoutError)


def test_playlist_disguised_as_audio_is_not_followed(media, tmp_path):
    playlist = tmp_path / "voice.ogg"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:2,\n{media['mp3']}\n#EXT-X-ENDLIST\n")
    _quick(playlist, expect=NotAudioError)


def test_limits_from_settings():
    from core.config import Settings

    limits = AudioLimits.from_settings(Settings(max_attachment_mb=8, max_audio_seconds=60))
    assert limits.max_bytes == 8 * 2**20 and limits.max_seconds == 60.0
    assert AudioLimits().max_bytes == 25 * 2**20 and AudioLimits().min_seconds == 0.1


def test_media_helpers_are_deterministic(tmp_path):
    a = make_voice_note(tmp_path / "a.ogg", seconds=1.5, kind="noise")
    b = make_voice_note(tmp_path / "b.ogg", seconds=1.5, kind="noise")
    assert a.read_bytes() == b.read_bytes()
    assert os.path.getsize(a) > 1000
