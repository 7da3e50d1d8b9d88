"""Keep library chatter off the terminal, so stderr holds only Echo-Vids' own lines.

Most of the chatter is not Python's: absl's "All log messages before absl::InitializeLog() …",
ScaNN's ``I0000 … partitioner_factory_base.cc`` lines, LiteRT's "Created TensorFlow Lite XNNPACK
delegate for CPU." and libmpg123's "Note: Illegal Audio-MPEG-Header …" are written by C/C++ code
straight to file descriptor 2. No logging setting reaches them, and the environment switches
(``TF_CPP_MIN_LOG_LEVEL``, ``GLOG_minloglevel``) quiet only some. So when ``echovids`` starts as a
program it

1. sets those switches (``setdefault``: a value the user chose wins),
2. moves fd 2 itself to a debug log, ``DATA_DIR/logs/debug.log`` (``/dev/null`` when the data
   directory does not exist yet or cannot be written), so whatever native code or a child process
   writes there is kept for a bug report instead of shown,
3. keeps a duplicate of the original stderr as *the* stream for Echo-Vids' lines: ``sys.stderr``
   points at it, so error lines, progress bars, argparse usage and the traceback of an unexpected
   exception (a real bug) reach the user exactly as before; Echo-Vids' loggers write to it; Python
   warnings and other libraries' loggers go to the debug log; a native crash (SIGSEGV, SIGBUS)
   still prints its Python stack on the terminal through :mod:`faulthandler`.

Children inherit fd 2, i.e. the debug log (ffmpeg's stderr is captured by ``core.audio`` anyway;
a front end that wants a child's lines pipes its stderr).

Why a redirect rather than a list of silencers: every native library has its own logger (absl,
glog, LiteRT, mpg123, ffmpeg), new versions add more, and one missed line breaks the promise. Why
an environment variable as the opt-out (``ECHOVIDS_DEBUG=1`` leaves every stream alone) rather than
a ``-v`` flag: the bot runs under Docker or a supervisor configured by environment and ``.env``,
and a variable also reaches the ``echovids`` children the bot starts.

Only the program does this (``bot.cli.main`` called without ``argv``); tests that call ``main``
in-process keep pytest's own capture.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

#: Switches that make native libraries quieter at the source (their leftovers go to the debug log).
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",   # TensorFlow's C++ INFO/WARNING (oneDNN, CPU feature notes)
    "GLOG_minloglevel": "2",       # glog users
    "GRPC_VERBOSITY": "ERROR",
}

#: Where fd 2 goes, inside the data directory; rotated once it passes MAX_DEBUG_LOG_BYTES.
DEBUG_LOG = Path("logs") / "debug.log"
MAX_DEBUG_LOG_BYTES = 10 * 1024 * 1024

#: Logger namespace of Echo-Vids' own lines.
OWN_LOGGERS = ("echovids",)


@dataclass
class Diverted:
    """The two streams after :func:`divert_stderr`."""

    terminal: TextIO            # a duplicate of the original stderr: Echo-Vids' lines
    debug: TextIO               # fd 2 (the debug log, or /dev/null): everything else


_STATE: Diverted | None = None
_OURS = "_echovids_handler"


def quiet_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    for name, value in QUIET_ENV.items():
        environ.setdefault(name, value)


def silence(settings: Any, what: str, *, divert: bool = True) -> None:
    """What a program (``echovids``, a bench) does first: the environment switches, then — when
    ``divert`` — fd 2 to the debug log (:func:`divert_stderr`). ``ECHOVIDS_DEBUG=1``
    (``settings.debug``) leaves every stream alone, for whichever program reads it."""
    if settings.debug:
        return
    quiet_env()
    if divert:
        divert_stderr(settings.data_dir, what)


def _open_debug_log(data_dir: Path | None) -> int:
    if data_dir is not None and Path(data_dir).is_dir():
        path = Path(data_dir) / DEBUG_LOG
        try:
            path.parent.mkdir(exist_ok=True)
            if path.exists() and path.stat().st_size > MAX_DEBUG_LOG_BYTES:
                path.replace(path.with_name(path.name + ".1"))
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:
            pass
    return os.open(os.devnull, os.O_WRONLY)


def divert_stderr(data_dir: Path | None, what: str = "echovids") -> Diverted | None:
    """Move fd 2 to the debug log and keep the original stderr for Echo-Vids' lines (see the
    module docstring). Once per process; None when fd 2 cannot be duplicated (already closed)."""
    global _STATE
    if _STATE is not None:
        return _STATE
    try:
        sys.stderr.flush()
        terminal_fd = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return None
    debug_fd = _open_debug_log(data_dir)
    os.dup2(debug_fd, 2)
    os.close(debug_fd)
    terminal = open(terminal_fd, "w", encoding=getattr(sys.stderr, "encoding", None) or "utf-8",  # noqa: SIM115
                    errors="backslashreplace", buffering=1)
    debug = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)  # noqa: SIM115
    debug.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {what} (pid {os.getpid()}) ---\n")
    sys.stderr = terminal
    faulthandler.enable(file=terminal)

    def show_warning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        debug.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = show_warning
    _STATE = Diverted(terminal, debug)
    route_logging()
    return _STATE


def route_logging(level: int = logging.WARNING, fmt: str = "echovids: %(message)s",
                  own: tuple[str, ...] = OWN_LOGGERS) -> None:
    """Echo-Vids' loggers (``own``) at ``level`` and up → the terminal, in ``fmt``; every logger
    (libraries too, ours again for context) → the debug log. Replaces what an earlier call set up.
    Without a diversion, the usual ``basicConfig`` to stderr."""
    if _STATE is None:
        logging.basicConfig(level=level, format=fmt)
        return
    for name in ("", *own, *OWN_LOGGERS):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if getattr(h, _OURS, False)]:
            logger.removeHandler(handler)
    root = logging.getLogger()
    root.setLevel(min(level, root.level) if root.level else level)
    debug = logging.StreamHandler(_STATE.debug)
    debug.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    setattr(debug, _OURS, True)
    root.addHandler(debug)
    for name in own:
        terminal = logging.StreamHandler(_STATE.terminal)
        terminal.setLevel(level)
        terminal.setFormatter(logging.Formatter(fmt))
        setattr(terminal, _OURS, True)
        logging.getLogger(name).addHandler(terminal)
