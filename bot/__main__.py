"""Command line: `python -m bot` runs the bot; `python -m bot worker` answers the turns other
replicas take (PostgreSQL), without listening to Slack; `python -m bot check` checks settings and
APIs; `python -m bot assistants …` manages the assistants; `python -m bot cleanup` deletes the
files and vector stores older than FILE_RETENTION_DAYS (and texts past TEXT_RETENTION_DAYS);
`python -m bot tools` prints the function tools' definitions for an assistant; `python -m bot
usage` prints the tokens used and their cost; `python -m bot forget CHANNEL THREAD_TS` forgets a
thread's conversation; `python -m bot audit` prints the admin actions."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from types import FrameType

from bot import definitions_cli
from bot.config import (
    BackendSettings,
    ConfigError,
    Settings,
    load_backend_settings,
    load_database_url,
    load_settings,
    load_tool_settings,
    load_usage_settings,
)
from bot.governance import usage_cli
from bot.logs import setup_logging

# The commands import what they use when they run (`assistants` and `cleanup` never load Slack's
# packages), and a signal meanwhile already stops the process with one line.


async def cleanup(settings: BackendSettings) -> int:
    """Delete the backend files and vector stores the bot made more than N days ago."""
    from bot.backend import open_backend
    from bot.config import OPENAI_DEFAULT_BASE_URL
    from bot.engine.base import EngineError
    from bot.file_ingest import clean_up
    from bot.governance.forget import erase_old_texts
    from bot.startup import StartupError, network_problem
    from bot.store import Store, StoreError

    try:
        store = await Store.open(settings.database_url)
    except StoreError as exc:
        print(f"cleanup: FAILED {exc}")
        return 1
    try:
        if settings.text_retention_days is not None:
            erased = await erase_old_texts(store, settings.text_retention_days)
            print(
                f"cleanup: erased the texts of {erased} message(s) older than "
                f"{settings.text_retention_days} days"
            )
        backend, _ = await open_backend(settings, store)
        try:
            stores, files = await clean_up(store, backend.files, settings.file_retention_days)
        finally:
            await backend.close()
    except (EngineError, StartupError) as exc:
        problem = network_problem(exc, settings.openai_base_url or OPENAI_DEFAULT_BASE_URL)
        print(f"cleanup: FAILED {f'OpenAI at {problem}' if problem else exc}")
        return 1
    finally:
        await store.close()
    print(
        f"cleanup: deleted {stores} vector store(s) and {files} file(s) older than "
        f"{settings.file_retention_days} days"
    )
    return 0


async def forget_thread(settings: Settings, channel: str, thread_ts: str, yes: bool) -> int:
    """Forget a thread's conversation, after asking (unless --yes); the thread is told."""
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.backend import open_backend
    from bot.engine.base import EngineError
    from bot.governance.audit import CLI, AuditLog
    from bot.governance.forget import Forgetting
    from bot.slack import words
    from bot.startup import StartupError
    from bot.store import Store, StoreError

    try:
        store = await Store.open(settings.database_url)
    except StoreError as exc:
        print(f"forget: FAILED {exc}", file=sys.stderr)
        return 1
    try:
        keys = await store.threads_named(channel, thread_ts)
        if not keys:
            print(
                f"forget: the bot has no conversation in {channel} at {thread_ts}", file=sys.stderr
            )
            return 1
        if not yes:
            question = (
                f"Forget the conversation of thread {thread_ts} in {channel} (the backend's "
                "conversation, its files and stored texts)? [y/N] "
            )
            answer = await asyncio.to_thread(input, question)
            if answer.strip().lower() not in ("y", "yes"):
                print("forget: nothing was changed")
                return 1
        backend, _ = await open_backend(settings.backend, store)
        try:
            forgetting = Forgetting(store, backend.engine, backend.files, AuditLog(store))
            for key in keys:
                if await forgetting.busy(key):
                    print("forget: an answer is still being written there; try again once done")
                    return 1
                forgotten = await forgetting.forget(key, CLI)
                print(
                    f"forget: done ({forgotten.files} file(s), "
                    f"{'a' if forgotten.vector_store else 'no'} vector store, "
                    f"{forgotten.turns} message text(s) erased)"
                )
        finally:
            await backend.close()
    except (EngineError, StartupError) as exc:
        print(f"forget: FAILED {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
    try:
        await client.chat_postMessage(
            channel=channel, thread_ts=thread_ts, text=words.FORGOTTEN_BY_OPERATOR
        )
    except SlackApiError as exc:
        print(f"forget: the thread could not be told ({_reason(exc)})", file=sys.stderr)
    finally:
        if client.session is not None:
            await client.session.close()
    return 0


async def print_audit(database_url: str, since: str) -> int:
    from bot.governance.audit import AuditLog, format_entry, parse_period
    from bot.store import Store, StoreError

    try:
        seconds = parse_period(since)
    except ValueError as exc:
        print(f"audit: --since {exc}", file=sys.stderr)
        return 2
    try:
        store = await Store.open(database_url)
    except StoreError as exc:
        print(f"audit: FAILED {exc}", file=sys.stderr)
        return 1
    try:
        entries = await AuditLog(store).since(seconds)
    finally:
        await store.close()
    for entry in entries:
        print(format_entry(entry))
    if not entries:
        print(f"audit: nothing recorded in the last {since}")
    return 0


def print_tools() -> int:
    """The tools' definitions as YAML, to paste under an assistant in ASSISTANTS_FILE.

    Needs no setting but TOOLS_MODULE (when there is one) and no network."""
    import yaml
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.app import make_tools
    from bot.startup import StartupError

    try:
        tools = make_tools(load_tool_settings(), AsyncWebClient(), "")  # definitions only
    except StartupError as exc:
        print(f"The tools cannot be loaded: {exc}", file=sys.stderr)
        return 1
    print("# The model calls only the functions its assistant defines: paste these under the")
    print(
        "# assistant's `tools:` in ASSISTANTS_FILE (or add them on the platform's Assistants page)."
    )
    print(
        yaml.safe_dump({"tools": tools.definitions()}, sort_keys=False, allow_unicode=True), end=""
    )
    return 0


def _reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) or hasattr(response, "get"):
        error = response.get("error") if response is not None else None
        if error:
            return str(error)
    return f"{type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    # Until the bot's event loop listens for it, SIGTERM stops the process like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("Stopped.", file=sys.stderr)
        return 130


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run the bot (the default)")
    commands.add_parser(
        "worker", help="answer turns only, taking no Slack events (PostgreSQL, beside replicas)"
    )
    commands.add_parser("check", help="check the settings and reach both APIs (changes nothing)")
    commands.add_parser("cleanup", help="delete files and vector stores past FILE_RETENTION_DAYS")
    definitions_cli.add_parser(commands)
    commands.add_parser("tools", help="print the function tools' definitions for an assistant")
    usage_cli.add_parser(commands)
    forget = commands.add_parser(
        "forget", help="forget a thread's conversation (backend, files, stored texts)"
    )
    forget.add_argument("channel", metavar="CHANNEL", help="the channel's id, e.g. C0123ABCD")
    forget.add_argument(
        "thread_ts", metavar="THREAD_TS", help="the thread's ts, e.g. 1712345678.000100"
    )
    forget.add_argument("--yes", action="store_true", help="do not ask to confirm")
    audit = commands.add_parser("audit", help="print the admin actions the bot recorded")
    audit.add_argument("--since", default="7d", help="how far back: 30m, 12h, 7d (default), 2w")
    args = parser.parse_args(argv)
    try:
        if args.command == "tools":
            return print_tools()
        if args.command == "usage":
            return asyncio.run(usage_cli.run(args, load_usage_settings()))
        if args.command == "audit":
            url = load_database_url()
            return asyncio.run(print_audit(url, args.since))
        if args.command in ("assistants", "cleanup"):
            backend = load_backend_settings()
            setup_logging(backend.log_level, backend.log_format)
            if args.command == "cleanup":
                return asyncio.run(cleanup(backend))
            return asyncio.run(definitions_cli.run(args, backend))
        settings = load_settings(listening=args.command != "worker")
    except ConfigError as exc:
        what = "The bot" if args.command in (None, "run", "check", "worker") else "This command"
        print(f"{what} cannot start; fix these settings (environment or .env):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    if args.command == "check":
        from bot.check import check

        return asyncio.run(check(settings))
    if args.command == "forget":
        return asyncio.run(forget_thread(settings, args.channel, args.thread_ts, args.yes))
    from bot.app import run_until_stopped
    from bot.startup import Interrupted, StartupError

    try:
        asyncio.run(run_until_stopped(settings, listen=args.command != "worker"))
    except StartupError as exc:
        print(f"The bot cannot start: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"The bot stopped before start-up finished ({exc.signal_name}).", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
