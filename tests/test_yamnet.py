"""YAMNet on real synthesized audio, both TFLite layouts, the AudioSet mapping, errors, threads.

The model in shared/data is a third-party conversion that is not bit-exact to Google's (see
PROVENANCE.md), so sounds are checked by *family* (Speech / tone / noise / Music, from the AudioSet
ontology), never by exact rank or score.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from core.audio import decode_audio
from core.config import load_settings
from core.errors import BadQueryError, EchoVidsError, ModelFileError, ModelMissingError
from core.yamnet import (
    AUDIOSET_CLASSES,
    HOP_SAMPLES,
    LISTEN_PHASES,
    WINDOW_SAMPLES,
    YamnetModel,
    frame_count,
    get_model,
    load_yamnet,
    phase_offsets,
    phased_frame_count,
)
from tests.media import make_media, make_voice_note

CHORDS = (
    "aevalsrc='exp(-2*mod(t,1))*0.15*("
    "sin(2*PI*if(lt(t,1),261.6,if(lt(t,2),349.2,if(lt(t,3),392,261.6)))*t)"
    "+sin(2*PI*if(lt(t,1),329.6,if(lt(t,2),440,if(lt(t,3),493.9,329.6)))*t)"
    "+sin(2*PI*if(lt(t,1),392,if(lt(t,2),523.3,if(lt(t,3),587.3,392)))*t))':d=6:s=44100"
)


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, yamnet_model_path: Path, audioset_meta: Path) -> Path:
    """The shared model with its class map and AudioSet's label list beside it (as `model fetch` lays it out)."""
    d = tmp_path_factory.mktemp("yamnet")
    shutil.copy(yamnet_model_path, d / "yamnet.tflite")
    shutil.copy(yamnet_model_path.with_name("yamnet_class_map.csv"), d / "yamnet_class_map.csv")
    shutil.copy(audioset_meta / "class_labels_indices.csv", d / "class_labels_indices.csv")
    return d


@pytest.fixture(scope="module")
def model(model_dir: Path) -> YamnetModel:
    return get_model(model_dir / "yamnet.tflite")


@pytest.fixture(scope="module")
def families(audioset_meta: Path) -> dict[str, set[str]]:
    """Label-name families from the AudioSet ontology (a label and everything under it)."""
    from core.index.labels import load_labels

    labels = load_labels(audioset_meta)

    def under(name: str) -> set[str]:
        return {labels.names[i] for i in labels.family(name)}

    tone = {"Sine wave", "Chirp tone", "Beep, bleep", "Dial tone", "Busy signal", "Telephone", "Alarm",
            "Whistle", "Whistling", "Ping", "Electronic tuner", "Tuning fork", "Sidetone", "Harmonic"}
    return {"speech": under("Speech"), "music": under("Music"), "noise": under("Noise") | {"Static"},
            "tone": tone, "silence": {"Silence"}}


def _decode(path: Path) -> np.ndarray:
    return decode_audio(path).samples


def _names(heard) -> list[str]:
    return [h.label for h in heard]


# -- framing and mapping ---------------------------------------------------------------------------
def test_window_count_follows_yamnet_padding_rule():
    assert [frame_count(n) for n in (1, WINDOW_SAMPLES, WINDOW_SAMPLES + 1, WINDOW_SAMPLES + HOP_SAMPLES,
                                     WINDOW_SAMPLES + HOP_SAMPLES + 1, 160000)] == [1, 1, 2, 2, 3, 20]


def test_listen_frames_every_quarter_second():
    """Two phases of the 0.48 s grid: a clip of one window or less is framed once, longer clips twice
    (the second grid 0.24 s later), so a 10 s note is heard in 40 windows instead of 20."""
    assert LISTEN_PHASES == 2
    assert phase_offsets(WINDOW_SAMPLES, 2) == [0]
    assert phase_offsets(WINDOW_SAMPLES + 1, 2) == [0, HOP_SAMPLES // 2]
    assert [phased_frame_count(n, 2) for n in (100, WINDOW_SAMPLES, 16000 * 3, 160000)] == [1, 1, 11, 40]


def test_phased_scores_interleave_the_shifted_grids(model: YamnetModel):
    """What listen hears is exactly the model's windows on the clip and on the clip 0.24 s later,
    in order of start time (no resampling, no invented windows)."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-0.3, 0.3, 16000 * 3).astype(np.float32)
    a, b = model.scores(x), model.scores(x[HOP_SAMPLES // 2:])
    got = model.phased_scores(x)
    assert got.shape == (len(a) + len(b), 521)
    np.testing.assert_array_equal(got[0::2], a)
    np.testing.assert_array_equal(got[1::2], b)
    assert len(model.listen(x).scores) == len(got)


def test_scores_shape_per_window(model: YamnetModel):
    for n, windows in ((100, 1), (WINDOW_SAMPLES, 1), (16000 * 3, 6), (16000 * 10, 20)):
        s = model.scores(np.zeros(n, np.float32))
        assert s.shape == (windows, 521) and s.dtype == np.float32
        assert ((s >= 0) & (s <= 1)).all()


def test_audioset_scores_land_on_the_same_mid(model: YamnetModel, audioset_meta: Path):
    import csv

    as_rows = list(csv.DictReader((audioset_meta / "class_labels_indices.csv").open(newline="")))
    as_mid = [r["mid"] for r in as_rows]
    x = np.random.default_rng(1).uniform(-0.3, 0.3, 16000 * 2).astype(np.float32)
    s, a = model.scores(x), model.audioset_scores(x)
    assert a.shape == (s.shape[0], AUDIOSET_CLASSES) and a.dtype == np.float32
    for i, mid in enumerate(model.mids):
        np.testing.assert_array_equal(a[:, as_mid.index(mid)], s[:, i])
    unmapped = [as_rows[j]["display_name"] for j in range(AUDIOSET_CLASSES) if as_mid[j] not in model.mids]
    assert sorted(unmapped) == sorted(["Male speech, man speaking", "Female speech, woman speaking", "Battle cry",
                                       "Male singing", "Female singing", "Funny music"])
    assert (a[:, [as_mid.index(r["mid"]) for r in as_rows if r["display_name"] in unmapped]] == 0).all()
    assert model.audioset_names[0] == "Speech" and len(model.audioset_names) == AUDIOSET_CLASSES
    # Another label list (e.g. the one a build stores) gets its own columns, by mid.
    shuffled = as_mid[::-1]
    b = model.audioset_scores(x, label_mids=shuffled)
    np.testing.assert_array_equal(b[:, ::-1], a)
    with pytest.raises(ModelFileError):
        model.audioset_scores(x, label_mids=["/m/not-a-class"])


# -- what it hears ----------------------------------------------------------------------------------
def test_speech_voice_note_is_heard_as_speech(model: YamnetModel, tmp_path: Path, families):
    note = make_voice_note(tmp_path / "note.ogg", seconds=5.0, kind="speech")  # OGG/Opus 48 kHz, like Discord
    heard = model.heard(_decode(note))
    assert heard[0].label in families["speech"], heard
    assert 1 <= len(heard) <= 5
    assert all(0.0 <= h.score <= 1.0 for h in heard)
    assert [h.score for h in heard] == sorted((h.score for h in heard), reverse=True)


def test_pure_tones_are_heard_as_tones(model: YamnetModel, tmp_path: Path, families):
    beep = make_media(tmp_path / "beep.wav", "wav", seconds=3.0, kind="tone", frequency=1000)
    heard = _names(model.heard(_decode(beep)))
    assert {"Beep, bleep", "Sine wave"} & set(heard), heard
    a440 = make_media(tmp_path / "a440.mp3", "mp3", seconds=3.0, kind="tone", frequency=440)
    heard = _names(model.heard(_decode(a440)))
    # The converted model calls a steady 440 Hz "Dial tone"/"Telephone" rather than "Sine wave"
    # (PROVENANCE.md): still a pure-tone family, never speech, music or noise.
    assert heard[0] in families["tone"], heard
    assert not set(heard) & (families["speech"] | (families["noise"] - families["tone"]))  # "Sidetone" is both


def test_white_noise_is_heard_as_noise(model: YamnetModel, tmp_path: Path, families):
    noise = make_media(tmp_path / "noise.flac", "flac", seconds=3.0, kind="noise")
    heard = _names(model.heard(_decode(noise)))
    # Band-limited to 8 kHz by the 16 kHz rate, white noise also sounds like a waterfall to YAMNet.
    assert set(heard[:3]) & families["noise"], heard
    assert heard[0] not in families["speech"] | families["music"]


def test_chord_sequence_is_heard_as_music(model: YamnetModel, tmp_path: Path, families):
    path = tmp_path / "chords.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", CHORDS, str(path)],
                   check=True, capture_output=True, timeout=60)
    heard = model.heard(_decode(path))
    assert heard[0].label in families["music"], heard
    assert heard[0].score > 0.3


def test_chirp_is_tonal_or_musical_not_speech(model: YamnetModel, tmp_path: Path, families):
    chirp = make_media(tmp_path / "chirp.wav", "wav", seconds=4.0, kind="chirp")
    heard = _names(model.heard(_decode(chirp)))
    assert set(heard) & (families["tone"] | families["music"]), heard
    assert heard[0] not in families["speech"]


def test_digital_silence_is_silence(model: YamnetModel, families):
    heard = model.heard(np.zeros(16000, np.float32))
    assert heard[0].label == "Silence" and heard[0].score > 0.5
    listening = model.listen(np.zeros(16000 * 2, np.float32))
    assert listening.sounding.all() and listening.probs.shape == (len(listening.scores), AUDIOSET_CLASSES)


def test_trailing_silence_is_not_what_was_heard(model: YamnetModel, tmp_path: Path, families):
    """Three seconds of speech then four of silence, as a Discord voice note: heard and searched as speech."""
    wav, note = tmp_path / "hello.wav", tmp_path / "hello.ogg"
    subprocess.run(["espeak-ng", "-w", str(wav), "Hello there, find me a dog."], check=True, capture_output=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-af", "apad=pad_dur=5",
                    "-c:a", "libopus", "-ar", "48000", "-ac", "1", str(note)], check=True, capture_output=True)
    samples = _decode(note)
    listening = model.listen(samples)
    assert len(listening.scores) == phased_frame_count(len(samples), LISTEN_PHASES)
    assert 0 < listening.sounding.sum() < len(listening.scores)  # the tail windows are dropped
    assert listening.heard[0].label in families["speech"]
    assert "Silence" not in _names(listening.heard)
    assert _names(model.heard(samples)) == _names(listening.heard)
    silence_col = model.audioset_names.index("Silence")
    assert listening.probs.shape == (int(listening.sounding.sum()), AUDIOSET_CLASSES)
    assert (listening.probs[:, silence_col] == 0).all()
    assert listening.probs[:, model.audioset_names.index("Speech")].mean() > 0.5


# -- threads, cache, settings ----------------------------------------------------------------------
def test_concurrent_callers_get_the_same_answers(model: YamnetModel):
    rng = np.random.default_rng(7)
    inputs = [rng.uniform(-0.5, 0.5, 16000 * k).astype(np.float32) for k in (1, 2, 3, 4, 5, 6)]
    expected = [model.scores(x) for x in inputs]
    got: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            got[t] = [model.scores(inputs[(t + j) % len(inputs)]) for j in range(len(inputs) * 2)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors
    for t, outs in got.items():
        for j, out in enumerate(outs):
            np.testing.assert_array_equal(out, expected[(t + j) % len(inputs)])


def test_model_is_cached_per_path(model_dir: Path):
    assert get_model(model_dir / "yamnet.tflite") is get_model(model_dir / "yamnet.tflite")


def test_settings_resolve_model_and_labels(model_dir: Path, audioset_meta: Path, tmp_path: Path):
    only_model = tmp_path / "m"
    only_model.mkdir()
    shutil.copy(model_dir / "yamnet.tflite", only_model / "yamnet.tflite")
    shutil.copy(model_dir / "yamnet_class_map.csv", only_model / "yamnet_class_map.csv")
    env = {"YAMNET_MODEL": str(only_model / "yamnet.tflite"), "ECHOVIDS_AUDIOSET_META": str(audioset_meta),
           "ECHOVIDS_DATA_DIR": str(tmp_path / "data")}
    m = load_yamnet(load_settings(env, dotenv=False))
    assert m.model_path == only_model / "yamnet.tflite"
    assert m.audioset_scores(np.zeros(100, np.float32)).shape == (1, AUDIOSET_CLASSES)
    # DATA_DIR/models is the default when nothing else is set.
    models = tmp_path / "data2" / "models"
    models.mkdir(parents=True)
    shutil.copy(model_dir / "yamnet.tflite", models / "yamnet.tflite")
    shutil.copy(model_dir / "yamnet_class_map.csv", models / "yamnet_class_map.csv")
    m2 = load_yamnet(load_settings({"ECHOVIDS_DATA_DIR": str(tmp_path / "data2"),
                                    "ECHOVIDS_AUDIOSET_META": str(audioset_meta)}, dotenv=False))
    assert m2.model_path == models / "yamnet.tflite"
    # A flag beats the environment.
    m3 = load_yamnet(load_settings(env, dotenv=False), model=models / "yamnet.tflite")
    assert m3.model_path == models / "yamnet.tflite"


# -- errors ------------------------------------------------------------------------------------------
def _one_line(err: EchoVidsError) -> str:
    text = str(err)
    assert text and "\n" not in text
    return text


def test_missing_model_says_how_to_get_it(tmp_path: Path):
    with pytest.raises(ModelMissingError) as info:
        YamnetModel(tmp_path / "nope.tflite")
    assert "echovids model fetch" in _one_line(info.value) and "YAMNET_MODEL" in str(info.value)
    with pytest.raises(ModelMissingError):
        # (no bundled copy either: the shared-data fallback points at an empty folder)
        load_yamnet(load_settings({"ECHOVIDS_DATA_DIR": str(tmp_path), "ECHOVIDS_TEST_DATA": str(tmp_path)},
                                  dotenv=False))


def test_missing_class_map_and_labels(model_dir: Path, tmp_path: Path):
    shutil.copy(model_dir / "yamnet.tflite", tmp_path / "yamnet.tflite")
    with pytest.raises(ModelMissingError) as info:
        YamnetModel(tmp_path / "yamnet.tflite")
    assert "class map" in _one_line(info.value)
    shutil.copy(model_dir / "yamnet_class_map.csv", tmp_path / "yamnet_class_map.csv")
    m = YamnetModel(tmp_path / "yamnet.tflite")  # heard() needs no AudioSet list ...
    assert m.heard(np.zeros(100, np.float32))
    with pytest.raises(ModelMissingError) as info:  # ... the AudioSet mapping does
        m.audioset_scores(np.zeros(100, np.float32))
    assert "class_labels_indices.csv" in _one_line(info.value)


def test_broken_files_are_model_file_errors(model_dir: Path, tmp_path: Path):
    bad = tmp_path / "yamnet.tflite"
    bad.write_bytes(b"this is not a flatbuffer" * 100)
    shutil.copy(model_dir / "yamnet_class_map.csv", tmp_path / "yamnet_class_map.csv")
    with pytest.raises(ModelFileError) as info:
        YamnetModel(bad)
    _one_line(info.value)
    short_map = tmp_path / "short.csv"
    short_map.write_text("index,mid,display_name\n0,/m/09x0r,Speech\n")
    with pytest.raises(ModelFileError):
        YamnetModel(model_dir / "yamnet.tflite", class_map_path=short_map)


def test_bad_samples_are_bad_queries(model: YamnetModel):
    with pytest.raises(BadQueryError):
        model.scores(np.zeros(0, np.float32))
    with pytest.raises(BadQueryError):
        model.scores(np.zeros((2, 16000), np.float32))
    with pytest.raises(BadQueryError):
        model.scores(np.full(16000, np.nan, np.float32))
    # int16 PCM is accepted and scaled to [-1, 1]
    assert model.scores(np.zeros(16000, np.int16)).shape == (2, 521)


# -- the official variable-length layout -------------------------------------------------------------
@pytest.fixture(scope="module")
def variable_model(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """A TFLite model with the official ``lite-model/yamnet/tflite/1`` signature: waveform [n] in,
    scores [frames, 521], embeddings [frames, 1024] and a log-mel-like [m, 64] out (frames of 0.975 s
    every 0.48 s). Its scores are a known function of each frame, so the runner's padding, resizing and
    output picking can be checked exactly without the 16 MB official file."""
    tf = pytest.importorskip("tensorflow")
    d = tmp_path_factory.mktemp("yamnet-var")
    w, b = _fake_weights()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def fake_yamnet(waveform):
        frames = tf.signal.frame(waveform, WINDOW_SAMPLES, HOP_SAMPLES)
        level = tf.reduce_mean(tf.abs(frames), axis=1, keepdims=True) * 10.0
        scores = tf.sigmoid(level @ w + b)
        embeddings = tf.tile(level, [1, 1024])
        spectrogram = tf.reshape(tf.signal.frame(waveform, 64, 160), [-1, 64])
        return scores, embeddings, spectrogram

    converter = tf.lite.TFLiteConverter.from_concrete_functions([fake_yamnet.get_concrete_function()], fake_yamnet)
    (d / "yamnet.tflite").write_bytes(converter.convert())
    shutil.copy(model_dir / "yamnet_class_map.csv", d / "yamnet_class_map.csv")
    shutil.copy(model_dir / "class_labels_indices.csv", d / "class_labels_indices.csv")
    return d / "yamnet.tflite"


def _fake_weights() -> tuple[np.ndarray, np.ndarray]:
    return np.linspace(-3, 3, 521, dtype=np.float32)[None], np.linspace(1, -1, 521, dtype=np.float32)


def test_variable_length_layout_matches_our_framing(variable_model: Path, model: YamnetModel):
    m = YamnetModel(variable_model)
    assert m.layout == "waveform" and model.layout == "window"
    w, b = _fake_weights()
    rng = np.random.default_rng(3)
    for n in (100, 16000 * 3, 40000, 16000 * 3):  # also resizes back to a length seen before
        x = rng.uniform(-1, 1, n).astype(np.float32)
        padded = np.pad(x, (0, max(0, (frame_count(n) - 1) * HOP_SAMPLES + WINDOW_SAMPLES - n)))
        frames = np.stack([padded[k * HOP_SAMPLES:k * HOP_SAMPLES + WINDOW_SAMPLES] for k in range(frame_count(n))])
        level = np.abs(frames).mean(axis=1, keepdims=True) * 10.0
        expected = 1 / (1 + np.exp(-(level @ w + b)))
        got = m.scores(x)
        assert got.shape == (frame_count(n), 521)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        assert m.embeddings(x).shape == (frame_count(n), 1024)
        assert m.audioset_scores(x).shape == (frame_count(n), AUDIOSET_CLASSES)
    # The converted window model has no embeddings: a clear error, not a crash.
    with pytest.raises(ModelFileError):
        model.embeddings(np.zeros(100, np.float32))
