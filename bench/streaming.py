"""Benchmark: how answers stream into Slack. Prints `name: value` lines.

    python -m bench.streaming [--engine assistants|responses] [--tokens-per-second 100]

It runs the real bot against the local Slack and OpenAI emulators (no network) and measures, for
answers of N tokens written at a model's pace: how many Slack Web API calls one answer costs, and
how long a token takes from the moment the OpenAI emulator writes it to its SSE stream to the
moment it is visible in Slack (p50/p95) — with Slack's chat streaming, and with streaming refused
(the bot then edits the message with chat.update).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from bot import app
from bot.config import load_settings
from tests.conftest import ALICE, GENERAL, answers, bot_env
from tests.emulators.model import Reply
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator

TOKEN_WIDTH = 6  # "w0042 ": one token per model delta
DELTA_EVENTS = ("thread.message.delta", "response.output_text.delta")


class TimedOpenAI(OpenAIEmulator):
    """Notes when each answer delta is written to an SSE stream."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[tuple[float, str]] = []

    async def sse(self, request: web.Request, events: AsyncIterator[Any]) -> web.StreamResponse:
        async def timed() -> AsyncIterator[Any]:
            async for name, data, schema in events:
                yield name, data, schema
                if name in DELTA_EVENTS:
                    self.written.append((time.monotonic(), _delta_text(name, data)))

        return await super().sse(request, timed())


class TimedSlack(SlackEmulator):
    """Notes when each token first becomes visible in the benchmark's thread."""

    def __init__(self) -> None:
        super().__init__()
        self.thread_ts = ""
        self.seen: dict[str, float] = {}

    async def _handle_api(self, request: web.Request) -> web.Response:
        response = await super()._handle_api(request)
        if self.thread_ts:
            now = time.monotonic()
            for message in self.bot_replies(GENERAL, self.thread_ts):
                for token in message.text.split():
                    self.seen.setdefault(token, now)
        return response


def _delta_text(name: str, data: Any) -> str:
    if name == "response.output_text.delta":
        return str(data["delta"])
    return "".join(part["text"]["value"] for part in data["delta"]["content"])


async def measure(engine: str, tokens: int, pace: float, refuse: bool) -> dict[str, float]:
    slack, openai = TimedSlack(), TimedOpenAI()
    await slack.start()
    await openai.start()
    slack.refuse_streaming = refuse
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp:  # removed however it ends
        env = bot_env(slack, openai, Path(tmp) / "bot.sqlite3", "http")
        if engine == "assistants":
            env |= {"BOT_ENGINE": "assistants", "ASSISTANT_ID": openai.add_assistant(name="Bench")}
        else:
            definitions = Path(tmp) / "assistants.yaml"
            definitions.write_text("assistants:\n  - name: Bench\n    model: gpt-4o\n")
            env |= {"BOT_ENGINE": "responses", "ASSISTANT_ID": "Bench"}
            env["ASSISTANTS_FILE"] = str(definitions)
        bot = await app.start(load_settings(env, env_file=None))
        slack.events_url = f"http://127.0.0.1:{bot.port}/slack/events"
        try:
            text = " ".join(f"w{n:04d}" for n in range(tokens))
            openai.model.chunk_size = TOKEN_WIDTH
            openai.model.chunk_delay = pace
            openai.model.enqueue(Reply(text=text))
            calls_before = len(slack.calls)
            slack.thread_ts = await slack.mention(ALICE, GENERAL, "benchmark")
            await slack.wait_for(
                lambda: [m.text for m in answers(slack, GENERAL, slack.thread_ts)] == [text],
                timeout=tokens * pace + 30,
            )
            await asyncio.sleep(0.2)  # let the bot's last calls (placeholder cleanup) land
            # Bolt's own auth.test calls are not the answer's: count chat.* and assistant.*.
            calls = sum(
                c.method.startswith(("chat.", "assistant.")) for c in slack.calls[calls_before:]
            )
        finally:
            await bot.stop()
            await openai.stop()
            await slack.stop()
    delays = [
        (slack.seen[token] - at) * 1000
        for at, delta in openai.written
        for token in delta.split()
        if token in slack.seen
    ]
    quantiles = statistics.quantiles(delays, n=20)
    return {"slack_calls": calls, "p50_ms": statistics.median(delays), "p95_ms": quantiles[18]}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=["assistants", "responses"], default="assistants")
    parser.add_argument("--tokens-per-second", type=float, default=100.0)
    parser.add_argument("--tokens", type=int, nargs="+", default=[100, 500])
    args = parser.parse_args()
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM ends a run as Ctrl-C does: the bot is stopped, the temporary files are removed.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    logging.basicConfig(level=logging.WARNING)
    pace = 1 / args.tokens_per_second
    print(f"engine: {args.engine}")
    print(f"model_tokens_per_second: {args.tokens_per_second:g}")
    for mode, refuse in (("stream", False), ("update", True)):
        for tokens in args.tokens:
            result = await measure(args.engine, tokens, pace, refuse)
            print(f"{mode}.slack_calls_per_answer_{tokens}_tokens: {result['slack_calls']:.0f}")
            print(f"{mode}.token_to_slack_p50_ms_{tokens}_tokens: {result['p50_ms']:.0f}")
            print(f"{mode}.token_to_slack_p95_ms_{tokens}_tokens: {result['p95_ms']:.0f}")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("bench: interrupted")
