"""Fetching a Discord attachment: only from Discord's CDN, never past the size limit, never for long.

Why each rule:

* **Hosts.** An attachment URL comes inside a gateway payload, so it is Discord's word, but the
  bot should never become a fetcher of arbitrary URLs if that word is ever wrong (a bug, a proxy,
  a crafted payload): only ``cdn.discordapp.com`` and ``media.discordapp.net`` over https, plus the
  host of the configured ``DISCORD_API_BASE`` (a REST proxy, or the tests' local fake). Redirects
  are not followed, so the host checked is the host fetched.
* **Time.** A stalled CDN must not hold a search for a minute: connecting and every silence between
  chunks are bounded (``connect_s``, ``read_s``), and the whole download gets a budget derived from
  its size (``base_s`` + size / ``min_rate_bps``): 20.5 s for the 25 MB default cap.
* **Size.** Refused from the declared length, and again while streaming.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import yarl

from core.errors import AudioTooLargeError, DownloadError

#: Discord's attachment hosts (https only).
CDN_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})


class AttachmentHostError(DownloadError):
    """The attachment URL is not on Discord's CDN (nor the configured API host): not fetched."""


@dataclass(frozen=True)
class DownloadTimeouts:
    """Bounds for one attachment download, in seconds (and bytes per second)."""

    connect_s: float = 5.0
    read_s: float = 10.0
    base_s: float = 8.0
    min_rate_bps: float = 2 * 2**20

    def total_for(self, size_bytes: int) -> float:
        """The whole download's budget: a fixed part plus the time at the slowest rate we accept."""
        return self.base_s + max(0, size_bytes) / self.min_rate_bps

    def client_timeout(self, size_bytes: int) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.total_for(size_bytes), sock_connect=self.connect_s,
                                     sock_read=self.read_s)


def allowed_hosts(settings: object) -> frozenset[str]:
    """Discord's CDN hosts and the host of ``DISCORD_API_BASE``."""
    hosts = set(CDN_HOSTS)
    base = getattr(settings, "discord_api_base", "") or ""
    host = yarl.URL(base).host if base else None
    if host:
        hosts.add(host.lower())
    return frozenset(hosts)


def check_host(url: str, hosts: frozenset[str]) -> yarl.URL:
    """The parsed URL if it may be fetched, else :class:`AttachmentHostError`."""
    try:
        parsed = yarl.URL(url)
    except (TypeError, ValueError):
        raise AttachmentHostError("the attachment URL cannot be read") from None
    host = (parsed.host or "").lower()
    if host in CDN_HOSTS and parsed.scheme == "https":
        return parsed
    if host in hosts and host not in CDN_HOSTS and parsed.scheme in ("http", "https"):
        return parsed
    raise AttachmentHostError(f"attachment host {host or '?'!r} is not Discord's CDN")


async def fetch_attachment(session: aiohttp.ClientSession, url: str, *, limit: int, declared_size: int | None,
                           hosts: frozenset[str], timeouts: DownloadTimeouts) -> bytes:
    """The attachment's bytes, or a typed error (:class:`DownloadError`, ``AudioTooLargeError``)."""
    target = check_host(url, hosts)
    expected = min(limit, declared_size) if declared_size and declared_size > 0 else limit
    try:
        async with session.get(target, allow_redirects=False, timeout=timeouts.client_timeout(expected)) as resp:
            if resp.status != 200:
                raise DownloadError(f"attachment download failed with HTTP {resp.status}")
            if resp.content_length is not None and resp.content_length > limit:
                raise AudioTooLargeError("attachment over the size limit")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise AudioTooLargeError("attachment over the size limit")
                chunks.append(chunk)
            return b"".join(chunks)
    except (aiohttp.ClientError, asyncio.TimeoutError) as err:
        raise DownloadError(f"attachment download failed: {err.__class__.__name__}") from err
