"""Fault benchmark: the real bot, as its own process, while Slack and the backend fail at a rate.

The emulators inject faults as real services produce them (HTTP 500 and 503, rate limits with
Retry-After, connections reset before or after the request was handled, and on the backend
streams that stall), drawn from a seeded generator. Each mention then ends, as a person sees
its thread, in one of: answered (the complete answer), failed plainly (a plain failure message
instead), lost (neither); besides, a thread may show two outcomes (duplicated), a failure that
quotes raw backend or HTTP text, or debris (*Thinking…* left, a stream left open).

    python -m bench.faults                      # 100 mentions, 20% Slack and 20% backend faults
    python -m bench.faults --n 300 --slack-rate 0.1 --backend-rate 0.3 --engine responses
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.load import USER, bot_env, bot_process
from tests.emulators.common import FAULT_KINDS, STALL, Faults
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.outcome import Outcome, outcome
from tests.emulators.slack import SlackEmulator

SLACK_KINDS = tuple(kind for kind in FAULT_KINDS if kind != STALL)  # Slack does not stream SSE


def expected_answer(question: str) -> str:
    return f"You said: {question} (message 1 of this conversation)"


async def benchmark(args: argparse.Namespace) -> int:
    main = asyncio.current_task()
    assert main is not None
    # SIGTERM ends a run as Ctrl-C does: the bot is stopped, the temporary files are removed.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    worst = 0
    for engine in ["assistants", "responses"] if args.engine == "both" else [args.engine]:
        with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
            worst = max(worst, await run(args, engine, Path(tmp)))
    return worst


async def run(args: argparse.Namespace, engine: str, work: Path) -> int:
    slack = SlackEmulator()
    openai = OpenAIEmulator()
    openai.validate_spec = False  # the emulator must not be the bottleneck
    openai.model.latency = args.model_latency
    await slack.start()
    await openai.start()
    channels = [f"C0FAULT{i:03d}" for i in range(args.channels)]
    for channel in channels:
        slack.add_channel(channel, channel.lower())
    env = bot_env(slack, openai, engine, work, args.log_level)
    env["TURN_TIMEOUT_SECONDS"] = f"{args.turn_timeout:g}"
    env |= dict(pair.split("=", 1) for pair in args.env)
    try:
        log_path = args.bot_log or work / "bot.log"
        async with bot_process(env, work, log_path, keep_log=args.bot_log is not None) as bot:
            slack.events_url = f"http://127.0.0.1:{env['PORT']}/slack/events"
            # Faults start once the bot is up: start-up under faults is another benchmark's.
            slack.faults = Faults(seed=args.seed, retry_after=args.slack_retry_after)
            slack.faults.add(args.slack_rate, SLACK_KINDS)
            openai.faults = Faults(seed=args.seed, retry_after=args.backend_retry_after)
            openai.faults.add(args.backend_rate, FAULT_KINDS)
            figures = await measure(args, slack, channels)
            figures["bot_alive"] = (
                "yes" if bot.returncode is None else f"no (exit {bot.returncode})"
            )
            for name, faults in (("slack", slack.faults), ("backend", openai.faults)):
                counts = faults.counts()
                detail = ", ".join(
                    f"{kind} {counts[kind]}" for kind in FAULT_KINDS if kind in counts
                )
                figures[f"{name}_faults_injected"] = f"{len(faults.injected)} ({detail})"
            print(f"engine: {engine}")
            for name, value in figures.items():
                print(f"{name}: {value}")
            print(flush=True)
            return 0 if figures["all_answered_or_failed_plainly"] == "yes" else 1
    finally:
        await slack.stop()
        await openai.stop()


async def measure(
    args: argparse.Namespace, slack: SlackEmulator, channels: list[str]
) -> dict[str, str]:
    questions: dict[str, tuple[str, str]] = {}  # thread ts -> (channel, question)

    async def mention(index: int) -> None:
        channel = channels[index % len(channels)]
        question = f"question {index}"
        ts = await slack.mention(USER, channel, question)
        questions[ts] = (channel, question)

    started = time.monotonic()
    tasks = []
    for index in range(args.n):
        await asyncio.sleep(args.window / args.n)
        tasks.append(asyncio.create_task(mention(index)))
    await asyncio.gather(*tasks)

    def outcomes() -> dict[str, Outcome]:
        return {
            ts: outcome(slack.bot_replies(channel, ts), expected_answer(question))
            for ts, (channel, question) in questions.items()
        }

    with contextlib.suppress(AssertionError):
        await slack.wait_for(lambda: all(o.settled for o in outcomes().values()), args.timeout)
    settled_after = time.monotonic() - started
    await asyncio.sleep(args.settle_seconds)  # let late duplicates show
    seen = list(outcomes().values())
    counts = Counter(
        "answered"
        if o.answers
        else "failed plainly"
        if o.failures > o.raw_failures
        else "failed with raw text"
        if o.failures
        else "lost"
        for o in seen
    )
    duplicated = sum(1 for o in seen if o.answers + o.failures > 1)
    thinking = sum(1 for o in seen if o.thinking)
    open_streams = sum(1 for o in seen if o.open_streams)
    stale = sum(1 for o in seen if o.stale)
    good = counts["answered"] + counts["failed plainly"] == args.n and not duplicated and not stale
    return {
        "mentions": str(args.n),
        "slack_fault_rate": f"{args.slack_rate:.0%}",
        "backend_fault_rate": f"{args.backend_rate:.0%}",
        "seed": str(args.seed),
        "answered": str(counts["answered"]),
        "failed_plainly": str(counts["failed plainly"]),
        "failed_with_raw_text": str(counts["failed with raw text"]),
        "lost": str(counts["lost"]),
        "duplicated": str(duplicated),
        "stale": f"{stale} (Thinking… left {thinking}, stream left open {open_streams})",
        "all_answered_or_failed_plainly": "yes" if good else "no",
        "settled_after": f"{settled_after:.1f} s"
        if all(o.settled for o in seen)
        else f"not within {args.timeout:g} s",
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--n", type=int, default=100, help="mentions to send (default 100)")
    parser.add_argument("--slack-rate", type=float, default=0.2, help="0-1 (default 0.2)")
    parser.add_argument("--backend-rate", type=float, default=0.2, help="0-1 (default 0.2)")
    parser.add_argument("--seed", type=int, default=1, help="faults are drawn from this seed")
    parser.add_argument("--engine", choices=["both", "assistants", "responses"], default="both")
    parser.add_argument("--window", type=float, default=2.0, help="send them within (s)")
    parser.add_argument("--channels", type=int, default=20, help="spread mentions over these")
    parser.add_argument("--model-latency", type=float, default=0.5, help="seconds (default 0.5)")
    parser.add_argument(
        "--turn-timeout",
        type=float,
        default=30.0,
        help="the bot's TURN_TIMEOUT_SECONDS (default 30)",
    )
    parser.add_argument("--slack-retry-after", type=float, default=1.0, help="seconds")
    parser.add_argument("--backend-retry-after", type=float, default=0.5, help="seconds")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait to settle")
    parser.add_argument("--settle-seconds", type=float, default=2.0)
    parser.add_argument("--log-level", default="INFO", help="the bot's LOG_LEVEL (default INFO)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the bot")
    parser.add_argument("--bot-log", type=Path, help="keep the bot's log in this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        return asyncio.run(benchmark(parse(argv)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
