"""VGGish: front end against hand-derived facts, the TF network against an independent NumPy
forward pass on a random-weight checkpoint in the official V1 layout, and the post-processor
against the real PCA file and its published test vectors."""

from __future__ import annotations

import csv
import math
import threading
from pathlib import Path

import numpy as np
import pytest

from core.errors import ModelFileError, ModelMissingError
from core.vggish import params
from core.vggish.frontend import waveform_to_examples
from core.vggish.postprocess import Postprocessor

RATE = 16000


# ---------------------------------------------------------------------------------------------
# front end


def _sine(freq: float, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_one_khz_sine_peaks_in_the_band_derived_by_hand():
    # HTK mel: m(f) = 1127 ln(1 + f/700). 66 equally spaced edges from m(125) to m(7500);
    # band i is centred on edge i+1. The band whose centre is nearest m(1000 Hz) must win.
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    step = (mel(7500.0) - mel(125.0)) / 65
    centres = [mel(125.0) + (i + 1) * step for i in range(64)]
    expected = min(range(64), key=lambda i: abs(centres[i] - mel(1000.0)))
    assert expected == 19  # centre ≈ 981.5 mel; the next one (1021.4) is farther
    examples = waveform_to_examples(_sine(1000.0, 2.0))
    assert int(np.argmax(examples.mean(axis=(0, 1)))) == expected
    # and a 3 kHz tone lands higher up
    high = waveform_to_examples(_sine(3000.0, 2.0))
    assert int(np.argmax(high.mean(axis=(0, 1)))) > expected + 10


@pytest.mark.parametrize("seconds, n", [(3.0, 3), (10.0, 10), (0.96, 0), (0.975, 1), (1.9, 1), (0.3, 1), (0.0, 1)])
def test_example_count(seconds, n):
    examples = waveform_to_examples(np.full(int(seconds * RATE), 0.1, dtype=np.float32))
    # 0.96 s is 15,360 samples: 94 STFT frames, fewer than 96, so it is padded to one example
    assert examples.shape == (max(n, 1), 96, 64)
    assert examples.dtype == np.float32


def test_silence_is_log_offset():
    examples = waveform_to_examples(np.zeros(RATE, dtype=np.float32))
    assert np.allclose(examples, math.log(params.LOG_OFFSET))


# ---------------------------------------------------------------------------------------------
# independent NumPy forward pass


def _conv3x3_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Explicit im2col: x [n,h,w,c], w [3,3,c,k] → [n,h,w,k] (stride 1, zero padding 1)."""
    n, h, wd, c = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = np.empty((n, h, wd, 3, 3, c), dtype=x.dtype)
    for dy in range(3):
        for dx in range(3):
            cols[:, :, :, dy, dx, :] = padded[:, dy:dy + h, dx:dx + wd, :]
    out = cols.reshape(n * h * wd, 9 * c) @ w.reshape(9 * c, -1)
    return out.reshape(n, h, wd, -1) + b


def _maxpool2(x: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape  # all even here, so SAME == VALID
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def numpy_vggish(examples: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    x = examples.astype(np.float64)[..., None]
    W = {k: v.astype(np.float64) for k, v in weights.items()}
    relu = lambda a: np.maximum(a, 0.0)  # noqa: E731
    x = _maxpool2(relu(_conv3x3_same(x, W["vggish/conv1/weights"], W["vggish/conv1/biases"])))
    x = _maxpool2(relu(_conv3x3_same(x, W["vggish/conv2/weights"], W["vggish/conv2/biases"])))
    x = relu(_conv3x3_same(x, W["vggish/conv3/conv3_1/weights"], W["vggish/conv3/conv3_1/biases"]))
    x = _maxpool2(relu(_conv3x3_same(x, W["vggish/conv3/conv3_2/weights"], W["vggish/conv3/conv3_2/biases"])))
    x = relu(_conv3x3_same(x, W["vggish/conv4/conv4_1/weights"], W["vggish/conv4/conv4_1/biases"]))
    x = _maxpool2(relu(_conv3x3_same(x, W["vggish/conv4/conv4_2/weights"], W["vggish/conv4/conv4_2/biases"])))
    x = x.reshape(len(x), -1)  # NHWC flatten: [n, 6*4*512]
    x = relu(x @ W["vggish/fc1/fc1_1/weights"] + W["vggish/fc1/fc1_1/biases"])
    x = relu(x @ W["vggish/fc1/fc1_2/weights"] + W["vggish/fc1/fc1_2/biases"])
    return x @ W["vggish/fc2/weights"] + W["vggish/fc2/biases"]


@pytest.fixture(scope="module")
def weights(vggish_checkpoint: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(vggish_checkpoint))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


@pytest.fixture(scope="module")
def embedder(vggish_checkpoint: Path, pca_params_path: Path):
    from core.vggish import VGGishEmbedder

    return VGGishEmbedder(vggish_checkpoint, pca_params_path)


def test_checkpoint_is_v1_with_official_names_and_shapes(vggish_checkpoint: Path, weights):
    from core.vggish.checkpoint import variable_shapes

    # V1 is one file; V2 would be a prefix with .index and .data-* files
    assert vggish_checkpoint.is_file()
    assert not list(vggish_checkpoint.parent.glob("*.index"))
    assert {k: tuple(v.shape) for k, v in weights.items()} == variable_shapes()
    assert sum(v.size for v in weights.values()) == 72_141_184  # the reference's 72.1 M parameters


def _assert_bytes_equal(ours: np.ndarray, ref_projected: np.ndarray, bound: float = 1e-5) -> None:
    """Bytes equal, except where the float reference lies within ``bound`` (the largest possible
    error of the projected value, from the raw error) of a quantization edge: there float32 vs
    float64 rounding may fall either side there."""
    scaled = (np.clip(ref_projected, -2, 2) + 2) * (255.0 / 4)
    expected = scaled.astype(np.uint8)
    near_edge = np.abs(scaled - np.round(scaled)) <= bound * 255.0 / 4
    mismatch = ours != expected
    assert not np.any(mismatch & ~near_edge), f"{int(np.sum(mismatch & ~near_edge))} bytes differ"
    assert np.mean(near_edge) <= 0.05  # the bound is worst-case; the edge zone stays small
    assert np.sum(mismatch) <= 1  # in practice the bytes are equal


def _projection_error_bound(post: Postprocessor, ours_raw: np.ndarray, ref_raw: np.ndarray) -> float:
    """|E @ d|_inf <= max row-sum |E| * |d|_inf."""
    return float(np.abs(post.pca_matrix).sum(axis=1).max() * np.max(np.abs(ours_raw - ref_raw)))


@pytest.mark.slow
def test_network_matches_independent_numpy_forward_pass(embedder, weights, pca_params_path, tmp_path):
    from tests.media import make_voice_note
    from core.audio import decode_audio

    note = decode_audio(make_voice_note(tmp_path / "note.ogg", seconds=3.0, kind="speech"))
    examples = waveform_to_examples(note.samples)
    assert examples.shape == (3, 96, 64)
    ours = embedder.embed_raw(note.samples)
    ref = numpy_vggish(examples, weights)
    assert ours.shape == ref.shape == (3, 128) and ours.dtype == np.float32
    # raw within 1e-3 relative, on the whole output and on its input-dependent part (minus fc2 bias)
    bias = weights["vggish/fc2/biases"].astype(np.float64)
    assert np.max(np.abs(ours - ref)) <= 1e-3 * np.max(np.abs(ref))
    assert np.max(np.abs((ours - bias) - (ref - bias))) <= 1e-3 * np.max(np.abs(ref - bias))
    assert np.max(np.abs(ref - bias)) > 1e-3  # the input actually moves the output
    post = Postprocessor(pca_params_path)
    projected = post.project(ref)
    _assert_bytes_equal(embedder.embed(note.samples), projected, _projection_error_bound(post, ours, ref))
    # the checkpoint's scaling keeps values informative: most inside (-2, 2), not saturated
    assert np.mean(np.abs(projected) < 2) > 0.9
    assert len(np.unique(post(ref))) > 50


@pytest.mark.slow
def test_noise_and_tone_also_match(embedder, weights):
    rng = np.random.default_rng(7)
    samples = np.concatenate([_sine(440.0, 1.0), (0.2 * rng.standard_normal(RATE)).astype(np.float32)])
    examples = waveform_to_examples(samples)
    ours = embedder.embed_examples_raw(examples)
    ref = numpy_vggish(examples, weights)
    assert np.max(np.abs(ours - ref)) <= 1e-3 * np.max(np.abs(ref))


def test_short_clip_gives_one_vector(embedder):
    out = embedder.embed(_sine(300.0, 0.25))
    assert out.shape == (1, 128) and out.dtype == np.uint8


def test_concurrent_callers_get_the_serial_answer(embedder):
    clips = [_sine(100.0 + 150 * i, 2.0) for i in range(4)]
    serial = [embedder.embed(c) for c in clips]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = embedder.embed(clips[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in range(4):
        assert np.array_equal(results[i], serial[i])


# ---------------------------------------------------------------------------------------------
# loading


def test_load_embedder_caches_and_names_missing_files(vggish_checkpoint, pca_params_path, tmp_path):
    from core.config import Settings
    from core.vggish import load_embedder

    settings = Settings(data_dir=tmp_path)
    with pytest.raises(ModelMissingError) as err:
        load_embedder(settings)
    assert "echovids model fetch" in str(err.value) and "VGGISH_CHECKPOINT" in str(err.value)
    assert str(tmp_path / "models" / "vggish_model.ckpt") in str(err.value)
    with pytest.raises(ModelMissingError, match="PCA"):
        load_embedder(settings, checkpoint=vggish_checkpoint)
    first = load_embedder(settings, checkpoint=vggish_checkpoint, pca_params=pca_params_path)
    again = load_embedder(settings.with_overrides(vggish_checkpoint_env=vggish_checkpoint,
                                                  vggish_pca_params_env=pca_params_path))
    assert first is again
    raw = load_embedder(settings, checkpoint=vggish_checkpoint, raw=True)
    assert raw.model is first.model  # one network per checkpoint, whatever the PCA choice
    with pytest.raises(ModelMissingError):
        raw.embed(_sine(440, 1.0))


def test_wrong_files_are_model_file_errors(tmp_path):
    from core.vggish.checkpoint import load_weights
    from tests.vggish_checkpoint import save_v1_checkpoint

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"this is not a checkpoint" * 100)
    with pytest.raises(ModelFileError, match="not a readable TensorFlow checkpoint"):
        load_weights(junk)
    partial = save_v1_checkpoint(tmp_path / "partial.ckpt", {"vggish/conv1/weights": np.zeros((3, 3, 1, 64), np.float32)})
    with pytest.raises(ModelFileError, match="vggish/conv1/biases"):
        load_weights(partial)
    wrong = save_v1_checkpoint(tmp_path / "wrong.ckpt", {"vggish/conv1/weights": np.zeros((3, 3, 1, 32), np.float32)})
    with pytest.raises(ModelFileError, match="shape"):
        load_weights(wrong)
    with pytest.raises(ModelMissingError):
        load_weights(tmp_path / "absent.ckpt")


# ---------------------------------------------------------------------------------------------
# post-processor


def _read_csv(path: Path) -> np.ndarray:
    with path.open() as fh:
        rows = list(csv.reader(fh))
    return np.array([[float(v) for v in row] for row in rows[1:]])  # first row: column indices


def test_postprocessor_matches_published_vectors(shared_data: Path, pca_params_path: Path):
    vectors = shared_data / "vggish" / "test_vectors"
    if not vectors.is_dir():
        pytest.skip(f"shared test data missing: {vectors}")
    raw = _read_csv(vectors / "raw_embeddings.csv")
    expected = _read_csv(vectors / "postprocessed_embeddings.csv").astype(np.uint8)
    assert raw.shape == expected.shape == (2, 128)
    got = Postprocessor(pca_params_path)(raw.astype(np.float32))
    assert got.dtype == np.uint8
    assert np.array_equal(got, expected)  # saturated values: a sign-pattern check


def test_postprocessor_clips_and_truncates(pca_params_path: Path):
    post = Postprocessor(pca_params_path)
    assert post.sha256 == "4d878af3e306defbfb37095365aa7e5a6cecb86bad13e859e626151c4e6a8b9d"
    targets = np.array([-3.0, -2.5, -1.0, 0.0, 1.0, 1.99, 2.5, 5.0] * 16)  # ±2 exactly would sit on float noise
    raw = post.pca_means[:, 0] + np.linalg.solve(post.pca_matrix, targets)
    got = post(raw[None, :])[0]
    # (x + 2) * 255 / 4, truncated: -1 → 63.75 → 63, 0 → 127.5 → 127, 1 → 191.25 → 191, 1.99 → 254.36 → 254
    assert list(got[:8]) == [0, 0, 63, 127, 191, 254, 255, 255]
    assert np.array_equal(post(post.pca_means.T), np.full((1, 128), 127, np.uint8))


def test_postprocessor_rejects_bad_files(tmp_path: Path):
    with pytest.raises(ModelMissingError, match="VGGISH_PCA_PARAMS"):
        Postprocessor(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, pca_eigen_vectors=np.eye(64), pca_means=np.zeros(64))
    with pytest.raises(ModelFileError, match="shapes"):
        Postprocessor(bad)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ModelFileError):
        Postprocessor(text)
