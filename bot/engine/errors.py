from __future__ import annotations

import openai

from bot.engine.base import EngineError


def engine_error(exc: openai.OpenAIError) -> EngineError:
    """An SDK exception in engine-neutral words (the SDK has already retried what it retries)."""
    if isinstance(exc, openai.APITimeoutError) and not _refused(exc):
        return EngineError("timeout", "the request to the assistant service timed out")
    if isinstance(exc, openai.APIConnectionError):
        return EngineError("connection_error", "could not connect to the assistant service")
    if isinstance(exc, openai.RateLimitError):
        return EngineError("rate_limit_exceeded", exc.message)
    if isinstance(exc, openai.APIStatusError):
        return EngineError(exc.code or f"http_{exc.status_code}", exc.message)
    return EngineError("client_error", str(exc))


def _refused(exc: BaseException) -> bool:
    """True when the root cause is a failed connection, not a timeout.

    The aiohttp transport reports a refused connection as a connect *timeout*.
    """
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(exc, OSError) and not isinstance(exc, TimeoutError)
