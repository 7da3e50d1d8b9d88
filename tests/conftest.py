"""Shared fixtures: where the shared data lives, a random-weight VGGish checkpoint in the official
layout, and a small real index built from bal_train.

Data-dependent fixtures skip with a reason naming the missing path (``-ra`` prints it), never
silently. The expensive ones are session-scoped: a checkpoint and an index are built once per run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _shared_data_dir() -> Path:
    env = os.environ.get("ECHOVIDS_TEST_DATA")
    if env:
        return Path(env).resolve()
    return (PROJECT_ROOT.parent / "shared" / "data").resolve()


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data missing: {path} (set ECHOVIDS_TEST_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(_shared_data_dir())


@pytest.fixture(scope="session")
def bal_train_dir(shared_data: Path) -> Path:
    return _need(shared_data / "audioset_v1_embeddings" / "bal_train")


@pytest.fixture(scope="session")
def audioset_meta(shared_data: Path) -> Path:
    return _need(shared_data / "audioset_meta")


@pytest.fixture(scope="session")
def pca_params_path(shared_data: Path) -> Path:
    return _need(shared_data / "vggish" / "vggish_pca_params.npz")


@pytest.fixture(scope="session")
def yamnet_model_path(shared_data: Path) -> Path:
    return _need(shared_data / "yamnet" / "yamnet.tflite")


@pytest.fixture(scope="session")
def vggish_checkpoint(tmp_path_factory: pytest.TempPathFactory, pca_params_path: Path) -> Path:
    """A TF1 V1 checkpoint with the official variable names and shapes and random weights."""
    from tests.vggish_checkpoint import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("vggish") / "vggish_model.ckpt", pca_params_path)


@pytest.fixture(scope="session")
def small_index_dir(tmp_path_factory: pytest.TempPathFactory, bal_train_dir: Path, audioset_meta: Path) -> Path:
    """A data directory whose current build is a real index over a slice of bal_train."""
    from tests.index_fixtures import build_small_index

    return build_small_index(tmp_path_factory.mktemp("data"), bal_train_dir, audioset_meta)


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory):
    """A real Milvus standalone server from the venv's ``milvus`` package, on a free port, for the session.

    Not skipped when missing: the Milvus store is part of the product, so a missing package (or a
    port the embedded etcd cannot have) fails loudly with the reason. The server runs in its own
    process group and is stopped by its PID (SIGINT, then SIGKILL of that group if it lingers).
    """
    from tests.milvus_server import MilvusProcess

    server = MilvusProcess(tmp_path_factory.mktemp("milvus-server"))
    try:
        server.start()
    except RuntimeError as err:
        server.stop()
        pytest.fail(str(err))
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
async def oembed():
    """The fake YouTube oEmbed endpoint on the test's event loop; answers a test held are released
    before it stops, so no check is left waiting."""
    from tests.fakes.oembed_server import FakeOEmbed

    server = FakeOEmbed()
    await server.start()
    yield server
    server.release()
    await server.stop()
