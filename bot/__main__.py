"""Command line: `python -m bot` runs the bot; `python -m bot check` checks settings and APIs;
`python -m bot assistants …` manages the assistants; `python -m bot cleanup` deletes the files and
vector stores older than FILE_RETENTION_DAYS; `python -m bot tools` prints the function tools'
definitions for an assistant."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys

import yaml

from bot import app, cli_assistants
from bot.config import ConfigError, Settings, load_backend_settings, load_settings
from bot.files import clean_up
from bot.store import Store, StoreError, describe_url

SECRET = re.compile(r"\b(xox[abposr]-[\w-]+|xapp-[\w-]+|sk-[\w-]+)")


class RedactSecrets(logging.Filter):
    """Tokens and API keys never reach a log line, whichever library wrote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if SECRET.search(message):
            record.msg = SECRET.sub(lambda m: m.group(0)[:5] + "…redacted", message)
            record.args = None
        return True


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    )
    handler.addFilter(RedactSecrets())
    logging.basicConfig(level=level, handlers=[handler], force=True)


async def check(settings: Settings) -> int:
    """Reach both APIs and print what was found; 0 when everything answers."""
    print(f"engine: {settings.engine}")
    print(f"mode: {'socket' if settings.socket_mode else f'http on port {settings.port}'}")
    print(f"database: {describe_url(settings.database_url)}")
    ok = True
    client = app.make_slack_client(settings)
    assistant = None
    try:
        auth = await client.auth_test()
        print(
            f"slack: ok, team {auth.get('team')} ({auth.get('team_id')}), bot user {auth.get('user_id')}"
        )
    except Exception as exc:
        ok = False
        print(f"slack: FAILED auth.test at {settings.slack_api_url}: {_reason(exc)}")
    finally:
        await app.close_slack_client(client)
    store = await Store.open(settings.database_url)
    backend = app.make_backend(settings, store)
    try:
        await app.load_assistants_file(backend.catalog, settings)
        assistant = await app.check_assistant(backend, settings)
        print(f"assistant: ok, {app.describe(assistant)}")
    except app.StartupError as exc:
        ok = False
        print(f"assistant: FAILED {exc}")
    except Exception as exc:
        ok = False
        print(f"assistant: FAILED {_reason(exc)}")
    finally:
        await backend.close()
        await store.close()
    try:
        tools = app.make_tools(settings, client, "")
        missing = app.missing_tools(assistant, tools) if assistant else []
        lacking = f" (not defined on the assistant: {', '.join(missing)})" if missing else ""
        print(f"tools: {', '.join(tools.names)}{lacking}")
    except app.StartupError as exc:
        ok = False
        print(f"tools: FAILED {exc}")
    return 0 if ok else 1


async def cleanup(settings: Settings) -> int:
    """Delete the backend files and vector stores the bot made more than N days ago."""
    store = await Store.open(settings.database_url)
    backend = app.make_backend(settings, store)
    try:
        stores, files = await clean_up(store, backend.files, settings.file_retention_days)
    except Exception as exc:
        print(f"cleanup: FAILED {_reason(exc)}")
        return 1
    finally:
        await backend.close()
        await store.close()
    print(
        f"cleanup: deleted {stores} vector store(s) and {files} file(s) older than "
        f"{settings.file_retention_days} days"
    )
    return 0


async def print_tools(settings: Settings) -> int:
    """The tools' definitions as YAML, to paste under an assistant in ASSISTANTS_FILE."""
    client = app.make_slack_client(settings)
    try:
        tools = app.make_tools(settings, client, "")
    except app.StartupError as exc:
        print(f"The tools cannot be loaded: {exc}", file=sys.stderr)
        return 1
    finally:
        await app.close_slack_client(client)
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
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run the bot (the default)")
    commands.add_parser("check", help="check the settings and reach both APIs")
    commands.add_parser("cleanup", help="delete files and vector stores past FILE_RETENTION_DAYS")
    cli_assistants.add_parser(commands)
    commands.add_parser("tools", help="print the function tools' definitions for an assistant")
    args = parser.parse_args(argv)
    try:
        if args.command == "assistants":
            backend = load_backend_settings()
            setup_logging(backend.log_level)
            return asyncio.run(cli_assistants.run(args, backend))
        settings = load_settings()
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        what = "This command" if args.command == "assistants" else "The bot"
        print(f"{what} cannot start; fix these settings (environment or .env):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        if args.command == "check":
            return asyncio.run(check(settings))
        if args.command == "cleanup":
            return asyncio.run(cleanup(settings))
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.command == "tools":
        return asyncio.run(print_tools(settings))
    try:
        asyncio.run(app.run_until_stopped(settings))
    except app.StartupError as exc:
        print(f"The bot cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
