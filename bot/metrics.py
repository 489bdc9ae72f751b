"""Every Prometheus metric the bot exports, and the one-line calls the rest of the bot makes.

Labels stay bounded: event types, outcomes, error codes, Slack method names, tool and assistant
names; never a user, channel, thread or free text. A value that does not look like a code is
counted as "other". The default registry is used, so the process and platform collectors come
along; `/metrics` (bot/health.py) serves it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

ACK_SLOW_SECONDS = 3.0  # Slack retries an event it has not seen acked within 3 s
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,60}")

EVENTS_RECEIVED = Counter(
    "slackbot_events_received", "Requests from Slack (events, commands, actions) by type", ["type"]
)
EVENTS_ACKED = Counter("slackbot_events_acked", "Requests from Slack acked, by type", ["type"])
ACKS_SLOW = Counter(
    "slackbot_acks_slow", "Requests acked after 3 s (Slack sends those again)", ["type"]
)
TURNS = Counter(
    "slackbot_turns",
    "Finished turns by outcome (done, failed, stopped, incomplete, refused) and failure code",
    ["outcome", "code"],
)
SIGN_OF_LIFE = Histogram(
    "slackbot_turn_sign_of_life_seconds",
    "From taking a message to its placeholder showing in Slack",
    buckets=LATENCY_BUCKETS,
)
FIRST_TOKEN = Histogram(
    "slackbot_turn_first_token_seconds",
    "From taking a message to the first text of its answer",
    buckets=LATENCY_BUCKETS,
)
ANSWERED = Histogram(
    "slackbot_turn_answer_seconds",
    "From taking a message to its finished answer",
    buckets=LATENCY_BUCKETS,
)
TURNS_WAITING = Gauge(
    "slackbot_turns_waiting",
    "Turns taken but not yet running; on PostgreSQL the whole shared queue's, the same on every"
    " replica (do not sum it over replicas)",
)
TURNS_RUNNING = Gauge("slackbot_turns_running", "Turns running now")
BACKEND_ERRORS = Counter("slackbot_backend_errors", "Errors from the OpenAI backend", ["code"])
SLACK_ERRORS = Counter(
    "slackbot_slack_api_errors",
    "Slack Web API calls that failed (each try), by method and error",
    ["method", "code"],
)
SLACK_RATE_LIMITED = Counter(
    "slackbot_slack_rate_limited", "Slack Web API calls Slack rate-limited (HTTP 429)", ["method"]
)
STREAM_FALLBACKS = Counter(
    "slackbot_stream_fallbacks", "Answers that fell back from streaming to editing messages"
)
TOOL_CALLS = Counter(
    "slackbot_tool_calls", "Function tool calls by tool and outcome", ["tool", "outcome"]
)
TOKENS = Counter(
    "slackbot_tokens",
    "Tokens used, by direction (in, out), assistant and model",
    ["direction", "assistant", "model"],
)
FILES = Counter(
    "slackbot_files", "Files shared with the bot: taken, or refused and why", ["result"]
)


def code(value: str | None) -> str:
    """A label value: the code itself when it looks like one, else "other"."""
    if not value:
        return ""
    return value if _CODE.fullmatch(value) else "other"


def now() -> float:
    return time.monotonic()


def event_received(kind: str) -> None:
    EVENTS_RECEIVED.labels(kind).inc()


def event_acked(kind: str, seconds: float) -> None:
    EVENTS_ACKED.labels(kind).inc()
    if seconds > ACK_SLOW_SECONDS:
        ACKS_SLOW.labels(kind).inc()


def turn_finished(outcome: str, failure_code: str | None) -> None:
    TURNS.labels(outcome, code(failure_code) if outcome in ("failed", "refused") else "").inc()


def sign_of_life(taken_at: float) -> None:
    SIGN_OF_LIFE.observe(now() - taken_at)


def first_token(taken_at: float) -> None:
    FIRST_TOKEN.observe(now() - taken_at)


def answered(taken_at: float) -> None:
    ANSWERED.observe(now() - taken_at)


def watch_turns(waiting: Callable[[], float], running: Callable[[], float]) -> None:
    """The turn gauges, read when scraped (nothing to do on the hot path)."""
    TURNS_WAITING.set_function(waiting)
    TURNS_RUNNING.set_function(running)


def backend_error(error_code: str) -> None:
    BACKEND_ERRORS.labels(code(error_code)).inc()


def slack_error(method: str, error_code: str) -> None:
    SLACK_ERRORS.labels(code(method), code(error_code)).inc()


def slack_rate_limited(method: str) -> None:
    SLACK_RATE_LIMITED.labels(code(method)).inc()


def stream_fallback() -> None:
    STREAM_FALLBACKS.inc()


def tool_called(tool: str, outcome: str) -> None:
    TOOL_CALLS.labels(code(tool), outcome).inc()


def tokens_used(assistant: str, model: str, tokens_in: int, tokens_out: int) -> None:
    TOKENS.labels("in", code(assistant), code(model)).inc(tokens_in)
    TOKENS.labels("out", code(assistant), code(model)).inc(tokens_out)


def file_taken() -> None:
    FILES.labels("taken").inc()


def file_refused(reason: str) -> None:
    FILES.labels(code(reason)).inc()
