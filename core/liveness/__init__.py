"""Liveness: is each YouTube video still there? (oEmbed checks, a SQLite cache, the query-time
filter and the re-check a refresh runs.)"""

from core.liveness.cache import TTL, CacheEntry, LivenessCache
from core.liveness.checker import LivenessChecker
from core.liveness.oembed import DEAD_STATES, OEmbedClient, OEmbedResult
from core.liveness.recheck import CheckReport, recheck

__all__ = [
    "DEAD_STATES",
    "TTL",
    "CacheEntry",
    "LivenessCache",
    "LivenessChecker",
    "OEmbedClient",
    "OEmbedResult",
    "CheckReport",
    "recheck",
]
