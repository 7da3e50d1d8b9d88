"""A local fake of Discord (REST + gateway) that the *real* discord.py client can log in to.

Why a fake instead of mocks: the bot's behaviour that matters (deferring within 3 s, following
up through the webhook route, what the gateway hands us without the message-content intent,
429 retries, heartbeats while the event loop is busy) lives in discord.py's HTTP and gateway
code. Driving that code over real sockets is the only way a test can fail where production
would.

What it speaks (enough for discord.py 2.7):

* REST under ``/api/v10``: ``GET /users/@me``, ``GET /oauth2/applications/@me``, command sync
  (``PUT /applications/{app}/commands`` and the guild variant), channel messages (create/edit),
  typing, interaction callbacks and webhook follow-ups/edits, and attachment downloads
  (``/attachments/{id}/{name}``). Every JSON reply carries ``Content-Type: application/json``
  exactly, as discord.py only parses that.
* Gateway at ``/gateway``: HELLO → IDENTIFY → READY → GUILD_CREATE, heartbeat ACKs, increasing
  sequence numbers, text frames (discord.py parses text frames as plain JSON even when it
  asked for zlib-stream).
* Like real Discord, without the message-content intent (1 << 15) the content, attachments,
  embeds and components of guild messages that neither mention the bot nor come from it are
  blanked before dispatch. DMs are never blanked.
* :meth:`FakeDiscord.rate_limit_next` makes the next matching request answer 429 with a ``Via``
  header and a JSON ``retry_after``, the only shape discord.py retries; :meth:`FakeDiscord.fail_next`
  answers a 5xx instead. Either, with ``times`` above discord.py's five tries, is a storm that
  outlasts the library's own retries.
* The CDN: attachments are served under ``/attachments/…`` and every fetch is recorded in
  :attr:`FakeDiscord.requests` like a REST call. ``add_attachment(..., stall=True)`` holds the
  download (no headers, no body) until :meth:`FakeDiscord.release` — a stalled CDN.
* :attr:`Recorded.allowed_mentions` is what each message-bearing request asked Discord to ping.

Use one instance per process at a time: the client is pointed here through the class attributes
``discord.http.Route.BASE`` and ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (or the
bot's ``DISCORD_API_BASE``/``DISCORD_GATEWAY_URL`` settings, which set the same attributes).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

MESSAGE_CONTENT_INTENT = 1 << 15
VOICE_MESSAGE_FLAG = 1 << 13
EPHEMERAL_FLAG = 1 << 6
MANAGE_GUILD = 1 << 5
ADMINISTRATOR = 1 << 3
#: What an ordinary member may do (view, send, read history...), without Manage Server.
MEMBER_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 16) | (1 << 15) | (1 << 14)

_EPOCH_MS = 1420070400000


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class Recorded:
    """One REST request the client made."""

    method: str
    path: str
    json: Any
    at: float
    status: int = 200
    query: dict[str, str] = field(default_factory=dict)

    @property
    def embeds(self) -> list[dict]:
        return (self.json or {}).get("embeds") or [] if isinstance(self.json, dict) else []

    @property
    def content(self) -> str:
        return (self.json or {}).get("content") or "" if isinstance(self.json, dict) else ""

    @property
    def message(self) -> dict | None:
        """The message this request creates or edits (an interaction callback nests it in ``data``)."""
        if not isinstance(self.json, dict):
            return None
        if self.path.endswith("/callback"):
            data = self.json.get("data")
            return data if isinstance(data, dict) and ("content" in data or "embeds" in data) else None
        if self.method in ("POST", "PATCH") and ("content" in self.json or "embeds" in self.json):
            return self.json
        return None

    @property
    def allowed_mentions(self) -> dict | None:
        """The ``allowed_mentions`` sent with the message (None: not sent, Discord's default pings)."""
        msg = self.message
        return msg.get("allowed_mentions") if msg is not None else None

    @property
    def flags(self) -> int:
        msg = self.message
        return int((msg or {}).get("flags") or 0)

    @property
    def is_attachment_fetch(self) -> bool:
        return self.method == "GET" and self.path.startswith("/attachments/")


@dataclass
class FakeUser:
    id: int
    username: str
    bot: bool = False

    def payload(self) -> dict:
        return {"id": str(self.id), "username": self.username, "global_name": self.username,
                "discriminator": "0", "avatar": None, "bot": self.bot, "public_flags": 0}


class FakeDiscord:
    """The fake server. ``async with FakeDiscord() as fake:`` starts it on 127.0.0.1."""

    def __init__(self, *, heartbeat_interval_ms: int = 1000):
        self._ids = itertools.count(1)
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.app_id = self.snowflake()
        self.bot_user = FakeUser(self.app_id, "echovids", bot=True)
        self.owner = FakeUser(self.snowflake(), "owner")
        self.guild_id = self.snowflake()
        self.channel_id = self.snowflake()
        self.listen_channel_id = self.snowflake()
        self.moderator_role_id = self.snowflake()
        self.users: dict[int, FakeUser] = {}
        self.member_roles: dict[int, list[int]] = {}
        self.member_permissions: dict[int, int] = {}
        self.requests: list[Recorded] = []
        self.heartbeats: list[float] = []
        self.identify: dict | None = None
        #: How many IDENTIFYs (new sessions) the client made: more than one means it reconnected.
        self.identify_count = 0
        self.commands: list[dict] = []
        self.attachments: dict[int, tuple[str, bytes, str]] = {}
        #: Tokens answered with 401 (discord.py raises LoginFailure on login).
        self.rejected_tokens: set[str] = set()
        self._rate_limits: list[tuple[str, re.Pattern[str], int, float]] = []
        self._failures: list[tuple[str, re.Pattern[str], int, int]] = []
        self._stalls: dict[int, asyncio.Event] = {}
        self._seq = 0
        self._sockets: list[web.WebSocketResponse] = []
        self._changed = asyncio.Event()
        self._ready = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- ids and urls -------------------------------------------------------------------
    def snowflake(self) -> int:
        """Increasing snowflakes with a plausible timestamp (discord.py derives created_at)."""
        return ((int(time.time() * 1000) - _EPOCH_MS) << 22) + next(self._ids)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{id}/{name}", self._attachment)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for gate in self._stalls.values():  # let held downloads end so the server can close
            gate.set()
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- people --------------------------------------------------------------------------
    def add_member(self, username: str, *, permissions: int = MEMBER_PERMISSIONS,
                   roles: list[int] | None = None) -> FakeUser:
        user = FakeUser(self.snowflake(), username)
        self.users[user.id] = user
        self.member_roles[user.id] = list(roles or [])
        self.member_permissions[user.id] = permissions
        return user

    def member_payload(self, user: FakeUser, *, with_permissions: bool = False) -> dict:
        data = {"user": user.payload(), "roles": [str(r) for r in self.member_roles.get(user.id, [])],
                "joined_at": _now_iso(), "deaf": False, "mute": False, "flags": 0, "nick": None}
        if with_permissions:
            data["permissions"] = str(self.member_permissions.get(user.id, MEMBER_PERMISSIONS))
        return data

    # -- media ---------------------------------------------------------------------------
    def add_attachment(self, path: Path | str | None = None, *, data: bytes | None = None,
                       filename: str | None = None, content_type: str = "audio/ogg",
                       duration_secs: float | None = None, voice: bool = False,
                       size: int | None = None, stall: bool = False, host: str | None = None) -> dict:
        """Serve a file and return its attachment payload (voice ones carry duration + waveform).

        ``stall``: the download hangs until :meth:`release`. ``host``: the URL names another host
        (e.g. ``localhost``, still this server) to play an attachment that is not on Discord's CDN.
        """
        if data is None:
            assert path is not None
            data = Path(path).read_bytes()
        filename = filename or (Path(path).name if path else "file.bin")
        if voice:
            filename = "voice-message.ogg"
        att_id = self.snowflake()
        self.attachments[att_id] = (filename, data, content_type)
        if stall:
            self._stalls[att_id] = asyncio.Event()
        base = f"http://{host}:{self.port}" if host else self.base_url
        url = f"{base}/attachments/{att_id}/{filename}?ex=0&is=0&hm=signed"
        payload = {"id": str(att_id), "filename": filename, "size": size if size is not None else len(data),
                   "url": url, "proxy_url": url, "content_type": content_type}
        if voice or duration_secs is not None:
            payload["duration_secs"] = float(duration_secs if duration_secs is not None else 1.0)
        if voice:
            payload["waveform"] = "AAAAAAAAAAAA"
            payload["flags"] = 0
        return payload

    def release(self, attachment: dict) -> None:
        """Let a stalled download (``add_attachment(stall=True)``) go through."""
        self._stalls[int(attachment["id"])].set()

    def fetches_of(self, attachment: dict) -> list[Recorded]:
        return [r for r in self.requests if r.is_attachment_fetch and r.path.split("/")[2] == attachment["id"]]

    # -- gateway events ------------------------------------------------------------------
    async def wait_until_identified(self, timeout: float = 30) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def dispatch(self, event: str, data: dict) -> None:
        self._seq += 1
        frame = json.dumps({"op": 0, "t": event, "s": self._seq, "d": data})
        for ws in list(self._sockets):
            if not ws.closed:
                await ws.send_str(frame)

    def _has_content_intent(self) -> bool:
        return bool(self.identify and int(self.identify.get("intents", 0)) & MESSAGE_CONTENT_INTENT)

    def message_payload(self, author: FakeUser, *, channel_id: int | None = None, guild: bool = True,
                        content: str = "", attachments: list[dict] | None = None,
                        mention_bot: bool = False, voice: bool = False) -> dict:
        msg_id = self.snowflake()
        mentions = [self.bot_user.payload()] if mention_bot else []
        if mention_bot and f"<@{self.app_id}>" not in content:
            content = f"<@{self.app_id}> {content}".strip()
        data: dict[str, Any] = {
            "id": str(msg_id), "channel_id": str(channel_id or self.channel_id), "author": author.payload(),
            "content": content, "timestamp": _now_iso(), "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": mentions, "mention_roles": [],
            "attachments": attachments or [], "embeds": [], "pinned": False, "type": 0,
            "flags": VOICE_MESSAGE_FLAG if voice else 0, "components": [],
        }
        if guild:
            data["guild_id"] = str(self.guild_id)
            data["member"] = {k: v for k, v in self.member_payload(author).items() if k != "user"}
        return data

    def dm_channel_id(self, user: FakeUser) -> int:
        return user.id + 7  # stable per user; discord.py makes a DMChannel from any unknown id

    async def send_message(self, author: FakeUser, **kwargs: Any) -> dict:
        """Dispatch MESSAGE_CREATE as Discord would deliver it to this bot (blanking included)."""
        if not kwargs.get("guild", True) and "channel_id" not in kwargs:
            kwargs["channel_id"] = self.dm_channel_id(author)
        data = self.message_payload(author, **kwargs)
        delivered = dict(data)
        mentioned = any(int(m["id"]) == self.app_id for m in data["mentions"])
        if "guild_id" in data and not mentioned and author.id != self.app_id and not self._has_content_intent():
            delivered.update(content="", attachments=[], embeds=[], components=[])
        await self.dispatch("MESSAGE_CREATE", delivered)
        return data

    # -- interactions --------------------------------------------------------------------
    def _interaction(self, user: FakeUser, data: dict, *, guild: bool = True,
                     channel_id: int | None = None) -> dict:
        inter_id = self.snowflake()
        payload: dict[str, Any] = {
            "id": str(inter_id), "application_id": str(self.app_id), "type": 2, "data": data,
            "token": f"tok{inter_id}", "version": 1, "locale": "en-US", "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)} if guild else {"1": str(user.id)},
            "attachment_size_limit": 10 * 2**20, "app_permissions": str((1 << 53) - 1),
        }
        if guild:
            cid = channel_id or self.channel_id
            payload.update(guild_id=str(self.guild_id), guild_locale="en-US", context=0,
                           channel_id=str(cid), channel={"id": str(cid), "type": 0, "guild_id": str(self.guild_id),
                                                         "name": "general", "position": 0,
                                                         "permission_overwrites": [], "nsfw": False},
                           member=self.member_payload(user, with_permissions=True))
        else:
            cid = channel_id or self.dm_channel_id(user)
            payload.update(context=1, channel_id=str(cid), channel={"id": str(cid), "type": 1},
                           user=user.payload())
        return payload

    async def slash(self, user: FakeUser, name: str, options: list[dict] | None = None, *,
                    attachments: list[dict] | None = None, guild: bool = True) -> dict:
        """Dispatch a chat-input INTERACTION_CREATE; ``attachments`` go to ``resolved``."""
        data: dict[str, Any] = {"id": str(self._command_id(name)), "name": name, "type": 1,
                                "options": options or []}
        if attachments:
            data["resolved"] = {"attachments": {a["id"]: a for a in attachments}}
        payload = self._interaction(user, data, guild=guild)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def context_menu(self, user: FakeUser, name: str, message: dict, *, guild: bool = True) -> dict:
        """Dispatch a message context-menu INTERACTION_CREATE targeting ``message`` (full payload)."""
        data = {"id": str(self._command_id(name)), "name": name, "type": 3, "target_id": message["id"],
                "resolved": {"messages": {message["id"]: message}}}
        payload = self._interaction(user, data, guild=guild)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    def _command_id(self, name: str) -> int:
        for cmd in self.commands:
            if cmd["name"] == name:
                return int(cmd["id"])
        return self.snowflake()

    # -- observing the client ------------------------------------------------------------
    async def wait_for(self, predicate: Callable[[Recorded], bool], *, timeout: float = 30,
                       after: int = 0) -> Recorded:
        """The first recorded request (from index ``after``) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            for rec in self.requests[after:]:
                if predicate(rec):
                    return rec
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [f"{r.method} {r.path}" for r in self.requests[after:]]
                raise TimeoutError(f"no matching request within {timeout}s; saw {seen}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass

    async def wait_for_heartbeats(self, count: int, *, timeout: float = 30) -> None:
        """Until ``count`` heartbeats in all have been received (and acked)."""
        deadline = time.monotonic() + timeout
        while len(self.heartbeats) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"only {len(self.heartbeats)} of {count} heartbeats within {timeout}s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass

    def replies_to_interaction(self, payload: dict) -> list[Recorded]:
        """Callback + follow-ups + edits made for one interaction, in order."""
        token = payload["token"]
        return [r for r in self.requests if token in r.path]

    def rate_limit_next(self, method: str, path_regex: str, *, times: int = 1, retry_after: float = 0.2) -> None:
        """Answer the next ``times`` matching requests with a retryable 429."""
        self._rate_limits.append((method.upper(), re.compile(path_regex), times, retry_after))

    def fail_next(self, method: str, path_regex: str, *, times: int = 1, status: int = 503) -> None:
        """Answer the next ``times`` matching requests with ``status`` (a 5xx: Discord is struggling)."""
        self._failures.append((method.upper(), re.compile(path_regex), times, status))

    def clear_failures(self) -> None:
        """Forget every pending 429/5xx rule (Discord is healthy again)."""
        self._failures.clear()
        self._rate_limits.clear()

    # -- handlers ------------------------------------------------------------------------
    @staticmethod
    def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        # discord.py parses bodies only when Content-Type is exactly application/json.
        return web.Response(status=status, body=json.dumps(data).encode(), headers={
            "Content-Type": "application/json", **(headers or {})})

    async def _attachment(self, request: web.Request) -> web.Response:
        att_id = int(request.match_info["id"])
        self.requests.append(Recorded("GET", request.path, None, time.monotonic(), query=dict(request.query)))
        self._changed.set()
        att = self.attachments.get(att_id)
        if att is None:
            return web.Response(status=404)
        gate = self._stalls.get(att_id)
        if gate is not None:
            await gate.wait()
        name, data, ctype = att
        return web.Response(body=data, headers={"Content-Type": ctype})

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms},
                                      "s": None, "t": None}))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op = frame.get("op")
                if op == 1:
                    self.heartbeats.append(time.monotonic())
                    self._changed.set()
                    await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
                elif op == 2:
                    self.identify = frame["d"]
                    self.identify_count += 1
                    await self._send_ready()
                    self._ready.set()
                elif op == 6:  # RESUME: we keep no session; ask for a fresh IDENTIFY
                    await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
        return ws

    async def _send_ready(self) -> None:
        ready = {
            "v": 10, "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "session_id": "fake-session", "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.app_id), "flags": 0}, "private_channels": [],
            "relationships": [],
        }
        if self.identify and "shard" in self.identify:  # like Discord: READY names the shard identified
            ready["shard"] = self.identify["shard"]
        await self.dispatch("READY", ready)
        await self.dispatch("GUILD_CREATE", self.guild_payload())

    def guild_payload(self) -> dict:
        gid = str(self.guild_id)
        role = lambda rid, name, perms, pos: {  # noqa: E731
            "id": str(rid), "name": name, "permissions": str(perms), "position": pos, "color": 0,
            "hoist": False, "managed": False, "mentionable": False, "flags": 0}
        channel = lambda cid, name, pos: {  # noqa: E731
            "id": str(cid), "type": 0, "name": name, "position": pos, "guild_id": gid,
            "permission_overwrites": [], "nsfw": False, "parent_id": None, "topic": None,
            "rate_limit_per_user": 0, "last_message_id": None}
        members = [self.member_payload(self.bot_user)] + [self.member_payload(u) for u in self.users.values()]
        return {
            "id": gid, "name": "Echo test guild", "icon": None, "splash": None, "discovery_splash": None,
            "owner_id": str(self.owner.id), "afk_channel_id": None, "afk_timeout": 300,
            "verification_level": 0, "default_message_notifications": 0, "explicit_content_filter": 0,
            "roles": [role(self.guild_id, "@everyone", MEMBER_PERMISSIONS, 0),
                      role(self.moderator_role_id, "echo-moderators", MEMBER_PERMISSIONS, 1)],
            "emojis": [], "stickers": [], "features": [], "mfa_level": 0, "application_id": None,
            "system_channel_id": None, "system_channel_flags": 0, "rules_channel_id": None,
            "joined_at": _now_iso(), "large": False, "unavailable": False, "member_count": len(members),
            "voice_states": [], "members": members, "presences": [], "threads": [],
            "stage_instances": [], "guild_scheduled_events": [], "premium_tier": 0,
            "preferred_locale": "en-US", "nsfw_level": 0, "premium_progress_bar_enabled": False,
            "channels": [channel(self.channel_id, "general", 0), channel(self.listen_channel_id, "voice-notes", 1)],
        }

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body: Any = None
        if request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
            elif request.content_type.startswith("multipart/"):
                body = await self._read_multipart(request)
            else:
                body = await request.read()
        rec = Recorded(request.method, path, body, time.monotonic(), query=dict(request.query))
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bot ") in self.rejected_tokens:
            rec.status = 401
            self.requests.append(rec)
            return self._json({"message": "401: Unauthorized", "code": 0}, status=401)
        limited = self._take_rate_limit(request.method, path)
        if limited is not None:
            rec.status = 429
            self.requests.append(rec)
            self._changed.set()
            return self._json({"message": "You are being rate limited.", "retry_after": limited, "global": False},
                              status=429, headers={"Via": "1.1 google", "Retry-After": str(limited)})
        failed = self._take(self._failures, request.method, path)
        if failed is not None:
            rec.status = int(failed)
            self.requests.append(rec)
            self._changed.set()
            return self._json({"message": "fake discord: server error", "code": 0}, status=int(failed))
        self.requests.append(rec)
        self._changed.set()
        return await self._route(request.method, path, body)

    async def _read_multipart(self, request: web.Request) -> dict:
        out: dict[str, Any] = {"files": []}
        reader = await request.multipart()
        async for part in reader:
            if part.name == "payload_json":
                out.update(json.loads(await part.text()))
            else:
                out["files"].append((part.filename, await part.read()))
        return out

    def _take_rate_limit(self, method: str, path: str) -> float | None:
        return self._take(self._rate_limits, method, path)

    @staticmethod
    def _take(rules: list, method: str, path: str) -> Any:
        """Consume one use of the first rule matching the request; its value, or None."""
        for i, (m, pattern, times, value) in enumerate(rules):
            if m == method and pattern.search(path):
                if times <= 1:
                    rules.pop(i)
                else:
                    rules[i] = (m, pattern, times - 1, value)
                return value
        return None

    def _message_out(self, channel_id: int | str, body: dict | None, *, msg_id: int | None = None,
                     flags: int = 0) -> dict:
        body = body or {}
        return {"id": str(msg_id or self.snowflake()), "channel_id": str(channel_id),
                "author": self.bot_user.payload(), "content": body.get("content") or "",
                "timestamp": _now_iso(), "edited_timestamp": None, "tts": False, "mention_everyone": False,
                "mentions": [], "mention_roles": [], "attachments": [], "embeds": body.get("embeds") or [],
                "pinned": False, "type": 0, "flags": int(body.get("flags") or flags), "components": []}

    async def _route(self, method: str, path: str, body: Any) -> web.Response:
        parts = path.strip("/").split("/")
        if method == "GET" and path == "/users/@me":
            return self._json({**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0})
        if method == "GET" and path == "/oauth2/applications/@me":
            return self._json({"id": str(self.app_id), "name": "echovids", "icon": None, "description": "",
                               "bot_public": True, "bot_require_code_grant": False,
                               "owner": self.owner.payload(), "verify_key": "00", "flags": 0,
                               "summary": "", "team": None})
        if method == "PUT" and parts[0] == "applications" and parts[-1] == "commands":
            # Like Discord, fill what the client may omit (context menus send no description).
            self.commands = [{"description": "", "options": [], **cmd, "id": str(self.snowflake()), "application_id": str(self.app_id),
                              "version": "1", "default_member_permissions": cmd.get("default_member_permissions")}
                             for cmd in body or []]
            return self._json(self.commands)
        if method == "GET" and parts[0] == "applications" and parts[-1] == "commands":
            return self._json(self.commands)
        if parts[0] == "channels" and len(parts) >= 3:
            channel_id = parts[1]
            if parts[2] == "typing":
                return web.Response(status=204)
            if parts[2] == "messages" and method == "POST":
                return self._json(self._message_out(channel_id, body))
            if parts[2] == "messages" and method == "PATCH" and len(parts) == 4:
                return self._json(self._message_out(channel_id, body, msg_id=int(parts[3])))
            if parts[2] == "messages" and method == "DELETE":
                return web.Response(status=204)
        if parts[0] == "interactions" and parts[-1] == "callback" and method == "POST":
            inter_id = parts[1]
            cb_type = int((body or {}).get("type", 0))
            data = (body or {}).get("data") or {}
            result: dict[str, Any] = {"interaction": {
                "id": inter_id, "type": 2, "response_message_loading": cb_type == 5,
                "response_message_ephemeral": bool(int(data.get("flags") or 0) & EPHEMERAL_FLAG)}}
            if cb_type in (4, 5):
                msg_id = self.snowflake()
                result["interaction"]["response_message_id"] = str(msg_id)
                result["resource"] = {"type": cb_type, "message": self._message_out(self.channel_id, data, msg_id=msg_id)}
            return self._json(result)
        if parts[0] == "webhooks" and len(parts) >= 3:
            if method == "POST" and len(parts) == 3:
                return self._json(self._message_out(self.channel_id, body))
            if method in ("PATCH", "GET") and len(parts) == 5 and parts[3] == "messages":
                mid = parts[4]
                return self._json(self._message_out(self.channel_id, body if method == "PATCH" else {},
                                                    msg_id=None if mid == "@original" else int(mid)))
            if method == "DELETE":
                return web.Response(status=204)
        if method == "POST" and path == "/users/@me/channels":
            recipient = int(body["recipient_id"])
            user = self.users.get(recipient) or FakeUser(recipient, "someone")
            return self._json({"id": str(recipient + 7), "type": 1, "recipients": [user.payload()],
                               "last_message_id": None})
        return self._json({"message": f"fake discord: no route for {method} {path}", "code": 0}, status=404)


async def wait_ready(client: Any, task: asyncio.Task, timeout: float = 240) -> None:
    """Until a discord.py client started as ``task`` is ready; a start-up error surfaces at once
    (no polling, no waiting out the timeout when login already failed)."""
    ready = asyncio.ensure_future(client.wait_until_ready())
    done, _ = await asyncio.wait({ready, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()
        raise AssertionError("the client stopped before it was ready")
    if ready not in done:
        ready.cancel()
        raise AssertionError(f"the client was not ready within {timeout}s")
