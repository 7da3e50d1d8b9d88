"""The official AudioSet embedding release, for machines that have no local copy.

``make run`` must work on a fresh machine with internet and nothing else: when no AudioSet folder is
configured or bundled, the default index is built from the official release. The release is one
2.4 GB tarball holding ``bal_train/``, ``eval/`` and ``unbal_train/``; it is downloaded once
(resumable, sha256-verified by :func:`core.fetch.download_file`), and only the requested split is
extracted, so the tarball can be deleted afterwards without losing the index source.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from core.errors import DownloadError
from core.fetch import download_file
from core.progress import ProgressCallback, ProgressEvent, no_progress

RELEASE_URL = "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/features/features.tar.gz"
RELEASE_SHA256 = "cd95d500ab2422d4233cb822e25cf73033633e2068eab64d39024e85125cb760"
SPLITS = ("bal_train", "eval", "unbal_train")


def release_root(data_dir: Path) -> Path:
    return Path(data_dir) / "audioset"


def ensure_split(data_dir: Path, split: str = "bal_train", *, url: str | None = None,
                 sha256: str | None = RELEASE_SHA256, progress: ProgressCallback | None = None) -> Path:
    """Return a folder of the split's ``.tfrecord`` files, downloading and extracting once.

    A completed extraction is marked by a ``.complete`` file, so an interrupted extraction is
    redone rather than trusted.
    """
    if split not in SPLITS:
        raise DownloadError(f"unknown AudioSet split {split!r}; choose one of {', '.join(SPLITS)}")
    progress = progress or no_progress
    root = release_root(data_dir)
    target = root / split
    marker = root / f".{split}.complete"
    if marker.is_file() and target.is_dir():
        return target
    tarball = root / "features.tar.gz"
    try:
        download_file(url or RELEASE_URL, tarball, sha256=sha256, progress=progress, name="AudioSet embeddings")
    except DownloadError as err:
        reason = str(err).split("; ")[0]
        raise DownloadError(f"{reason}; no AudioSet data to index: set ECHOVIDS_AUDIOSET_DIR to a folder of "
                            "AudioSet .tfrecord files or pass --audioset DIR") from None
    extract_split(tarball, split, target, progress=progress)
    marker.write_text("ok\n")
    return target


def extract_split(tarball: Path, split: str, target: Path, *, progress: ProgressCallback | None = None) -> int:
    """Extract ``*/<split>/*.tfrecord`` members of the release into ``target`` (flat); returns the count.

    Member names are reduced to their base name, so a crafted archive cannot write outside ``target``.
    """
    progress = progress or no_progress
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    try:
        with tarfile.open(tarball, "r:*") as archive:
            for member in archive:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or split not in parts[:-1] or not parts[-1].endswith(".tfrecord"):
                    continue
                source = archive.extractfile(member)
                if source is None:
                    continue
                out = target / parts[-1]
                tmp = out.with_name(out.name + ".part")
                with source, tmp.open("wb") as fh:
                    while block := source.read(1 << 20):
                        fh.write(block)
                tmp.replace(out)
                count += 1
                if count % 100 == 0:
                    progress(ProgressEvent("extract", count, None, "files", split))
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DownloadError(f"cannot extract {split} from {tarball}: {err}") from None
    if count == 0:
        raise DownloadError(f"{tarball} holds no {split}/*.tfrecord files")
    progress(ProgressEvent("extract", count, count, "files", split))
    return count
