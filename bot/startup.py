"""What start-up and `check` share: one plain line per problem, and a bound on every network step.

Each step that reaches a server runs inside `reaching(...)`: it ends within STEP_SECONDS whatever
the network does (a server that accepts connections and never answers included), and a network
failure becomes a `StartupError` naming the host and what to check, instead of a traceback.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import aiohttp

# One step (reaching the backend, Slack's Web API, Socket Mode) takes at most STEP_SECONDS, and
# start-up as a whole at most START_SECONDS: with Python's own start, well within 30 s.
STEP_SECONDS = 10.0
START_SECONDS = 25.0


class StartupError(Exception):
    """The bot cannot start; the message says why and what to do, in one line."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived before start-up finished; what was opened is closed."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


@asynccontextmanager
async def reaching(
    service: str, url: str, check: str, seconds: float = STEP_SECONDS
) -> AsyncIterator[None]:
    """Bound a network step; network failures become a StartupError naming the host.

    `service` names what is reached ("Slack", "OpenAI"), `url` where, `check` the setting to look
    at ("SLACK_API_URL").
    """
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            yield
    except Exception as exc:  # a StartupError too: one that a network failure caused is retold
        if deadline.expired():
            raise StartupError(
                f"{service} at {host_of(url)} did not answer within {seconds:.0f} s: check "
                f"{check}, the network, and any firewall or proxy in between."
            ) from exc
        problem = network_problem(exc, url)
        if problem is None:
            raise
        raise StartupError(f"{service} at {problem} Check {check}.") from exc


def network_problem(exc: BaseException, url: str) -> str | None:
    """What went wrong reaching `url`, as "HOST: what happened.", or None if not the network."""
    host, port = host_of(url), urlsplit(url).port
    causes = list(_chain(exc))
    if any(isinstance(c, aiohttp.ClientConnectorDNSError | socket.gaierror) for c in causes):
        return f"{host}: the name does not resolve (DNS); is the host name right?"
    if any(isinstance(c, ssl.SSLError | aiohttp.ClientSSLError) for c in causes):
        tls = [c for c in causes if isinstance(c, ssl.SSLError)]
        reason = (getattr(tls[-1], "reason", None) if tls else None) or "TLS error"
        return (
            f"{host}: the TLS handshake failed ({reason}); is the scheme right (https or "
            "http), and does this machine trust the server's certificate (a proxy's CA: "
            "SSL_CERT_FILE)?"
        )
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        where = f"{host}:{port}" if port else host
        return f"{where} refused the connection; is the server running and the port right?"
    if any(isinstance(c, TimeoutError) for c in causes):
        return f"{host}: the connection timed out; is the server reachable from here?"
    if any(isinstance(c, OSError | aiohttp.ClientConnectionError) for c in causes):
        root = causes[-1]
        return f"{host}: the connection failed ({type(root).__name__}: {root})."
    return None


def host_of(url: str) -> str:
    return urlsplit(url).hostname or url


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes, outermost first (SDKs wrap the socket's error)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
