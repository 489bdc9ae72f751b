"""Slack calls are retried when Slack says to retry, and nothing is ever said twice.

slack_sdk's retry handlers retry a call on the pooled session when Slack rate-limits it
(`ratelimited`, after the Retry-After it sends), fails it (HTTP 500, 502, 503, 504) or the
connection is lost (reset, refused, timed out), with a short, bounded, jittered backoff.

A lost connection leaves open whether Slack did the call, so calls that add something
(`chat.postMessage`, `chat.postEphemeral`, `chat.startStream`, `chat.appendStream`, completing an
upload) are not repeated blindly: `post_message` marks what it posts and looks for the mark
before posting again, `start_stream` looks for the stream it may have started, and a lost
`chat.appendStream` ends the stream so that the answer is written anew (see writers.py). An
ephemeral message cannot be looked for: it may be lost, never doubled.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.interval_calculator import RetryIntervalCalculator
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics

log = logging.getLogger(__name__)

# How a Slack call can fail once its retries are spent: Slack said no, or never answered.
SLACK_FAILURES = (SlackApiError, aiohttp.ClientError, TimeoutError)
# The call may or may not have been done: its answer was lost.
ANSWER_LOST = (aiohttp.ClientError, TimeoutError)
# Calls that add something: when their answer is lost they are checked, not repeated.
ADDS_SOMETHING = frozenset(
    {
        "chat.postMessage",
        "chat.postEphemeral",
        "chat.startStream",
        "chat.appendStream",
        "files.completeUploadExternal",
    }
)
SERVER_ERRORS = frozenset({500, 502, 503, 504})
BACKOFF_BASE = 0.25  # seconds before the first retry; doubled each time, jittered
BACKOFF_MAX = 4.0
# The metadata event type that marks the bot's own posts, so that a post whose answer was lost
# can be found (conversations.replies with include_all_metadata).
POST_MARK = "assistant_bot_post"


class Backoff(RetryIntervalCalculator):
    """Exponential backoff with full jitter, capped at BACKOFF_MAX."""

    def calculate_sleep_duration(self, current_attempt: int) -> float:
        ceiling = min(BACKOFF_MAX, BACKOFF_BASE * 2**current_attempt)
        return random.uniform(ceiling / 2, ceiling)


def _method(request: HttpRequest) -> str:
    return request.url.rstrip("/").rsplit("/", 1)[-1]


class LostConnectionRetry(AsyncConnectionErrorRetryHandler):
    """A reset, refused or timed-out connection, for calls that may safely be done twice."""

    def __init__(self, max_retry_count: int) -> None:
        super().__init__(max_retry_count, Backoff())
        self.error_types_to_do_retries = [*self.error_types_to_do_retries, TimeoutError]

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _method(request) in ADDS_SOMETHING:
            return False
        return await super()._can_retry_async(
            state=state, request=request, response=response, error=error
        )


class ServerErrorRetry(AsyncServerErrorRetryHandler):
    """HTTP 500, 502, 503 and 504, which Slack asks clients to retry (slack_sdk's own handler
    covers 500 and 503)."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code in SERVER_ERRORS


class CountFailures(AsyncRetryHandler):
    """Retries nothing: counts each try Slack refused or never answered, first in the list so it
    sees every response (slack_sdk asks the handlers about each one)."""

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if error is not None:
            metrics.slack_error(_method(request), type(error).__name__)
        elif response is not None and response.status_code == 429:
            metrics.slack_rate_limited(_method(request))
            metrics.slack_error(_method(request), "ratelimited")
        elif response is not None and (response.status_code >= 400 or not _ok(response)):
            body = response.body if isinstance(response.body, dict) else {}
            metrics.slack_error(_method(request), str(body.get("error") or response.status_code))
        return False


def _ok(response: HttpResponse) -> bool:
    return not isinstance(response.body, dict) or response.body.get("ok") is not False


def retry_handlers(retries: int) -> list[AsyncRetryHandler]:
    """What a Slack client retries, each call at most `retries` times in all."""
    return [
        CountFailures(),
        LostConnectionRetry(retries),
        AsyncRateLimitErrorRetryHandler(retries),  # waits the Retry-After Slack sends
        ServerErrorRetry(retries, Backoff()),
    ]


ATTEMPTS = 3  # tries of a call that adds something, each looked for after a lost answer


async def post_message(client: AsyncWebClient, channel: str, thread_ts: str, **content: Any) -> str:
    """Post a message into a thread once; its ts.

    When the answer to the post is lost, the thread is searched for the post's mark before it is
    posted again.
    """
    mark = secrets.token_hex(8)
    metadata = {"event_type": POST_MARK, "event_payload": {"id": mark}}

    async def post() -> str:
        response = await client.chat_postMessage(
            channel=channel, thread_ts=thread_ts, metadata=metadata, **content
        )
        return str(response["ts"])

    async def posted() -> str | None:
        return await _find(client, channel, thread_ts, lambda m: _mark(m) == mark)

    return await _once(post, posted, "chat.postMessage", channel)


async def start_stream(
    client: AsyncWebClient,
    channel: str,
    thread_ts: str,
    after_ts: str,
    markdown_text: str,
    recipient_team_id: str,
    recipient_user_id: str,
    chunks: list[dict[str, Any]] | None = None,
) -> str:
    """Start streaming a message into a thread once (with `markdown_text`, or only `chunks`);
    its ts.

    When the answer is lost, the thread is searched for the stream it may have started (a message
    of the bot's after `after_ts` showing exactly `markdown_text`) before it is started again.
    """

    async def start() -> str:
        response = await client.chat_startStream(
            channel=channel,
            thread_ts=thread_ts,
            markdown_text=markdown_text or None,
            recipient_team_id=recipient_team_id,
            recipient_user_id=recipient_user_id,
            chunks=chunks or None,
        )
        return str(response["ts"])

    def ours(message: dict[str, Any]) -> bool:
        return (
            bool(message.get("bot_id"))
            and float(message["ts"]) > float(after_ts)
            and message.get("text") == markdown_text
            and _mark(message) is None
        )

    async def started() -> str | None:
        return await _find(client, channel, thread_ts, ours, oldest=after_ts)

    return await _once(start, started, "chat.startStream", channel)


async def _once(
    do: Callable[[], Awaitable[str]],
    done: Callable[[], Awaitable[str | None]],
    method: str,
    channel: str,
) -> str:
    """`do()` once: when its answer is lost, what `done()` finds, else `do()` again."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await do()
        except ANSWER_LOST as exc:
            log.warning(
                "event=answer_lost method=%s channel=%s attempt=%d error=%s",
                method,
                channel,
                attempt,
                type(exc).__name__,
            )
            if attempt == ATTEMPTS:
                raise
        found = await done()
        if found is not None:
            return found
    raise AssertionError("unreachable")


def failure_name(exc: Exception) -> str:
    """Slack's error code, or what went wrong when Slack never answered (for logs)."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error") or f"http_{exc.response.status_code}")
    return type(exc).__name__


def _mark(message: dict[str, Any]) -> str | None:
    metadata = message.get("metadata") or {}
    if metadata.get("event_type") != POST_MARK:
        return None
    return str((metadata.get("event_payload") or {}).get("id"))


async def _find(
    client: AsyncWebClient,
    channel: str,
    thread_ts: str,
    wanted: Callable[[dict[str, Any]], bool],
    oldest: str | None = None,
) -> str | None:
    """The ts of the thread's latest message that is `wanted`, or None."""
    found: str | None = None
    cursor: str | None = None
    while True:
        page = await client.conversations_replies(
            channel=channel,
            ts=thread_ts,
            oldest=oldest,
            include_all_metadata=True,
            limit=200,
            cursor=cursor,
        )
        for message in page.get("messages") or []:
            if wanted(message):
                found = str(message["ts"])
        cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
        if not cursor:
            return found
