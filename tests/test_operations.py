"""What an operator sees: settings, start-up checks, `check`, signatures, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from bot import app
from tests.conftest import ALICE, BOTH_DATABASES, GENERAL, Harness, bot_env, wait_answers

REPO = Path(__file__).resolve().parents[1]


def process_env(env: dict[str, str]) -> dict[str, str]:
    """Only the given settings, plus what finds Python and this checkout's `bot` package."""
    return {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), **env}


async def run_bot(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 30
) -> tuple[int, str, str]:
    """Run `python -m bot ARGS` as an operator would; the emulators keep serving meanwhile."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        env=process_env(env),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode or 0, out.decode(), err.decode()


async def test_missing_and_malformed_settings_stop_start_up_with_one_line_each(
    tmp_path: Path,
) -> None:
    code, _, err = await run_bot(
        env={"SLACK_BOT_TOKEN": "xoxp-user-token", "PORT": "eighty", "BOT_ENGINE": "magic"},
        cwd=tmp_path,
    )
    assert code == 2
    assert "Traceback" not in err
    problems = [line for line in err.splitlines() if line.startswith("  - ")]
    assert any(line.startswith("  - SLACK_BOT_TOKEN must start with 'xoxb-'") for line in problems)
    assert any("SLACK_SIGNING_SECRET is required in HTTP mode" in line for line in problems)
    assert any(line.startswith("  - OPENAI_API_KEY is missing") for line in problems)
    assert any(line.startswith("  - PORT must be a whole number") for line in problems)
    assert any(
        line.startswith("  - BOT_ENGINE must be one of assistants, responses") for line in problems
    )
    assert "xoxp-user-token" not in err, "a secret is never echoed back"


SETTINGS_WITHOUT_DATABASE = {
    "SLACK_BOT_TOKEN": "xoxb-1",
    "SLACK_SIGNING_SECRET": "s",
    "OPENAI_API_KEY": "sk-1",
    "ASSISTANT_ID": "asst_1",
}


@pytest.mark.parametrize(
    ("database_url", "code", "words"),
    [
        ("postgres:/nowhere", 2, "  - DATABASE_URL is not a database URL"),
        ("mysql://bot:secret@db/bot", 2, "  - DATABASE_URL mysql://… is not supported: use "),
        (
            "postgresql://bot:secret@127.0.0.1:1/bot",
            1,
            "The bot cannot start: The database postgresql://bot:***@127.0.0.1:1/bot cannot be"
            ' used: connection to server at "127.0.0.1", port 1 failed: Connection refused',
        ),
        (
            "sqlite:///newer.sqlite3",
            1,
            "The bot cannot start: The database newer.sqlite3 has schema version 9 "
            "(PRAGMA user_version), newer than this bot knows",
        ),
    ],
    ids=["malformed", "unsupported", "refused", "newer-schema"],
)
async def test_a_database_the_bot_cannot_use_stops_start_up_with_one_line(
    tmp_path: Path, database_url: str, code: int, words: str
) -> None:
    newer = sqlite3.connect(tmp_path / "newer.sqlite3")
    newer.execute("PRAGMA user_version = 9")  # written by some later version of the bot
    newer.close()
    env = SETTINGS_WITHOUT_DATABASE | {"DATABASE_URL": database_url}
    exit_code, _, err = await run_bot(env=env, cwd=tmp_path)
    assert exit_code == code, err
    assert "Traceback" not in err
    assert any(line.startswith(words) for line in err.splitlines()), err
    assert "secret" not in err


async def test_settings_come_from_a_dotenv_file_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SLACK_BOT_TOKEN=xoxb-from-dotenv\nOPENAI_API_KEY=sk-x\n")
    code, _, err = await run_bot(env={}, cwd=tmp_path)
    assert code == 2
    assert "SLACK_BOT_TOKEN" not in err and "OPENAI_API_KEY" not in err
    assert "ASSISTANT_ID is required" in err


async def test_check_reports_what_it_found_on_both_apis(
    harness: Harness, engine: str, tmp_path: Path
) -> None:
    env = bot_env(harness.slack, harness.openai, tmp_path / "db.sqlite3", "http")
    code, out, _ = await run_bot("check", env=env | harness.env, cwd=tmp_path)
    assert code == 0, out
    assert f"engine: {engine}" in out
    assert "slack: ok, team" in out and "bot user U0BOT" in out
    assert "assistant: ok, Helper (asst_" in out


async def test_check_fails_clearly_for_an_unknown_assistant(
    harness: Harness, tmp_path: Path
) -> None:
    env = bot_env(harness.slack, harness.openai, tmp_path / "db.sqlite3", "http")
    code, out, _ = await run_bot("check", env=env | {"ASSISTANT_ID": "asst_nope"}, cwd=tmp_path)
    assert code == 1
    assert "assistant: FAILED ASSISTANT_ID asst_nope was not found" in out


@pytest.mark.parametrize("engine", ["assistants"])
async def test_start_up_explains_the_assistants_api_retirement(harness: Harness) -> None:
    harness.openai.assistants_retired = True
    with pytest.raises(app.StartupError) as raised:
        await harness.start()
    message = str(raised.value)
    assert "retired its Assistants API on 2026-08-26" in message
    assert "BOT_ENGINE=responses" in message


async def test_a_forged_signature_gets_401_and_no_answer(bot: Harness) -> None:
    slack = bot.slack
    event = slack.message_event(ALICE, GENERAL, f"<@{slack.bot_user_id}> hi") | {
        "type": "app_mention"
    }
    body = slack.envelope(event)
    status, _ = await slack.send_raw(
        body,
        {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": str(int(asyncio.get_running_loop().time())),
            "X-Slack-Signature": "v0=" + "0" * 64,
        },
    )
    assert status == 401
    await bot.drain_idle()
    assert bot.openai.model.turns == []
    assert slack.calls_to("chat.postMessage") == []


@pytest.mark.parametrize("database", BOTH_DATABASES, indirect=True)
async def test_sigterm_lets_the_answer_in_progress_finish(harness: Harness, tmp_path: Path) -> None:
    slack, openai = harness.slack, harness.openai
    openai.model.gate = asyncio.Event()
    env = bot_env(slack, openai, harness.db, "socket") | harness.env
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        env=process_env(env),
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await slack.wait_socket_connected(timeout=20)
        ts = await slack.mention(ALICE, GENERAL, "finish this please")
        await slack.wait_for(lambda: len(openai.model.turns) == 1)
        process.send_signal(signal.SIGTERM)
        openai.model.gate.set()
        replies = await wait_answers(slack, GENERAL, ts, 1)
        assert replies[0].text.startswith("You said: finish this please")
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_restart_answers_what_was_waiting_and_explains_what_was_cut_off(
    harness: Harness,
) -> None:
    """SQLite (one process): on PostgreSQL the turns wait in the job queue for any replica
    (tests/test_replicas.py)."""
    slack, openai = harness.slack, harness.openai
    openai.model.gate = asyncio.Event()
    await harness.start(SHUTDOWN_GRACE_SECONDS="0.2")
    ts = await slack.mention(ALICE, GENERAL, "one")
    await slack.post(ALICE, GENERAL, "two", thread_ts=ts)
    await slack.post(ALICE, GENERAL, "three", thread_ts=ts)
    await slack.wait_for(lambda: len(slack.bot_replies(GENERAL, ts)) == 3)
    await harness.stop()
    shown = [m.text for m in slack.bot_replies(GENERAL, ts)]
    assert "restarted while answering this message" in shown[0]
    assert all("will answer this message when it is back" in text for text in shown[1:])

    openai.model.gate.set()
    await harness.start()
    await slack.wait_for(
        lambda: sum(m.text.startswith("You said") for m in slack.bot_replies(GENERAL, ts)) == 2
    )
    answered = [m.text for m in slack.bot_replies(GENERAL, ts) if m.text.startswith("You said")]
    assert answered[0].startswith("You said: two") and answered[1].startswith("You said: three")


@pytest.mark.parametrize("engine", ["responses"])
async def test_start_up_names_an_assistant_whose_model_the_backend_lacks(
    harness: Harness,
) -> None:
    harness.openai.models.discard("gpt-4o")
    with pytest.raises(app.StartupError) as raised:
        await harness.start()
    assert "Assistant 'Helper' cannot run" in str(raised.value)
    assert "the model 'gpt-4o' is not available" in str(raised.value)


async def test_start_up_says_when_the_openai_key_is_refused(harness: Harness) -> None:
    harness.env["OPENAI_API_KEY"] = "sk-wrong"
    with pytest.raises(app.StartupError) as raised:
        await harness.start()
    assert "OPENAI_API_KEY was refused" in str(raised.value)
    assert "sk-wrong" not in str(raised.value)
