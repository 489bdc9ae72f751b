"""A team's MCP server, built with the `mcp` SDK: served over streamable HTTP on 127.0.0.1 inside
the test's process (`serve_http`), or over stdio (`python -m tests.mcp_server_for_tests`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

HUGE_CHARS = 150_000


@dataclass
class Seen:
    """What the HTTP server saw: the Authorization headers its requests carried."""

    authorization: set[str] = field(default_factory=set)
    hang: asyncio.Event = field(default_factory=asyncio.Event)  # never set: `hang` hangs
    closed: list[str] = field(default_factory=list)  # tickets `close_ticket` closed


def build(seen: Seen | None = None) -> MCPServer:
    server = MCPServer("tickets")

    @server.tool(description="A ticket's status, by its id (e.g. OPS-12).")
    async def lookup_ticket(ticket_id: str) -> str:
        return f"{ticket_id} is open, assigned to Dana, priority high"

    @server.tool(description="Everything the tracker holds (very long).")
    async def dump_everything() -> str:
        return "x" * HUGE_CHARS

    @server.tool(description="Never answers.")
    async def hang() -> str:
        await (seen.hang if seen else asyncio.Event()).wait()
        return "too late"

    @server.tool(description="Adds the `on_call` tool, and tells the client its tools changed.")
    async def learn_on_call(ctx: Context) -> str:
        async def on_call() -> str:
            return "Dana is on call"

        server.add_tool(on_call, description="Who is on call.")
        await ctx.session.send_tool_list_changed()
        return "learned on_call"

    @server.tool(description="Closes a ticket (the team wants a person to approve it).")
    async def close_ticket(ticket_id: str) -> str:
        if seen is not None:
            seen.closed.append(ticket_id)
        return f"{ticket_id} is closed"

    @server.tool(description="Deletes the tracker (not allowed to the assistant).")
    async def drop_all() -> str:
        return "dropped"

    return server


@contextlib.asynccontextmanager
async def serve_http(seen: Seen) -> AsyncIterator[str]:
    """The server on a free 127.0.0.1 port, for the test's duration; yields its URL."""
    app = build(seen).streamable_http_app()

    async def remember_authorization(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"authorization":
                    seen.authorization.add(value.decode())
        await app(scope, receive, send)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(remember_authorization, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        seen.hang.set()
        server.should_exit = True
        await task
        sock.close()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    build().run("stdio")
