"""A small but real index for tests: the first few hundred bal_train shards, built by the real builder."""

from __future__ import annotations

from pathlib import Path

from core.config import Settings

SMALL_SHARDS = 300


def small_shards(bal_train_dir: Path, n: int = SMALL_SHARDS) -> list[Path]:
    return sorted(Path(bal_train_dir).glob("*.tfrecord"))[:n]


def build_small_index(data_dir: Path, bal_train_dir: Path, meta_dir: Path) -> Path:
    """Build and make current an index of ~300 bal_train shard files (~1,600 clips); returns data_dir."""
    from core.index.builder import build_index

    settings = Settings(data_dir=Path(data_dir), audioset_meta=Path(meta_dir))
    build_index(settings, audioset_dirs=small_shards(bal_train_dir))
    return Path(data_dir)
