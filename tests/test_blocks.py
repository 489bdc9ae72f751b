"""The answer's Block Kit: buttons whose values the listeners read back, and the progress line."""

from __future__ import annotations

from typing import Any

from bot.messages import ConversationKey, IncomingMessage
from bot.slack.blocks import (
    FEEDBACK_ACTION,
    STOP_ACTION,
    answer_content,
    feedback_block,
    is_progress_text,
    parse_feedback_value,
    parse_stop_value,
    progress_content,
    stop_block,
)
from bot.slack.words import THINKING

KEY = ConversationKey("T0TEAM", "C0GENERAL", "1700000000.000100")
MESSAGE = IncomingMessage(KEY, "1700000000.000200", "U0ALICE", "hello", False)


def actions(blocks: list[dict[str, Any]]) -> list[str]:
    """The action ids of the blocks' buttons."""
    return [
        element["action_id"]
        for block in blocks
        for element in block.get("elements") or []
        if "action_id" in element
    ]


def test_the_stop_button_names_the_message_and_who_may_stop_it() -> None:
    button = stop_block(MESSAGE)["elements"][0]
    assert button["action_id"] == STOP_ACTION
    assert parse_stop_value(button["value"]) == (KEY, MESSAGE.ts, "U0ALICE")
    assert parse_stop_value("not|a|stop") is None


def test_each_feedback_button_names_its_rating_and_the_answer() -> None:
    buttons = feedback_block(MESSAGE)["elements"][0]
    assert buttons["action_id"] == FEEDBACK_ACTION
    good = parse_feedback_value(buttons["positive_button"]["value"])
    bad = parse_feedback_value(buttons["negative_button"]["value"])
    assert good == ("good", "T0TEAM", "C0GENERAL", MESSAGE.ts)
    assert bad == ("bad", "T0TEAM", "C0GENERAL", MESSAGE.ts)
    assert parse_feedback_value("great|T0TEAM|C0GENERAL|1.2") is None


def test_the_placeholder_says_thinking_or_what_runs_and_offers_stop() -> None:
    text, blocks = progress_content("", MESSAGE)
    assert text == THINKING and actions(blocks) == [STOP_ACTION]
    text, _ = progress_content("_Looking up the weather…_", MESSAGE)
    assert text == "_Looking up the weather…_"


def test_an_answer_offers_stop_while_written_and_feedback_once_done() -> None:
    live_text, live = answer_content("Partial", MESSAGE, live=True)
    assert live_text == "Partial" and actions(live) == [STOP_ACTION]
    assert live[0] == {"type": "markdown", "text": "Partial"}
    _, done = answer_content("Whole answer", MESSAGE, feedback=True)
    assert actions(done) == [FEEDBACK_ACTION]
    _, earlier = answer_content("First of two messages", MESSAGE)
    assert actions(earlier) == []


def test_an_answer_with_no_text_yet_shows_as_its_progress_line() -> None:
    assert answer_content("", MESSAGE, live=True) == progress_content("", MESSAGE)
    status = "_Reading report.pdf…_"
    assert answer_content("", MESSAGE, status=status, live=True) == progress_content(
        status, MESSAGE
    )


def test_progress_lines_are_told_apart_from_answers() -> None:
    assert is_progress_text(THINKING)
    assert is_progress_text("_Reading report.pdf…_")
    assert not is_progress_text("The weather is fine…")
