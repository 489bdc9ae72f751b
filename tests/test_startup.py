"""A newcomer's first hour: start-up and `check` end in time, say what is wrong in one line, pick
the engine that works, need only what they use, and the shipped example works as it is."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import socket
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest
import yaml

from bot import app
from bot.definitions import load_definitions
from bot.store import describe_url
from bot.store.migrate import latest_revision
from tests.conftest import ALICE, GENERAL, Harness, bot_env, wait_answers
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import SlackEmulator
from tests.fixtures import legacy_sqlite_schema
from tests.test_operations import REPO, process_env, run_bot

# Start-up and `check` end on their own, whatever the network does: each network step gives up
# after 10 s (the lines below say so), and a process still running after this long has hung.
BOUND = 30.0


@asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A server that accepts connections and never answers a byte; yields its base URL."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    """A port where nothing listens (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def timed(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str, float]:
    loop = asyncio.get_running_loop()
    if not args:  # the bot itself: tests start several at once, each on its own SQLite file
        env = env | {"DATABASE_PATH": str(cwd / f"bot-{uuid.uuid4().hex}.sqlite3")}
    began = loop.time()
    code, out, err = await run_bot(*args, env=env, cwd=cwd, timeout=BOUND + 30)
    return code, out, err, loop.time() - began


async def start_process(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        env=process_env(env),
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def read_until(process: asyncio.subprocess.Process, text: str) -> list[str]:
    """The process's stderr lines up to the first one containing `text`."""
    assert process.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(BOUND):
        while not lines or text not in lines[-1]:
            line = await process.stderr.readline()
            assert line, f"the bot ended before logging {text!r}:\n{''.join(lines)}"
            lines.append(line.decode())
    return lines


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str]:
    assert process.stderr is not None
    try:
        rest = await asyncio.wait_for(process.stderr.read(), BOUND)
        return await asyncio.wait_for(process.wait(), BOUND), rest.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def one_line(err: str, starting: str) -> str:
    """The one line of stderr that starts with `starting`; no traceback anywhere."""
    assert "Traceback" not in err, err
    found = [line for line in err.splitlines() if line.startswith(starting)]
    assert len(found) == 1, err
    return found[0]


# --- start-up never hangs ---------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_server_that_never_answers_keeps_neither_check_nor_start_up_busy(
    harness: Harness, tmp_path: Path
) -> None:
    env = bot_env(harness.slack, harness.openai, tmp_path / "db.sqlite3", "http") | harness.env
    async with silent_server() as silent:
        outcomes = await asyncio.gather(
            timed("check", env=env | {"OPENAI_BASE_URL": f"{silent}/v1"}, cwd=tmp_path),
            timed("check", env=env | {"SLACK_API_URL": f"{silent}/api/"}, cwd=tmp_path),
            timed(env=env | {"OPENAI_BASE_URL": f"{silent}/v1"}, cwd=tmp_path),
            timed(env=env | {"SLACK_API_URL": f"{silent}/api/"}, cwd=tmp_path),
        )
    (code, out, _, took), (code2, out2, _, took2), *runs = outcomes
    assert code == 1, (took, out)
    assert ": FAILED OpenAI at 127.0.0.1 did not answer within 10 s" in out
    assert "slack: ok" in out
    assert code2 == 1, (took2, out2)
    assert "slack: FAILED Slack at 127.0.0.1 did not answer within 10 s" in out2
    assert "assistant: ok" in out2
    for (code, _, err, took), service in zip(runs, ("OpenAI", "Slack"), strict=True):
        assert code == 1, (took, err)
        line = one_line(err, "The bot cannot start:")
        assert f"{service} at 127.0.0.1 did not answer within 10 s" in line


@pytest.mark.parametrize("engine", ["assistants"])
@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_during_start_up_ends_the_process_at_once(
    harness: Harness, tmp_path: Path, sent: signal.Signals
) -> None:
    env = bot_env(harness.slack, harness.openai, tmp_path / "db.sqlite3", "http") | harness.env
    async with silent_server() as silent:
        process = await start_process(env | {"OPENAI_BASE_URL": f"{silent}/v1"}, tmp_path)
        # The engine is named, then start-up waits for the assistant from a server that is silent.
        await read_until(process, "event=engine_chosen engine=assistants reason=BOT_ENGINE")
        process.send_signal(sent)
        code, err = await finish(process)
    assert code == 0
    line = one_line(err, "The bot stopped")
    assert line == f"The bot stopped before start-up finished ({sent.name})."
    assert "cannot start" not in err, "stopped by the signal, not by the step's time limit"


# --- every failure at start-up is one plain line ----------------------------------------------


@pytest.mark.parametrize("engine", ["responses"])
async def test_each_network_failure_is_one_line_naming_the_host(
    harness: Harness, tmp_path: Path
) -> None:
    env = bot_env(harness.slack, harness.openai, tmp_path / "db.sqlite3", "http") | harness.env
    refused = closed_port()
    slack_tls = harness.slack.api_url.replace("http://", "https://")
    openai_tls = harness.openai.base_url.replace("http://", "https://")
    tls_host = slack_tls.split("/")[2].split(":")[0]
    cases = [
        ("SLACK_API_URL", f"http://127.0.0.1:{refused}/api/", "slack: FAILED Slack at", (
            f"127.0.0.1:{refused} refused the connection", "Check SLACK_API_URL.")),
        ("SLACK_API_URL", slack_tls, "slack: FAILED Slack at", (
            f"{tls_host}: the TLS handshake failed", "Check SLACK_API_URL.")),
        ("SLACK_API_URL", "http://no-such-host.invalid/api/", "slack: FAILED Slack at", (
            "no-such-host.invalid: the name does not resolve (DNS)", "Check SLACK_API_URL.")),
        ("OPENAI_BASE_URL", f"http://127.0.0.1:{refused}/v1", "assistant: FAILED OpenAI at", (
            f"127.0.0.1:{refused} refused the connection", "Check OPENAI_BASE_URL.")),
        ("OPENAI_BASE_URL", openai_tls, "assistant: FAILED OpenAI at", (
            f"{tls_host}: the TLS handshake failed", "Check OPENAI_BASE_URL.")),
        ("OPENAI_BASE_URL", "http://no-such-host.invalid/v1", "assistant: FAILED OpenAI at", (
            "no-such-host.invalid: the name does not resolve (DNS)", "Check OPENAI_BASE_URL.")),
    ]  # fmt: skip
    outcomes = await asyncio.gather(
        *(timed("check", env=env | {name: url}, cwd=tmp_path) for name, url, _, _ in cases)
    )
    for (code, out, err, took), (_, url, starting, words) in zip(outcomes, cases, strict=True):
        assert code == 1, (url, took, out, err)
        line = one_line(out, starting)
        assert all(word in line for word in words), (url, line)
        assert "Traceback" not in err, err


@pytest.mark.parametrize("engine", ["responses"])
async def test_start_up_stops_with_one_line_when_slack_cannot_be_reached_or_refuses_a_token(
    harness: Harness, tmp_path: Path
) -> None:
    slack = harness.slack
    env = bot_env(slack, harness.openai, tmp_path / "db.sqlite3", "socket") | harness.env
    refused = closed_port()
    wrong_token = {"SLACK_APP_TOKEN": "xapp-1-revoked"}
    slack.socket_mode_url = f"ws://127.0.0.1:{closed_port()}/socket-mode"
    (check_code, check_out, _, _), *runs = await asyncio.gather(
        timed("check", env=env | wrong_token, cwd=tmp_path),
        timed(env=env | wrong_token, cwd=tmp_path),
        timed(env=env | {"SLACK_API_URL": f"http://127.0.0.1:{refused}/api/"}, cwd=tmp_path),
        timed(env=env, cwd=tmp_path),  # apps.connections.open hands out a dead WebSocket URL
    )
    assert check_code == 1
    assert "slack: ok" in check_out, "the bot token is fine"
    assert one_line(check_out, "slack app token: FAILED").startswith(
        "slack app token: FAILED Slack refused SLACK_APP_TOKEN (invalid_auth)"
    )
    expected = [
        "Slack refused SLACK_APP_TOKEN (invalid_auth)",
        f"Slack at 127.0.0.1:{refused} refused the connection",
        "Slack Socket Mode at 127.0.0.1:",
    ]
    for (code, _, err, took), words in zip(runs, expected, strict=True):
        assert code == 1, (took, err)
        assert words in one_line(err, "The bot cannot start:"), err
    dead_socket = one_line(runs[2][2], "The bot cannot start:")
    assert "refused the connection" in dead_socket and "WebSocket" in dead_socket
    assert len(slack.calls_to("apps.connections.open")) >= 3


# --- the engine a newcomer needs --------------------------------------------------------------


async def answer_one_mention(harness: Harness) -> None:
    ts = await harness.slack.mention(ALICE, GENERAL, "hello")
    replies = await wait_answers(harness.slack, GENERAL, ts, 1)
    assert replies[0].text.startswith("You said: hello")


def chosen(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "event=engine_chosen" in r.getMessage()]


@pytest.mark.parametrize("engine", ["assistants"])
async def test_an_asst_id_on_a_server_with_the_assistants_api_gets_the_assistants_engine(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.backend")
    del harness.env["BOT_ENGINE"]
    bot = await harness.start()
    assert bot.backend.engine.name == "assistants"
    assert chosen(caplog) == ["event=engine_chosen engine=assistants reason=assistants_api_served"]
    await answer_one_mention(harness)
    assert len(harness.openai.threads) == 1


@pytest.mark.parametrize("engine", ["responses"])
async def test_an_assistant_named_by_name_gets_the_responses_engine(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.backend")
    del harness.env["BOT_ENGINE"]
    bot = await harness.start()
    assert bot.backend.engine.name == "responses"
    assert chosen(caplog) == ["event=engine_chosen engine=responses reason=assistant_id_not_asst"]
    await answer_one_mention(harness)
    assert len(harness.openai.responses_api.conversations) == 1
    assert harness.openai.threads == {}


@pytest.mark.parametrize("engine", ["responses"])
async def test_an_asst_id_on_a_server_without_the_assistants_api_gets_the_responses_engine(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.backend")
    harness.openai.assistants_retired = True
    del harness.env["BOT_ENGINE"]
    harness.env["ASSISTANT_ID"] = "asst_from_the_old_server"
    with pytest.raises(app.StartupError) as raised:
        await harness.start()
    assert chosen(caplog) == [
        "event=engine_chosen engine=responses reason=assistants_api_not_served"
    ]
    assert str(raised.value).endswith(
        "The Responses engine was chosen (the server does not serve the Assistants API); its "
        "assistants are the bot's own definitions: set ASSISTANT_ID to a name from "
        "ASSISTANTS_FILE."
    )
    harness.env["ASSISTANT_ID"] = "Helper"
    assert (await harness.start()).backend.engine.name == "responses"
    await answer_one_mention(harness)


@pytest.mark.parametrize("engine", ["responses"])
async def test_bot_engine_forces_the_engine(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.backend")
    harness.openai.add_assistant(name="Old", model="gpt-4o", instructions="x")
    await harness.start()  # BOT_ENGINE=responses, though the server serves both APIs
    assert chosen(caplog) == ["event=engine_chosen engine=responses reason=BOT_ENGINE"]


# --- commands need only what they use ---------------------------------------------------------


async def test_the_tools_command_works_offline_without_any_setting(tmp_path: Path) -> None:
    code, out, err = await run_bot("tools", env={}, cwd=tmp_path)
    assert code == 0, err
    names = [t["function"]["name"] for t in yaml.safe_load(out)["tools"]]
    assert names == ["current_time", "read_slack_thread"]


def without_slack_packages(tmp_path: Path) -> str:
    """A PYTHONPATH on which Slack's packages cannot be imported."""
    blocker = tmp_path / "no_slack"
    for package in ("slack_bolt", "slack_sdk"):
        (blocker / package).mkdir(parents=True)
        (blocker / package / "__init__.py").write_text(
            f"raise ImportError('{package} is not installed here')\n"
        )
    return f"{blocker}:{REPO}"


async def test_assistants_and_cleanup_need_only_the_backend_not_slack(
    openai_emu: OpenAIEmulator, tmp_path: Path
) -> None:
    env = {
        "OPENAI_API_KEY": openai_emu.api_key,
        "OPENAI_BASE_URL": openai_emu.base_url,
        "DATABASE_PATH": str(tmp_path / "bot.sqlite3"),
        "PYTHONPATH": without_slack_packages(tmp_path),
    }
    code, _, _ = await run_bot("tools", env=env, cwd=tmp_path)
    assert code != 0, "the blocker keeps Slack's packages out"
    code, out, err = await run_bot("assistants", "list", env=env, cwd=tmp_path)
    assert (code, out, err) == (0, "No assistants.\n", "")
    code, out, err = await run_bot("cleanup", env=env, cwd=tmp_path)
    assert code == 0, err
    assert out == "cleanup: deleted 0 vector store(s) and 0 file(s) older than 30 days\n"


def replace_in(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def files_in(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


@pytest.mark.parametrize("engine", ["responses"])
async def test_check_changes_nothing_and_says_what_start_up_would_do(
    harness: Harness, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    harness.db = data / "bot.sqlite3"
    env = bot_env(harness.slack, harness.openai, harness.db, "http") | harness.env
    code, out, _ = await run_bot("check", env=env, cwd=tmp_path)
    assert code == 0, out
    assert f"database: {harness.db} does not exist yet: start-up creates it" in out
    assert "assistants file: start-up creates Helper" in out
    assert "assistant: ok, Helper (asst_bot_" in out
    assert files_in(data) == {}, "no database file was created"

    await harness.start()
    await harness.stop()
    replace_in(Path(harness.env["ASSISTANTS_FILE"]), "You help.", "You help kindly.")
    before = files_in(data)
    code, out, _ = await run_bot("check", env=env, cwd=tmp_path)
    assert code == 0, out
    assert f"database: {harness.db}, ok" in out
    assert "assistants file: start-up updates Helper" in out
    assert files_in(data) == before, "the database is as it was, with nothing beside it"


async def postgres_contents(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every table of the test's schema, and its rows."""
    async with await psycopg.AsyncConnection.connect(url) as connection:
        names = await connection.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() ORDER BY table_name"
        )
        tables = [str(row[0]) for row in await names.fetchall()]
        return {
            table: await (await connection.execute(f"SELECT * FROM {table}")).fetchall()
            for table in tables
        }


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.parametrize("engine", ["responses"])
async def test_check_on_postgresql_changes_nothing_either(
    harness: Harness, tmp_path: Path, database_url: str
) -> None:
    env = bot_env(harness.slack, harness.openai, database_url, "http") | harness.env
    code, out, _ = await run_bot("check", env=env, cwd=tmp_path)
    assert code == 0, out
    assert (
        "database: postgresql://postgres@" in out
        and "has no tables yet: start-up creates them" in out
    )
    assert "assistants file: start-up creates Helper" in out
    assert await postgres_contents(database_url) == {}, "no table was created"

    await harness.start()
    await harness.stop()
    replace_in(Path(harness.env["ASSISTANTS_FILE"]), "You help.", "You help kindly.")
    before = await postgres_contents(database_url)
    code, out, _ = await run_bot("check", env=env, cwd=tmp_path)
    assert code == 0, out
    assert f"database: {describe_url(database_url)}, ok" in out
    assert "assistants file: start-up updates Helper" in out
    assert await postgres_contents(database_url) == before, "the database is as it was"


async def test_check_says_a_database_needs_migrating_and_leaves_it_be(
    slack: SlackEmulator, openai_emu: OpenAIEmulator, tmp_path: Path
) -> None:
    db = tmp_path / "bot.sqlite3"
    with sqlite3.connect(db) as old:  # made by a bot of before Alembic, one migration behind
        for script in legacy_sqlite_schema.MIGRATIONS[:-1]:
            old.executescript(script)
        old.execute("PRAGMA user_version = 3")
    before = db.read_bytes()
    assistant = openai_emu.add_assistant(name="Helper", model="gpt-4o", instructions="x")
    declared = tmp_path / "assistants.yaml"
    declared.write_text("assistants:\n  - {name: Researcher, model: gpt-4.1}\n")
    env = bot_env(slack, openai_emu, db, "http", ASSISTANT_ID=assistant)
    code, out, _ = await run_bot(
        "check", env=env | {"ASSISTANTS_FILE": str(declared)}, cwd=tmp_path
    )
    assert code == 0, out
    assert "engine: assistants (ASSISTANT_ID is an asst_… id and the server serves" in out
    latest = latest_revision()
    assert f"is at schema revision 0003 of {latest}: start-up migrates it" in out
    assert "assistants file: start-up creates Researcher" in out
    assert db.read_bytes() == before and sorted(files_in(tmp_path)) == [
        "assistants.yaml",
        "bot.sqlite3",
    ]
    assert [a["name"] for a in openai_emu.assistants.values()] == ["Helper"], "none created"


# --- the example works as shipped -------------------------------------------------------------


async def test_the_example_assistant_defines_every_built_in_tool(tmp_path: Path) -> None:
    code, out, _ = await run_bot("tools", env={}, cwd=tmp_path)
    assert code == 0
    [helper] = load_definitions(REPO / "assistants.example.yaml")
    functions = [tool for tool in helper.tools if tool["type"] == "function"]
    assert functions == yaml.safe_load(out)["tools"]


async def test_placeholders_left_in_dotenv_are_refused_saying_what_to_put_there(
    tmp_path: Path,
) -> None:
    shutil.copy(REPO / ".env.example", tmp_path / ".env")
    code, _, err = await run_bot("check", env={}, cwd=tmp_path)
    assert code == 2
    problems = [line.removeprefix("  - ") for line in err.splitlines() if line.startswith("  - ")]
    assert problems == [
        "SLACK_BOT_TOKEN still holds the placeholder 'xoxb-your-bot-token' from .env.example: "
        "set it to the Bot User OAuth Token on your app's OAuth & Permissions page.",
        "SLACK_APP_TOKEN still holds the placeholder 'xapp-your-app-token' from .env.example: "
        "set it to an app-level token with connections:write, from Basic Information > "
        "App-Level Tokens (or leave it empty to run in HTTP mode).",
        "OPENAI_API_KEY still holds the placeholder 'sk-your-key' from .env.example: set it to "
        "an API key from https://platform.openai.com/api-keys.",
        "ASSISTANTS_FILE './assistants.yaml' is not a file: start from the example, "
        "`cp assistants.example.yaml ./assistants.yaml`, or leave ASSISTANTS_FILE empty.",
    ]


def test_local_settings_stay_out_of_git() -> None:
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in ignored and "assistants.yaml" in ignored


async def test_the_shipped_example_starts_without_a_warning(
    slack: SlackEmulator, openai_emu: OpenAIEmulator, tmp_path: Path
) -> None:
    shutil.copy(REPO / "assistants.example.yaml", tmp_path / "assistants.yaml")
    env = bot_env(slack, openai_emu, tmp_path / "bot.sqlite3", "socket") | {
        "ASSISTANT_ID": "Helper",
        "ASSISTANTS_FILE": "./assistants.yaml",
    }
    process = await start_process(env, tmp_path)  # SLACK_BOT_TOKEN is in its environment
    try:
        lines = await read_until(process, "event=started mode=socket")
    finally:
        process.send_signal(signal.SIGTERM)
        code, rest = await finish(process)
    assert code == 0
    logged = "".join(lines) + rest
    assert "event=engine_chosen engine=responses reason=assistant_id_not_asst" in logged
    assert "level=WARNING" not in logged and "level=ERROR" not in logged, logged
    assert "tools_not_on_assistant" not in logged, "the example defines every built-in tool"
