"""What the emulators share: the errors an OpenAI handler raises, timestamps, reading a request's
JSON body, and injecting faults as real services produce them."""

from __future__ import annotations

import fnmatch
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

JSON = dict[str, Any]
SseEvent = tuple[str | None, JSON | str, str | None]  # (event name, data, schema to check it by)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """Raised while handling a request; the emulator answers it as an OpenAI error."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


class ScriptError(Exception):
    """The scripted reply cannot be played (e.g. it cites a file nobody uploaded): the run or
    response fails."""


def now() -> int:
    return int(time.time())


async def read_json(request: web.Request) -> JSON:
    """The request's JSON object ({} without a body), or ApiError as the API words it."""
    if not request.body_exists:  # not `can_read_body`: the recording middleware has read it already
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "We could not parse the JSON body of your request.") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


# ---------------------------------------------------------------------------------------------
# Fault injection: faults as real services produce them, at a rate, reproducibly
# ---------------------------------------------------------------------------------------------

HTTP_500 = "http_500"  # the server failed; the request had no effect
HTTP_503 = "http_503"  # the service is unavailable; no effect
RATE_LIMITED = "rate_limited"  # 429 with Retry-After; no effect
RESET_BEFORE = "reset_before"  # the connection drops before the request is handled
RESET_AFTER = "reset_after"  # the request is handled, then the connection drops: the answer is lost
STALL = "stall"  # a streamed answer stops sending events without closing (streams only)
FAULT_KINDS = (HTTP_500, HTTP_503, RATE_LIMITED, RESET_BEFORE, RESET_AFTER, STALL)
# A request carrying this header is never faulted: a test's own observer calls.
OBSERVER_HEADER = "X-Emulator-Observer"


@dataclass(frozen=True)
class FaultRule:
    """Requests whose name matches `pattern` (fnmatch) fail at `rate` with one of `kinds`."""

    pattern: str
    rate: float
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class InjectedFault:
    name: str  # the request: a Slack method, or "POST /v1/threads/{id}/runs"
    subject: str  # what it was about (a Slack thread), "" when nothing narrower is known
    kind: str


@dataclass
class Faults:
    """Random faults per request name, reproducible from `seed`.

    Each (name, subject) pair draws from its own generator seeded by `seed`, so a run sends the
    same faults to the same calls whatever order concurrent threads interleave in (as long as
    the calls of one subject come in the same order). `max_in_a_row` bounds consecutive faults
    of one (name, subject): a transient fault, which a client that retries enough always outlasts.
    """

    seed: int = 0
    max_in_a_row: int | None = None
    retry_after: float = 1.0  # seconds, sent with rate-limit faults
    rules: list[FaultRule] = field(default_factory=list)
    injected: list[InjectedFault] = field(default_factory=list)
    _streams: dict[tuple[str, str], random.Random] = field(default_factory=dict)
    _in_a_row: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, rate: float, kinds: Sequence[str] = FAULT_KINDS, pattern: str = "*") -> None:
        """Fail requests matching `pattern` at `rate` (0-1); the first matching rule applies."""
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown or not 0 <= rate <= 1:
            raise ValueError(f"bad fault rule: rate {rate}, unknown kinds {sorted(unknown)}")
        self.rules.append(FaultRule(pattern, rate, tuple(kinds)))

    def clear(self) -> None:
        self.rules.clear()

    def pick(self, name: str, subject: str = "", *, streamed: bool = False) -> str | None:
        """The fault to inject into this request, or None; `streamed` allows a stall."""
        rule = next((r for r in self.rules if fnmatch.fnmatchcase(name, r.pattern)), None)
        if rule is None:
            return None
        kinds = [k for k in rule.kinds if streamed or k != STALL]
        key = (name, subject)
        draw = self._streams.get(key)
        if draw is None:
            draw = self._streams[key] = random.Random(f"{self.seed}|{name}|{subject}")
        hit, choice = draw.random() < rule.rate, draw.randrange(len(FAULT_KINDS))
        in_a_row = self._in_a_row.get(key, 0)
        if (
            not hit
            or not kinds
            or (self.max_in_a_row is not None and in_a_row >= self.max_in_a_row)
        ):
            self._in_a_row[key] = 0
            return None
        self._in_a_row[key] = in_a_row + 1
        kind = kinds[choice % len(kinds)]
        self.injected.append(InjectedFault(name, subject, kind))
        return kind

    def counts(self) -> dict[str, int]:
        """How many faults of each kind were injected."""
        return dict(Counter(fault.kind for fault in self.injected))

    @staticmethod
    def exempt(request: web.Request) -> bool:
        return OBSERVER_HEADER in request.headers
