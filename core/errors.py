"""Typed errors of the engine.

Every failure the engine expects (bad input, missing model, missing index, bad configuration)
is an :class:`EchoVidsError`, so a front end can catch one type and show ``str(err)`` as one
line; anything else is a bug and may surface as a traceback.
"""

from __future__ import annotations


class EchoVidsError(Exception):
    """Base of every expected engine failure; ``str()`` is a one-line explanation."""


class ConfigError(EchoVidsError):
    """A configuration variable is malformed; the message names the variable."""


class ModelMissingError(EchoVidsError):
    """A model file the query needs is not on disk."""


class ModelFileError(EchoVidsError):
    """A model file exists but cannot be used (wrong layout, wrong checksum)."""


class IndexMissingError(EchoVidsError):
    """No index build is current in the data directory."""


class RowsGoneError(IndexMissingError):
    """A remote vector store no longer holds some rows a build asked for: a refresh deleted those
    clips in place after this build was opened. ``segments`` are the build's ids of those clips."""

    def __init__(self, message: str, segments=()):
        super().__init__(message)
        self.segments = list(segments)


class IndexBrokenError(IndexMissingError):
    """The current build (and every older build kept beside it) fails verification: truncated or
    altered files, or a format version this code cannot read. A moderator must rebuild."""


class BadQueryError(EchoVidsError):
    """The query itself is unusable (bad shape, unknown video, empty text...)."""


class DownloadError(EchoVidsError):
    """A download failed (offline, HTTP error, checksum mismatch)."""


class AudioError(EchoVidsError):
    """The input could not be turned into usable audio; ``str()`` says why in one line."""


class NotAudioError(AudioError):
    """Empty, corrupt, or not a media file at all."""


class NoAudioStreamError(AudioError):
    """A media file (e.g. a video) without any audio track."""


class AudioTooLargeError(AudioError):
    """More bytes than the configured limit."""


class AudioTooLongError(AudioError):
    """Longer than the configured limit (and trimming is off)."""


class AudioTooShortError(AudioError):
    """Under the minimum duration, or silent."""


class DecodeTimeoutError(AudioError):
    """The decoder ran over its wall-time limit."""
