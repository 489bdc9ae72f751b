"""Load benchmark: the real bot, as a separate process, under a burst or a steady rate of @mentions.

The Slack and OpenAI emulators from tests/ run in this process; the bot runs as `python -m bot`
in HTTP mode, as a user runs it. Every figure is printed as one `name: value` line.

    python -m bench.load --burst 200 --model-latency 2
    python -m bench.load --burst 1000 --model-latency 2 --engine responses
    python -m bench.load --rate 100 --n 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator

REPO = Path(__file__).resolve().parents[1]
ANSWER_PREFIX = "You said:"
USER = "U0ALICE"
DEFINITIONS = """
assistants:
  - name: Helper
    model: gpt-4o
    instructions: You help.
"""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class MeasuringSlack(SlackEmulator):
    """The Slack emulator, noting when each thread first hears from the bot and gets its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.first_call: dict[str, float] = {}  # thread ts -> monotonic time
        self.answered_at: dict[str, float] = {}
        self.answers: dict[str, set[str]] = {}  # thread ts -> ts of bot messages holding an answer

    def _api_response(
        self,
        method: str,
        args: dict[str, Any],
        payload: dict[str, Any],
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Any:
        response = super()._api_response(method, args, payload, status, headers)
        now = time.monotonic()
        channel = str(args.get("channel") or "")
        ts = str(payload.get("ts") or args.get("ts") or "")
        msg = self._messages[channel].get(ts) if channel and ts else None
        thread = str(args.get("thread_ts") or (msg.thread_ts if msg else "") or "")
        if thread:
            self.first_call.setdefault(thread, now)
        if msg is not None and thread and not msg.streaming:
            view = self._view(msg)
            if view.text.startswith(ANSWER_PREFIX):
                self.answers.setdefault(thread, set()).add(msg.ts)
                self.answered_at.setdefault(thread, now)
        return response


@dataclass
class Sent:
    started: float
    ts: str = ""


@dataclass
class Run:
    sent: list[Sent] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def wait_port(port: int, process: asyncio.subprocess.Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"the bot exited with {process.returncode} before listening")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"the bot did not listen on port {port} within {timeout} s")


async def benchmark(args: argparse.Namespace) -> int:
    # Everything the run writes (the bot's database, its definitions, its log unless --bot-log)
    # lives here and goes away when the run ends, however it ends.
    main = asyncio.current_task()
    assert main is not None
    # SIGTERM ends a run as Ctrl-C does: the bot is stopped, the temporary files are removed.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        return await run(args, Path(tmp))


def bot_env(
    slack: SlackEmulator,
    openai: OpenAIEmulator,
    engine: str,
    work: Path,
    log_level: str,
    bot_source: Path | None = None,
) -> dict[str, str]:
    """The environment of `python -m bot` (HTTP mode) against the emulators, files in `work`."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "TMPDIR": str(work),
        "PYTHONPATH": str(bot_source or REPO),
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": slack.signing_secret,
        "SLACK_API_URL": slack.api_url,
        "OPENAI_API_KEY": openai.api_key,
        "OPENAI_BASE_URL": openai.base_url,
        "DATABASE_PATH": str(work / "bot.sqlite3"),
        "PORT": str(free_port()),
        "LOG_LEVEL": log_level,
        "BOT_ENGINE": engine,
    }
    if engine == "assistants":
        env["ASSISTANT_ID"] = openai.add_assistant(name="Helper", instructions="You help.")
    else:
        (work / "assistants.yaml").write_text(DEFINITIONS)
        env |= {"ASSISTANT_ID": "Helper", "ASSISTANTS_FILE": str(work / "assistants.yaml")}
    return env


@contextlib.asynccontextmanager
async def bot_process(
    env: dict[str, str], work: Path, log_path: Path, keep_log: bool
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The bot running as its own process, listening; stopped (SIGTERM, then SIGKILL) at the end.

    When the block fails and the log is not kept, its last lines are printed.
    """
    log = log_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", env=env, cwd=work, stdout=log, stderr=log
    )
    failed = True
    try:
        await wait_port(int(env["PORT"]), process, 30)
        print(f"bench: the bot is up (pid {process.pid})", file=sys.stderr, flush=True)
        yield process
        failed = False
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()
        if failed and not keep_log:
            print(
                "bench: the bot's last log lines:", *log_tail(log_path), sep="\n", file=sys.stderr
            )


def log_tail(path: Path, lines: int = 20) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:]


async def run(args: argparse.Namespace, work: Path) -> int:
    slack = MeasuringSlack()
    openai = OpenAIEmulator()
    openai.validate_spec = args.validate_spec
    openai.model.latency = args.model_latency
    await slack.start()
    await openai.start()
    channels = [f"C0LOAD{i:03d}" for i in range(args.channels)]
    for channel in channels:
        slack.add_channel(channel, channel.lower())
    env = bot_env(slack, openai, args.engine, work, args.log_level, args.bot_source)
    env |= dict(pair.split("=", 1) for pair in args.env)
    try:
        log_path = args.bot_log or work / "bot.log"
        async with bot_process(env, work, log_path, keep_log=args.bot_log is not None) as process:
            profiler = None
            if args.profile:
                profiler = await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).parent / "py-spy"),
                    *("record", "--pid", str(process.pid), "--format", "raw", "-o", args.profile),
                    stdout=asyncio.subprocess.DEVNULL,
                )
            slack.events_url = f"http://127.0.0.1:{env['PORT']}/slack/events"
            result = await measure(args, slack, openai, process.pid, channels)
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                await profiler.wait()
            if result != 0:
                raise Failed(result)
            return result
    except Failed as failure:
        return failure.code
    finally:
        await slack.stop()
        await openai.stop()


class Failed(Exception):
    """The run finished with a failing figure: the bot's log tail is shown."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


async def measure(
    args: argparse.Namespace,
    slack: MeasuringSlack,
    openai: OpenAIEmulator,
    pid: int,
    channels: list[str],
) -> int:
    n = args.burst or args.n
    window = args.burst_window if args.burst else n / args.rate
    interval = window / n

    await asyncio.sleep(0.5)  # let start-up finish before the idle baseline
    idle_start, idle_ticks = time.monotonic(), cpu_ticks(pid)
    await asyncio.sleep(args.idle_seconds)
    idle_rate = (cpu_ticks(pid) - idle_ticks) / (time.monotonic() - idle_start)

    calls_before, requests_before = len(slack.calls), len(openai.requests)
    ticks_before = cpu_ticks(pid)
    own_cpu_before = time.process_time()
    run = Run()

    async def mention(index: int) -> None:
        sent = Sent(time.monotonic())
        run.sent.append(sent)
        channel = channels[index % len(channels)]
        sent.ts = await slack.mention(USER, channel, f"question {index}")

    lags: list[float] = []

    async def watch_own_loop() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - before - 0.005)

    watcher = asyncio.create_task(watch_own_loop())
    load_start = time.monotonic()
    tasks = []
    for index in range(n):
        delay = load_start + index * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(mention(index)))
    await asyncio.gather(*tasks)
    first_sent = min(s.started for s in run.sent)
    threads = {s.ts for s in run.sent}
    with contextlib.suppress(AssertionError):
        await slack.wait_for(lambda: threads <= slack.answered_at.keys(), args.timeout)
    load_end = time.monotonic()
    watcher.cancel()
    # Let duplicates (if any) show up and the bot settle before the last CPU reading.
    await asyncio.sleep(args.settle_seconds)
    ticks = cpu_ticks(pid) - ticks_before
    own_cpu = time.process_time() - own_cpu_before
    load_seconds = time.monotonic() - load_start
    rss = peak_rss_mb(pid)

    answered = [s for s in run.sent if s.ts in slack.answered_at]
    acks = [d.ack_seconds for d in slack.deliveries if d.kind == "events_api"]
    failed_acks = sum(1 for d in slack.deliveries if d.status != 200)
    sign_of_life = [
        slack.first_call[s.ts] - s.started for s in run.sent if s.ts in slack.first_call
    ]
    added = [slack.answered_at[s.ts] - s.started - args.model_latency for s in answered]
    duplicated = sum(1 for s in run.sent if len(slack.answers.get(s.ts, ())) > 1)
    cpu_ms = (ticks - idle_rate * load_seconds) * 1000 / CLOCK_TICKS
    done = max((slack.answered_at[s.ts] for s in answered), default=load_end)
    count = max(1, len(answered))

    figures = {
        "mode": f"burst {n} in {window:g} s"
        if args.burst
        else f"rate {args.rate:g} mentions/s ({2 * args.rate:g} events/s), {n} mentions",
        "engine": args.engine,
        "model_latency": f"{args.model_latency:g} s",
        "openai_spec_validation": "on" if args.validate_spec else "off (benchmark)",
        "bot_log_level": args.log_level,
        "events_delivered": str(len(acks)),
        "events_not_acked_200": str(failed_acks),
        "ack_p50": ms(percentile(acks, 50)),
        "ack_p95": ms(percentile(acks, 95)),
        "ack_p99": ms(percentile(acks, 99)),
        "ack_max": ms(max(acks, default=float("nan"))),
        "first_sign_of_life_p50": ms(percentile(sign_of_life, 50)),
        "first_sign_of_life_p95": ms(percentile(sign_of_life, 95)),
        "bot_added_p50": ms(percentile(added, 50)),
        "bot_added_p95": ms(percentile(added, 95)),
        "bot_added_p99": ms(percentile(added, 99)),
        "answered": f"{len(answered)}/{n}",
        "duplicated": str(duplicated),
        "lost": str(n - len(answered)),
        "slack_calls_per_answer": f"{(len(slack.calls) - calls_before) / count:.2f}",
        "openai_calls_per_answer": f"{(len(openai.requests) - requests_before) / count:.2f}",
        "bot_peak_rss": f"{rss:.1f} MB",
        "bot_cpu_per_answer": f"{cpu_ms / count:.1f} ms",
        "emulators_cpu_per_answer": f"{own_cpu * 1000 / count:.1f} ms (this process)",
        "emulators_loop_lag_max": ms(max(lags, default=0.0)),
        "all_answered_after": f"{done - first_sent:.2f} s" if len(answered) == n else "never",
    }
    if args.bot_log:
        figures["bot_log"] = str(args.bot_log)
    if args.detail:
        slack_methods = Counter(c.method for c in slack.calls[calls_before:])
        paths = Counter(
            f"{r.method} {re.sub(r'/[a-z]+_[0-9a-f]{8,}', '/{id}', r.path)}"
            for r in openai.requests[requests_before:]
        )
        figures["slack_calls"] = ", ".join(f"{k}={v}" for k, v in slack_methods.most_common())
        figures["openai_calls"] = ", ".join(f"{k}={v}" for k, v in paths.most_common())
    for name, value in figures.items():
        print(f"{name}: {value}")
    return 0 if len(answered) == n and duplicated == 0 else 1


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--burst", type=int, help="send this many mentions within --burst-window")
    load.add_argument("--rate", type=float, help="mentions per second (steady load, with --n)")
    parser.add_argument("--n", type=int, default=500, help="mentions to send at --rate")
    parser.add_argument("--burst-window", type=float, default=2.0, help="seconds (default 2)")
    parser.add_argument("--model-latency", type=float, default=2.0, help="seconds (default 2)")
    parser.add_argument("--engine", choices=["assistants", "responses"], default="assistants")
    parser.add_argument("--channels", type=int, default=20, help="spread mentions over these")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for answers")
    parser.add_argument("--log-level", default="INFO", help="the bot's LOG_LEVEL (default INFO)")
    parser.add_argument("--idle-seconds", type=float, default=1.0, help="idle CPU baseline")
    parser.add_argument("--settle-seconds", type=float, default=0.5)
    parser.add_argument(
        "--validate-spec",
        action="store_true",
        help="check OpenAI traffic against the spec (costs the emulator much CPU)",
    )
    parser.add_argument("--detail", action="store_true", help="also count calls by method")
    parser.add_argument(
        "--bot-source", type=Path, help="run the bot from this checkout (to compare versions)"
    )
    parser.add_argument("--profile", help="py-spy the bot into this file (collapsed stacks)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the bot")
    parser.add_argument("--bot-log", type=Path, help="keep the bot's log in this file")
    args = parser.parse_args(argv)
    if args.burst is None and args.rate is None:
        args.burst = 200
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        return asyncio.run(benchmark(parse(argv)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
