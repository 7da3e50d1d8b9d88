"""Liveness: is each YouTube video still there? (oEmbed checks, a SQLite cache, the query-time
filter and the moderators' refresh.)"""

from core.liveness.cache import TTL, CacheEntry, LivenessCache
from core.liveness.checker import LivenessChecker
from core.liveness.oembed import DEAD_STATES, OEmbedClient, OEmbedResult
from core.liveness.refresh import RefreshReport, arefresh_index, refresh_index

__all__ = [
    "DEAD_STATES",
    "TTL",
    "CacheEntry",
    "LivenessCache",
    "LivenessChecker",
    "OEmbedClient",
    "OEmbedResult",
    "RefreshReport",
    "arefresh_index",
    "refresh_index",
]
