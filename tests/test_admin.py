"""The admin facade: index status (build + liveness cache) and embedding, on real builds and files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.admin import Admin
from core.config import Settings
from core.errors import IndexMissingError, ModelMissingError
from core.liveness.cache import CACHE_FILENAME, LivenessCache
from core.liveness.oembed import OEmbedResult
from tests.index_fixtures import small_shards
from tests.media import make_voice_note


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory, bal_train_dir: Path, audioset_meta: Path) -> Path:
    from core.index.builder import build_index

    data = tmp_path_factory.mktemp("admin-data")
    build_index(Settings(data_dir=data, audioset_meta=audioset_meta), audioset_dirs=small_shards(bal_train_dir, 40))
    return data


def test_status_of_a_build_never_checked_creates_no_cache(tiny_index: Path):
    status = Admin(Settings(data_dir=tiny_index)).status()
    from core.index.store import open_current

    build = open_current(tiny_index)
    assert status.build_id == build.build_id and status.path == build.path
    assert status.videos == len(build.video_ids()) > 0
    assert status.counts["vectors"] == build.size and status.disk_bytes > build.size * 128
    assert status.live_states == {} and status.newest_check is None
    assert not (tiny_index / CACHE_FILENAME).exists()
    doc = status.to_json()
    assert doc["current"] == build.build_id and doc["size_bytes"] == status.disk_bytes
    assert doc["manifest"]["counts"]["vectors"] == build.size


def test_status_counts_this_builds_videos_by_liveness_state(tiny_index: Path, tmp_path: Path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_index, data, symlinks=True)
    before = Admin(Settings(data_dir=data)).status()
    from core.index.store import open_current

    videos = open_current(data).video_ids()
    cache = LivenessCache.for_data_dir(data)
    cache.put_many([OEmbedResult(videos[0], "live"), OEmbedResult(videos[1], "gone"),
                    OEmbedResult(videos[2], "unembeddable"), OEmbedResult("zzzzzzzzzzz", "gone")], now=1000.0)
    cache.close()

    status = Admin(Settings(data_dir=data)).status()
    assert status.videos == before.videos and status.build_id == before.build_id
    assert status.live_states == {"live": 1, "gone": 1, "unembeddable": 1}  # a video of no build is not counted
    assert status.newest_check == 1000.0
    assert status.checked == 3 and status.live_share == 2 / 3 and before.live_share is None


def test_status_without_an_index_is_a_typed_error(tmp_path: Path):
    with pytest.raises(IndexMissingError):
        Admin(Settings(data_dir=tmp_path)).status()


def test_embed_is_the_query_embedding(tmp_path: Path, vggish_checkpoint: Path, pca_params_path: Path):
    from core.audio import AudioLimits, decode_audio
    from core.vggish import load_embedder

    settings = Settings(data_dir=tmp_path)
    note = make_voice_note(tmp_path / "note.ogg", seconds=2.0, kind="speech")
    result = Admin(settings).embed(note, checkpoint=vggish_checkpoint, pca_params=pca_params_path)
    expected = load_embedder(settings, vggish_checkpoint, pca_params_path).embed(
        decode_audio(note, AudioLimits.from_settings(settings)).samples)
    assert result.vectors.dtype == np.uint8 and np.array_equal(result.vectors, expected)
    assert not result.raw and result.duration_s == pytest.approx(2.0, abs=0.05)

    raw = Admin(settings).embed(note.read_bytes(), checkpoint=vggish_checkpoint, raw=True)  # no PCA file needed
    assert raw.raw and raw.vectors.dtype == np.float32 and raw.vectors.shape == expected.shape


def test_embed_reports_a_missing_model_before_reading_the_audio(tmp_path: Path):
    with pytest.raises(ModelMissingError, match="echovids model fetch"):
        Admin(Settings(data_dir=tmp_path)).embed(b"not audio at all")


def test_current_build_and_status_says_no_fallback(tiny_index: Path):
    admin = Admin(Settings(data_dir=tiny_index))
    status = admin.status()
    kept = admin.current()  # what `index build --if-missing` keeps
    assert kept is not None and not kept.built and kept.path == status.path and kept.counts == status.counts
    assert status.fallback is None and status.to_json()["fallback"] is None
    assert admin.refresh_holder() is None  # no refresh runs on this data directory
