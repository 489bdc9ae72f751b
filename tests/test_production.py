"""What an operator running the bot in production sees: health, readiness, metrics and logs."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bot.logs import JsonFormatter, RedactSecrets, turn_ids
from bot.slack.blocks import STOP_ACTION
from tests.conftest import ALICE, GENERAL, Harness, bot_env, has_stop_button, wait_answers
from tests.test_operations import process_env
from tests.test_streaming import element, long_words, slowly

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def metrics(port: int) -> Samples:
    """/metrics as prometheus-client's own parser reads it."""
    status, text = await get(port, "/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_in_http_mode_health_readiness_and_metrics_share_the_slack_port(
    bot: Harness,
) -> None:
    assert bot.bot is not None and bot.bot.port is not None
    port = bot.bot.port
    assert await get(port, "/healthz") == (200, "ok\n")
    assert await get(port, "/readyz") == (200, "ready\n")
    samples = await metrics(port)
    assert ("slackbot_turns_running", frozenset()) in samples
    assert ("slackbot_turns_waiting", frozenset()) in samples


async def test_readiness_fails_naming_the_database_when_it_stops_answering(bot: Harness) -> None:
    assert bot.bot is not None and bot.bot.port is not None
    await bot.bot.store.close()  # the database is gone from under the running bot
    status, body = await get(bot.bot.port, "/readyz")
    assert (status, body) == (503, "not ready: database\n")
    assert await get(bot.bot.port, "/healthz") == (200, "ok\n"), "the process itself is alive"


async def test_readiness_names_the_backend_while_it_does_not_answer_and_recovers_with_it(
    bot: Harness,
) -> None:
    assert bot.bot is not None and bot.bot.port is not None
    bot.openai.fail_next("/v1/models", 503, times=2)
    assert await get(bot.bot.port, "/readyz") == (503, "not ready: backend\n")
    assert await get(bot.bot.port, "/readyz") == (503, "not ready: backend\n"), "asked again"
    assert await get(bot.bot.port, "/readyz") == (200, "ready\n")
    asked = len(bot.openai.requests)
    assert await get(bot.bot.port, "/readyz") == (200, "ready\n")
    assert len(bot.openai.requests) == asked, "a backend that answered is not asked at each probe"


@pytest.mark.parametrize("engine", ["assistants"])
async def test_in_socket_mode_readiness_follows_the_slack_connection(harness: Harness) -> None:
    harness.mode = "socket"
    bot = await harness.start(HEALTH_PORT="0")
    assert bot.health_port is not None
    port = bot.health_port
    assert await get(port, "/readyz") == (200, "ready\n")

    harness.slack.socket_mode_url = "ws://127.0.0.1:9/unreachable"  # reconnecting fails
    await harness.slack.drop_socket_connections()

    # Slack's close is answered (so the connection is down) before drop_socket_connections returns.
    assert await get(port, "/readyz") == (503, "not ready: slack_connection\n")
    assert await get(port, "/healthz") == (200, "ok\n")


@pytest.mark.parametrize("engine", ["assistants"])
async def test_socket_mode_serves_no_health_port_unless_asked(harness: Harness) -> None:
    harness.mode = "socket"
    bot = await harness.start()
    assert bot.health_port is None


@pytest.mark.parametrize("engine", ["assistants"])
async def test_shutdown_turns_readiness_off_first_while_the_answer_in_progress_finishes(
    harness: Harness,
) -> None:
    slack, openai = harness.slack, harness.openai
    harness.mode = "socket"
    bot = await harness.start(HEALTH_PORT="0")
    assert bot.health_port is not None
    port = bot.health_port
    openai.model.gate = asyncio.Event()
    ts = await slack.mention(ALICE, GENERAL, "finish this please")
    await slack.wait_for(lambda: len(openai.model.turns) == 1)

    stopping = asyncio.create_task(bot.stop())
    harness.bot = None

    # stop() turns readiness off before its first await: before this request is answered.
    assert await get(port, "/readyz") == (503, "not ready: shutting_down\n")
    assert await get(port, "/healthz") == (200, "ok\n"), "alive while the answer finishes"
    openai.model.gate.set()
    replies = await wait_answers(slack, GENERAL, ts, 1)
    assert replies[0].text.startswith("You said: finish this please")
    await stopping


async def test_an_answer_a_failure_and_a_stop_move_the_metrics(bot: Harness) -> None:
    slack, openai = bot.slack, bot.openai
    assert bot.bot is not None and bot.bot.port is not None
    port = bot.bot.port
    before = await metrics(port)

    ts = await slack.mention(ALICE, GENERAL, "hello")
    await wait_answers(slack, GENERAL, ts, 1)
    await bot.drain_idle()
    answered = await metrics(port)
    assert moved(before, answered, "slackbot_turns_total", outcome="done", code="") == 1
    assert moved(before, answered, "slackbot_events_received_total", type="app_mention") >= 1
    assert moved(before, answered, "slackbot_events_acked_total", type="app_mention") >= 1
    for histogram in ("sign_of_life", "first_token", "answer"):
        name = f"slackbot_turn_{histogram}_seconds_count"
        assert moved(before, answered, name) == 1, name
    assert moved(before, answered, "slackbot_acks_slow_total", type="app_mention") == 0
    tokens_out: dict[str, float] = {}  # by model, whatever the assistant
    for (name, labels), count in answered.items():
        if name == "slackbot_tokens_total" and ("direction", "out") in labels:
            model = dict(labels)["model"]
            spent = count - value(before, name, **dict(labels))
            tokens_out[model] = tokens_out.get(model, 0.0) + spent
    assert tokens_out["gpt-4o"] > 0 and sum(tokens_out.values()) == tokens_out["gpt-4o"]

    openai.fail_next(bot.conversation_path, 500, times=3, retry_after=0)
    failed_ts = await slack.mention(ALICE, GENERAL, "this one fails")
    await wait_answers(slack, GENERAL, failed_ts, 1)
    await bot.drain_idle()
    failed = await metrics(port)
    failures = {
        labels: count - value(answered, name, **dict(labels))
        for (name, labels), count in failed.items()
        if name == "slackbot_turns_total" and ("outcome", "failed") in labels
    }
    assert sum(failures.values()) == 1, failures
    assert (
        sum(
            count - value(answered, name, **dict(labels))
            for (name, labels), count in failed.items()
            if name == "slackbot_backend_errors_total"
        )
        >= 1
    )

    slowly(bot, long_words(3000), chunk_delay=0.01)
    stop_ts = await slack.mention(ALICE, GENERAL, "tell me everything")
    await slack.wait_for(
        lambda: any(m.streaming and m.text for m in slack.bot_replies(GENERAL, stop_ts))
    )
    control = next(m for m in slack.bot_replies(GENERAL, stop_ts) if has_stop_button(m))
    stop = element(control, STOP_ACTION)["value"]
    await slack.interaction(
        slack.block_action_payload(ALICE, GENERAL, control.ts, STOP_ACTION, stop)
    )
    await wait_answers(slack, GENERAL, stop_ts, 1)
    await bot.drain_idle()
    stopped = await metrics(port)
    assert moved(failed, stopped, "slackbot_turns_total", outcome="stopped", code="") == 1
    assert moved(failed, stopped, "slackbot_events_received_total", type="block_actions") == 1
    assert value(stopped, "slackbot_turns_running") == 0
    assert value(stopped, "slackbot_turns_waiting") == 0


def test_a_json_log_line_carries_the_event_fields_and_the_turns_ids_and_no_secret() -> None:
    record = logging.LogRecord(
        "bot.conversation",
        logging.INFO,
        __file__,
        1,
        "event=turn_finished channel=%s status=%s assistant=%r error=%s",
        ("C0GENERAL", "failed", "Helper", "refused xoxb-123-secret"),
        None,
    )
    token = turn_ids.set({"workspace": "T0TEAM", "thread": "1.000001", "message_ts": "1.000002"})
    try:
        RedactSecrets().filter(record)
        line = json.loads(JsonFormatter().format(record))
    finally:
        turn_ids.reset(token)
    assert line["event"] == "turn_finished" and line["status"] == "failed"
    assert line["assistant"] == "Helper" and line["channel"] == "C0GENERAL"
    assert line["workspace"] == "T0TEAM" and line["message_ts"] == "1.000002"
    assert line["level"] == "INFO" and line["logger"] == "bot.conversation" and line["time"]
    assert "xoxb-123-secret" not in json.dumps(line)


async def test_with_log_format_json_every_line_the_bot_writes_parses_and_holds_no_token(
    harness: Harness, tmp_path: Path
) -> None:
    slack, openai = harness.slack, harness.openai
    env = bot_env(slack, openai, tmp_path / "db.sqlite3", "socket", LOG_FORMAT="json")
    env |= harness.env | {"LOG_LEVEL": "DEBUG"}
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
        ts = await slack.mention(ALICE, GENERAL, "hello in json")
        await wait_answers(slack, GENERAL, ts, 1)
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = err.decode()
    for secret in (slack.bot_token, slack.app_token, openai.api_key, slack.signing_secret):
        assert secret not in output
    lines = [json.loads(line) for line in output.splitlines()]
    assert {"started", "turn_finished", "stopped"} <= {line.get("event") for line in lines}
    finished = next(line for line in lines if line.get("event") == "turn_finished")
    assert finished["status"] == "done" and finished["channel"] == GENERAL
    assert finished["thread"] == ts and finished["message_ts"] == ts


REPO = Path(__file__).resolve().parents[1]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined), as (INSTRUCTION, arguments)."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_runs_python_m_bot_as_a_user_with_a_health_check_and_no_secret() -> None:
    instructions = dockerfile_instructions()
    stages = [args for kind, args in instructions if kind == "FROM"]
    assert len(stages) == 2 and all("slim" in stage for stage in stages), "multi-stage and slim"
    for kind, args in instructions:
        if kind == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    assert json.loads(dict(instructions)["CMD"]) == ["python", "-m", "bot"]
    assert (REPO / "bot" / "__main__.py").is_file()
    user = [args for kind, args in instructions if kind == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert "/healthz" in dict(instructions)["HEALTHCHECK"]
    environment = " ".join(args for kind, args in instructions if kind in ("ENV", "ARG"))
    for secret in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "OPENAI_API_KEY"):
        assert secret not in environment
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    assert "*" in ignored, "nothing goes into the build unless named"
    assert not {"!.env", "!*.sqlite3", "!.venv"} & set(ignored)
    copied = [
        source.rstrip("/")
        for kind, args in instructions
        if kind == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    included = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    assert set(copied) <= included, "every copied path reaches the build"


def known_settings() -> set[str]:
    """Every setting bot/config.py reads."""
    source = (REPO / "bot" / "config.py").read_text()
    return set(re.findall(r"""["']([A-Z][A-Z0-9_]{2,})["']""", source))


def test_the_compose_file_parses_and_sets_only_settings_the_bot_knows() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    bot = compose["services"]["bot"]
    assert bot["build"] == "." and "env_file" in bot
    unknown = set(bot["environment"]) - known_settings()
    assert not unknown, f"compose sets settings the bot does not read: {unknown}"
    volume = bot["volumes"][0].split(":")
    assert volume[0] in compose["volumes"]
    database = bot["environment"]["DATABASE_URL"].removeprefix("sqlite:///")
    assert database.startswith(volume[1] + "/"), "the data persists"


def test_the_two_replica_compose_file_runs_http_bots_behind_a_balancer_on_its_postgresql() -> None:
    compose = yaml.safe_load((REPO / "compose.replicas.yaml").read_text())
    services = compose["services"]
    bots = {name: s for name, s in services.items() if s.get("build") == "."}
    assert len(bots) == 2
    for name, bot in bots.items():
        environment = bot["environment"]
        unknown = set(environment) - known_settings()
        assert not unknown, f"{name} sets settings the bot does not read: {unknown}"
        assert "env_file" in bot and environment["SLACK_APP_TOKEN"] == "", "HTTP mode"
        database = sa.make_url(environment["DATABASE_URL"].replace("${", "{"))
        assert database.drivername == "postgresql"
        assert services[str(database.host)]["image"].startswith("postgres:")
        assert str(database.host) in bot["depends_on"]
    db_volume = services[str(database.host)]["volumes"][0].split(":")[0]
    assert db_volume in compose["volumes"], "the data persists"
    [proxy] = [s for s in services.values() if "configs" in s]
    balancer = compose["configs"][proxy["configs"][0]["source"]]["content"]
    for name, bot in bots.items():
        assert f"{name}:{bot['environment']['PORT']}" in balancer
    assert "health_uri /readyz" in balancer
