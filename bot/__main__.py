"""Command line: `python -m bot` runs the bot; `python -m bot worker` answers the turns other
replicas take (PostgreSQL), without listening to Slack; `python -m bot check` checks settings and
APIs; `python -m bot assistants …` manages the assistants; `python -m bot cleanup` deletes the files and
vector stores older than FILE_RETENTION_DAYS; `python -m bot tools` prints the function tools'
definitions for an assistant."""

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
    load_backend_settings,
    load_settings,
    load_tool_settings,
)
from bot.logs import setup_logging

# The commands import what they use when they run (`assistants` and `cleanup` never load Slack's
# packages), and a signal meanwhile already stops the process with one line.


async def cleanup(settings: BackendSettings) -> int:
    """Delete the backend files and vector stores the bot made more than N days ago."""
    from bot.backend import open_backend
    from bot.config import OPENAI_DEFAULT_BASE_URL
    from bot.engine.base import EngineError
    from bot.file_ingest import clean_up
    from bot.startup import StartupError, network_problem
    from bot.store import Store, StoreError

    try:
        store = await Store.open(settings.database_url)
    except StoreError as exc:
        print(f"cleanup: FAILED {exc}")
        return 1
    try:
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
    args = parser.parse_args(argv)
    try:
        if args.command == "tools":
            return print_tools()
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
