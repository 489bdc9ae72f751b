"""An operator's tools module, as TOOLS_MODULE names it: what the tool tests make the model call."""

from __future__ import annotations

import asyncio

from bot.tools import ToolContext, tool

# Set by a test before the model calls the tool; the tool waits on it (never set: it hangs).
weather_gate: asyncio.Event | None = None
meeting: asyncio.Barrier | None = None


@tool(
    description="The weather in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    status="Looking up the weather…",
)
async def get_weather(city: str) -> str:
    if weather_gate is not None:
        await weather_gate.wait()
    return f"Sunny in {city}, 21°C"


@tool
async def who_asked(context: ToolContext) -> dict[str, str]:
    """Who wrote the message being answered, and where."""
    return {"user": context.user_id, "channel": context.key.channel_id}


@tool
async def meet_a() -> str:
    """Returns once meet_b runs at the same time (proves calls of one step run concurrently)."""
    assert meeting is not None
    await meeting.wait()
    return "a met b"


@tool
async def meet_b() -> str:
    """The other half of meet_a."""
    assert meeting is not None
    await meeting.wait()
    return "b met a"


@tool
async def broken() -> str:
    """Always fails."""
    raise RuntimeError("the database is down")


@tool
async def never_returns() -> str:
    """Hangs until its timeout."""
    await asyncio.Event().wait()
    return "unreachable"


launched: list[str] = []  # what launch_release did (only once someone approved)


@tool(requires_approval=True)
async def launch_release(version: str) -> str:
    """Ships a release to production (a person approves each call)."""
    launched.append(version)
    return f"{version} is live"
