"""The ``echovids`` command: the terminal front end beside the Discord one.

The parser is here; each subcommand's work lives in ``bot/terminal/<name>.py`` and is imported
only when that subcommand runs, so ``echovids --help`` answers without loading TensorFlow.
Expected failures (:class:`core.errors.EchoVidsError`) become one line on stderr and exit 1;
usage errors exit 2 (argparse's convention).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from core import __version__

EXIT_OK = 0
EXIT_ERROR = 1


def _add_index_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--index",
        metavar="DIR",
        help="data directory (holds the current build, models and caches); overrides ECHOVIDS_DATA_DIR",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="echovids",
        description="Find YouTube seconds that sound like your audio (AudioSet + VGGish + ScaNN).",
    )
    parser.add_argument("--version", action="version", version=f"echovids {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # model -----------------------------------------------------------------------------
    model = sub.add_parser("model", help="manage model files", description="Manage model files.")
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    fetch = model_sub.add_parser(
        "fetch",
        help="download the VGGish checkpoint, PCA params and YAMNet, verified by sha256",
        description="Download the official VGGish checkpoint and PCA parameters (and YAMNet) into "
        "DATA_DIR/models/, resuming partial downloads and verifying sha256. "
        "ECHOVIDS_MODEL_BASE_URL overrides the download base.",
    )
    _add_index_flag(fetch)
    fetch.add_argument("--force", action="store_true", help="download again even if the files verify")
    fetch.add_argument("--no-yamnet", action="store_true", help="skip the YAMNet model")

    # index -----------------------------------------------------------------------------
    index = sub.add_parser("index", help="build, inspect and refresh the search index",
                           description="Build, inspect and refresh the search index.")
    index_sub = index.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    build = index_sub.add_parser(
        "build",
        help="build a new index and make it current atomically",
        description="Build an index from AudioSet embedding TFRecords and/or your own audio library, "
        "then make it current in one atomic step. Without sources, uses ECHOVIDS_AUDIOSET_DIR "
        "(or the bundled bal_train data).",
    )
    build.add_argument("--audioset", action="append", metavar="DIR", default=[],
                       help="folder of AudioSet embedding .tfrecord files (repeatable)")
    build.add_argument("--library", action="append", metavar="DIR", default=[],
                       help="folder of your own audio files, embedded with VGGish (repeatable); "
                       "an optional library.csv (path,url,title) gives links and titles")
    build.add_argument("--if-missing", action="store_true", help="do nothing when a current build exists")
    build.add_argument("--shard", metavar="K/N",
                       help="Milvus store: ingest the K-th of N slices of the AudioSet input into the shared "
                       "pending collection (resumable); the last slice to finish verifies it and moves the alias")
    build.add_argument("--finalize", action="store_true",
                       help="Milvus store: verify and publish a sharded build whose slices are all in")
    _add_index_flag(build)
    status = index_sub.add_parser("status", help="show what the current index holds",
                                  description="Show counts, sources, build time, size and manifest of the current index.")
    _add_index_flag(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    refresh = index_sub.add_parser(
        "refresh",
        help="re-check liveness, rebuild without gone videos, swap atomically",
        description="Re-check every indexed video whose liveness entry is stale (resumable), then rebuild "
        "the index without gone or private videos and swap it in atomically.",
    )
    _add_index_flag(refresh)
    refresh.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    refresh.add_argument("--rate", type=float, default=10.0, metavar="PER_S",
                         help="most YouTube requests per second (default 10: polite; 0 = no limit)")
    refresh.add_argument("--concurrency", type=int, default=8, metavar="N",
                         help="requests in flight at once (default 8)")
    refresh.add_argument("--timeout", type=float, default=10.0, metavar="S",
                         help="seconds to wait for one YouTube answer (default 10)")
    refresh.add_argument("--progress-json", action="store_true",
                         help="machine-readable: one JSON progress event per line on stdout, then a "
                         'final {"event": "report", ...} line (what the bot\'s /index refresh reads)')
    refresh.add_argument("--bot-child", action="store_true", help=argparse.SUPPRESS)

    # search ----------------------------------------------------------------------------
    search = sub.add_parser(
        "search",
        help="find sound-alike YouTube seconds for audio, a video, words or embeddings",
        description="Find sound-alike YouTube seconds. Give exactly one of: an audio/video file, "
        "--like, --text or --embeddings.",
    )
    search.add_argument("audio_file", nargs="?", metavar="AUDIO_FILE", help="audio or video file to search with")
    search.add_argument("--like", metavar="YOUTUBE_URL_OR_ID", help="more like this indexed video (honours t=)")
    search.add_argument("--text", metavar="DESCRIPTION", help='search by description, e.g. "dog barking"')
    search.add_argument("--embeddings", metavar="FILE.npy",
                        help="uint8 [n,128] (one query) or [Q,n,128] (Q queries, JSON array) post-processed vectors")
    search.add_argument("--top", type=int, default=5, metavar="K", help="results per query (default 5)")
    search.add_argument("--json", action="store_true", help="print JSON (the stable contract)")
    search.add_argument("--no-live-check", action="store_true", help="do not check that videos are still on YouTube")
    search.add_argument("--checkpoint", metavar="PATH", help="VGGish checkpoint (overrides VGGISH_CHECKPOINT)")
    search.add_argument("--pca-params", metavar="PATH", help="VGGish PCA params (overrides VGGISH_PCA_PARAMS)")
    _add_index_flag(search)

    # embed -----------------------------------------------------------------------------
    embed = sub.add_parser(
        "embed",
        help="print VGGish embeddings of an audio file",
        description="Embed an audio file with VGGish: one vector per 0.96 s, post-processed to uint8 "
        "exactly like the released AudioSet embeddings (or raw floats with --raw).",
    )
    embed.add_argument("audio_file", metavar="AUDIO_FILE")
    embed.add_argument("--json", action="store_true", help='print {"seconds": n, "embeddings": [...]}')
    embed.add_argument("--raw", action="store_true", help="pre-PCA float embeddings (no PCA file needed)")
    embed.add_argument("--checkpoint", metavar="PATH", help="VGGish checkpoint (overrides VGGISH_CHECKPOINT)")
    embed.add_argument("--pca-params", metavar="PATH", help="VGGish PCA params (overrides VGGISH_PCA_PARAMS)")
    _add_index_flag(embed)

    # eval ------------------------------------------------------------------------------
    ev = sub.add_parser("eval", help="measure retrieval quality on a held-out split (JSON)",
                        description="Hold out clips of the AudioSet data, index the rest and report P@5 "
                        "against the seed-style baselines, as JSON.")
    ev.add_argument("--audioset", action="append", metavar="DIR", default=[])
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--holdout", type=float, default=0.1)
    ev.add_argument("--queries", type=int, default=0, help="limit the number of queries (0 = all held out)")

    # bot -------------------------------------------------------------------------------
    sub.add_parser("bot", help="run the Discord bot (needs DISCORD_TOKEN)",
                   description="Run the Discord bot. Needs DISCORD_TOKEN; see README for the invite link and intents.")
    return parser


#: subcommand (and action) → module under ``bot.terminal`` with ``run(args, settings) -> int``.
HANDLERS = {
    ("model", "fetch"): "bot.terminal.model_fetch",
    ("index", "build"): "bot.terminal.index_build",
    ("index", "status"): "bot.terminal.index_status",
    ("index", "refresh"): "bot.terminal.index_refresh",
    ("search", None): "bot.terminal.search",
    ("embed", None): "bot.terminal.embed",
    ("eval", None): "bot.terminal.evaluate",
    ("bot", None): "bot.terminal.run_bot",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. As the program (no ``argv``), library chatter on stderr is moved to a debug
    log first (``bot.quiet``; ``ECHOVIDS_DEBUG=1`` keeps it); callers passing ``argv`` (tests)
    keep their own streams."""
    as_program = argv is None
    args = build_parser().parse_args(argv)
    action = getattr(args, f"{args.command}_command", None)
    module_name = HANDLERS[(args.command, action)]

    from bot import quiet
    from core.config import load_settings
    from core.errors import EchoVidsError

    try:
        settings = load_settings()
        if getattr(args, "index", None):
            from pathlib import Path

            settings = settings.with_overrides(data_dir=Path(args.index))
        quiet.silence(settings, " ".join(["echovids", args.command, action or ""]).strip(), divert=as_program)
        handler = importlib.import_module(module_name)
        return int(handler.run(args, settings) or EXIT_OK)
    except EchoVidsError as err:
        print(f"echovids: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("echovids: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
