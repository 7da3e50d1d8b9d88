"""Real media files for tests, made with the real tools (espeak-ng, ffmpeg).

Every file is made by a single short ffmpeg run (plus espeak-ng for speech), with bit-exact flags
so the same call gives the same bytes: tests stay fast and reproducible. Files are small (a few
seconds of audio); callers pass a ``tmp_path`` location.

    make_voice_note(path, seconds=5.0, kind="speech")   # OGG/Opus 48 kHz mono, like Discord
    make_media(path, "mp3", seconds=3.0, kind="tone")    # mp3, wav, flac, ogg, m4a, webm, mp4, mp4-noaudio
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

KINDS = ("speech", "tone", "noise", "silence", "chirp")

#: fmt → (ffmpeg arguments for the output, default sample rate, default channels, needs video)
FORMATS: dict[str, tuple[list[str], int, int, bool]] = {
    "ogg": (["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"], 48000, 1, False),
    "opus": (["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"], 48000, 1, False),
    "mp3": (["-c:a", "libmp3lame", "-b:a", "96k", "-f", "mp3"], 44100, 1, False),
    "wav": (["-c:a", "pcm_s16le", "-f", "wav"], 44100, 2, False),
    "flac": (["-c:a", "flac", "-f", "flac"], 44100, 1, False),
    "m4a": (["-c:a", "aac", "-b:a", "96k", "-f", "ipod"], 44100, 1, False),
    "webm": (["-c:a", "libopus", "-b:a", "48k", "-f", "webm"], 48000, 1, False),
    "mp4": (["-c:v", "mpeg4", "-q:v", "10", "-c:a", "aac", "-b:a", "96k", "-f", "mp4"], 44100, 2, True),
    "mp4-noaudio": (["-c:v", "mpeg4", "-q:v", "10", "-an", "-f", "mp4"], 44100, 1, True),
}

_SPEECH = ("Hello, this is a voice note for the sound alike bot. "
           "Find me something that sounds like this. One two three four five six seven eight nine ten. ") * 8

_BITEXACT = ["-fflags", "+bitexact", "-flags:a", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1"]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.decode(errors='replace')[-800:]}")


def _need(tool: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise RuntimeError(f"{tool} is not installed (the tests need ffmpeg with libopus, libmp3lame and espeak-ng; `make test` installs them)")
    return found


def _source_args(kind: str, seconds: float, rate: int, workdir: Path, frequency: float) -> list[str]:
    """ffmpeg input arguments producing `seconds` of mono audio of the given kind at `rate`."""
    if kind == "speech":
        wav = workdir / "speech.wav"
        _run([_need("espeak-ng"), "-v", "en-us", "-s", "165", "-w", str(wav), _SPEECH[: max(40, int(seconds * 20))]])
        # pad with silence / cut to exactly `seconds`
        return ["-i", str(wav), "-af", f"apad,atrim=0:{seconds:.6f},aresample={rate}"]
    lavfi = {
        "tone": f"sine=frequency={frequency:g}:sample_rate={rate}:duration={seconds:.6f}",
        "noise": f"anoisesrc=d={seconds:.6f}:c=white:r={rate}:a=0.3:seed=42",
        "silence": f"anullsrc=r={rate}:cl=mono,atrim=0:{seconds:.6f}",
        "chirp": f"aevalsrc=0.5*sin(2*PI*(200+900*t)*t):s={rate}:d={seconds:.6f}",
    }.get(kind)
    if lavfi is None:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return ["-f", "lavfi", "-i", lavfi]


def make_media(path: str | Path, fmt: str, seconds: float = 3.0, kind: str = "tone", *,
               sample_rate: int | None = None, channels: int | None = None, frequency: float = 440.0) -> Path:
    """Write `seconds` of `kind` audio as `fmt` (see FORMATS) to `path` and return it."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
    out_args, default_rate, default_channels, video = FORMATS[fmt]
    rate = sample_rate or default_rate
    ch = channels or default_channels
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg = _need("ffmpeg")
    with tempfile.TemporaryDirectory(prefix="echovids-media-") as tmp:
        cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        if fmt != "mp4-noaudio":
            cmd += _source_args(kind, seconds, rate, Path(tmp), frequency)
        if video:
            cmd += ["-f", "lavfi", "-i", f"color=c=blue:s=64x48:r=10:d={seconds:.6f}"]
        if fmt != "mp4-noaudio":
            cmd += ["-ac", str(ch), "-ar", str(rate)]
        cmd += ["-t", f"{seconds:.6f}"] + _BITEXACT + out_args + [str(path)]
        _run(cmd)
    return path


def make_voice_note(path: str | Path, seconds: float = 5.0, kind: str = "speech") -> Path:
    """An OGG/Opus file, 48 kHz mono, like a Discord voice message."""
    return make_media(path, "ogg", seconds=seconds, kind=kind, sample_rate=48000, channels=1)


def make_lying_wav(path: str | Path, *, declared_seconds: float = 36000.0, actual_seconds: float = 1.0,
                   rate: int = 8000, silent: bool = True) -> Path:
    """A tiny WAV whose header declares `declared_seconds` (default ten hours) of 16-bit audio."""
    import numpy as np

    n = int(actual_seconds * rate)
    if silent:
        pcm = np.zeros(n, dtype="<i2")
    else:
        t = np.arange(n) / rate
        pcm = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    declared = min(int(declared_seconds * rate) * 2, 0xFFFFFFFF - 36)
    header = b"RIFF" + struct.pack("<I", 36 + declared) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    header += b"data" + struct.pack("<I", declared)
    path = Path(path)
    path.write_bytes(header + pcm.tobytes())
    return path
