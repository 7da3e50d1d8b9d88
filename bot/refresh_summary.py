"""The words for what an index refresh did: one text, printed by ``echovids index refresh`` and
shown by the bot's ``/index refresh`` and ``/index status``, so the two front ends never disagree."""

from __future__ import annotations

from pathlib import Path

from core.admin import RefreshReport

#: The order liveness states are listed in (the playing ones first).
STATE_ORDER = ("live", "unembeddable", "gone", "private", "invalid", "unknown")


def summary(report: RefreshReport) -> str:
    """The end-of-run summary a moderator reads, one fact per line. It names the new build, never a
    path on the server (the bot shows this in Discord)."""
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
            how = ("delete these {n:,} videos' rows from its Milvus collection" if report.method == "delete"
                   else "rebuild the index without these {n:,} videos")
            lines.append("dry run: a refresh would " + how.format(n=report.dead)
                         + (f" (e.g. {', '.join(report.dead_sample[:3])})" if report.dead_sample else ""))
        else:
            lines.append("dry run: the index would stay as it is")
    elif report.rebuilt and report.method == "delete":
        lines.append(f"deleted {report.deleted_segments:,} dead clips ({report.deleted_rows:,} seconds) from the "
                     f"Milvus collection in {report.build_s:.1f} s; now current: {Path(report.new_build or '').name}")
    elif report.rebuilt:
        lines.append(f"rebuilt without {report.excluded:,} dead videos in {report.build_s:.1f} s; "
                     f"now current: {Path(report.new_build or '').name}"
                     + (f" ({report.method_reason})" if report.method_reason else ""))
    elif report.stopped:
        lines.append(f"index unchanged (checks incomplete: {report.stopped})")
    else:
        lines.append("index unchanged: every indexed video still plays or is unknown")
    return "\n".join(lines)
