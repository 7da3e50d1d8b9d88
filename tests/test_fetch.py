"""Model fetch against a real HTTP server on 127.0.0.1 that honours Range (like the bucket)."""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
from pathlib import Path

import pytest

from core.config import Settings
from core.errors import DownloadError
from core.fetch import REGISTRY, ModelFile, download_file, fetch_models, resolve_url


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: int | None = None  # drop the connection after this many body bytes, once
        self.ignore_range = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/audioset"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        rng = self.headers.get("Range")
        self.server.requests.append((self.path, rng))
        name = self.path.removeprefix("/audioset/")
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not self.server.ignore_range:
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        cut = self.server.cut_after
        if cut is not None:
            self.server.cut_after = None
            self.wfile.write(chunk[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(chunk)


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _entry(name: str, body: bytes, *, sha: str | None = None) -> ModelFile:
    return ModelFile(name=name, filename=f"{name}.bin", url=f"{name}.bin",
                     sha256=sha or hashlib.sha256(body).hexdigest(), size=len(body), setting="vggish_checkpoint")


def _settings(tmp_path: Path, base: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_base_url=base)


def test_registry_has_official_names_and_checksums():
    ckpt, pca = REGISTRY["vggish_checkpoint"], REGISTRY["vggish_pca_params"]
    assert resolve_url("https://storage.googleapis.com/audioset", ckpt) == "https://storage.googleapis.com/audioset/vggish_model.ckpt"
    assert resolve_url("https://storage.googleapis.com/audioset/", pca) == "https://storage.googleapis.com/audioset/vggish_pca_params.npz"
    assert ckpt.sha256 == "0962b1914e3e053922d957c45bc84a78c985765641dc6bceeeb3a7d8dfecfdf6"
    assert pca.sha256 == "4d878af3e306defbfb37095365aa7e5a6cecb86bad13e859e626151c4e6a8b9d"
    assert "yamnet" in REGISTRY  # the slot issue 7 fills
    absolute = ModelFile("x", "x", "https://example.org/x.tflite", None, None, "yamnet_model")
    assert resolve_url("https://storage.googleapis.com/audioset", absolute) == "https://example.org/x.tflite"
    assert resolve_url("http://127.0.0.1:1/base", absolute) == "http://127.0.0.1:1/base/x"  # a mirror has it all


def test_fetches_the_real_pca_file_into_data_dir_models(server, tmp_path, pca_params_path):
    server.files["vggish_pca_params.npz"] = pca_params_path.read_bytes()
    settings = _settings(tmp_path, server.base)
    events = []
    [result] = fetch_models(settings, ["vggish_pca_params"], progress=events.append)
    assert result.status == "downloaded"
    assert result.path == tmp_path / "data" / "models" / "vggish_pca_params.npz"
    assert result.path.read_bytes() == pca_params_path.read_bytes()
    assert not list(result.path.parent.glob("*.part"))
    assert events[-1].done == events[-1].total == 73_020 and events[-1].unit == "bytes"
    # a second run verifies and does not download again
    [again] = fetch_models(settings, ["vggish_pca_params"])
    assert again.status == "present" and len(server.requests) == 1


def test_environment_override_decides_the_destination(server, tmp_path, pca_params_path):
    server.files["vggish_pca_params.npz"] = pca_params_path.read_bytes()
    target = tmp_path / "elsewhere" / "pca.npz"
    settings = _settings(tmp_path, server.base).with_overrides(vggish_pca_params_env=target)
    [result] = fetch_models(settings, ["vggish_pca_params"])
    assert result.path == target and target.is_file()


def test_resumes_a_partial_download_with_range(server, tmp_path):
    body = bytes(range(256)) * 4096  # 1 MiB
    server.files["model.bin"] = body
    dest = tmp_path / "model.bin"
    (tmp_path / "model.bin.part").write_bytes(body[:300_000])
    result = download_file(f"{server.base}/model.bin", dest, sha256=hashlib.sha256(body).hexdigest(), size=len(body))
    assert result.status == "resumed" and result.bytes == len(body) - 300_000
    assert dest.read_bytes() == body
    assert server.requests == [("/audioset/model.bin", "bytes=300000-")]


def test_dropped_connection_is_resumed_in_the_same_run(server, tmp_path):
    body = bytes(reversed(range(256))) * 8192  # 2 MiB
    server.files["model.bin"] = body
    server.cut_after = 700_000
    dest = tmp_path / "model.bin"
    result = download_file(f"{server.base}/model.bin", dest, sha256=hashlib.sha256(body).hexdigest(), size=len(body))
    assert dest.read_bytes() == body
    assert [r[1] for r in server.requests][0] is None
    assert server.requests[1][1] is not None and server.requests[1][1].startswith("bytes=")
    assert result.status == "downloaded"


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    body = b"abc" * 50_000
    server.files["model.bin"] = body
    server.ignore_range = True
    (tmp_path / "model.bin.part").write_bytes(b"stale-garbage")
    download_file(f"{server.base}/model.bin", tmp_path / "model.bin", sha256=hashlib.sha256(body).hexdigest())
    assert (tmp_path / "model.bin").read_bytes() == body


def test_checksum_mismatch_is_refused_and_discarded(server, tmp_path):
    server.files["model.bin"] = b"tampered" * 1000
    entry = _entry("model", b"the real thing" * 1000)
    entry = ModelFile(**{**entry.__dict__, "url": "model.bin", "size": None})
    settings = _settings(tmp_path, server.base)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch_models(settings, ["model"], registry={"model": entry})
    models = tmp_path / "data" / "models"
    assert not (models / "vggish_model.ckpt").exists()
    assert not list(models.glob("*.part"))


def test_existing_file_with_wrong_checksum_is_replaced(server, tmp_path):
    body = b"good" * 10_000
    server.files["m.bin"] = body
    dest = tmp_path / "m.bin"
    dest.write_bytes(b"corrupted")
    result = download_file(f"{server.base}/m.bin", dest, sha256=hashlib.sha256(body).hexdigest())
    assert result.status == "downloaded" and dest.read_bytes() == body


def test_http_404_and_offline_are_download_errors(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{server.base}/missing.bin", tmp_path / "x")
    # a port nobody listens on: connection refused, as when offline
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    settings = _settings(tmp_path, f"http://127.0.0.1:{port}/audioset")
    with pytest.raises(DownloadError, match="offline") as err:
        fetch_models(settings, ["vggish_checkpoint", "vggish_pca_params"])
    assert "\n" not in str(err.value) and "and 1 more" in str(err.value)


def test_entry_without_source_is_skipped(tmp_path):
    registry = {"yamnet": ModelFile("yamnet", "yamnet.tflite", None, None, None, "yamnet_model")}
    results = fetch_models(_settings(tmp_path, "http://127.0.0.1:9"), ["yamnet"], registry=registry)
    assert results[0].status == "skipped" and "yamnet.tflite" in results[0].detail


def test_yamnet_comes_from_its_own_host_or_from_a_mirror_by_file_name():
    official = "https://storage.googleapis.com/audioset"
    for name in ("yamnet", "yamnet_class_map"):
        entry = REGISTRY[name]
        assert entry.sha256 and entry.size and entry.url.startswith("https://")
        assert resolve_url(official, entry) == entry.url
        assert resolve_url("http://127.0.0.1:8000/m", entry) == f"http://127.0.0.1:8000/m/{entry.filename}"


def test_fetch_writes_yamnet_to_data_dir_even_when_a_bundled_copy_serves(server, tmp_path, monkeypatch, capsys,
                                                                         yamnet_model_path):
    """The bundled model is only a read fallback: a fetch puts the official files in DATA_DIR/models."""
    from bot.cli import main
    from core.config import load_settings

    model, class_map = yamnet_model_path.read_bytes(), (yamnet_model_path.parent / "yamnet_class_map.csv").read_bytes()
    server.files["yamnet.tflite"] = model
    server.files["yamnet_class_map.csv"] = class_map
    registry = {
        "yamnet": ModelFile("yamnet", "yamnet.tflite", "https://example.invalid/y.tflite",
                            hashlib.sha256(model).hexdigest(), len(model), "yamnet_model"),
        "yamnet_class_map": ModelFile("yamnet_class_map", "yamnet_class_map.csv", "https://example.invalid/y.csv",
                                      hashlib.sha256(class_map).hexdigest(), len(class_map), "yamnet_class_map"),
    }
    monkeypatch.setattr("core.fetch.REGISTRY", registry)
    monkeypatch.setattr("core.fetch.DEFAULT_NAMES", tuple(registry))
    monkeypatch.setenv("ECHOVIDS_MODEL_BASE_URL", server.base)
    monkeypatch.setenv("ECHOVIDS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("YAMNET_MODEL", raising=False)
    settings = load_settings()
    assert settings.yamnet_model() == yamnet_model_path  # before: the bundled copy serves
    assert main(["model", "fetch"]) == 0
    out = capsys.readouterr().out
    assert "yamnet.tflite: downloaded, sha256 verified" in out
    assert (tmp_path / "data" / "models" / "yamnet_class_map.csv").read_bytes() == class_map
    assert settings.yamnet_model() == tmp_path / "data" / "models" / "yamnet.tflite"  # after: the fetched one


def test_cli_model_fetch(server, tmp_path, pca_params_path, monkeypatch, capsys):
    from bot.cli import main

    server.files["vggish_pca_params.npz"] = pca_params_path.read_bytes()
    server.files["vggish_model.ckpt"] = b"not the real checkpoint"
    monkeypatch.setenv("ECHOVIDS_MODEL_BASE_URL", server.base)
    for var in ("VGGISH_CHECKPOINT", "VGGISH_PCA_PARAMS", "YAMNET_MODEL"):
        monkeypatch.delenv(var, raising=False)
    code = main(["model", "fetch", "--index", str(tmp_path / "data"), "--no-yamnet"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "vggish_pca_params.npz: downloaded, sha256 verified" in out
    assert "vggish_model.ckpt: FAILED" in out
    lines = [line for line in err.splitlines() if line.startswith("echovids:")]
    assert len(lines) == 1 and "checksum mismatch for vggish_model.ckpt" in lines[0]
    assert (tmp_path / "data" / "models" / "vggish_pca_params.npz").is_file()
    assert not (tmp_path / "data" / "models" / "vggish_model.ckpt").exists()


def test_label_metadata_is_fetched_once_through_the_same_downloader(server, tmp_path, audioset_meta):
    from core.index.labels import CLASS_CSV, ONTOLOGY, load_labels, resolve_meta_dir

    for name in (CLASS_CSV, ONTOLOGY):
        server.files[name] = (audioset_meta / name).read_bytes()
    data = tmp_path / "data"
    meta = resolve_meta_dir(None, data, mirror=server.base)
    assert meta == data / "meta" and not list(meta.glob("*.part"))
    assert len(load_labels(meta)) == 527
    assert resolve_meta_dir(None, data, mirror=server.base) == meta
    assert len(server.requests) == 2  # cached: the second call asked for nothing


def test_label_metadata_download_failure_names_the_setting(server, tmp_path):
    from core.index.labels import resolve_meta_dir

    with pytest.raises(DownloadError, match="HTTP 404.*ECHOVIDS_AUDIOSET_META") as err:
        resolve_meta_dir(None, tmp_path / "data", mirror=server.base)
    assert "ECHOVIDS_MODEL_BASE_URL" not in str(err.value)
    sock = socket.socket()  # a port nobody listens on, as when offline
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(DownloadError, match="cannot reach.*ECHOVIDS_AUDIOSET_META") as err:
        resolve_meta_dir(None, tmp_path / "data", mirror=f"http://127.0.0.1:{port}/nothing")
    assert "ECHOVIDS_MODEL_BASE_URL" not in str(err.value)
    assert not (tmp_path / "data" / "meta" / "class_labels_indices.csv").exists()
