"""Everything Echo-Vids knows about YouTube links, in one place.

Reading a link a user pasted (``--like``, the bot's link queries), writing the timestamped link a
reply shows, the watch URL the oEmbed check asks about, and which hosts count as YouTube: when
YouTube adds a URL form, this is the one module to change.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from core.errors import BadQueryError

#: YouTube video ids are 11 characters of URL-safe base64: anything else cannot be a video, so
#: links are refused and liveness answers "invalid" locally instead of costing a request.
VIDEO_ID_RE = re.compile(r"^[A-Za-z0-9_-]{11}$")

#: Hosts whose links carry a video (after ``www.`` and ``m.`` are dropped).
HOSTS = ("youtu.be", "youtube.com", "music.youtube.com", "youtube-nocookie.com")

_T_PARTS = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


def is_video_id(text: str | None) -> bool:
    return bool(VIDEO_ID_RE.match(text or ""))


def youtube_url(video_id: str, start_seconds: int) -> str:
    """The timestamped short link the reply shows (``t=0`` is dropped: it is the default)."""
    if start_seconds > 0:
        return f"https://youtu.be/{video_id}?t={int(start_seconds)}"
    return f"https://youtu.be/{video_id}"


def link_text(video_id: str) -> str:
    """What a reply shows in place of a title it does not know."""
    return f"youtu.be/{video_id}"


def watch_url(video_id: str) -> str:
    """The canonical watch page (what oEmbed is asked about)."""
    return f"https://www.youtube.com/watch?v={video_id}"


def _host(netloc: str) -> str:
    host = netloc.lower().split(":")[0]
    host = host[4:] if host.startswith("www.") else host
    return host[2:] if host.startswith("m.") else host


def is_youtube_url(url: str) -> bool:
    return _host(urlsplit(url).netloc) in HOSTS


def parse_youtube(ref: str) -> tuple[str, int | None]:
    """A YouTube URL or bare id → (video id, start second or None). BadQueryError if it is neither.

    Accepts ``watch?v=``, ``youtu.be/``, ``shorts/``, ``embed/``, ``live/``, ``v/`` forms and ``t=`` /
    ``start=`` as ``75``, ``75s``, ``1m15s``, ``1h2m3s`` (query string or ``#t=`` fragment).
    """
    ref = (ref or "").strip()
    if is_video_id(ref):
        return ref, None
    parts = urlsplit(ref if "://" in ref else "https://" + ref)
    host = _host(parts.netloc)
    query = parse_qs(parts.query)
    video_id = None
    if host == "youtu.be":
        video_id = parts.path.strip("/").split("/")[0]
    elif host in HOSTS:
        path = parts.path.strip("/").split("/")
        if path[0] == "watch":
            video_id = (query.get("v") or [None])[0]
        elif path[0] in ("shorts", "embed", "live", "v", "e") and len(path) > 1:
            video_id = path[1]
    if not is_video_id(video_id):
        raise BadQueryError(f"not a YouTube video URL or id: {ref!r}")
    t_text = (query.get("t") or query.get("start") or [None])[0]
    if t_text is None and parts.fragment.startswith("t="):
        t_text = parts.fragment[2:]
    return video_id, _parse_t(t_text) if t_text else None


def _parse_t(text: str) -> int:
    m = _T_PARTS.match(text.strip().lower())
    if not m or not any(m.groups()):
        raise BadQueryError(f"cannot read the time {text!r} (use 75, 75s or 1m15s)")
    h, mnt, s = (int(x) if x else 0 for x in m.groups())
    return h * 3600 + mnt * 60 + s


def timestamped_url(url: str | None, path: str | None, second: int) -> str:
    """A library file's link to the matched second: YouTube gets ``t=``, other http(s) links ``#t=``,
    a file without a link a file:// URL."""
    if not url:
        return Path(path).resolve().as_uri() if path else ""
    parts = urlsplit(url)
    if is_youtube_url(url):
        q = [(k, v) for k, v in parse_qsl(parts.query) if k != "t"]
        if second > 0:
            q.append(("t", str(int(second))))
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(q), parts.fragment))
    if parts.scheme in ("http", "https") and second > 0 and not parts.fragment:
        return urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, f"t={int(second)}"))
    return url
