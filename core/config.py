"""Settings from the environment (and ``.env``), typed, with defaults.

Every front end reads configuration through :func:`load_settings`, so a malformed variable is
reported once, by name, as a :class:`~core.errors.ConfigError` instead of a traceback deep in a
stage that happened to read it first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.errors import ConfigError

#: The project root (the folder holding ``core/``); relative defaults fall back to it so the
#: tests and ``make run`` work from any working directory inside a checkout.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

OFFICIAL_MODEL_BASE_URL = "https://storage.googleapis.com/audioset"
OFFICIAL_OEMBED_URL = "https://www.youtube.com/oembed"

#: Variable name → (default shown in ``.env.example``, meaning). The single list that
#: ``.env.example`` and the README table are checked against by the tests.
VARIABLES: dict[str, tuple[str, str]] = {
    "DISCORD_TOKEN": ("", "bot token (required for `echovids bot` only)"),
    "DISCORD_API_BASE": ("https://discord.com/api/v10", "REST base URL (proxy or test fake)"),
    "DISCORD_GATEWAY_URL": ("wss://gateway.discord.gg/", "gateway URL (proxy or test fake)"),
    "ECHOVIDS_DATA_DIR": ("./index_data", "data directory: models, index builds, caches"),
    "ECHOVIDS_AUDIOSET_DIR": ("", "AudioSet embedding TFRecords for the default index "
                              "(default ../shared/data/audioset_v1_embeddings/bal_train when present)"),
    "ECHOVIDS_AUDIOSET_META": ("", "folder with class_labels_indices.csv and ontology.json "
                               "(default ../shared/data/audioset_meta when present)"),
    "VGGISH_CHECKPOINT": ("", "VGGish checkpoint (default DATA_DIR/models/vggish_model.ckpt)"),
    "VGGISH_PCA_PARAMS": ("", "VGGish PCA params (default DATA_DIR/models/vggish_pca_params.npz)"),
    "YAMNET_MODEL": ("", "YAMNet TFLite model (default DATA_DIR/models/yamnet.tflite)"),
    "YOUTUBE_OEMBED_URL": (OFFICIAL_OEMBED_URL, "YouTube oEmbed endpoint"),
    "ECHOVIDS_MODEL_BASE_URL": (OFFICIAL_MODEL_BASE_URL, "where `model fetch` downloads from"),
    "ECHOVIDS_LISTEN_CHANNELS": ("", "comma-separated channel IDs whose voice messages are answered "
                                 "(needs the message-content intent)"),
    "ECHOVIDS_MODERATOR_ROLE": ("", "role ID whose members may run moderator commands"),
    "ECHOVIDS_MAX_ATTACHMENT_MB": ("25", "largest attachment accepted, MiB"),
    "ECHOVIDS_MAX_AUDIO_SECONDS": ("120", "longest audio accepted, seconds"),
    "ECHOVIDS_RESULTS": ("5", "results per reply (1-10)"),
    "ECHOVIDS_WORKERS": ("2", "worker threads for decode/embed/search"),
    "ECHOVIDS_LIVE_BUDGET_S": ("1.5", "time budget for live checks at query time, seconds"),
    "ECHOVIDS_TEST_DATA": ("../shared/data", "where tests find the shared data"),
    "ECHOVIDS_DEBUG": ("0", "1 shows libraries' own stderr output (else kept in DATA_DIR/logs/debug.log)"),
    "ECHOVIDS_VECTOR_STORE": ("scann", "where the per-second vectors live: scann (embedded, in the data "
                              "directory) or milvus (a Milvus server or cluster)"),
    "ECHOVIDS_MILVUS_URI": ("http://127.0.0.1:19530", "Milvus address (milvus store only), e.g. a cluster's https://…"),
    "ECHOVIDS_MILVUS_TOKEN": ("", "Milvus token, `user:password` or an API key (milvus store only)"),
    "ECHOVIDS_MILVUS_PREFIX": ("echovids", "prefix of the Milvus collections and alias, so several "
                               "deployments can share one cluster"),
    "ECHOVIDS_SHARD_COUNT": ("", "Discord gateway shards in total across all bot processes (empty: one "
                             "process, Discord chooses)"),
    "ECHOVIDS_SHARD_IDS": ("", "comma-separated gateway shard IDs this bot process serves (needs "
                           "ECHOVIDS_SHARD_COUNT; empty: all)"),
}


@dataclass(frozen=True)
class Settings:
    """All configuration in one immutable value; build variants with :meth:`with_overrides`."""

    discord_token: str | None = None
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    data_dir: Path = Path("index_data")
    audioset_dirs: tuple[Path, ...] = ()
    audioset_meta: Path | None = None
    vggish_checkpoint_env: Path | None = None
    vggish_pca_params_env: Path | None = None
    yamnet_model_env: Path | None = None
    youtube_oembed_url: str = OFFICIAL_OEMBED_URL
    model_base_url: str = OFFICIAL_MODEL_BASE_URL
    listen_channels: frozenset[int] = field(default_factory=frozenset)
    moderator_role: int | None = None
    max_attachment_mb: float = 25.0
    max_audio_seconds: float = 120.0
    results: int = 5
    workers: int = 2
    live_budget_s: float = 1.5
    test_data: Path = Path("../shared/data")
    debug: bool = False
    vector_store: str = "scann"
    milvus_uri: str = "http://127.0.0.1:19530"
    milvus_token: str | None = None
    milvus_prefix: str = "echovids"
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None
    #: Model files shipped beside the project (the shared data folder), used only when neither a
    #: flag, the environment nor ``DATA_DIR/models`` has the file. Filled by :func:`load_settings`.
    bundled_models: dict[str, Path] = field(default_factory=dict)

    # -- derived paths -------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def max_attachment_bytes(self) -> int:
        return int(self.max_attachment_mb * 1024 * 1024)

    # Model paths: flag beats environment beats ``DATA_DIR/models`` (docs/architecture.md), then a bundled
    # copy. ``bundled=False`` asks where the file *belongs* (where ``model fetch`` writes it).
    def vggish_checkpoint(self, flag: str | Path | None = None, *, bundled: bool = True) -> Path:
        return self._model(flag, self.vggish_checkpoint_env, "vggish_model.ckpt", bundled)

    def vggish_pca_params(self, flag: str | Path | None = None, *, bundled: bool = True) -> Path:
        return self._model(flag, self.vggish_pca_params_env, "vggish_pca_params.npz", bundled)

    def yamnet_model(self, flag: str | Path | None = None, *, bundled: bool = True) -> Path:
        return self._model(flag, self.yamnet_model_env, "yamnet.tflite", bundled)

    def yamnet_class_map(self, flag: str | Path | None = None, *, bundled: bool = True) -> Path:
        """YAMNet's class map lives next to its model (both layouts need it)."""
        return self.yamnet_model(flag, bundled=bundled).with_name("yamnet_class_map.csv")

    def _model(self, flag: str | Path | None, env: Path | None, filename: str, use_bundled: bool) -> Path:
        if flag:
            return Path(flag)
        if env is not None:
            return env
        default = self.models_dir / filename
        bundled = self.bundled_models.get(filename) if use_bundled else None
        if bundled is not None and not default.exists() and bundled.exists():
            return bundled
        return default

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _existing(path: Path) -> Path | None:
    """Resolve a relative default against the working directory, then the project root."""
    if path.is_absolute():
        return path if path.exists() else None
    for base in (Path.cwd(), PROJECT_ROOT):
        candidate = (base / path).resolve()
        if candidate.exists():
            return candidate
    return None


class _Reader:
    """Reads one variable at a time and names it in any error."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def path(self, name: str) -> Path | None:
        value = self.raw(name)
        return Path(value).expanduser() if value else None

    def number(self, name: str, default: float, *, lo: float, hi: float, integer: bool = False) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise ConfigError(f"{name} must be {kind}, got {value!r}") from None
        if not lo <= number <= hi:
            raise ConfigError(f"{name} must be between {lo:g} and {hi:g}, got {value!r}")
        return number

    def url(self, name: str, default: str, schemes: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if not value.startswith(tuple(s + "://" for s in schemes)):
            raise ConfigError(f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}, got {value!r}")
        return value

    def snowflake(self, name: str, value: str) -> int:
        if not value.isdigit():
            raise ConfigError(f"{name} must hold Discord IDs (digits), got {value!r}")
        return int(value)


def load_settings(env: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Read settings from ``env`` (default ``os.environ``, after loading ``./.env``)."""
    if env is None:
        if dotenv:
            from dotenv import load_dotenv

            load_dotenv(Path.cwd() / ".env", override=False)
        env = os.environ
    r = _Reader(env)

    audioset_env = r.raw("ECHOVIDS_AUDIOSET_DIR")
    test_data = r.path("ECHOVIDS_TEST_DATA") or Path("../shared/data")
    shared = _existing(test_data)
    if audioset_env:
        audioset_dirs = tuple(Path(p).expanduser() for p in audioset_env.split(os.pathsep) if p)
    elif shared and (shared / "audioset_v1_embeddings" / "bal_train").is_dir():
        audioset_dirs = (shared / "audioset_v1_embeddings" / "bal_train",)
    else:
        audioset_dirs = ()
    meta = r.path("ECHOVIDS_AUDIOSET_META")
    if meta is None and shared and (shared / "audioset_meta").is_dir():
        meta = shared / "audioset_meta"

    bundled: dict[str, Path] = {}
    if shared:
        for sub, filename in (("yamnet", "yamnet.tflite"), ("vggish", "vggish_pca_params.npz"),
                              ("vggish", "vggish_model.ckpt")):
            if (shared / sub / filename).is_file():
                bundled[filename] = shared / sub / filename

    vector_store = r.text("ECHOVIDS_VECTOR_STORE", "scann").lower()
    if vector_store not in ("scann", "milvus"):
        raise ConfigError(f"ECHOVIDS_VECTOR_STORE must be scann or milvus, got {vector_store!r}")
    prefix = r.text("ECHOVIDS_MILVUS_PREFIX", "echovids")
    if not prefix.replace("_", "a").isalnum() or not prefix[0].isalpha():
        raise ConfigError(f"ECHOVIDS_MILVUS_PREFIX must be letters, digits and _ (starting with a letter), got {prefix!r}")
    shard_count = r.raw("ECHOVIDS_SHARD_COUNT")
    shard_count_n = int(r.number("ECHOVIDS_SHARD_COUNT", 1, lo=1, hi=100_000, integer=True)) if shard_count else None
    shard_ids_text = r.raw("ECHOVIDS_SHARD_IDS")
    shard_ids = None
    if shard_ids_text:
        if shard_count_n is None:
            raise ConfigError("ECHOVIDS_SHARD_IDS needs ECHOVIDS_SHARD_COUNT (the total number of gateway shards)")
        try:
            shard_ids = tuple(sorted({int(x) for x in shard_ids_text.split(",") if x.strip()}))
        except ValueError:
            raise ConfigError(f"ECHOVIDS_SHARD_IDS must be comma-separated whole numbers, got {shard_ids_text!r}") from None
        if not shard_ids or any(not 0 <= i < shard_count_n for i in shard_ids):
            raise ConfigError(f"ECHOVIDS_SHARD_IDS must lie in 0..{shard_count_n - 1} (ECHOVIDS_SHARD_COUNT), "
                              f"got {shard_ids_text!r}")
    channels = r.raw("ECHOVIDS_LISTEN_CHANNELS") or ""
    role = r.raw("ECHOVIDS_MODERATOR_ROLE")
    return Settings(
        discord_token=r.raw("DISCORD_TOKEN"),
        discord_api_base=r.url("DISCORD_API_BASE", "https://discord.com/api/v10", ("http", "https")).rstrip("/"),
        discord_gateway_url=r.url("DISCORD_GATEWAY_URL", "wss://gateway.discord.gg/", ("ws", "wss")),
        data_dir=r.path("ECHOVIDS_DATA_DIR") or Path("index_data"),
        audioset_dirs=audioset_dirs,
        audioset_meta=meta,
        vggish_checkpoint_env=r.path("VGGISH_CHECKPOINT"),
        vggish_pca_params_env=r.path("VGGISH_PCA_PARAMS"),
        yamnet_model_env=r.path("YAMNET_MODEL"),
        youtube_oembed_url=r.url("YOUTUBE_OEMBED_URL", OFFICIAL_OEMBED_URL, ("http", "https")),
        model_base_url=r.url("ECHOVIDS_MODEL_BASE_URL", OFFICIAL_MODEL_BASE_URL, ("http", "https")).rstrip("/"),
        listen_channels=frozenset(
            r.snowflake("ECHOVIDS_LISTEN_CHANNELS", c.strip()) for c in channels.split(",") if c.strip()
        ),
        moderator_role=r.snowflake("ECHOVIDS_MODERATOR_ROLE", role) if role else None,
        max_attachment_mb=r.number("ECHOVIDS_MAX_ATTACHMENT_MB", 25.0, lo=0.01, hi=500),
        max_audio_seconds=r.number("ECHOVIDS_MAX_AUDIO_SECONDS", 120.0, lo=1, hi=3600),
        results=int(r.number("ECHOVIDS_RESULTS", 5, lo=1, hi=10, integer=True)),
        workers=int(r.number("ECHOVIDS_WORKERS", 2, lo=1, hi=64, integer=True)),
        live_budget_s=r.number("ECHOVIDS_LIVE_BUDGET_S", 1.5, lo=0, hi=60),
        test_data=shared or test_data,
        debug=r.number("ECHOVIDS_DEBUG", 0, lo=0, hi=1, integer=True) == 1,
        vector_store=vector_store,
        milvus_uri=r.url("ECHOVIDS_MILVUS_URI", "http://127.0.0.1:19530", ("http", "https", "tcp", "grpc")),
        milvus_token=r.raw("ECHOVIDS_MILVUS_TOKEN"),
        milvus_prefix=prefix,
        shard_count=shard_count_n,
        shard_ids=shard_ids,
        bundled_models=bundled,
    )
