"""Command line: `python -m bot` runs the bot; `python -m bot check` checks settings and APIs;
`python -m bot tools` prints the function tools' definitions for an assistant."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys

import yaml

from bot import app
from bot.config import ConfigError, Settings, load_settings
from bot.store import Store

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
    print(f"database: {settings.database_path}")
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
    store = await Store.open(settings.database_path)
    engine = app.make_engine(settings, store)
    try:
        await app.load_assistants_file(engine, settings)
        assistant = await app.check_assistant(engine, settings)
        print(f"assistant: ok, {app.describe(assistant)}")
    except app.StartupError as exc:
        ok = False
        print(f"assistant: FAILED {exc}")
    except Exception as exc:
        ok = False
        print(f"assistant: FAILED {_reason(exc)}")
    finally:
        await engine.close()
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


def print_tools(settings: Settings) -> int:
    """The tools' definitions as YAML, to paste under an assistant in ASSISTANTS_FILE."""
    try:
        tools = app.make_tools(settings, app.make_slack_client(settings), "")
    except app.StartupError as exc:
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
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "check", "tools"])
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print("The bot cannot start; fix these settings (environment or .env):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    if args.command == "check":
        return asyncio.run(check(settings))
    if args.command == "tools":
        return print_tools(settings)
    try:
        asyncio.run(app.run_until_stopped(settings))
    except app.StartupError as exc:
        print(f"The bot cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
