from __future__ import annotations

import openai

from bot import metrics
from bot.engine.base import EngineError


def engine_error(exc: openai.OpenAIError) -> EngineError:
    """An SDK exception in engine-neutral words (the SDK has already retried what it retries)."""
    error = _engine_error(exc)
    metrics.backend_error(error.code)
    return error


def _engine_error(exc: openai.OpenAIError) -> EngineError:
    if isinstance(exc, openai.APITimeoutError) and not _refused(exc):
        return EngineError("timeout", "the request to the assistant service timed out")
    if isinstance(exc, openai.APIConnectionError):
        return EngineError("connection_error", "could not connect to the assistant service")
    if isinstance(exc, openai.AuthenticationError):
        return EngineError("invalid_api_key", "OPENAI_API_KEY was refused by the assistant service")
    if isinstance(exc, openai.RateLimitError):
        return EngineError("rate_limit_exceeded", exc.message)
    if isinstance(exc, openai.APIStatusError):
        return EngineError(exc.code or f"http_{exc.status_code}", exc.message)
    return EngineError("client_error", str(exc))


def _refused(exc: BaseException) -> bool:
    """True when the root cause is a failed or dropped connection, not a timeout.

    The aiohttp transport reports a refused or dropped connection as a connect *timeout*.
    """
    root: BaseException = exc
    while (cause := root.__cause__ or root.__context__) is not None:
        root = cause
    return root is not exc and not isinstance(root, TimeoutError)
