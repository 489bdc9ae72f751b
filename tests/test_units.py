"""Pure pieces with many cases: splitting long Markdown, reading settings, redacting logs."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bot import filetypes
from bot.config import ConfigError, load_settings
from bot.engine.answer_text import StreamCleaner, clean_answer
from bot.logs import RedactSecrets
from bot.store import Store
from bot.store.migrate import latest_revision

MINIMAL = {
    "SLACK_BOT_TOKEN": "xoxb-1",
    "SLACK_SIGNING_SECRET": "s",
    "OPENAI_API_KEY": "sk-1",
    "ASSISTANT_ID": "asst_1",
}


def test_settings_defaults() -> None:
    settings = load_settings(MINIMAL, env_file=None)
    assert settings.engine is None, "chosen at start-up"
    assert settings.openai_timeout == 120 and settings.slack_timeout == 30
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.port == 3000
    assert settings.database_url == "sqlite:///./bot.sqlite3"
    assert not settings.socket_mode
    assert settings.slack_view == "agent_view", "as manifest.yml asks for"


def test_socket_mode_needs_no_signing_secret() -> None:
    env = MINIMAL | {"SLACK_APP_TOKEN": "xapp-1", "SLACK_SIGNING_SECRET": ""}
    assert load_settings(env, env_file=None).socket_mode


def test_database_path_is_short_for_a_sqlite_url_and_only_one_of_them_is_set() -> None:
    settings = load_settings(MINIMAL | {"DATABASE_PATH": "/var/lib/bot/bot.sqlite3"}, None)
    assert settings.database_url == "sqlite:////var/lib/bot/bot.sqlite3"
    url = "postgresql://bot:secret@db.example.com:5432/bot"
    assert load_settings(MINIMAL | {"DATABASE_URL": url}, None).database_url == url
    with pytest.raises(ConfigError) as both:
        load_settings(MINIMAL | {"DATABASE_URL": url, "DATABASE_PATH": "x.sqlite3"}, None)
    assert both.value.problems == [
        "DATABASE_URL and DATABASE_PATH are both set: keep one (DATABASE_PATH=FILE is short for "
        "DATABASE_URL=sqlite:///FILE)."
    ]


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("SLACK_APP_TOKEN", "xoxb-wrong", "SLACK_APP_TOKEN must start with 'xapp-'"),
        ("OPENAI_TIMEOUT_SECONDS", "0", "OPENAI_TIMEOUT_SECONDS must be a number from 1"),
        ("SLACK_TIMEOUT_SECONDS", "soon", "SLACK_TIMEOUT_SECONDS must be a number from 1"),
        ("SLACK_RETRIES", "11", "SLACK_RETRIES must be a whole number from 0 to 10"),
        ("SLACK_API_URL", "slack.com/api", "SLACK_API_URL must be an http(s) URL"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL must be one of DEBUG"),
        ("ANSWER_BOTS", "maybe", "ANSWER_BOTS must be true or false"),
        ("TURN_TIMEOUT_SECONDS", "0", "TURN_TIMEOUT_SECONDS must be a number from 1 to 3600"),
        ("SLACK_VIEW", "split_view", "SLACK_VIEW must be one of agent_view, assistant_view"),
        ("DATABASE_URL", "mysql://bot@db/bot", "DATABASE_URL mysql://… is not supported"),
        ("DATABASE_URL", "postgresql://bot@db", "DATABASE_URL names no database"),
    ],
)
def test_each_bad_setting_is_named(name: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(MINIMAL | {name: value}, env_file=None)
    assert any(problem.startswith(words) for problem in raised.value.problems)


def test_the_assistants_engine_needs_an_assistant_id() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(MINIMAL | {"BOT_ENGINE": "assistants", "ASSISTANT_ID": "helper"}, None)
    assert raised.value.problems[0].startswith("ASSISTANT_ID must be an assistant id like asst_")
    assert load_settings(MINIMAL | {"ASSISTANT_ID": "helper"}, None).assistant_id == "helper"


def test_tokens_never_reach_a_log_line() -> None:
    record = logging.LogRecord(
        "slack_sdk",
        logging.DEBUG,
        __file__,
        1,
        "headers %s",
        ({"Authorization": "Bearer xoxb-123-abc"},),
        None,
    )
    RedactSecrets().filter(record)
    assert "xoxb-123-abc" not in record.getMessage()
    assert "redacted" in record.getMessage()


def test_citation_markers_are_removed_and_citations_keep_their_place() -> None:
    text = "Refunds take 30 days【4:0†report.pdf】. Shipping is free【4:1†terms.md】."
    first = text.index("【")
    second = text.index("【", first + 1)
    markers = [(first, text.index("】") + 1), (second, text.index("】", second) + 1)]
    cleaned, citations = clean_answer(
        text, markers, [(first, "file-a", ""), (second, "file-b", "")], offset=5
    )
    assert cleaned == "Refunds take 30 days. Shipping is free."
    assert [c.position - 5 for c in citations] == [
        cleaned.index("."),
        cleaned.rindex("."),
    ]


def test_sandbox_links_become_their_labels_and_later_citations_move_with_the_text() -> None:
    text = "See [chart.png](sandbox:/mnt/data/chart.png) for totals."
    cleaned, [citation] = clean_answer(text, [], [(len(text) - 1, "file-a", "data.csv")])
    assert cleaned == "See chart.png for totals."
    assert citation.position == len(cleaned) - 1


def test_file_types_decide_how_a_file_is_used() -> None:
    assert filetypes.is_searchable("Report.PDF") and not filetypes.is_searchable("a.xlsx")
    assert filetypes.is_data("a.xlsx") and filetypes.is_data("b.csv")
    assert filetypes.is_image("x", "image/png") and filetypes.is_image("y.webp", "")
    assert filetypes.takes_images("gpt-4o") and not filetypes.takes_images("gpt-3.5-turbo")


async def test_processes_opening_a_new_database_at_once_all_get_the_same_schema(
    tmp_path: Path,
) -> None:
    """The bot and a CLI command may start together on a fresh file: one migrates, none fails."""
    path = tmp_path / "fresh.sqlite3"
    stores = await asyncio.gather(*(Store.open(path) for _ in range(6)))
    try:
        states = [await store.schema() for store in stores]
        assert {state.revision for state in states} == {latest_revision()}
    finally:
        await asyncio.gather(*(store.close() for store in stores))


@pytest.mark.parametrize("size", [1, 3, 7, 40])
def test_streamed_text_never_shows_citation_markers_or_sandbox_links(size: int) -> None:
    text = (
        "Refunds take 30 days【4:0†report.pdf】. See [chart.png](sandbox:/mnt/data/chart.png) "
        "and [the docs](https://example.com) [sic]. Shipping is free【4:1†terms.md】."
    )
    cleaner = StreamCleaner()
    shown = [cleaner.feed(text[i : i + size]) for i in range(0, len(text), size)]
    assert "".join(shown) == (
        "Refunds take 30 days. See chart.png and [the docs](https://example.com) [sic]. "
        "Shipping is free."
    )
    assert all("【" not in piece and "sandbox:" not in piece for piece in shown)
