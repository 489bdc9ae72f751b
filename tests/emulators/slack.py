"""A Slack emulator: Web API, Events API over HTTP, Socket Mode, response_url and file hosting.

Tests act like people in Slack (`mention`, `post`, `dm`, `slash_command`, ...) and read what a
person would see (`thread`, `bot_replies`, `ephemerals`, `statuses`, ...). The bot under test
talks to it with the real `slack_sdk` AsyncWebClient through `base_url=emu.api_url`; events are
delivered to `emu.events_url` (signed HTTP POSTs, like Slack) or, when that is None, over the
Socket Mode WebSocket the bot opened through `apps.connections.open`. Several replicas behind a
load balancer: `emu.events_urls` lists their URLs, and each POST goes to the next one in turn;
with `emu.redeliveries` set, an event not acked (refused, cut off, not 200 within `ack_timeout`)
is sent again, as Slack does, with X-Slack-Retry-Num, and lands on the next URL.

The emulator behaves as Slack does for the app described by a manifest (the project's
`manifest.yml` unless another is given, or `use_manifest` installs another): the app's bot scopes
decide which Web API calls succeed (`missing_scope` otherwise), its event subscriptions which
events can be sent, and `features.agent_view` or `features.assistant_view` which AI-app events
Slack sends and how `assistant.threads.setSuggestedPrompts` behaves.

Faults: `fail_next` fails the next calls of a method; `faults` (common.Faults) fails calls at a
seeded random rate, as Slack does (HTTP 500 and 503, `ratelimited` with Retry-After, connections
reset before the call is handled or after, its answer lost).

Everything runs in the test's event loop: `await emu.start()` binds 127.0.0.1 on an ephemeral
port; `await emu.stop()` tears it down.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import inspect
import json
import mimetypes
import secrets
import time
import urllib.parse
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from tests.emulators.common import (
    HTTP_500,
    HTTP_503,
    RATE_LIMITED,
    RESET_AFTER,
    RESET_BEFORE,
    Faults,
)

# Limits documented for chat.postMessage / chat.update / chat.*Stream.
MAX_TEXT_CHARS = 40_000
MAX_MARKDOWN_TEXT_CHARS = 12_000
MAX_BLOCKS = 50
TRIGGER_ID_LIFETIME = 3.0  # seconds a trigger_id stays valid for views.open

_JSON_ARGS = ("blocks", "attachments", "metadata", "files", "chunks", "view", "prompts")

PROJECT_MANIFEST = Path(__file__).resolve().parents[2] / "manifest.yml"

# The bot-token scopes each Web API method accepts (any one of them), from Slack's method
# reference. Methods not named here need none (auth.test, views.*, chat.getPermalink).
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "assistant.threads.setStatus": ("assistant:write", "chat:write"),
    "assistant.threads.setSuggestedPrompts": ("assistant:write",),
    "assistant.threads.setTitle": ("assistant:write",),
    "chat.appendStream": ("chat:write",),
    "chat.delete": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "chat.postMessage": ("chat:write",),
    "chat.startStream": ("chat:write",),
    "chat.stopStream": ("chat:write",),
    "chat.update": ("chat:write",),
    "files.completeUploadExternal": ("files:write",),
    "files.getUploadURLExternal": ("files:write",),
    "files.info": ("files:read",),
    "files.upload": ("files:write",),
    "users.info": ("users:read",),
    "usergroups.users.list": ("usergroups:read",),
}
# Methods on one conversation need the scope for its kind: conversations.replies in a private
# channel needs groups:history, and so on.
CONVERSATION_METHOD_SCOPES = {
    "conversations.history": "history",
    "conversations.info": "read",
    "conversations.replies": "history",
}
KIND_SCOPE_PREFIX = {"channel": "channels", "group": "groups", "im": "im", "mpim": "mpim"}
# Downloading a file's url_private with the bot token.
DOWNLOAD_SCOPE = "files:read"
# The scope each event subscription needs (events not named here need none).
EVENT_SCOPES = {
    "app_mention": "app_mentions:read",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
    "message.mpim": "mpim:history",
}
CHANNEL_ENTITY = "slack#/types/channel_id"


def load_manifest(path: Path = PROJECT_MANIFEST) -> dict[str, Any]:
    manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(manifest, dict), f"{path} is not a manifest"
    return manifest


class NotSentBySlack(Exception):
    """A test asked Slack for an event it would not send to this app (see its manifest)."""


@dataclass
class ApiCall:
    """One Web API call the bot made (token excluded from `args`)."""

    method: str
    args: dict[str, Any]
    at: float  # time.monotonic()
    ok: bool = True
    error: str | None = None


@dataclass
class Delivery:
    """The outcome of delivering one envelope to the bot.

    `status` is the HTTP status (HTTP mode) or 200 once acked over the socket; 0 when the bot did
    not answer within `SlackEmulator.ack_timeout` (Slack would then retry). `body` is the bot's
    immediate response: decoded JSON when it is JSON, else the text ("" when empty); over the
    socket, the ack `payload` ("" when the ack has none).
    """

    kind: str  # "events_api" | "slash_commands" | "interactive"
    payload: dict[str, Any]
    status: int = 0
    body: Any = ""
    ack_seconds: float = 0.0
    event_id: str | None = None
    envelope_id: str | None = None
    retry_num: int | None = None
    timed_out: bool = False
    url: str = ""  # HTTP mode: where it was POSTed


@dataclass
class Message:
    """A message as a person sees it. `text` is what Slack displays after every update/append."""

    ts: str
    user: str | None
    text: str
    bot: bool
    blocks: list[dict[str, Any]]
    files: list[dict[str, Any]]
    streaming: bool
    edited: bool
    thread_ts: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass
class Upload:
    """A file the bot uploaded (files.getUploadURLExternal + upload + completeUploadExternal)."""

    file_id: str
    name: str
    title: str
    content: bytes
    channel: str | None
    thread_ts: str | None
    initial_comment: str | None = None


@dataclass
class _Channel:
    id: str
    name: str
    kind: str  # "channel" | "group" | "im" | "mpim"
    user: str | None = None  # the other party of an im
    created: int = 0
    slack_connect: bool = False  # shared with another organisation


@dataclass
class _Msg:
    channel: str
    ts: str
    user: str | None
    text: str = ""
    markdown_text: str | None = None
    blocks: list[dict[str, Any]] | None = None  # blocks as given (None: Slack generates rich_text)
    files: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    bot_id: str | None = None
    subtype: str | None = None
    metadata: dict[str, Any] | None = None
    streaming: bool = False
    streamed: str = ""  # markdown accumulated by chat.*Stream
    final_blocks: list[dict[str, Any]] | None = None  # chat.stopStream blocks
    chunks: list[dict[str, Any]] = field(default_factory=list)
    edited: dict[str, str] | None = None
    broadcast: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts


@dataclass
class _ResponseTarget:
    channel: str
    user: str
    message_ts: str | None = None
    thread_ts: str | None = None


class _Dropped(Exception):
    """The connection drops without an answer (an injected fault)."""


# What Slack answers when an injected fault is an HTTP error: (status, error).
FAULT_ERRORS = {
    HTTP_500: (500, "internal_error"),
    HTTP_503: (503, "service_unavailable"),
    RATE_LIMITED: (429, "ratelimited"),
}


class _ApiError(Exception):
    def __init__(self, error: str, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.extra = extra


# ---------------------------------------------------------------------------------------------
# Rendering what a person sees
# ---------------------------------------------------------------------------------------------


def _text_obj(obj: Any) -> str:
    if isinstance(obj, dict):
        return str(obj.get("text", ""))
    return ""


def _rich_elements(elements: Iterable[dict[str, Any]]) -> str:
    out: list[str] = []
    for el in elements:
        kind = el.get("type")
        if kind == "text":
            out.append(str(el.get("text", "")))
        elif kind == "link":
            out.append(str(el.get("text") or el.get("url", "")))
        elif kind == "user":
            out.append(f"<@{el.get('user_id')}>")
        elif kind == "channel":
            out.append(f"<#{el.get('channel_id')}>")
        elif kind == "usergroup":
            out.append(f"<!subteam^{el.get('usergroup_id')}>")
        elif kind == "broadcast":
            out.append(f"<!{el.get('range')}>")
        elif kind == "emoji":
            out.append(f":{el.get('name')}:")
        elif kind == "date":
            out.append(str(el.get("fallback", "")))
    return "".join(out)


def _rich_text(block: dict[str, Any]) -> str:
    parts: list[str] = []
    for el in block.get("elements", []):
        kind = el.get("type")
        if kind == "rich_text_section":
            parts.append(_rich_elements(el.get("elements", [])))
        elif kind == "rich_text_preformatted":
            parts.append("```\n" + _rich_elements(el.get("elements", [])) + "\n```")
        elif kind == "rich_text_quote":
            parts.append(
                "\n".join(
                    "> " + line for line in _rich_elements(el.get("elements", [])).split("\n")
                )
            )
        elif kind == "rich_text_list":
            ordered = el.get("style") == "ordered"
            indent = "  " * int(el.get("indent", 0) or 0)
            for i, item in enumerate(el.get("elements", []), start=1):
                bullet = f"{i}." if ordered else "•"
                parts.append(f"{indent}{bullet} {_rich_elements(item.get('elements', []))}")
    return "\n".join(parts)


def render_blocks(blocks: Iterable[dict[str, Any]]) -> str:
    """The text a person reads in markdown / section / header / context / rich_text blocks."""
    parts: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind in ("section", "header"):
            lines = [_text_obj(block.get("text"))] if block.get("text") else []
            lines += [_text_obj(f) for f in block.get("fields", []) or []]
            parts.append("\n".join(x for x in lines if x))
        elif kind == "markdown":
            parts.append(str(block.get("text", "")))
        elif kind == "context":
            parts.append(" ".join(_text_obj(e) for e in block.get("elements", []) if _text_obj(e)))
        elif kind == "rich_text":
            parts.append(_rich_text(block))
    return "\n".join(p for p in parts if p)


def _rich_text_from_plain(text: str) -> list[dict[str, Any]]:
    """The rich_text block Slack generates for a plain message (user mentions become elements)."""
    elements: list[dict[str, Any]] = []
    rest = text
    while rest:
        start = rest.find("<@")
        end = rest.find(">", start) if start >= 0 else -1
        if start < 0 or end < 0:
            elements.append({"type": "text", "text": rest})
            break
        if start > 0:
            elements.append({"type": "text", "text": rest[:start]})
        elements.append({"type": "user", "user_id": rest[start + 2 : end].split("|")[0]})
        rest = rest[end + 1 :]
    return [
        {
            "type": "rich_text",
            "block_id": secrets.token_hex(3),
            "elements": [{"type": "rich_text_section", "elements": elements}],
        }
    ]


TASK_STATUSES = ("pending", "in_progress", "complete", "error")
TASK_FIELDS = {"type", "id", "title", "status", "details", "output", "sources"}
MAX_TASK_TEXT = 256  # details and output


def _check_task_update(chunk: dict[str, Any]) -> None:
    """A task_update chunk as chat.*Stream documents it: id, title and status required (status
    one of TASK_STATUSES); details and output at most 256 characters; sources url elements
    with their text."""
    if set(chunk) - TASK_FIELDS:
        raise _ApiError("invalid_chunks")
    for name in ("id", "title"):
        if not isinstance(chunk.get(name), str) or not chunk[name]:
            raise _ApiError("invalid_chunks")
    if chunk.get("status") not in TASK_STATUSES:
        raise _ApiError("invalid_chunks")
    for name in ("details", "output"):
        if name in chunk and (not isinstance(chunk[name], str) or len(chunk[name]) > MAX_TASK_TEXT):
            raise _ApiError("invalid_chunks")
    for source in chunk.get("sources", []):
        if (
            not isinstance(source, dict)
            or source.get("type") != "url"
            or not str(source.get("url", "")).startswith(("http://", "https://"))
            or not isinstance(source.get("text"), str)
            or not source["text"]
        ):
            raise _ApiError("invalid_chunks")


def _displayed(msg: _Msg) -> str:
    if msg.streaming or msg.streamed or msg.final_blocks is not None:
        text = msg.streamed
        if msg.final_blocks:
            tail = render_blocks(msg.final_blocks)
            text = f"{text}\n{tail}" if text and tail else text or tail
        return text
    if msg.markdown_text is not None:
        return msg.markdown_text
    if msg.blocks:
        rendered = render_blocks(msg.blocks)
        if rendered:
            return rendered
    return msg.text


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


def _cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.b64decode(cursor).decode().split(":", 1)[1])
    except (ValueError, IndexError) as e:
        raise _ApiError("invalid_cursor") from e


# ---------------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------------


class SlackEmulator:
    team_id = "T0TEAM"
    team_domain = "emulated"
    team_name = "Emulated Team"
    bot_user_id = "U0BOT"
    bot_id = "B0BOT"
    bot_name = "assistant-bot"
    app_id = "A0APP"
    bot_token = "xoxb-test-token"
    app_token = "xapp-1-test-token"
    signing_secret = "test-signing-secret"
    verification_token = "test-verification-token"

    def __init__(self, manifest: Mapping[str, Any] | None = None) -> None:
        self.view: str | None = None  # "agent_view", "assistant_view" or None (neither)
        self.scopes: frozenset[str] = frozenset()
        self.bot_events: frozenset[str] = frozenset()
        self.use_manifest(load_manifest() if manifest is None else manifest)
        self.host = "127.0.0.1"
        self.port = 0
        # HTTP mode: each POST goes to the next of these in turn; none: deliver over Socket Mode.
        self.events_urls: list[str] = []
        self._next_url = 0
        # Slack sends an event it did not see acked again, up to 3 times (we retry at once).
        self.redeliveries: int = 0
        self.ack_timeout: float = 3.0  # Slack waits 3 seconds for an ack
        # wait_for also re-checks after this long without Slack activity (None: only on activity)
        self.recheck_interval: float | None = 0.2
        self.refuse_streaming: bool = False
        # What apps.connections.open hands out instead of this emulator's own Socket Mode URL
        # (a test points it at a port where nothing listens).
        self.socket_mode_url: str | None = None
        self.refuse_streaming_error: str = "not_allowed_token_type"
        self.calls: list[ApiCall] = []
        self.deliveries: list[Delivery] = []
        self.users: dict[str, dict[str, Any]] = {}
        self.usergroups: dict[str, list[str]] = {}  # user group id (S…) -> its members' ids
        self.channels: dict[str, _Channel] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.file_contents: dict[str, bytes] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self.view_owners: dict[str, str] = {}
        self.response_url_posts: list[dict[str, Any]] = []
        self._messages: dict[str, dict[str, _Msg]] = defaultdict(dict)
        self._ephemerals: dict[tuple[str, str], list[str]] = defaultdict(list)
        self._statuses: dict[tuple[str, str], list[str]] = defaultdict(list)
        self._current_status: dict[tuple[str, str], str] = {}
        self._titles: dict[tuple[str, str], list[str]] = defaultdict(list)
        self._prompts: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self._home_views: dict[str, dict[str, Any]] = {}
        self._assistant_threads: dict[str, str] = {}  # user -> their open assistant thread
        self._uploads: list[Upload] = []
        self._pending_uploads: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, list[tuple[str, int, float]]] = defaultdict(list)
        self._holds: dict[str, asyncio.Event] = {}
        self._withheld: list[tuple[str, dict[str, Any]]] = []  # calls waiting on a hold
        # Random Web API faults (see `Faults`); requests with OBSERVER_HEADER are spared.
        self.faults = Faults()
        self._response_targets: dict[str, _ResponseTarget] = {}
        self._triggers: dict[str, float] = {}
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._pending_acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._counter = 0
        self._event_counter = 0
        self._ts_counter = 0
        self._epoch = int(time.time())
        self._cond: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._add_user("U0ALICE", "alice", "Alice Example")
        self._add_user("U0BOB", "bob", "Bob Example")
        self._add_user(self.bot_user_id, self.bot_name, "Assistant Bot", is_bot=True)
        self.add_channel("C0GENERAL", "general")
        self.add_channel("C0RANDOM", "random")

    def use_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Configure the app from `manifest`, as pasting it into the app's settings would."""
        features = manifest.get("features") or {}
        self.view = next((v for v in ("agent_view", "assistant_view") if v in features), None)
        scopes = (manifest.get("oauth_config") or {}).get("scopes") or {}
        self.scopes = frozenset(scopes.get("bot") or [])
        subscriptions = (manifest.get("settings") or {}).get("event_subscriptions") or {}
        self.bot_events = frozenset(subscriptions.get("bot_events") or [])

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    async def start(self) -> None:
        self._cond = asyncio.Condition()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._handle_api)
        app.router.add_get("/api/{method}", self._handle_api)
        app.router.add_post("/upload/v1/{file_id}", self._handle_upload)
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._handle_download)
        app.router.add_get("/files-pri/{team_file}/{name}", self._handle_download)
        app.router.add_get("/login", self._handle_login)
        app.router.add_post("/response_url/{rid}", self._handle_response_url)
        app.router.add_get("/socket-mode", self._handle_socket)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        # Slack delivers events without a connection cap; aiohttp's default (100) would queue them.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def stop(self) -> None:
        for future in self._pending_acks.values():
            if not future.done():
                future.cancel()
        for ws in list(self._sockets):
            await ws.close()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> SlackEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- workspace -----------------------------------------------------------------------------

    def _add_user(self, user_id: str, name: str, real_name: str, *, is_bot: bool = False) -> None:
        self.users[user_id] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real_name,
            "tz": "Europe/London",
            "tz_label": "Greenwich Mean Time",
            "tz_offset": 0,
            "profile": {
                "real_name": real_name,
                "display_name": name,
                "real_name_normalized": real_name,
                "display_name_normalized": name,
                "email": None if is_bot else f"{name}@example.com",
                "bot_id": self.bot_id if is_bot else None,
                "team": self.team_id,
            },
            "is_admin": False,
            "is_owner": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": self._epoch,
        }

    def add_user(self, user_id: str, name: str, real_name: str | None = None) -> None:
        self._add_user(user_id, name, real_name or name.title())

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        is_private: bool = False,
        is_mpim: bool = False,
        slack_connect: bool = False,
    ) -> None:
        """A channel; with `slack_connect` it is shared with another organisation, and Slack
        then shows files shared there as stubs that only `files.info` fills in."""
        kind = "mpim" if is_mpim else "group" if is_private else "channel"
        self.channels[channel_id] = _Channel(
            channel_id, name, kind, created=self._epoch, slack_connect=slack_connect
        )

    def dm_channel(self, user: str) -> str:
        """The stable id of `user`'s DM with the bot ("D0ALICE" for "U0ALICE")."""
        channel_id = "D" + (user[1:] if user.startswith("U") else user)
        if channel_id not in self.channels:
            self.channels[channel_id] = _Channel(
                channel_id, user, "im", user=user, created=self._epoch
            )
        return channel_id

    def channel_type(self, channel: str) -> str:
        ch = self._channel(channel)
        return {"channel": "channel", "group": "group", "im": "im", "mpim": "mpim"}[ch.kind]

    def _channel(self, channel: str) -> _Channel:
        ch = self.channels.get(channel)
        if ch is None:
            raise _ApiError("channel_not_found")
        return ch

    def _next_ts(self) -> str:
        self._ts_counter += 1
        return f"{self._epoch + self._ts_counter // 1_000_000}.{self._ts_counter % 1_000_000:06d}"

    def _next_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter:07d}"

    def _new_trigger(self) -> str:
        self._counter += 1
        trigger = f"{self._counter}.{int(time.time())}.{secrets.token_hex(16)}"
        self._triggers[trigger] = time.monotonic()
        return trigger

    def _new_response_url(self, target: _ResponseTarget) -> str:
        rid = secrets.token_hex(8)
        self._response_targets[rid] = target
        return f"{self.base_url}/response_url/{rid}"

    def _user_obj(self, user: str) -> dict[str, Any]:
        name = self.users.get(user, {}).get("name", user.lower())
        return {"id": user, "username": name, "name": name, "team_id": self.team_id}

    # --- waiting -------------------------------------------------------------------------------

    async def _changed(self) -> None:
        if self._cond is None:
            return
        async with self._cond:
            self._cond.notify_all()

    @property
    def events_url(self) -> str | None:
        """Where events are POSTed (HTTP mode); None: over Socket Mode."""
        return self.events_urls[0] if self.events_urls else None

    @events_url.setter
    def events_url(self, url: str | None) -> None:
        self.events_urls = [] if url is None else [url]

    def _pick_url(self, failed: str = "") -> str:
        """The next URL in turn; a retry goes to the one after the URL that failed it (as a
        load balancer tries the next upstream), so that it never lands on the same one."""
        if failed in self.events_urls:
            return self.events_urls[(self.events_urls.index(failed) + 1) % len(self.events_urls)]
        url = self.events_urls[self._next_url % len(self.events_urls)]
        self._next_url += 1
        return url

    async def notify(self) -> None:
        """Re-check pending `wait_for` predicates now (for state that lives outside Slack)."""
        await self._changed()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Return as soon as `predicate()` holds.

        It is re-checked on every recorded API call, delivery, ack, upload and response_url post
        (an asyncio.Condition). A predicate on state outside this emulator (say, the OpenAI
        emulator's turns) is also re-checked after `recheck_interval` seconds without any Slack
        activity, or at once when someone calls `notify()`. On timeout an AssertionError lists
        the API calls and deliveries seen.
        """
        assert self._cond is not None, "start() the emulator first"

        def check() -> bool:
            try:
                return bool(predicate())
            except (IndexError, KeyError, AttributeError):
                return False

        deadline = time.monotonic() + timeout
        async with self._cond:
            while not check():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(self._timeout_report(predicate, timeout))
                if self.recheck_interval is not None:
                    remaining = min(remaining, self.recheck_interval)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), remaining)

    def _timeout_report(self, predicate: Callable[[], bool], timeout: float) -> str:
        try:
            source = inspect.getsource(predicate).strip()
        except (OSError, TypeError):
            source = repr(predicate)
        lines = [f"wait_for timed out after {timeout}s waiting for: {source}", "API calls seen:"]
        for call in self.calls[-40:]:
            args = {
                k: (v if len(repr(v)) < 120 else repr(v)[:117] + "...")
                for k, v in call.args.items()
            }
            outcome = "ok" if call.ok else f"error={call.error}"
            lines.append(f"  {call.method} {outcome} {args}")
        if not self.calls:
            lines.append("  (none)")
        lines.append("Deliveries:")
        for d in self.deliveries[-20:]:
            inner = (
                d.payload.get("event", {}).get("type")
                if d.kind == "events_api"
                else d.payload.get("command") or d.payload.get("type")
            )
            lines.append(f"  {d.kind} {inner} status={d.status} body={d.body!r:.120}")
        if not self.deliveries:
            lines.append("  (none)")
        return "\n".join(lines)

    async def wait_socket_connected(self, timeout: float = 10) -> None:
        await self.wait_for(lambda: any(not ws.closed for ws in self._sockets), timeout)

    async def drop_socket_connections(self) -> None:
        """Close every Socket Mode connection, as Slack does when it drops one."""
        for ws in list(self._sockets):
            await ws.close()

    # --- failure injection ---------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        error: str = "ratelimited",
        times: int = 1,
        status: int | None = None,
        retry_after: float = 1,
    ) -> None:
        """The next `times` calls of `method` fail with `error`.

        `status` defaults to 429 (with a Retry-After header) for "ratelimited", else 200, as Slack
        answers most errors with HTTP 200 and `ok: false`.
        """
        code = status if status is not None else (429 if error == "ratelimited" else 200)
        self._failures[method].extend([(error, code, retry_after)] * times)

    def hold(self, method: str) -> None:
        """Calls of `method` wait (Slack slow to answer) until `release(method)`."""
        self._holds.setdefault(method, asyncio.Event())

    def release(self, method: str) -> None:
        held = self._holds.pop(method, None)
        if held is not None:
            held.set()

    def withheld(self, method: str) -> list[dict[str, Any]]:
        """The arguments of the calls of `method` waiting on `hold(method)` now."""
        return [args for name, args in self._withheld if name == method]

    def expire_streams(self) -> None:
        """End the streaming state of every streamed message, as Slack does after ~5 minutes."""
        for msgs in self._messages.values():
            for msg in msgs.values():
                msg.streaming = False

    # --- what a person sees --------------------------------------------------------------------

    def _view(self, msg: _Msg) -> Message:
        return Message(
            ts=msg.ts,
            user=msg.user,
            text=_displayed(msg),
            bot=msg.bot_id is not None,
            blocks=list(msg.blocks or []) + list(msg.final_blocks or []),
            files=list(msg.files),
            streaming=msg.streaming,
            edited=msg.edited is not None,
            thread_ts=msg.thread_ts,
            metadata=msg.metadata,
        )

    def _sorted(self, channel: str) -> list[_Msg]:
        return sorted(self._messages[channel].values(), key=lambda m: float(m.ts))

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The parent and the replies, oldest first."""
        return [
            self._view(m)
            for m in self._sorted(channel)
            if m.ts == thread_ts or m.thread_ts == thread_ts
        ]

    def bot_replies(self, channel: str, thread_ts: str) -> list[Message]:
        return [m for m in self.thread(channel, thread_ts) if m.bot and m.ts != thread_ts]

    def channel_messages(self, channel: str) -> list[Message]:
        return [self._view(m) for m in self._sorted(channel) if not m.is_reply or m.broadcast]

    def message(self, channel: str, ts: str) -> Message | None:
        msg = self._messages[channel].get(ts)
        return None if msg is None else self._view(msg)

    def ephemerals(self, channel: str, user: str) -> list[str]:
        return list(self._ephemerals[(channel, user)])

    def statuses(self, channel: str, thread_ts: str) -> list[str]:
        """Every assistant.threads.setStatus status for the thread, in order ("" clears)."""
        return list(self._statuses[(channel, thread_ts)])

    def current_status(self, channel: str, thread_ts: str) -> str:
        """The status shown now: Slack clears it when the bot replies in the thread."""
        return self._current_status.get((channel, thread_ts), "")

    def titles(self, channel: str, thread_ts: str) -> list[str]:
        return list(self._titles[(channel, thread_ts)])

    def suggested_prompts(self, channel: str, thread_ts: str | None = None) -> list[dict[str, Any]]:
        """The prompts set on an assistant thread, or (no `thread_ts`) those an agent-view app
        set on its DM, shown at the top of its Messages tab."""
        return list(self._prompts[(channel, thread_ts or "")])

    def home_view(self, user: str) -> dict[str, Any] | None:
        return self._home_views.get(user)

    def uploads(self, channel: str, thread_ts: str | None = None) -> list[Upload]:
        """Files the bot uploaded to `channel` (to the thread `thread_ts` when given)."""
        return [
            u
            for u in self._uploads
            if u.channel == channel and (thread_ts is None or u.thread_ts == thread_ts)
        ]

    def task_updates(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The task_update chunks streamed into the thread's messages, in the order sent."""
        return [
            chunk
            for msg in self._sorted(channel)
            if msg.thread_ts == thread_ts
            for chunk in msg.chunks
            if chunk.get("type") == "task_update"
        ]

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    # --- messages in history -------------------------------------------------------------------

    def _store(self, msg: _Msg) -> _Msg:
        self._messages[msg.channel][msg.ts] = msg
        if msg.is_reply:
            parent = self._messages[msg.channel].get(msg.thread_ts or "")
            if parent is not None and parent.thread_ts is None:
                parent.thread_ts = parent.ts
        return msg

    def _thread_info(self, parent: _Msg) -> dict[str, Any]:
        replies = [
            m
            for m in self._sorted(parent.channel)
            if m.thread_ts == parent.ts and m.ts != parent.ts
        ]
        if not replies:
            return {}
        users = list(dict.fromkeys(m.user for m in replies if m.user))
        return {
            "thread_ts": parent.ts,
            "reply_count": len(replies),
            "reply_users_count": len(users),
            "latest_reply": replies[-1].ts,
            "reply_users": users,
            "is_locked": False,
            "subscribed": False,
        }

    def _message_json(self, msg: _Msg, *, metadata: bool = True) -> dict[str, Any]:
        """A message as the Web API shows it; history and replies show its metadata only when
        asked (`include_all_metadata`)."""
        out: dict[str, Any] = {"type": "message", "ts": msg.ts}
        if msg.subtype:
            out["subtype"] = msg.subtype
        if msg.user:
            out["user"] = msg.user
        if msg.bot_id:
            out["bot_id"] = msg.bot_id
            out["app_id"] = self.app_id if msg.bot_id == self.bot_id else "A0OTHER"
            out["bot_profile"] = {
                "id": msg.bot_id,
                "app_id": out["app_id"],
                "name": self.bot_name if msg.bot_id == self.bot_id else "otherbot",
                "deleted": False,
                "team_id": self.team_id,
            }
        out["text"] = (
            _displayed(msg) if (msg.streamed or msg.markdown_text is not None) else msg.text
        )
        out["team"] = self.team_id
        if msg.blocks is not None:
            out["blocks"] = list(msg.blocks) + list(msg.final_blocks or [])
        elif msg.markdown_text is not None or msg.streamed or msg.final_blocks:
            out["blocks"] = [{"type": "markdown", "block_id": "md", "text": _displayed(msg)}]
        elif msg.text:
            out["blocks"] = _rich_text_from_plain(msg.text)
        else:
            out["blocks"] = []
        if msg.files:
            out["files"] = self._files_as_seen(msg.channel, msg.files)
            out["upload"] = False
            out["display_as_bot"] = False
        if msg.thread_ts:
            out["thread_ts"] = msg.thread_ts
        if msg.is_reply:
            parent = self._messages[msg.channel].get(msg.thread_ts or "")
            if parent is not None and parent.user:
                out["parent_user_id"] = parent.user
        else:
            out.update(self._thread_info(msg))
        if msg.metadata and metadata:
            out["metadata"] = msg.metadata
        if msg.edited:
            out["edited"] = dict(msg.edited)
        out.update(msg.extra)
        return out

    # --- delivering to the bot -----------------------------------------------------------------

    def _event_context(self, event: dict[str, Any]) -> str:
        raw = json.dumps(
            {
                "et": event.get("type"),
                "tid": self.team_id,
                "aid": self.app_id,
                "cid": event.get("channel"),
            }
        )
        return "4-" + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def event_callback(self, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """Wrap an inner event in the `event_callback` envelope Slack sends."""
        if event_id is None:
            self._event_counter += 1
            event_id = f"Ev{self._event_counter:04d}"
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": self._is_slack_connect(event.get("channel")),
            "event_context": self._event_context(event),
        }

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Slack's v0 signature headers for `body`."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        base = b"v0:" + ts.encode() + b":" + body
        digest = hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}

    async def deliver(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
    ) -> Delivery:
        """Deliver an inner event (wrapped in `event_callback`) to the bot."""
        subscription = self._subscription(event)
        if subscription is not None and subscription not in self.bot_events:
            raise NotSentBySlack(
                f"Slack sends no {subscription} event: the app's manifest does not subscribe to it"
            )
        if subscription in EVENT_SCOPES and EVENT_SCOPES[subscription] not in self.scopes:
            raise NotSentBySlack(f"Slack sends no {subscription} event without its scope")
        body = self.event_callback(event, event_id)
        return await self.deliver_callback(body, retry_num=retry_num, retry_reason=retry_reason)

    def _subscription(self, event: dict[str, Any]) -> str | None:
        """The event subscription that makes Slack send `event` (None: unknown to us)."""
        if event.get("type") != "message":
            return str(event.get("type"))
        channel = self.channels.get(str(event.get("channel")))
        if channel is None:
            return None
        return "message." + KIND_SCOPE_PREFIX[channel.kind]

    async def deliver_callback(
        self, body: dict[str, Any], *, retry_num: int | None = None, retry_reason: str | None = None
    ) -> Delivery:
        """Deliver an already-wrapped `event_callback` body (e.g. to redeliver one as a retry).

        In HTTP mode with `redeliveries`, a delivery that was not acked is tried again, up to
        that many times; the last try is returned (every try is in `deliveries`)."""
        if self.events_url is None:
            envelope = {
                "envelope_id": str(uuid.uuid4()),
                "payload": body,
                "type": "events_api",
                "accepts_response_payload": False,
                "retry_attempt": retry_num or 0,
                "retry_reason": retry_reason or "",
            }
            delivery = Delivery("events_api", body, event_id=body.get("event_id"))
            delivery.retry_num = retry_num
            await self._send_socket(delivery, envelope)
            return delivery
        raw = json.dumps(body).encode()
        retries_left = self.redeliveries
        failed_url = ""
        while True:
            delivery = Delivery(
                "events_api", body, event_id=body.get("event_id"), retry_num=retry_num
            )
            headers = {"Content-Type": "application/json", **self.sign(raw)}
            if retry_num is not None:
                headers["X-Slack-Retry-Num"] = str(retry_num)
                headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
            failure = await self._post_http(
                delivery, raw, headers, tolerate=self.redeliveries > 0, failed_url=failed_url
            )
            if delivery.status == 200 or retries_left <= 0:
                return delivery
            failed_url = delivery.url
            retries_left -= 1
            retry_num = (retry_num or 0) + 1
            retry_reason = failure

    async def _post_http(
        self,
        delivery: Delivery,
        raw: bytes,
        headers: dict[str, str],
        tolerate: bool = False,
        failed_url: str = "",
    ) -> str:
        """POST to the next URL; Slack's reason to retry, should it not be acked. With
        `tolerate`, a connection that fails is recorded as not acked instead of raised."""
        assert self._session is not None and self.events_urls
        url = delivery.url = self._pick_url(failed_url)
        self.deliveries.append(delivery)
        started = time.monotonic()
        reason = "http_error"
        try:
            timeout = aiohttp.ClientTimeout(total=self.ack_timeout)
            async with self._session.post(url, data=raw, headers=headers, timeout=timeout) as resp:
                text = await resp.text()
                delivery.status = resp.status
                delivery.body = _decode_body(text)
        except TimeoutError:
            delivery.timed_out = True
            reason = "http_timeout"
        except (aiohttp.ClientError, OSError):
            if not tolerate:
                raise
            reason = "connection_failed"
        finally:
            delivery.ack_seconds = time.monotonic() - started
            await self._changed()
        return reason

    async def _send_socket(self, delivery: Delivery, envelope: dict[str, Any]) -> None:
        if not any(not ws.closed for ws in self._sockets):
            await self.wait_socket_connected(timeout=self.ack_timeout)
        ws = [w for w in self._sockets if not w.closed][-1]
        envelope_id = str(envelope["envelope_id"])
        delivery.envelope_id = envelope_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending_acks[envelope_id] = future
        self.deliveries.append(delivery)
        started = time.monotonic()
        await ws.send_str(json.dumps(envelope))
        try:
            ack = await asyncio.wait_for(future, self.ack_timeout)
            delivery.status = 200
            delivery.body = ack.get("payload") or ""
        except TimeoutError:
            delivery.timed_out = True
        finally:
            self._pending_acks.pop(envelope_id, None)
        delivery.ack_seconds = time.monotonic() - started
        await self._changed()

    async def send_raw(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """POST arbitrary bytes to `events_url` (e.g. with a forged signature)."""
        assert self._session is not None and self.events_url is not None, (
            "send_raw needs events_url"
        )
        async with self._session.post(self.events_url, data=body, headers=headers) as resp:
            return resp.status, await resp.text()

    async def _deliver_form(
        self, kind: str, payload: dict[str, Any], form: dict[str, str], accepts: bool
    ) -> Delivery:
        delivery = Delivery(kind, payload)
        if self.events_url is not None:
            raw = urllib.parse.urlencode(form).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded", **self.sign(raw)}
            await self._post_http(delivery, raw, headers)
            if isinstance(delivery.body, str) and delivery.body:
                # A plain-text response to a command or interaction is a message's text.
                delivery.body = {"text": delivery.body}
        else:
            envelope = {
                "envelope_id": str(uuid.uuid4()),
                "payload": payload,
                "type": kind,
                "accepts_response_payload": accepts,
            }
            await self._send_socket(delivery, envelope)
        return delivery

    # --- people acting -------------------------------------------------------------------------

    def _user_message(
        self,
        user: str,
        channel: str,
        text: str,
        thread_ts: str | None,
        files: list[dict[str, Any]] | None,
        *,
        ts: str | None = None,
        strict: bool = True,
    ) -> _Msg:
        if channel not in self.channels:
            raise ValueError(f"unknown channel {channel!r}; use add_channel() or dm_channel()")
        if strict and thread_ts is not None and thread_ts not in self._messages[channel]:
            raise ValueError(f"no message {thread_ts} in {channel} to reply to")
        msg = _Msg(
            channel=channel, ts=ts or self._next_ts(), user=user, text=text, thread_ts=thread_ts
        )
        msg.extra["client_msg_id"] = str(uuid.uuid4())
        if files:
            msg.files = list(files)
            msg.subtype = "file_share"
        return self._store(msg)

    def next_ts(self) -> str:
        """A fresh message ts, later than every ts handed out so far."""
        return self._next_ts()

    def message_event(
        self,
        user: str,
        channel: str,
        text: str,
        *,
        ts: str | None = None,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        bot_id: str | None = None,
    ) -> dict[str, Any]:
        """The `message` event of a message by `user`, which is put in history under `ts`.

        Nothing is delivered: pass the event to `deliver` (change it first for other shapes,
        e.g. `| {"type": "app_mention"}` or `| {"bot_id": "B0OTHER"}`).
        """
        msg = self._user_message(user, channel, text, thread_ts, files, ts=ts, strict=False)
        msg.bot_id = bot_id or (self.bot_id if user == self.bot_user_id else None)
        if msg.bot_id:
            msg.extra.pop("client_msg_id", None)
        return self._message_event(msg)

    def envelope(self, event: dict[str, Any], event_id: str | None = None) -> bytes:
        """The JSON body Slack POSTs for `event` (an `event_callback`), e.g. for `send_raw`."""
        return json.dumps(self.event_callback(event, event_id)).encode()

    def edit_event(self, user: str, channel: str, ts: str, text: str) -> dict[str, Any]:
        """`user` edits message `ts` to `text`: the message_changed event (history updated)."""
        return self.message_changed_event(channel, ts, text, user=user)

    def delete_event(self, channel: str, ts: str) -> dict[str, Any]:
        """Message `ts` is deleted: the message_deleted event (history updated)."""
        return self.message_deleted_event(channel, ts)

    def add_message(
        self,
        user: str,
        channel: str,
        text: str,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> str:
        """Put a message from `user` in history without delivering any event (earlier history)."""
        return self._user_message(user, channel, text, thread_ts, files).ts

    def _message_event(self, msg: _Msg) -> dict[str, Any]:
        event = self._message_json(msg)
        for key in (
            "reply_count",
            "reply_users_count",
            "latest_reply",
            "reply_users",
            "is_locked",
            "subscribed",
        ):
            event.pop(key, None)
        event["channel"] = msg.channel
        event["event_ts"] = msg.ts
        event["channel_type"] = self.channel_type(msg.channel)
        return event

    async def post(
        self,
        user: str,
        channel: str,
        text: str,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> str:
        """`user` posts a message; the bot gets a `message` event. Returns its ts."""
        msg = self._user_message(user, channel, text, thread_ts, files)
        await self._changed()
        await self.deliver(self._message_event(msg))
        return msg.ts

    async def dm(
        self,
        user: str,
        text: str,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> str:
        """`user` writes to the bot in their DM (channel_type "im")."""
        return await self.post(user, self.dm_channel(user), text, thread_ts=thread_ts, files=files)

    async def mention(
        self,
        user: str,
        channel: str,
        text: str,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> str:
        """`user` posts "<@U0BOT> text". In a channel Slack delivers app_mention AND message."""
        msg = self._user_message(user, channel, f"<@{self.bot_user_id}> {text}", thread_ts, files)
        await self._changed()
        message_event = self._message_event(msg)
        if self.channel_type(channel) == "im":
            await self.deliver(message_event)  # no app_mention in a DM
            return msg.ts
        mention_event: dict[str, Any] = {
            "type": "app_mention",
            "user": user,
            "text": msg.text,
            "ts": msg.ts,
            "client_msg_id": msg.extra["client_msg_id"],
            "team": self.team_id,
            "blocks": message_event["blocks"],
            "channel": channel,
            "event_ts": msg.ts,
        }
        if thread_ts is not None:
            mention_event["thread_ts"] = thread_ts
        if files:
            mention_event["files"] = self._files_as_seen(channel, files)
        first = asyncio.ensure_future(self.deliver(mention_event))
        await asyncio.sleep(0)  # let the app_mention request start first, as Slack sends it first
        second = asyncio.ensure_future(self.deliver(message_event))
        await asyncio.gather(first, second)
        return msg.ts

    async def edit(self, user: str, channel: str, ts: str, text: str) -> Delivery:
        """`user` edits their message; the bot gets a message_changed event."""
        event = self.message_changed_event(channel, ts, text, user=user)
        await self._changed()
        return await self.deliver(event)

    async def delete(self, user: str, channel: str, ts: str) -> Delivery:
        """`user` deletes their message; the bot gets a message_deleted event."""
        event = self.message_deleted_event(channel, ts)
        await self._changed()
        return await self.deliver(event)

    async def post_as_other_bot(self, channel: str, text: str, thread_ts: str | None = None) -> str:
        """Another app posts (the event has a bot_id); returns the ts."""
        msg = _Msg(
            channel=channel,
            ts=self._next_ts(),
            user="U0OTHERBOT",
            text=text,
            thread_ts=thread_ts,
            bot_id="B0OTHER",
        )
        self._store(msg)
        await self._changed()
        await self.deliver(self._message_event(msg))
        return msg.ts

    # Builders for other events (they apply the change to history, the caller delivers them).

    def message_changed_event(
        self, channel: str, ts: str, new_text: str, user: str | None = None
    ) -> dict[str, Any]:
        msg = self._messages[channel].get(ts)
        if msg is None:
            msg = self._user_message(
                user or "U0ALICE", channel, "", None, None, ts=ts, strict=False
            )
        previous = self._message_json(msg)
        msg.text, msg.markdown_text, msg.blocks = new_text, None, None
        event_ts = self._next_ts()
        msg.edited = {"user": user or msg.user or "", "ts": event_ts}
        event: dict[str, Any] = {
            "type": "message",
            "subtype": "message_changed",
            "message": self._message_json(msg),
            "previous_message": previous,
            "channel": channel,
            "hidden": True,
            "ts": event_ts,
            "event_ts": event_ts,
            "channel_type": self.channel_type(channel),
        }
        return event

    def message_deleted_event(self, channel: str, ts: str) -> dict[str, Any]:
        """Deletes `ts` from history (a parent with replies becomes a tombstone, as in Slack)."""
        msg = self._messages[channel].get(ts)
        previous = self._message_json(msg) if msg else {"type": "message", "ts": ts, "text": ""}
        if msg is not None:
            has_replies = any(
                m.thread_ts == ts and m.ts != ts for m in self._messages[channel].values()
            )
            if has_replies:
                msg.user, msg.bot_id, msg.subtype = "USLACKBOT", None, "tombstone"
                msg.text, msg.markdown_text, msg.blocks, msg.files = (
                    "This message was deleted.",
                    None,
                    None,
                    [],
                )
                msg.extra = {"hidden": True}
            else:
                del self._messages[channel][ts]
        event_ts = self._next_ts()
        event: dict[str, Any] = {
            "type": "message",
            "subtype": "message_deleted",
            "previous_message": previous,
            "channel": channel,
            "hidden": True,
            "deleted_ts": ts,
            "ts": event_ts,
            "event_ts": event_ts,
            "channel_type": self.channel_type(channel),
        }
        if msg is not None and msg.is_reply:
            event["thread_ts"] = msg.thread_ts
        return event

    def bot_message_event(
        self, channel: str, text: str, thread_ts: str | None = None
    ) -> dict[str, Any]:
        """A legacy `bot_message` subtype event (e.g. an incoming webhook)."""
        ts = self._next_ts()
        event: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "text": text,
            "ts": ts,
            "username": "webhook-bot",
            "bot_id": "B0WEBHOOK",
            "channel": channel,
            "event_ts": ts,
            "channel_type": self.channel_type(channel),
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        return event

    def own_message_event(self, channel: str, ts: str) -> dict[str, Any]:
        """The `message` event Slack sends for one of the bot's own messages (has bot_id)."""
        return self._message_event(self._messages[channel][ts])

    def channel_join_event(self, user: str, channel: str) -> dict[str, Any]:
        msg = _Msg(
            channel=channel,
            ts=self._next_ts(),
            user=user,
            text=f"<@{user}> has joined the channel",
            subtype="channel_join",
        )
        self._store(msg)
        return self._message_event(msg)

    async def open_app_home(self, user: str) -> Delivery:
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user,
            "channel": self.dm_channel(user),
            "tab": "home",
            "event_ts": self._next_ts(),
        }
        if user in self._home_views:
            event["view"] = self._home_views[user]
        return await self.deliver(event)

    async def open_messages_tab(self, user: str) -> Delivery:
        """`user` opens the app's Messages tab (their DM with it). Under agent view this is how
        a person opens the app; Slack sends `app_home_opened` with `tab: "messages"`."""
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user,
            "channel": self.dm_channel(user),
            "tab": "messages",
            "event_ts": self._next_ts(),
        }
        return await self.deliver(event)

    async def view_channel(self, user: str, channel: str | None) -> Delivery | None:
        """`user`, with the app open beside Slack, moves to `channel` (None: to a view without
        one). Agent view: `app_context_changed`. Assistant view: `assistant_thread_context_changed`
        for their open assistant thread (nothing when none is open)."""
        if self.view == "agent_view":
            entities = [{"type": CHANNEL_ENTITY, "value": channel, "team_id": self.team_id}]
            event: dict[str, Any] = {
                "type": "app_context_changed",
                "user": user,
                "channel": self.dm_channel(user),
                "context": {"entities": entities} if channel else {},
                "event_ts": self._next_ts(),
            }
            return await self.deliver(event)
        thread_ts = self._assistant_threads.get(user)
        if self.view != "assistant_view" or thread_ts is None:
            return None
        event = {
            "type": "assistant_thread_context_changed",
            "assistant_thread": {
                "user_id": user,
                "context": self._thread_context(channel),
                "channel_id": self.dm_channel(user),
                "thread_ts": thread_ts,
            },
            "event_ts": self._next_ts(),
        }
        return await self.deliver(event)

    def _thread_context(self, channel: str | None) -> dict[str, Any]:
        context: dict[str, Any] = {"team_id": self.team_id, "enterprise_id": None}
        if channel:
            context["channel_id"] = channel
        return context

    async def open_assistant_thread(self, user: str, context_channel: str | None = None) -> str:
        """`user` opens the assistant container: Slack starts a thread in their DM. Returns its ts.

        Only apps with the legacy `assistant_view` have one: under agent view Slack starts no
        assistant thread (a person opens the Messages tab instead: `open_messages_tab`).
        """
        if self.view != "assistant_view":
            raise NotSentBySlack(
                f"Slack starts no assistant thread for an app with {self.view}: "
                "use open_messages_tab"
            )
        channel = self.dm_channel(user)
        parent = _Msg(
            channel=channel,
            ts=self._next_ts(),
            user=self.bot_user_id,
            bot_id=self.bot_id,
            subtype="assistant_app_thread",
        )
        parent.extra["assistant_app_thread"] = {
            "title": "",
            "title_blocks": [],
            "artifacts": [],
            "context": {},
        }
        self._store(parent)
        self._assistant_threads[user] = parent.ts
        event = {
            "type": "assistant_thread_started",
            "assistant_thread": {
                "user_id": user,
                "context": self._thread_context(context_channel),
                "channel_id": channel,
                "thread_ts": parent.ts,
            },
            "event_ts": self._next_ts(),
        }
        await self._changed()
        await self.deliver(event)
        return parent.ts

    async def slash_command(
        self, user: str, channel: str, command: str, text: str = ""
    ) -> Delivery:
        if not command.startswith("/"):
            command = "/" + command
        ch = self.channels.get(channel)
        form = {
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel,
            "channel_name": (
                "directmessage" if ch and ch.kind == "im" else ch.name if ch else channel
            ),
            "user_id": user,
            "user_name": self.users.get(user, {}).get("name", user),
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "is_enterprise_install": "false",
            "response_url": self._new_response_url(_ResponseTarget(channel, user)),
            "trigger_id": self._new_trigger(),
        }
        delivery = await self._deliver_form("slash_commands", dict(form), form, accepts=True)
        body = delivery.body
        if (
            delivery.status == 200
            and isinstance(body, dict)
            and (body.get("text") or body.get("blocks"))
        ):
            # Slack shows the immediate response: to the user only unless response_type says so.
            shown = _Msg(
                channel=channel,
                ts="",
                user=self.bot_user_id,
                text=str(body.get("text") or ""),
                blocks=body.get("blocks"),
            )
            if body.get("response_type") == "in_channel":
                shown.ts, shown.bot_id = self._next_ts(), self.bot_id
                self._store(shown)
            else:
                self._ephemerals[(channel, user)].append(_displayed(shown))
            await self._changed()
        return delivery

    async def interaction(self, payload: dict[str, Any]) -> Delivery:
        """Deliver a block_actions / message_action / view_submission / shortcut payload."""
        accepts = payload.get("type") in ("view_submission", "block_suggestion")
        return await self._deliver_form(
            "interactive", payload, {"payload": json.dumps(payload)}, accepts
        )

    def message_shortcut_payload(
        self, user: str, channel: str, message_ts: str, callback_id: str
    ) -> dict[str, Any]:
        msg = self._messages[channel][message_ts]
        return {
            "type": "message_action",
            "token": self.verification_token,
            "action_ts": self._next_ts(),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": self._user_obj(user),
            "channel": {"id": channel, "name": self.channels[channel].name},
            "is_enterprise_install": False,
            "enterprise": None,
            "callback_id": callback_id,
            "trigger_id": self._new_trigger(),
            "response_url": self._new_response_url(
                _ResponseTarget(channel, user, message_ts, msg.thread_ts)
            ),
            "message_ts": message_ts,
            "message": self._message_json(msg),
        }

    def block_action_payload(
        self,
        user: str,
        channel: str,
        message_ts: str,
        action_id: str,
        value: str | None = None,
        thread_ts: str | None = None,
    ) -> dict[str, Any]:
        msg = self._messages[channel].get(message_ts)
        thread_ts = thread_ts or (msg.thread_ts if msg else None)
        block_id = "actions"
        for block in (msg.blocks or []) + (msg.final_blocks or []) if msg else []:
            for el in block.get("elements", []) or []:
                if isinstance(el, dict) and el.get("action_id") == action_id:
                    block_id = str(block.get("block_id", block_id))
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        }
        if thread_ts:
            container["thread_ts"] = thread_ts
        action: dict[str, Any] = {
            "action_id": action_id,
            "block_id": block_id,
            "type": "button",
            "action_ts": self._next_ts(),
            "text": {"type": "plain_text", "text": action_id, "emoji": True},
        }
        if value is not None:
            action["value"] = value
        return {
            "type": "block_actions",
            "user": self._user_obj(user),
            "api_app_id": self.app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": self._new_trigger(),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {
                "id": channel,
                "name": self.channels[channel].name if channel in self.channels else channel,
            },
            "message": self._message_json(msg) if msg else {},
            "state": {"values": {}},
            "response_url": self._new_response_url(
                _ResponseTarget(channel, user, message_ts, thread_ts)
            ),
            "actions": [action],
        }

    def view_submission_payload(
        self,
        user: str,
        view_id: str,
        callback_id: str,
        state_values: dict[str, Any],
        private_metadata: str = "",
    ) -> dict[str, Any]:
        view = dict(
            self.views.get(view_id) or self._new_view({"type": "modal", "blocks": []}, view_id)
        )
        view.update(
            {
                "callback_id": callback_id,
                "private_metadata": private_metadata,
                "state": {"values": state_values},
            }
        )
        return {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": self._user_obj(user),
            "api_app_id": self.app_id,
            "token": self.verification_token,
            "trigger_id": self._new_trigger(),
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    # --- files ---------------------------------------------------------------------------------

    def _file_obj(
        self,
        file_id: str,
        user: str,
        name: str,
        title: str,
        filetype: str,
        mimetype: str,
        size: int,
        hosted_at: str | None = None,
    ) -> dict[str, Any]:
        quoted = urllib.parse.quote(name)
        now = int(time.time())
        host = hosted_at or self.base_url
        return {
            "id": file_id,
            "created": now,
            "timestamp": now,
            "name": name,
            "title": title,
            "mimetype": mimetype,
            "filetype": filetype,
            "pretty_type": filetype.upper(),
            "user": user,
            "user_team": self.team_id,
            "editable": False,
            "size": size,
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": False,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{host}/files-pri/{self.team_id}-{file_id}/{quoted}",
            "url_private_download": f"{host}/files-pri/{self.team_id}-{file_id}/download/{quoted}",
            "permalink": f"{self.base_url}/files/{user}/{file_id}/{quoted}",
            "permalink_public": f"{self.base_url}/{self.team_id}-{file_id}-{secrets.token_hex(5)}",
            "has_rich_preview": False,
            "file_access": "visible",
            "shares": {},
            "channels": [],
            "groups": [],
            "ims": [],
        }

    def add_file(
        self,
        user: str,
        name: str,
        content: bytes,
        filetype: str = "text",
        mimetype: str = "text/plain",
        title: str | None = None,
        hosted_at: str | None = None,
    ) -> dict[str, Any]:
        """A file `user` uploaded; pass the returned Slack file object in `post(..., files=[f])`.

        `hosted_at` (a base URL) makes its links point at another server than the emulator."""
        file_id = self._next_id("F")
        obj = self._file_obj(
            file_id, user, name, title or name, filetype, mimetype, len(content), hosted_at
        )
        self.files[file_id] = obj
        self.file_contents[file_id] = content
        return obj

    def delete_file(self, file_id: str) -> None:
        """The file is deleted: files.info answers file_not_found, downloads 404."""
        self.files.pop(file_id, None)
        self.file_contents.pop(file_id, None)

    def _is_slack_connect(self, channel: Any) -> bool:
        ch = self.channels.get(str(channel or ""))
        return ch is not None and ch.slack_connect

    def _files_as_seen(self, channel: str, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Files of a message as apps get them: in a Slack Connect channel, stubs without name,
        type or link, which `files.info` fills in."""
        if not self._is_slack_connect(channel):
            return list(files)
        return [
            {
                "id": f["id"],
                "mode": "file_access",
                "file_access": "check_file_info",
                "created": 0,
                "timestamp": 0,
                "user": "",
            }
            for f in files
        ]

    def _share(self, file_id: str, channel: str, ts: str, thread_ts: str | None) -> None:
        obj = self.files[file_id]
        kind = self.channels[channel].kind
        key = "ims" if kind == "im" else "groups" if kind in ("group", "mpim") else "channels"
        if channel not in obj[key]:
            obj[key].append(channel)
        share: dict[str, Any] = {
            "ts": ts,
            "channel_name": self.channels[channel].name,
            "team_id": self.team_id,
        }
        if thread_ts:
            share["thread_ts"] = thread_ts
        scope = "public" if kind == "channel" else "private"
        obj["shares"].setdefault(scope, {}).setdefault(channel, []).append(share)

    # --- HTTP handlers -------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        try:
            response = await self._dispatch_api(request)
        except _Dropped:
            await self._changed()
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError from None
        await self._changed()
        return response

    async def _dispatch_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        try:
            if request.body_exists:
                if request.content_type == "application/json":
                    text = await request.text()
                    if text:
                        data = json.loads(text)
                        if not isinstance(data, dict):
                            raise _ApiError("invalid_json")
                        args.update(data)
                elif request.content_type in (
                    "application/x-www-form-urlencoded",
                    "multipart/form-data",
                ):
                    form = await request.post()
                    for key, value in form.items():
                        args[key] = value if isinstance(value, str) else value.file.read()  # type: ignore[union-attr]
        except (json.JSONDecodeError, ValueError):
            return self._api_response(method, args, {"ok": False, "error": "invalid_json"})
        for key in _JSON_ARGS:
            if isinstance(args.get(key), str) and args[key][:1] in ("[", "{"):
                try:
                    args[key] = json.loads(args[key])
                except json.JSONDecodeError:
                    return self._api_response(
                        method, args, {"ok": False, "error": f"invalid_{key}_format"}
                    )
        auth = request.headers.get("Authorization", "")
        token = (
            auth[7:].strip()
            if auth.lower().startswith("bearer ")
            else str(args.pop("token", "") or "")
        )
        args.pop("token", None)
        try:
            handler = getattr(self, "_api_" + method.replace(".", "_"), None)
            if handler is None:
                raise _ApiError("unknown_method")
            self._check_token(method, token)
            self._check_scopes(method, args)
            held = self._holds.get(method)
            if held is not None:
                waiting = (method, args)
                self._withheld.append(waiting)
                try:
                    await held.wait()
                finally:
                    self._withheld.remove(waiting)
            failures = self._failures.get(method)
            if failures:
                error, status, retry_after = failures.pop(0)
                headers = {"Retry-After": str(int(retry_after))} if error == "ratelimited" else {}
                raise _ApiError(error, status=status, headers=headers)
            fault = None if Faults.exempt(request) else self.faults.pick(method, _subject(args))
            if fault == RESET_BEFORE:
                raise _Dropped
            if fault in FAULT_ERRORS:
                status, error = FAULT_ERRORS[fault]
                headers = {"Retry-After": f"{self.faults.retry_after:.0f}"} if status == 429 else {}
                raise _ApiError(error, status=status, headers=headers)
            result: dict[str, Any] = await handler(args)
            payload = {"ok": True, **result}
            response = self._api_response(method, args, payload)
            if fault == RESET_AFTER:
                raise _Dropped  # done, and recorded; the answer never arrives
            return response
        except _ApiError as e:
            payload = {
                "ok": False,
                "error": e.error,
                **{k: v for k, v in e.extra.items() if k != "headers"},
            }
            return self._api_response(
                method, args, payload, status=e.status, headers=e.extra.get("headers")
            )

    def _api_response(
        self,
        method: str,
        args: dict[str, Any],
        payload: dict[str, Any],
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        self.calls.append(
            ApiCall(
                method,
                args,
                time.monotonic(),
                ok=bool(payload.get("ok")),
                error=payload.get("error"),
            )
        )
        return web.json_response(
            payload,
            status=status,
            headers={"X-Slack-Req-Id": secrets.token_hex(8), **(headers or {})},
        )

    def _check_token(self, method: str, token: str) -> None:
        if not token:
            raise _ApiError("not_authed")
        if method == "apps.connections.open":
            if token == self.app_token:
                return
            raise _ApiError("not_allowed_token_type" if token.startswith("xox") else "invalid_auth")
        if token == self.bot_token:
            return
        raise _ApiError("not_allowed_token_type" if token == self.app_token else "invalid_auth")

    def _check_scopes(self, method: str, args: dict[str, Any]) -> None:
        accepted = METHOD_SCOPES.get(method, ())
        if method in CONVERSATION_METHOD_SCOPES:
            channel = self.channels.get(str(args.get("channel")))
            if channel is None:
                return  # the method itself answers channel_not_found
            accepted = (f"{KIND_SCOPE_PREFIX[channel.kind]}:{CONVERSATION_METHOD_SCOPES[method]}",)
        if accepted and not self.scopes.intersection(accepted):
            raise _ApiError(
                "missing_scope", needed=",".join(accepted), provided=",".join(sorted(self.scopes))
            )

    # auth / apps

    async def _api_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    async def _api_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.socket_mode_url is not None:
            return {"url": self.socket_mode_url}
        ticket = str(uuid.uuid4())
        self._tickets.add(ticket)
        return {
            "url": f"ws://{self.host}:{self.port}/socket-mode?ticket={ticket}&app_id={self.app_id}"
        }

    # chat

    def _require(self, args: dict[str, Any], *names: str) -> None:
        for name in names:
            if args.get(name) in (None, ""):
                raise _ApiError(
                    "invalid_arguments",
                    response_metadata={"messages": [f"[ERROR] missing required field: {name}"]},
                )

    def _check_content(self, args: dict[str, Any], *, require: bool = True) -> None:
        text, blocks, markdown = args.get("text"), args.get("blocks"), args.get("markdown_text")
        if markdown is not None and (text or blocks):
            raise _ApiError("markdown_text_conflict")
        if markdown is not None and len(str(markdown)) > MAX_MARKDOWN_TEXT_CHARS:
            raise _ApiError("msg_too_long")
        if text is not None and len(str(text)) > MAX_TEXT_CHARS:
            raise _ApiError("msg_too_long")
        if blocks is not None:
            if not isinstance(blocks, list) or not all(
                isinstance(b, dict) and b.get("type") for b in blocks
            ):
                raise _ApiError("invalid_blocks_format")
            if len(blocks) > MAX_BLOCKS:
                raise _ApiError(
                    "invalid_blocks",
                    response_metadata={
                        "messages": [
                            f"[ERROR] must provide less than {MAX_BLOCKS + 1} items [json-pointer:/blocks]"
                        ]
                    },
                )
        if require and not (text or blocks or markdown or args.get("attachments")):
            raise _ApiError("no_text")
        metadata = args.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict) or "event_type" not in metadata
        ):
            raise _ApiError("invalid_metadata_format")

    def _bot_reply_posted(self, channel: str, thread_ts: str | None) -> None:
        if thread_ts and self._current_status.get((channel, thread_ts)):
            self._current_status[(channel, thread_ts)] = ""

    async def _api_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel")
        channel = str(args["channel"])
        self._channel(channel)
        self._check_content(args)
        thread_ts = str(args["thread_ts"]) if args.get("thread_ts") else None
        msg = _Msg(
            channel=channel,
            ts=self._next_ts(),
            user=self.bot_user_id,
            text=str(args.get("text") or ""),
            markdown_text=args.get("markdown_text"),
            blocks=args.get("blocks"),
            thread_ts=thread_ts,
            bot_id=self.bot_id,
            metadata=args.get("metadata"),
            broadcast=_truthy(args.get("reply_broadcast")),
        )
        if args.get("attachments"):
            msg.extra["attachments"] = args["attachments"]
        self._store(msg)
        self._bot_reply_posted(channel, thread_ts)
        return {"channel": channel, "ts": msg.ts, "message": self._message_json(msg)}

    def _own_message(self, args: dict[str, Any], cant: str) -> _Msg:
        self._require(args, "channel", "ts")
        channel = str(args["channel"])
        self._channel(channel)
        msg = self._messages[channel].get(str(args["ts"]))
        if msg is None:
            raise _ApiError("message_not_found")
        if msg.bot_id != self.bot_id:
            raise _ApiError(cant)
        return msg

    async def _api_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._own_message(args, "cant_update_message")
        self._check_content(args, require=False)
        if "markdown_text" in args:
            msg.markdown_text, msg.text, msg.blocks = args["markdown_text"], "", None
        else:
            if "text" in args:
                msg.text = str(args["text"] or "")
            if "blocks" in args:
                msg.blocks = args["blocks"] or None
            if "text" in args or "blocks" in args:
                msg.markdown_text = None
        if (
            msg.streamed
            and not msg.streaming
            and ("text" in args or "markdown_text" in args or "blocks" in args)
        ):
            msg.streamed, msg.final_blocks = "", None
        if "metadata" in args:
            msg.metadata = args["metadata"]
        msg.edited = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {
            "channel": msg.channel,
            "ts": msg.ts,
            "text": _displayed(msg),
            "message": self._message_json(msg),
        }

    async def _api_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._own_message(args, "cant_delete_message")
        del self._messages[msg.channel][msg.ts]
        return {"channel": msg.channel, "ts": msg.ts}

    async def _api_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel", "user")
        channel, user = str(args["channel"]), str(args["user"])
        self._channel(channel)
        if user not in self.users:
            raise _ApiError("user_not_in_channel")
        self._check_content(args)
        fake = _Msg(
            channel=channel,
            ts="",
            user=self.bot_user_id,
            text=str(args.get("text") or ""),
            markdown_text=args.get("markdown_text"),
            blocks=args.get("blocks"),
        )
        self._ephemerals[(channel, user)].append(_displayed(fake))
        return {"message_ts": self._next_ts()}

    async def _api_chat_getPermalink(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel", "message_ts")
        channel = str(args["channel"])
        self._channel(channel)
        ts = str(args["message_ts"])
        if ts not in self._messages[channel]:
            raise _ApiError("message_not_found")
        return {
            "channel": channel,
            "permalink": f"https://{self.team_domain}.slack.com/archives/{channel}/p{ts.replace('.', '')}",
        }

    # streaming

    def _stream_markdown(self, args: dict[str, Any]) -> str:
        text = args.get("markdown_text")
        if text is not None and len(str(text)) > MAX_MARKDOWN_TEXT_CHARS:
            raise _ApiError("msg_too_long")
        out = str(text or "")
        chunks = args.get("chunks") or []
        if not isinstance(chunks, list):
            raise _ApiError("invalid_chunks")
        for chunk in chunks:
            if not isinstance(chunk, dict) or "type" not in chunk:
                raise _ApiError("invalid_chunks")
            if chunk["type"] == "markdown_text":
                if len(str(chunk.get("text", ""))) > MAX_MARKDOWN_TEXT_CHARS:
                    raise _ApiError("msg_too_long")
                out += str(chunk.get("text", ""))
            elif chunk["type"] == "task_update":
                _check_task_update(chunk)
            elif chunk["type"] == "plan_update":
                if set(chunk) != {"type", "title"} or not isinstance(chunk["title"], str):
                    raise _ApiError("invalid_chunks")
            elif chunk["type"] != "blocks":
                raise _ApiError("invalid_chunks")
        return out

    def _streaming_message(self, args: dict[str, Any]) -> _Msg:
        msg = self._own_message(args, "cant_update_message")
        if not msg.streaming:
            raise _ApiError("message_not_in_streaming_state")
        return msg

    async def _api_chat_startStream(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel", "thread_ts")
        channel = str(args["channel"])
        ch = self._channel(channel)
        if self.refuse_streaming:
            raise _ApiError(self.refuse_streaming_error)
        if ch.kind != "im":
            if not args.get("recipient_team_id"):
                raise _ApiError("missing_recipient_team_id")
            if not args.get("recipient_user_id"):
                raise _ApiError("missing_recipient_user_id")
        text = self._stream_markdown(args)
        thread_ts = str(args["thread_ts"])
        msg = _Msg(
            channel=channel,
            ts=self._next_ts(),
            user=self.bot_user_id,
            thread_ts=thread_ts,
            bot_id=self.bot_id,
            streaming=True,
            streamed=text,
            chunks=list(args.get("chunks") or []),
        )
        self._store(msg)
        self._bot_reply_posted(channel, thread_ts)
        return {"channel": channel, "ts": msg.ts}

    async def _api_chat_appendStream(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._streaming_message(args)
        if args.get("markdown_text") is None and not args.get("chunks"):
            raise _ApiError(
                "invalid_arguments",
                response_metadata={"messages": ["[ERROR] missing required field: markdown_text"]},
            )
        msg.streamed += self._stream_markdown(args)
        msg.chunks.extend(args.get("chunks") or [])
        return {"channel": msg.channel, "ts": msg.ts}

    async def _api_chat_stopStream(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._streaming_message(args)
        msg.streamed += self._stream_markdown(args)
        msg.chunks.extend(args.get("chunks") or [])
        blocks = args.get("blocks")
        if blocks is not None:
            if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
                raise _ApiError("invalid_blocks")
            msg.final_blocks = blocks
        if args.get("metadata") is not None:
            msg.metadata = args["metadata"]
        msg.streaming = False
        return {"channel": msg.channel, "ts": msg.ts, "message": self._message_json(msg)}

    # assistant

    def _assistant_thread(self, args: dict[str, Any]) -> tuple[str, str]:
        self._require(args, "channel_id", "thread_ts")
        channel = str(args["channel_id"])
        self._channel(channel)
        return channel, str(args["thread_ts"])

    async def _api_assistant_threads_setStatus(self, args: dict[str, Any]) -> dict[str, Any]:
        key = self._assistant_thread(args)
        if "status" not in args:
            raise _ApiError(
                "invalid_arguments",
                response_metadata={"messages": ["[ERROR] missing required field: status"]},
            )
        status = str(args.get("status") or "")
        self._statuses[key].append(status)
        self._current_status[key] = status
        return {}

    async def _api_assistant_threads_setTitle(self, args: dict[str, Any]) -> dict[str, Any]:
        key = self._assistant_thread(args)
        self._require(args, "title")
        self._titles[key].append(str(args["title"]))
        return {}

    async def _api_assistant_threads_setSuggestedPrompts(
        self, args: dict[str, Any]
    ) -> dict[str, Any]:
        self._require(args, "channel_id")
        channel = str(args["channel_id"])
        self._channel(channel)
        prompts = args.get("prompts")
        if not isinstance(prompts, list) or not prompts or len(prompts) > 4:
            raise _ApiError("invalid_arguments")
        shown = [{"title": args.get("title"), "prompts": prompts}]
        thread_ts = str(args.get("thread_ts") or "")
        if self.view == "agent_view":
            # Slack: thread_ts is for the legacy assistant view only; with it, an agent app's
            # call silently does nothing. Without it the prompts top the Messages tab.
            if not thread_ts:
                self._prompts[(channel, "")] = shown
            return {}
        if not thread_ts:  # Slack: without thread_ts, the latest message in the channel gets them
            latest = [m for m in self._sorted(channel) if not m.is_reply]
            if not latest:
                raise _ApiError("message_not_found")
            thread_ts = latest[-1].ts
        self._prompts[(channel, thread_ts)] = shown
        return {}

    # conversations / users

    def _channel_json(self, ch: _Channel) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": ch.id,
            "created": ch.created,
            "is_archived": False,
            "is_org_shared": False,
            "context_team_id": self.team_id,
            "is_channel": ch.kind == "channel",
            "is_group": ch.kind == "group",
            "is_im": ch.kind == "im",
            "is_mpim": ch.kind == "mpim",
            "is_private": ch.kind != "channel",
            "is_shared": ch.slack_connect,
            "is_ext_shared": ch.slack_connect,
        }
        if ch.kind == "im":
            out.update({"user": ch.user, "is_user_deleted": False, "priority": 0})
        else:
            out.update(
                {
                    "name": ch.name,
                    "name_normalized": ch.name,
                    "is_general": ch.name == "general",
                    "is_member": True,
                    "creator": "U0ALICE",
                    "topic": {"value": "", "creator": "", "last_set": 0},
                    "purpose": {"value": "", "creator": "", "last_set": 0},
                }
            )
        return out

    async def _api_conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel")
        return {"channel": self._channel_json(self._channel(str(args["channel"])))}

    def _window(self, msgs: list[_Msg], args: dict[str, Any]) -> list[_Msg]:
        inclusive = _truthy(args.get("inclusive"))
        if args.get("oldest"):
            oldest = float(args["oldest"])
            msgs = [
                m for m in msgs if float(m.ts) > oldest or (inclusive and float(m.ts) == oldest)
            ]
        if args.get("latest"):
            latest = float(args["latest"])
            msgs = [
                m for m in msgs if float(m.ts) < latest or (inclusive and float(m.ts) == latest)
            ]
        return msgs

    def _page(self, msgs: list[_Msg], args: dict[str, Any], default_limit: int) -> dict[str, Any]:
        limit = int(args.get("limit") or default_limit)
        limit = max(1, min(limit, 1000))
        start = _offset(args.get("cursor"))
        page = msgs[start : start + limit]
        has_more = start + limit < len(msgs)
        return {
            "messages": [
                self._message_json(m, metadata=_truthy(args.get("include_all_metadata")))
                for m in page
            ],
            "has_more": has_more,
            "response_metadata": {"next_cursor": _cursor(start + limit) if has_more else ""},
        }

    async def _api_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel", "ts")
        channel = str(args["channel"])
        self._channel(channel)
        ts = str(args["ts"])
        msg = self._messages[channel].get(ts)
        if msg is None:
            raise _ApiError("thread_not_found")
        root = msg.thread_ts or msg.ts
        parent = self._messages[channel].get(root)
        replies = [m for m in self._sorted(channel) if m.thread_ts == root and m.ts != root]
        msgs = ([parent] if parent else []) + self._window(replies, args)
        return self._page(msgs, args, 1000)

    async def _api_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel")
        channel = str(args["channel"])
        self._channel(channel)
        msgs = [m for m in self._sorted(channel) if not m.is_reply or m.broadcast]
        msgs = list(reversed(self._window(msgs, args)))
        return {
            **self._page(msgs, args, 100),
            "pin_count": 0,
            "channel_actions_ts": None,
            "channel_actions_count": 0,
        }

    async def _api_usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "usergroup")
        members = self.usergroups.get(str(args["usergroup"]))
        if members is None:
            raise _ApiError("no_such_subteam")
        return {"users": list(members)}

    async def _api_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "user")
        user = self.users.get(str(args["user"]))
        if user is None:
            raise _ApiError("user_not_found")
        return {"user": user}

    # views

    def _new_view(self, view: dict[str, Any], view_id: str | None = None) -> dict[str, Any]:
        return {
            "id": view_id or self._next_id("V"),
            "team_id": self.team_id,
            "type": view.get("type", "modal"),
            "blocks": view.get("blocks", []),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": secrets.token_hex(8),
            "title": view.get("title"),
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "close": view.get("close"),
            "submit": view.get("submit"),
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": self.app_id,
            "external_id": view.get("external_id", ""),
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }

    def _check_view(self, args: dict[str, Any]) -> dict[str, Any]:
        view = args.get("view")
        if not isinstance(view, dict) or view.get("type") not in ("modal", "home"):
            raise _ApiError(
                "invalid_arguments",
                response_metadata={
                    "messages": ["[ERROR] failed to match all allowed schemas [json-pointer:/view]"]
                },
            )
        if len(view.get("blocks", []) or []) > 100:
            raise _ApiError("invalid_arguments")
        return view

    async def _api_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "trigger_id")
        issued = self._triggers.get(str(args["trigger_id"]))
        if issued is None:
            raise _ApiError("invalid_trigger_id")
        if time.monotonic() - issued > TRIGGER_ID_LIFETIME:
            raise _ApiError("expired_trigger_id")
        view = self._new_view(self._check_view(args))
        view["root_view_id"] = view["id"]
        self.views[view["id"]] = view
        return {"view": view}

    async def _api_views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = self._check_view(args)
        view_id = args.get("view_id")
        if not view_id and args.get("external_id"):
            view_id = next(
                (
                    v["id"]
                    for v in self.views.values()
                    if v.get("external_id") == args["external_id"]
                ),
                None,
            )
        current = self.views.get(str(view_id or ""))
        if current is None:
            raise _ApiError("not_found")
        if args.get("hash") and args["hash"] != current["hash"]:
            raise _ApiError("hash_conflict")
        view = self._new_view(spec, current["id"])
        self.views[current["id"]] = view
        return {"view": view}

    async def _api_views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "user_id")
        user = str(args["user_id"])
        if user not in self.users:
            raise _ApiError("user_not_found")
        spec = self._check_view(args)
        if spec.get("type") != "home":
            raise _ApiError("invalid_arguments")
        view = self._new_view(spec)
        self._home_views[user] = view
        self.views[view["id"]] = view
        return {"view": view}

    # files

    async def _api_files_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        raise _ApiError("method_deprecated")  # files.upload was retired; use files_upload_v2

    async def _api_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "filename", "length")
        try:
            length = int(args["length"])
        except ValueError as e:
            raise _ApiError("invalid_arguments") from e
        file_id = self._next_id("F")
        self._pending_uploads[file_id] = {
            "filename": str(args["filename"]),
            "length": length,
            "content": None,
            "alt_txt": args.get("alt_txt"),
            "snippet_type": args.get("snippet_type"),
        }
        return {"upload_url": f"{self.base_url}/upload/v1/{file_id}", "file_id": file_id}

    async def _api_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        files = args.get("files")
        if not isinstance(files, list) or not files:
            raise _ApiError("invalid_arguments")
        channel = str(args["channel_id"]) if args.get("channel_id") else None
        if channel is None and args.get("channels"):
            channel = str(args["channels"]).split(",")[0]
        if channel is not None:
            self._channel(channel)
        thread_ts = str(args["thread_ts"]) if args.get("thread_ts") else None
        objs: list[dict[str, Any]] = []
        for spec in files:
            pending = self._pending_uploads.get(str(spec.get("id")))
            if pending is None:
                raise _ApiError("file_not_found")
            if pending["content"] is None:
                raise _ApiError(
                    "invalid_arguments",
                    response_metadata={"messages": ["[ERROR] file was not uploaded"]},
                )
        for spec in files:
            file_id = str(spec["id"])
            pending = self._pending_uploads.pop(file_id)
            name = pending["filename"]
            title = str(spec.get("title") or name)
            content: bytes = pending["content"]
            ext = name.rsplit(".", 1)[-1].lower() if "." in name else "binary"
            obj = self._file_obj(
                file_id, self.bot_user_id, name, title, ext, _mimetype(name), len(content)
            )
            self.files[file_id] = obj
            self.file_contents[file_id] = content
            objs.append(obj)
            self._uploads.append(
                Upload(
                    file_id, name, title, content, channel, thread_ts, args.get("initial_comment")
                )
            )
        if channel is not None:
            msg = _Msg(
                channel=channel,
                ts=self._next_ts(),
                user=self.bot_user_id,
                text=str(args.get("initial_comment") or ""),
                thread_ts=thread_ts,
                bot_id=self.bot_id,
                files=objs,
            )
            self._store(msg)
            for obj in objs:
                self._share(obj["id"], channel, msg.ts, thread_ts)
            self._bot_reply_posted(channel, thread_ts)
        return {"files": [dict(o) for o in objs]}

    async def _api_files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "file")
        obj = self.files.get(str(args["file"]))
        if obj is None:
            raise _ApiError("file_not_found")
        return {"file": obj, "comments": [], "response_metadata": {"next_cursor": ""}}

    async def _handle_upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        pending = self._pending_uploads.get(file_id)
        if pending is None:
            return web.Response(status=404, text="file not found")
        if request.content_type == "multipart/form-data":
            form = await request.post()
            field_value = next((v for v in form.values() if not isinstance(v, str)), None)
            content = field_value.file.read() if field_value is not None else b""  # type: ignore[union-attr]
        else:
            content = await request.read()
        pending["content"] = content
        await self._changed()
        return web.Response(text=f"OK - {len(content)}")

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        team_file = request.match_info["team_file"]
        file_id = team_file.split("-", 1)[-1]
        auth = request.headers.get("Authorization", "")
        if not auth:
            raise web.HTTPFound(
                f"{self.base_url}/login?redir={urllib.parse.quote(str(request.rel_url))}"
            )
        if auth != f"Bearer {self.bot_token}":
            return web.Response(status=403, text="forbidden")
        if DOWNLOAD_SCOPE not in self.scopes:
            return web.Response(status=403, text="missing_scope")
        content = self.file_contents.get(file_id)
        if content is None:
            return web.Response(status=404, text="file not found")
        mimetype = str(self.files[file_id].get("mimetype") or "application/octet-stream")
        return web.Response(body=content, content_type=mimetype)

    async def _handle_login(self, request: web.Request) -> web.Response:
        html = "<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to Emulated Team</body></html>"
        return web.Response(text=html, content_type="text/html")

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        target = self._response_targets.get(request.match_info["rid"])
        if target is None:
            return web.Response(status=404, text="no_service")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.Response(status=400, text="invalid_payload")
        self.response_url_posts.append(body)
        original = self._messages[target.channel].get(target.message_ts or "")
        if _truthy(body.get("delete_original")) and original is not None:
            del self._messages[target.channel][original.ts]
        elif _truthy(body.get("replace_original")) and original is not None:
            original.text = str(body.get("text") or "")
            original.blocks = body.get("blocks")
            original.markdown_text = None
            original.edited = {"user": self.bot_user_id, "ts": self._next_ts()}
        elif body.get("response_type") == "in_channel":
            thread_ts = body.get("thread_ts") or target.thread_ts
            msg = _Msg(
                channel=target.channel,
                ts=self._next_ts(),
                user=self.bot_user_id,
                text=str(body.get("text") or ""),
                blocks=body.get("blocks"),
                thread_ts=thread_ts,
                bot_id=self.bot_id,
            )
            self._store(msg)
        else:
            fake = _Msg(
                channel=target.channel,
                ts="",
                user=self.bot_user_id,
                text=str(body.get("text") or ""),
                blocks=body.get("blocks"),
            )
            self._ephemerals[(target.channel, target.user)].append(_displayed(fake))
        await self._changed()
        return web.Response(text="ok")

    # --- Socket Mode ---------------------------------------------------------------------------

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True)  # answers the SDK's pings with pongs
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": sum(1 for w in self._sockets if not w.closed),
                    "debug_info": {
                        "host": "applink-emulated",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self.app_id},
                }
            )
        )
        await self._changed()
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(message.data)
                except json.JSONDecodeError:
                    continue
                future = self._pending_acks.get(str(data.get("envelope_id")))
                if future is not None and not future.done():
                    future.set_result(data)
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
            await self._changed()
        return ws

    async def disconnect_socket(self, reason: str = "refresh_requested") -> None:
        """Send Slack's `disconnect` message and close the connection; the SDK reconnects."""
        for ws in [w for w in self._sockets if not w.closed]:
            await ws.send_str(
                json.dumps(
                    {
                        "type": "disconnect",
                        "reason": reason,
                        "debug_info": {"host": "applink-emulated"},
                    }
                )
            )
            await ws.close()

    @property
    def socket_connections(self) -> int:
        return sum(1 for w in self._sockets if not w.closed)


def _subject(args: dict[str, Any]) -> str:
    """What a Web API call is about, for drawing its faults: its channel and thread or message."""
    channel = args.get("channel") or args.get("channel_id") or ""
    return f"{channel}:{args.get('thread_ts') or args.get('ts') or ''}"


def _decode_body(text: str) -> Any:
    if not text:
        return ""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _mimetype(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
