"""Download the model files: resumable, sha256-verified, with progress, typed errors.

The VGGish checkpoint is 291 MB on a server that honours HTTP ``Range``; a dropped connection
should cost the missing bytes, not the whole file. Partial data lives in ``<name>.part`` next to
the destination and only a file whose sha256 matches is renamed into place (atomically), so a
half-downloaded or tampered file is never loaded as a model. Plain ``urllib`` is enough here: one
sequential stream per file, no event loop involved.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import __version__
from core.config import OFFICIAL_MODEL_BASE_URL
from core.errors import DownloadError
from core.progress import ProgressCallback, ProgressEvent, no_progress

CHUNK = 1 << 20
ATTEMPTS = 3  # per file: a dropped connection is resumed this many times before giving up


@dataclass(frozen=True)
class ModelFile:
    """One downloadable model file.

    ``url`` is relative to ``ECHOVIDS_MODEL_BASE_URL`` (the official AudioSet bucket by default)
    or an absolute ``http(s)://`` URL for files hosted elsewhere (YAMNet). ``url=None`` means no
    source is known yet: the entry is reported as skipped. ``setting`` names the
    :class:`~core.config.Settings` method that gives the destination path, so the environment
    overrides (``VGGISH_CHECKPOINT`` ...) decide where the file goes.
    """

    name: str
    filename: str
    url: str | None
    sha256: str | None
    size: int | None
    setting: str
    description: str = ""


REGISTRY: dict[str, ModelFile] = {
    "vggish_checkpoint": ModelFile(
        name="vggish_checkpoint",
        filename="vggish_model.ckpt",
        url="vggish_model.ckpt",
        sha256="0962b1914e3e053922d957c45bc84a78c985765641dc6bceeeb3a7d8dfecfdf6",
        size=291_108_469,
        setting="vggish_checkpoint",
        description="VGGish weights (TF1 checkpoint)",
    ),
    "vggish_pca_params": ModelFile(
        name="vggish_pca_params",
        filename="vggish_pca_params.npz",
        url="vggish_pca_params.npz",
        sha256="4d878af3e306defbfb37095365aa7e5a6cecb86bad13e859e626151c4e6a8b9d",
        size=73_020,
        setting="vggish_pca_params",
        description="VGGish PCA parameters (AudioSet post-processing)",
    ),
    # YAMNet is not on the AudioSet bucket: absolute URLs. Google publishes two TFLite layouts; this
    # is the classification model (fixed 15,600-sample window, 521 scores), chosen because two
    # independent sources agree on its sha256; core.yamnet also runs the variable-length layout
    # (lite-model/yamnet/tflite/1) for anyone who places it at YAMNET_MODEL.
    "yamnet": ModelFile(
        name="yamnet",
        filename="yamnet.tflite",
        url="https://storage.googleapis.com/download.tensorflow.org/models/tflite/task_library/"
            "audio_classification/android/lite-model_yamnet_classification_tflite_1.tflite",
        sha256="10c95ea3eb9a7bb4cb8bddf6feb023250381008177ac162ce169694d05c317de",
        size=4_126_810,
        setting="yamnet_model",
        description="YAMNet TFLite (label bridge)",
    ),
    "yamnet_class_map": ModelFile(
        name="yamnet_class_map",
        filename="yamnet_class_map.csv",
        url="https://raw.githubusercontent.com/tensorflow/models/dbeeb148f10adf723067040eedcccda00bdce1e8/"
            "research/audioset/yamnet/yamnet_class_map.csv",
        sha256="cdf24d193e196d9e95912a2667051ae203e92a2ba09449218ccb40ef787c6df2",
        size=14_096,
        setting="yamnet_class_map",
        description="YAMNet class names and AudioSet ids",
    ),
}

DEFAULT_NAMES: tuple[str, ...] = ("vggish_checkpoint", "vggish_pca_params", "yamnet", "yamnet_class_map")


@dataclass(frozen=True)
class FetchResult:
    name: str
    path: Path
    status: str          # "downloaded" | "resumed" | "present" | "skipped" | "failed"
    bytes: int = 0       # bytes transferred in this run
    sha256: str | None = None
    detail: str = ""     # one line: why skipped / why failed


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_url(base_url: str, entry: ModelFile) -> str | None:
    """The entry's URL. A base other than the official bucket is a mirror that holds *every* file
    by its file name, so an air-gapped mirror (or a test server) can serve YAMNet too."""
    if entry.url is None:
        return None
    if entry.url.startswith(("http://", "https://")):
        if base_url.rstrip("/") != OFFICIAL_MODEL_BASE_URL:
            return base_url.rstrip("/") + "/" + entry.filename
        return entry.url
    return base_url.rstrip("/") + "/" + entry.url.lstrip("/")


def destination(settings: Any, entry: ModelFile) -> Path:
    """Where the file belongs: never a bundled read-only copy, which only serves as a fallback."""
    return Path(getattr(settings, entry.setting)(bundled=False))


def fetch_models(settings: Any, names: Iterable[str] | None = None, *, force: bool = False,
                 progress: ProgressCallback | None = None, registry: Mapping[str, ModelFile] | None = None,
                 timeout_s: float = 30.0, raise_on_error: bool = True) -> list[FetchResult]:
    """Fetch every named file (default: all) that is missing or fails its checksum.

    Files are attempted in order and independently; with ``raise_on_error`` the first failure is
    raised as :class:`DownloadError` after the others were tried, else it is returned as a
    ``"failed"`` result.
    """
    registry = REGISTRY if registry is None else registry
    wanted = list(names) if names is not None else list(registry)
    unknown = [n for n in wanted if n not in registry]
    if unknown:
        raise DownloadError(f"unknown model file {unknown[0]!r}; known: {', '.join(registry)}")
    results: list[FetchResult] = []
    for name in wanted:
        entry = registry[name]
        dest = destination(settings, entry)
        url = resolve_url(settings.model_base_url, entry)
        if url is None:
            present = dest.is_file()
            results.append(FetchResult(name, dest, "present" if present else "skipped",
                                       detail="" if present else f"no download source known for {entry.filename}; "
                                       f"place it at {dest}"))
            continue
        try:
            results.append(download_file(url, dest, sha256=entry.sha256, size=entry.size, force=force,
                                         progress=progress, timeout_s=timeout_s, name=name))
        except DownloadError as err:
            results.append(FetchResult(name, dest, "failed", detail=str(err)))
    failed = [r for r in results if r.status == "failed"]
    if failed and raise_on_error:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise DownloadError(failed[0].detail + more)
    return results


def download_file(url: str, dest: str | Path, *, sha256: str | None = None, size: int | None = None,
                  force: bool = False, progress: ProgressCallback | None = None, timeout_s: float = 30.0,
                  name: str | None = None) -> FetchResult:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify, then rename into place."""
    dest = Path(dest)
    name = name or dest.name
    progress = progress or no_progress
    if dest.is_file() and not force:
        if sha256 is None or sha256_file(dest) == sha256:
            return FetchResult(name, dest, "present", sha256=sha256)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create {dest.parent}: {err.strerror or err}") from None
    part = dest.with_name(dest.name + ".part")
    if force:
        part.unlink(missing_ok=True)
    start = part.stat().st_size if part.exists() else 0
    if size is not None and start > size:
        part.unlink()
        start = 0
    resumed = start > 0
    transferred = 0
    last_error = ""
    for _attempt in range(ATTEMPTS):
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have == size:
            break
        try:
            got, complete = _stream(url, part, have, size, progress, timeout_s, dest.name)
            transferred += got
            if complete:
                break
            last_error = "the server closed the connection early"
        except _Interrupted as err:
            transferred += err.got
            last_error = err.reason
    else:
        raise DownloadError(
            f"download of {dest.name} was interrupted ({last_error}); run `echovids model fetch` again to resume"
        )
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {dest.name} from {url} (expected sha256 {sha256[:12]}…, got {digest[:12]}…); "
            "the download was discarded"
        )
    os.replace(part, dest)
    return FetchResult(name, dest, "resumed" if resumed else "downloaded", bytes=transferred, sha256=digest)


class _Interrupted(Exception):
    def __init__(self, got: int, reason: str):
        super().__init__(reason)
        self.got, self.reason = got, reason


def _stream(url: str, part: Path, have: int, size: int | None, progress: ProgressCallback,
            timeout_s: float, label: str) -> tuple[int, bool]:
    """Append the rest of ``url`` to ``part``; returns (bytes received, finished)."""
    headers = {"User-Agent": f"echovids/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the part is complete (or bogus: checksum decides)
            return 0, True
        raise DownloadError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"cannot reach {url} ({reason}); are you offline? ECHOVIDS_MODEL_BASE_URL sets another source"
        ) from None
    except (TimeoutError, socket.timeout):
        raise DownloadError(f"cannot reach {url}: timed out after {timeout_s:g} s; are you offline?") from None
    except OSError as err:
        raise DownloadError(f"cannot reach {url}: {err}") from None

    got = 0
    with response:
        status = response.status
        mode = "ab"
        if have and status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {have}-"):
                raise DownloadError(f"cannot resume {url}: the server answered range {content_range!r}")
        else:
            have, mode = 0, "wb"  # 200: the server ignored Range; start over
        length = response.headers.get("Content-Length")
        total = size if size is not None else (have + int(length) if length and length.isdigit() else None)
        done = have
        progress(ProgressEvent("download", done, total, "bytes", label))
        try:
            with part.open(mode) as fh:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    got += len(block)
                    done += len(block)
                    if size is not None and done > size:
                        raise DownloadError(f"{url} sent more than the expected {size} bytes")
                    progress(ProgressEvent("download", done, total, "bytes", label))
        except (http.client.IncompleteRead, ConnectionError, TimeoutError, socket.timeout) as err:
            raise _Interrupted(got, type(err).__name__) from None
    if length and length.isdigit() and got < int(length):
        return got, False
    return got, size is None or done >= size
