"""`echovids model fetch`: download the model files with a progress bar, then one line per file."""

from __future__ import annotations

import argparse
import sys

from bot.terminal.progress import TerminalProgress
from core.admin import Admin
from core.config import Settings
from core.errors import DownloadError

_STATUS = {
    "downloaded": "downloaded, sha256 verified",
    "resumed": "resumed and completed, sha256 verified",
    "present": "already present",
    "skipped": "skipped",
    "failed": "FAILED",
}


def run(args: argparse.Namespace, settings: Settings) -> int:
    results = Admin(settings).fetch_models(yamnet=not getattr(args, "no_yamnet", False),
                                           force=bool(getattr(args, "force", False)), progress=TerminalProgress())
    for r in results:
        line = f"{r.path.name}: {_STATUS.get(r.status, r.status)}"
        if r.status in ("downloaded", "resumed", "present"):
            line += f" ({r.path})"
        elif r.detail and r.status == "skipped":
            line += f" ({r.detail})"
        print(line)
    sys.stdout.flush()
    failed = [r for r in results if r.status == "failed"]
    if failed:
        more = f" (and {len(failed) - 1} more file(s) failed)" if len(failed) > 1 else ""
        raise DownloadError(failed[0].detail + more)
    return 0
