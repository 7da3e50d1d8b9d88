"""``echovids index refresh [--index DIR] [--dry-run]``: re-check liveness, rebuild, swap.

The engine does the work (:func:`core.liveness.refresh.refresh_index`); this front end draws the
progress bar on stderr and prints a short summary on stdout. Ctrl-C is safe: every answer already
received is in the cache, and the next run continues from there.
"""

from __future__ import annotations

import argparse
import sys

from bot.terminal.progress import TerminalProgress
from core.config import Settings
from core.errors import BadQueryError
from core.liveness.refresh import RefreshReport, refresh_index

STATE_ORDER = ("live", "unembeddable", "gone", "private", "invalid", "unknown")


def run(args: argparse.Namespace, settings: Settings) -> int:
    dry_run = bool(getattr(args, "dry_run", False))
    rate = getattr(args, "rate", 10.0)
    concurrency = getattr(args, "concurrency", 8)
    if concurrency < 1 or rate is None or rate < 0:
        raise BadQueryError("--concurrency must be at least 1 and --rate 0 or more")
    report = refresh_index(settings, dry_run=dry_run, progress=TerminalProgress(),
                           rate_per_s=rate or None, concurrency=concurrency)
    print(summary(report))
    if report.stopped:
        print(f"echovids: refresh stopped early: {report.stopped}", file=sys.stderr)
        return 1
    return 0


def summary(report: RefreshReport) -> str:
    """The end-of-run summary a moderator reads (also reused by the bot's refresh command)."""
    lines = []
    fresh = report.indexed - report.stale
    lines.append(f"{report.indexed:,} indexed videos: {report.stale:,} needed a check, {fresh:,} were fresh in the cache")
    if report.checked or report.stale:
        parts = [f"{report.states[s]:,} {s}" for s in STATE_ORDER if report.states.get(s)]
        rate = report.checked / report.check_s if report.check_s > 0 else 0.0
        lines.append(f"checked {report.checked:,} in {report.check_s:.1f} s ({rate:.1f}/s): "
                     + (", ".join(parts) if parts else "nothing"))
    dead = ", ".join(f"{n:,} {s}" for s, n in sorted(report.dead_by_state.items()))
    lines.append(f"{report.dead:,} indexed videos no longer play" + (f" ({dead})" if dead else ""))
    if report.revived:
        lines.append(f"{report.revived:,} videos left out by an earlier refresh play again"
                     + (" and would come back" if report.dry_run else " and are back in the index"))
    if report.unknown:
        lines.append(f"{report.unknown:,} could not be checked (kept in the index; a refresh after a few minutes asks again)")
    if report.dry_run:
        if report.dead or report.revived:
            lines.append(f"dry run: a refresh would rebuild the index without these {report.dead:,} videos"
                         + (f" (e.g. {', '.join(report.dead_sample[:3])})" if report.dead_sample else ""))
        else:
            lines.append("dry run: the index would stay as it is")
    elif report.rebuilt:
        lines.append(f"rebuilt without {report.excluded:,} dead videos in {report.build_s:.1f} s; "
                     f"now current: {report.new_build}")
    elif report.stopped:
        lines.append("index unchanged (checks incomplete)")
    else:
        lines.append("index unchanged: every indexed video still plays or is unknown")
    return "\n".join(lines)
