"""How the front ends write sizes, durations, ages and progress: one set, for the terminal and Discord.

Each front end used to format these its own way (six size/duration helpers, two progress bars);
a reader now finds the one way here, and the two progress views differ only in their bar's glyphs.
"""

from __future__ import annotations

from core.progress import ProgressEvent


def size(n: float) -> str:
    """Bytes in binary units: ``512 → '512 B'``, ``1536 → '1.5 KiB'``, up to GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def clock(seconds: float) -> str:
    """A length or a position as a clock: ``75 → '1:15'``; hours when needed (``3725 → '1:02:05'``)."""
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def age(seconds: float) -> str:
    """How long ago, in its largest whole unit: ``'3 d'``, ``'2 h'``, ``'5 min'``, ``'40 s'``."""
    seconds = max(0, int(seconds))
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{seconds // span} {unit}"
    return f"{seconds} s"


def amount(n: float, unit: str) -> str:
    """A progress quantity: bytes as :func:`size`, anything else as a whole count with its unit."""
    return size(n) if unit == "bytes" else f"{int(n):,} {unit}"


def progress_line(event: ProgressEvent, elapsed_s: float, *, width: int = 16,
                  full: str = "█", empty: str = "░") -> str:
    """``stage: [████░░░░] 42% 420/1,000 videos · 12 videos/s · ETA 0:48 · detail``: the one
    progress text, drawn on the terminal and in the bot's refresh message alike."""
    rate = event.done / elapsed_s if elapsed_s > 0 else 0.0
    parts = []
    if event.total:
        frac = min(1.0, event.done / event.total)
        filled = int(frac * width)
        done = (f"{size(event.done)}/{size(event.total)}" if event.unit == "bytes"
                else f"{int(event.done):,}/{int(event.total):,} {event.unit}")
        parts.append(f"{event.stage}: [{full * filled}{empty * (width - filled)}] {frac:.0%} {done}")
    else:
        parts.append(f"{event.stage}: {amount(event.done, event.unit)}")
    if rate >= 1 or (rate and event.unit == "bytes"):
        parts.append(f"{amount(rate, event.unit)}/s")
    elif rate:  # slow steps (ScaNN shards): "0 shards/s" would say nothing
        parts.append(f"{clock(1 / rate)} per {event.unit.rstrip('s') or 'step'}")
    if event.total:
        if rate > 0:
            parts.append(f"ETA {clock((event.total - event.done) / rate)}")
    else:
        parts.append(clock(elapsed_s))
    if event.detail:
        parts.append(event.detail)
    return " · ".join(parts)
