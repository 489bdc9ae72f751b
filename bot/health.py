"""What an operator's platform asks: /healthz (alive), /readyz (can take work), /metrics.

In HTTP mode these routes share the Slack port; in Socket Mode they listen on HEALTH_PORT
(off unless set). `/readyz` answers 503, naming the failed checks, while the database does not
answer, the backend does not answer a cheap request, the Socket Mode connection is down, or
shutdown has begun (it turns first, so the platform stops sending work before the bot stops
taking it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

CHECK_SECONDS = 2.0
BACKEND_REMEMBERED_SECONDS = 30.0  # the backend answered: not asked again for this long

Check = Callable[[], Awaitable[bool]]


class Health:
    def __init__(self) -> None:
        self.checks: dict[str, Check] = {}
        self.stopping = False

    def add_check(self, name: str, check: Check) -> None:
        self.checks[name] = check

    async def failed_checks(self) -> list[str]:
        if self.stopping:
            return ["shutting_down"]
        names = list(self.checks)
        results = await asyncio.gather(*(_passes(self.checks[name]) for name in names))
        return [name for name, ok in zip(names, results, strict=True) if not ok]

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", _metrics)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")  # answering at all shows the event loop runs

    async def _readyz(self, request: web.Request) -> web.Response:
        failed = await self.failed_checks()
        if failed:
            return web.Response(status=503, text="not ready: " + ", ".join(failed) + "\n")
        return web.Response(text="ready\n")


def remembered(check: Check, seconds: float) -> Check:
    """`check`, whose success holds for `seconds` (a probe every few seconds then costs the
    backend one request in `seconds`); a failure is asked again at the next probe."""
    passed_at: float | None = None

    async def cached() -> bool:
        nonlocal passed_at
        now = time.monotonic()
        if passed_at is not None and now - passed_at < seconds:
            return True
        passed_at = None
        if await check():
            passed_at = now
            return True
        return False

    return cached


def refuse_events_while_stopping(health: Health, path: str) -> Middleware:
    """Requests to `path` answer 503 once shutdown has begun: Slack sends the event again, and
    a load balancer sends it to another replica, while this one finishes what it has."""

    @web.middleware
    async def refuse(request: web.Request, handler: Handler) -> web.StreamResponse:
        if health.stopping and request.path == path:
            return web.Response(status=503, text="shutting down\n")
        return await handler(request)

    return refuse


async def _passes(check: Check) -> bool:
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            return await check()
    except Exception:
        return False


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
