"""What both halves of the OpenAI emulator share: the errors a handler raises, timestamps, and
reading a request's JSON body."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
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
