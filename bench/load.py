"""Load benchmark: the real bot, as a separate process, under a burst or a steady rate of @mentions.

The Slack and OpenAI emulators from tests/ run in this process; the bot runs as `python -m bot`
in HTTP mode, as a user runs it. Every figure is printed as one `name: value` line.

    python -m bench.load --burst 200 --model-latency 2
    python -m bench.load --burst 1000 --model-latency 2 --engine responses
    python -m bench.load --rate 100 --n 500
    python -m bench.load --database postgresql://postgres@127.0.0.1:5432/test --replicas 2
    python -m bench.load --database postgresql://… --replicas 2 --kill-one-halfway

With --database the bots run on a new PostgreSQL database made on that server for the run (and
dropped after it); with --replicas N, N bots share it and the emulated Slack sends each delivery
to the next one in turn, sending again (to the next) what was not acked, as Slack does.
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

import psycopg
import sqlalchemy as sa

from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator

REPO = Path(__file__).resolve().parents[1]
ANSWER_PREFIX = "You said:"
RESTARTED = "The bot restarted while answering this message"  # the answer was lost, and said so
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
        self.told_lost: set[str] = set()  # threads told their answer was lost to a restart

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
            elif RESTARTED in view.text:
                self.told_lost.add(thread)
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
    database_url: str | None = None,
) -> dict[str, str]:
    """The environment of `python -m bot` (HTTP mode) against the emulators, files in `work`
    (the SQLite database too, unless `database_url` names another)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "TMPDIR": str(work),
        "PYTHONPATH": str(bot_source or REPO),
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": slack.signing_secret,
        "SLACK_API_URL": slack.api_url,
        "OPENAI_API_KEY": openai.api_key,
        "OPENAI_BASE_URL": openai.base_url,
        "DATABASE_URL": database_url or f"sqlite:///{work / 'bot.sqlite3'}",
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


@dataclass
class Replica:
    """One bot process of the run; its CPU and memory as last read (a killed one keeps them)."""

    process: asyncio.subprocess.Process
    url: str
    ticks: int = 0
    peak_rss_mb: float = 0.0

    def read(self) -> int:
        with contextlib.suppress(OSError):  # gone: what was read last stands
            self.ticks = cpu_ticks(self.process.pid)
            self.peak_rss_mb = peak_rss_mb(self.process.pid)
        return self.ticks

    async def kill(self) -> None:
        self.read()
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()


@dataclass
class BenchDatabase:
    """A PostgreSQL database made for one run on the server `--database` names."""

    server: str
    name: str

    @property
    def url(self) -> str:
        return sa.make_url(self.server).set(database=self.name).render_as_string(False)

    async def transactions(self) -> int:
        """Transactions the bots committed or rolled back so far (the server's statistics, which
        each connection reports when idle, and at the latest when it closes)."""
        async with await psycopg.AsyncConnection.connect(self.server, autocommit=True) as admin:
            cursor = await admin.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                (self.name,),
            )
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def table_activity(self) -> str:
        """Per table, rows inserted, updated and deleted, and scans (for --detail)."""
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as connection:
            cursor = await connection.execute(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del,"
                " coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables"
                " WHERE n_tup_ins + n_tup_upd + n_tup_del + coalesce(idx_scan, 0) > 0"
                " ORDER BY n_tup_ins + n_tup_upd + n_tup_del DESC, relname"
            )
            rows = await cursor.fetchall()
        return ", ".join(
            f"{name} ins={ins} upd={upd} del={dele} scans={scans}"
            for name, ins, upd, dele, scans in rows
        )


@contextlib.asynccontextmanager
async def bench_database(server: str | None) -> AsyncIterator[BenchDatabase | None]:
    if not server:
        yield None
        return
    database = BenchDatabase(server, f"bench_load_{os.getpid()}_{int(time.time())}")
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as admin:
        await admin.execute(f"CREATE DATABASE {database.name}")
    try:
        yield database
    finally:
        async with await psycopg.AsyncConnection.connect(server, autocommit=True) as admin:
            await admin.execute(f"DROP DATABASE {database.name} WITH (FORCE)")


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
    try:
        async with bench_database(args.database) as database:
            try:
                measured = await run_bots(args, slack, openai, channels, work, database)
            except Failed as failure:  # the bots' log tails were shown as they stopped
                measured = failure.measured
            figures = measured.figures
            if database:
                # Read once the bots have stopped: a closed connection has reported everything.
                transactions = await settled_transactions(database)
                spent = transactions - measured.transactions_before
                figures["db_transactions_per_answer"] = (
                    f"{spent / max(1, measured.answered):.1f} (commits and rollbacks of every "
                    "replica, from the load's start until they stopped)"
                )
                if args.detail:
                    figures["db_tables"] = await database.table_activity()
        for name, value in figures.items():
            print(f"{name}: {value}")
        return measured.code
    finally:
        await slack.stop()
        await openai.stop()


async def run_bots(
    args: argparse.Namespace,
    slack: MeasuringSlack,
    openai: OpenAIEmulator,
    channels: list[str],
    work: Path,
    database: BenchDatabase | None,
) -> Measured:
    """Start the bots, measure the load on them, stop them (SIGTERM)."""
    env = bot_env(
        slack,
        openai,
        args.engine,
        work,
        args.log_level,
        args.bot_source,
        database.url if database else None,
    )
    env |= dict(pair.split("=", 1) for pair in args.env)
    async with contextlib.AsyncExitStack() as bots:
        replicas = []
        for number in range(1, args.replicas + 1):
            # One at a time: the first creates the tables, the others find them.
            replica_env = env | {"PORT": str(free_port())}
            log_path = args.bot_log or work / "bot.log"
            if args.replicas > 1:
                log_path = log_path.with_name(f"{log_path.stem}.{number}{log_path.suffix}")
            process = await bots.enter_async_context(
                bot_process(replica_env, work, log_path, keep_log=args.bot_log is not None)
            )
            replicas.append(
                Replica(process, f"http://127.0.0.1:{replica_env['PORT']}/slack/events")
            )
        slack.events_urls = [replica.url for replica in replicas]
        slack.redeliveries = 3 if args.replicas > 1 else 0  # as Slack does: several need it
        profiler = None
        if args.profile:
            profiler = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"),
                *("record", "--pid", str(replicas[0].process.pid), "--format", "raw"),
                *("-o", args.profile),
                stdout=asyncio.subprocess.DEVNULL,
            )
        measured = await measure(args, slack, openai, replicas, channels, database)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            await profiler.wait()
        if measured.code != 0:
            raise Failed(measured)
        return measured


async def settled_transactions(database: BenchDatabase) -> int:
    """The transaction count once the stopped bots' connections have all reported theirs."""
    seen = await database.transactions()
    for _ in range(20):
        await asyncio.sleep(0.5)
        now = await database.transactions()
        if now == seen:
            return now
        seen = now
    return seen


class Failed(Exception):
    """The run finished with a failing figure: the bots' log tails are shown."""

    def __init__(self, measured: Measured) -> None:
        super().__init__(measured.code)
        self.measured = measured


@dataclass
class Measured:
    figures: dict[str, str]
    code: int  # 0: every mention answered, once
    answered: int
    transactions_before: int


STATS_FLUSH_SECONDS = 11.0  # PostgreSQL reports an idle connection's statistics within 10 s


async def measure(
    args: argparse.Namespace,
    slack: MeasuringSlack,
    openai: OpenAIEmulator,
    replicas: list[Replica],
    channels: list[str],
    database: BenchDatabase | None,
) -> Measured:
    """Send the load and measure it."""
    n = args.burst or args.n
    window = args.burst_window if args.burst else n / args.rate
    interval = window / n

    def bot_ticks() -> int:
        return sum(replica.read() for replica in replicas)

    await asyncio.sleep(0.5)  # let start-up finish before the idle baseline
    idle_start, idle_ticks = time.monotonic(), bot_ticks()
    # Long enough, with a database, that its statistics hold all of start-up's transactions.
    await asyncio.sleep(max(args.idle_seconds, STATS_FLUSH_SECONDS if database else 0.0))
    idle_rate = (bot_ticks() - idle_ticks) / (time.monotonic() - idle_start)
    transactions_before = await database.transactions() if database else 0

    calls_before, requests_before = len(slack.calls), len(openai.requests)
    ticks_before = bot_ticks()
    own_cpu_before = time.process_time()
    run = Run()
    killed_at: float | None = None

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
        if args.kill_one_halfway and index == n // 2:
            killed_at = time.monotonic()
            await replicas[0].kill()  # its deliveries fail from now on: Slack sends them again
            print(f"bench: killed replica 1 (pid {replicas[0].process.pid})", file=sys.stderr)
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
    ticks = bot_ticks() - ticks_before
    own_cpu = time.process_time() - own_cpu_before
    load_seconds = time.monotonic() - load_start

    answered = [s for s in run.sent if s.ts in slack.answered_at]
    acks = [d.ack_seconds for d in slack.deliveries if d.kind == "events_api" and d.status]
    failed_acks = sum(1 for d in slack.deliveries if d.status != 200)
    sign_of_life = [
        slack.first_call[s.ts] - s.started for s in run.sent if s.ts in slack.first_call
    ]
    added = [slack.answered_at[s.ts] - s.started - args.model_latency for s in answered]
    duplicated = sum(1 for s in run.sent if len(slack.answers.get(s.ts, ())) > 1)
    cpu_ms = (ticks - idle_rate * load_seconds) * 1000 / CLOCK_TICKS
    done = max((slack.answered_at[s.ts] for s in answered), default=load_end)
    count = max(1, len(answered))
    told = {s.ts for s in run.sent if s.ts in slack.told_lost and s.ts not in slack.answered_at}
    silent = sorted(
        s.ts for s in run.sent if s.ts not in slack.answered_at and s.ts not in slack.told_lost
    )

    figures = {
        "mode": f"burst {n} in {window:g} s"
        if args.burst
        else f"rate {args.rate:g} mentions/s ({2 * args.rate:g} events/s), {n} mentions",
        "engine": args.engine,
        "database": f"postgresql (database {database.name}, dropped after the run)"
        if database
        else "sqlite",
        "replicas": str(len(replicas)),
        "model_latency": f"{args.model_latency:g} s",
        "openai_spec_validation": "on" if args.validate_spec else "off (benchmark)",
        "bot_log_level": args.log_level,
        "events_delivered": str(len(slack.deliveries)),
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
        "lost": str(n - len(answered))
        + (
            f" ({len(told)} of them told to send it again: {', '.join(sorted(told)[:5])})"
            if told
            else ""
        )
        + (f"; not answered at all: {', '.join(silent[:5])}" if silent else ""),
        "slack_calls_per_answer": f"{(len(slack.calls) - calls_before) / count:.2f}",
        "openai_calls_per_answer": f"{(len(openai.requests) - requests_before) / count:.2f}",
        "bot_peak_rss": " / ".join(f"{r.peak_rss_mb:.1f} MB" for r in replicas),
        "bot_cpu_per_answer": f"{cpu_ms / count:.1f} ms"
        + (f" (summed over {len(replicas)} replicas)" if len(replicas) > 1 else ""),
        "emulators_cpu_per_answer": f"{own_cpu * 1000 / count:.1f} ms (this process)",
        "emulators_loop_lag_max": ms(max(lags, default=0.0)),
        "all_answered_after": f"{done - first_sent:.2f} s" if len(answered) == n else "never",
    }
    if killed_at is not None:
        figures["killed_after"] = f"{killed_at - first_sent:.2f} s"
        # What the killed replica held (turns it ran, or took without queueing) is answered
        # late, once another replica takes it over: later than the model plus 5 s.
        late = sorted(
            slack.answered_at[s.ts] - killed_at
            for s in answered
            if slack.answered_at[s.ts] - s.started > args.model_latency + 5
        )
        figures["taken_over"] = (
            f"{len(late)} answers, {late[0]:.1f} to {late[-1]:.1f} s after the kill"
            if late
            else "nothing answered late"
        )
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
    code = 0 if len(answered) == n and duplicated == 0 else 1
    return Measured(figures, code, len(answered), transactions_before)


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
    parser.add_argument(
        "--database",
        metavar="URL",
        help="a PostgreSQL server (postgresql://…) on which the run makes its own database "
        "(default: a SQLite file)",
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="bots sharing the database (needs --database)"
    )
    parser.add_argument(
        "--kill-one-halfway",
        action="store_true",
        help="SIGKILL one replica once half the mentions are sent (needs --replicas 2 or more)",
    )
    args = parser.parse_args(argv)
    if args.burst is None and args.rate is None:
        args.burst = 200
    if args.replicas < 1:
        parser.error("--replicas must be 1 or more")
    if args.replicas > 1 and not args.database:
        parser.error("several replicas need PostgreSQL: add --database postgresql://…")
    if args.kill_one_halfway and args.replicas < 2:
        parser.error("--kill-one-halfway needs --replicas 2 or more (one must live on)")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        return asyncio.run(benchmark(parse(argv)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
