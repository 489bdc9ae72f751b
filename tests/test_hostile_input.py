"""Hostile or odd input, as Slack (or someone pretending to be it) might send it: events,
slash commands, interactions and files with fields missing, of the wrong type, garbled text,
huge text, too many files. The bot skips what it cannot use, tells a person privately when the
problem is theirs, never crashes a listener, and answers the next normal mention.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bot.slack.blocks import FEEDBACK_ACTION, STOP_ACTION
from bot.slack.listeners.knowledge import REMOVE_ACTION
from bot.slack.listeners.shortcuts import PICKER, SHORTCUT
from bot.slack.words import BUTTON_NOT_UNDERSTOOD, SHORTCUT_NOT_UNDERSTOOD
from tests.conftest import ALICE, GENERAL, Harness, answers, wait_answers
from tests.emulators.model import Reply
from tests.emulators.slack import SlackEmulator

Json = dict[str, Any]


def mention(slack: SlackEmulator, text: str = "hello", **changes: Any) -> Json:
    """An app_mention event of a new message by Alice, with `changes` applied (None: removed)."""
    ts = slack.next_ts()
    event = slack.message_event(ALICE, GENERAL, f"<@{slack.bot_user_id}> {text}", ts=ts)
    event["type"] = "app_mention"
    for name, value in changes.items():
        if value is None:
            event.pop(name, None)
        else:
            event[name] = value
    return event


async def deliver(h: Harness, event: Json) -> None:
    delivery = await h.slack.deliver_callback(h.slack.event_callback(event))
    assert delivery.status == 200, "acked, so that Slack does not send it again"


async def envelope(h: Harness, body: Json) -> None:
    await h.slack.deliver_callback(body)


async def command_form(h: Harness, form: dict[str, str] | bytes) -> None:
    raw = form if isinstance(form, bytes) else urllib.parse.urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **h.slack.sign(raw)}
    await h.slack.send_raw(raw, headers)


def command(slack: SlackEmulator, **changes: str | None) -> dict[str, str]:
    form = {
        "team_id": slack.team_id,
        "channel_id": GENERAL,
        "channel_name": "general",
        "user_id": ALICE,
        "command": "/assistant",
        "text": "list",
        "api_app_id": slack.app_id,
        # a response_url the emulator knows, answering Alice in #general
        "response_url": slack.block_action_payload(ALICE, GENERAL, "1.1", "x")["response_url"],
    }
    for name, value in changes.items():
        if value is None:
            form.pop(name, None)
        else:
            form[name] = value
    return form


def button(slack: SlackEmulator, action_id: str, value: Any = None, **changes: Any) -> Json:
    payload = slack.block_action_payload(ALICE, GENERAL, slack.next_ts(), action_id)
    if value is not None:
        payload["actions"][0]["value"] = value
    payload.update(changes)
    return payload


def files(slack: SlackEmulator, count: int, extension: str = "pdf") -> list[Json]:
    return [
        slack.add_file(ALICE, f"file{n:02d}.{extension}", b"x", extension, "application/pdf")
        for n in range(1, count + 1)
    ]


Send = Callable[[Harness], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    name: str
    send: Send
    private_note: str = ""  # what the person who sent it is told privately, if anything
    # Garbage Bolt's own middleware trips on before any listener sees it: Bolt answers 500 and
    # logs it; nothing of the bot's runs (Slack never sends these).
    refused_by_bolt: bool = False


def event_case(name: str, make: Callable[[SlackEmulator], Json], note: str = "") -> Case:
    async def send(h: Harness) -> None:
        await deliver(h, make(h.slack))

    return Case(name, send, note)


def interaction_case(name: str, make: Callable[[SlackEmulator], Json], note: str = "") -> Case:
    async def send(h: Harness) -> None:
        await h.slack.interaction(make(h.slack))

    return Case(name, send, note)


LONE_SURROGATE = "\ud800"

CASES = [
    # --- events missing what a turn needs -------------------------------------------------
    event_case("mention without user", lambda s: mention(s, user=None)),
    event_case("mention without channel", lambda s: mention(s, channel=None)),
    event_case("mention without ts", lambda s: mention(s, ts=None)),
    event_case("mention with a non-numeric ts", lambda s: mention(s, ts="yesterday")),
    event_case("mention with ts as a number", lambda s: mention(s, ts=1712345678.5)),
    event_case("mention with a non-numeric thread_ts", lambda s: mention(s, thread_ts="x.y")),
    event_case("mention with text as a number", lambda s: mention(s, text=42)),
    event_case("mention with text as an object", lambda s: mention(s, text={"a": 1})),
    event_case("mention with user as an object", lambda s: mention(s, user={"id": ALICE})),
    event_case("mention with channel as a list", lambda s: mention(s, channel=[GENERAL])),
    event_case("mention with a lower-case channel", lambda s: mention(s, channel="general")),
    event_case("mention without any team", lambda s: mention(s, team=None) | {"team": 7}),
    event_case("mention with bot_id as a list", lambda s: mention(s, bot_id=["B1"])),
    event_case("hidden message", lambda s: mention(s, type="message", hidden=True)),
    event_case("unknown subtype", lambda s: mention(s, type="message", subtype="made_up")),
    event_case(
        "message_changed without its message", lambda s: mention(s, subtype="message_changed")
    ),
    event_case("subtype as an object", lambda s: mention(s, type="message", subtype={"x": 1})),
    event_case("blocks that are not blocks", lambda s: mention(s, blocks="<b>")),
    # --- files that are not files -------------------------------------------------------------
    event_case("files as a string", lambda s: mention(s, files="report.pdf")),
    event_case("files as a list of strings", lambda s: mention(s, files=["F1", "F2"])),
    event_case("files without ids", lambda s: mention(s, files=[{"name": "a.pdf"}])),
    event_case(
        "a file whose size is a word",
        lambda s: mention(s, files=[files(s, 1)[0] | {"size": "huge"}]),
    ),
    event_case(
        "a file whose name has a lone surrogate and NUL",
        lambda s: mention(s, files=[files(s, 1)[0] | {"name": "re\x00port" + LONE_SURROGATE}]),
    ),
    event_case(
        "a file whose link points elsewhere",
        lambda s: mention(
            s, files=[files(s, 1)[0] | {"url_private_download": "http://169.254.169.254/x"}]
        ),
    ),
    event_case(
        "fifty files",
        lambda s: mention(s, "read these", files=files(s, 50)),
        note="left out *file11.pdf*",
    ),
    # --- envelopes Slack would never send ----------------------------------------------------
    Case(
        "an event that is a string",
        lambda h: envelope(h, h.slack.event_callback(mention(h.slack)) | {"event": "boo"}),
        refused_by_bolt=True,
    ),
    Case(
        "an event without a type",
        lambda h: envelope(h, h.slack.event_callback(mention(h.slack, type=None))),
    ),
    Case(
        "an event type the app does not subscribe to",
        lambda h: envelope(h, h.slack.event_callback({"type": "reaction_added", "user": ALICE})),
    ),
    Case(
        "an envelope without event_id and team",
        lambda h: envelope(
            h,
            {k: v for k, v in h.slack.event_callback(mention(h.slack)).items() if k != "event_id"}
            | {"team_id": None},
        ),
    ),
    event_case(
        "app_home_opened without a user", lambda s: {"type": "app_home_opened", "tab": "home"}
    ),
    event_case(
        "app_context_changed with a list for context",
        lambda s: {"type": "app_context_changed", "user": ALICE, "context": ["C1"]},
    ),
    Case(
        "assistant_thread_started with a string for the thread",
        lambda h: envelope(
            h,
            h.slack.event_callback({"type": "assistant_thread_started", "assistant_thread": "x"}),
        ),
    ),
    # --- slash commands ---------------------------------------------------------------------
    Case("a command without user_id", lambda h: command_form(h, command(h.slack, user_id=None))),
    Case(
        "a command without channel_id",
        lambda h: command_form(h, command(h.slack, channel_id=None)),
    ),
    Case(
        "a command without response_url",
        lambda h: command_form(h, command(h.slack, response_url=None)),
    ),
    Case(
        "a command whose text is invalid UTF-8 and NUL",
        lambda h: command_form(
            h,
            urllib.parse.urlencode(command(h.slack, text="")).encode() + b"&text=use%ED%A0%80%00",
        ),
        private_note="I don't know `/assistant use\ufffd",
    ),
    Case(
        "a command with 20,000 characters of text",
        lambda h: h.slack.slash_command(ALICE, GENERAL, "/assistant", "use " + "x" * 20_000),
        private_note="I don't know an assistant called",
    ),
    Case(
        "a command with NUL bytes",
        lambda h: h.slack.slash_command(ALICE, GENERAL, "/assistant", "li\x00st"),
    ),
    # --- buttons, shortcuts and pickers -----------------------------------------------------
    interaction_case(
        "a Stop button with a malformed value",
        lambda s: button(s, STOP_ACTION, "not|a|stop"),
        note=BUTTON_NOT_UNDERSTOOD,
    ),
    interaction_case(
        "a Stop button without a value",
        lambda s: button(s, STOP_ACTION),
        note=BUTTON_NOT_UNDERSTOOD,
    ),
    interaction_case(
        "a feedback button with an unknown rating",
        lambda s: button(s, FEEDBACK_ACTION, f"meh|T1|{GENERAL}|1.2"),
        note=BUTTON_NOT_UNDERSTOOD,
    ),
    interaction_case(
        "a feedback button whose value holds a lone surrogate",
        lambda s: button(s, FEEDBACK_ACTION, f"good|T1|{GENERAL}|1.2{LONE_SURROGATE}"),
        note="could not find the answer",
    ),
    interaction_case(
        "a Stop button pressed by nobody", lambda s: button(s, STOP_ACTION, "a|b|c|d|e", user={})
    ),
    interaction_case(
        "a Remove button without a file",
        lambda s: button(s, REMOVE_ACTION) | {"actions": [{"action_id": REMOVE_ACTION}]},
        note=BUTTON_NOT_UNDERSTOOD,
    ),
    interaction_case(
        "a shortcut without a channel",
        lambda s: (
            s.message_shortcut_payload(
                ALICE, GENERAL, s.add_message(ALICE, GENERAL, "hi"), SHORTCUT
            )
            | {"channel": None}
        ),
        note=SHORTCUT_NOT_UNDERSTOOD,
    ),
    interaction_case(
        "a shortcut on a message with a non-numeric ts",
        lambda s: (
            s.message_shortcut_payload(
                ALICE, GENERAL, s.add_message(ALICE, GENERAL, "hi"), SHORTCUT
            )
            | {"message_ts": "later", "message": {}}
        ),
        note=SHORTCUT_NOT_UNDERSTOOD,
    ),
    interaction_case(
        "a picker submitted with metadata that is not JSON",
        lambda s: s.view_submission_payload(ALICE, "V0NONE", PICKER, {}, private_metadata="{oops"),
    ),
    interaction_case(
        "a picker submitted without a choice",
        lambda s: s.view_submission_payload(
            ALICE,
            "V0NONE",
            PICKER,
            {},
            private_metadata=json.dumps({"team": "T1", "channel": GENERAL, "thread_ts": "1.2"}),
        ),
    ),
    interaction_case(
        "an interaction of an unknown type", lambda s: {"type": "made_up", "user": {"id": ALICE}}
    ),
]


@pytest.mark.parametrize("engine", ["assistants"])
async def test_hostile_input_never_stops_the_bot_from_answering_the_next_mention(
    bot: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    slack = bot.slack
    assert len(CASES) >= 40
    caplog.set_level(logging.WARNING)
    for number, case in enumerate(CASES):
        before = len(slack.ephemerals(GENERAL, ALICE))
        await case.send(bot)
        ts = await slack.mention(ALICE, GENERAL, f"still there {number}?")
        [answer] = await wait_answers(slack, GENERAL, ts, 1)
        assert answer.text.startswith(f"You said: still there {number}?"), case.name
        await bot.drain_idle()
        if case.private_note:
            notes = slack.ephemerals(GENERAL, ALICE)[before:]
            assert any(case.private_note in note for note in notes), (case.name, notes)
        crashed = [
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.ERROR and not (case.refused_by_bolt and not in_the_bot(r))
        ]
        assert crashed == [], f"{case.name}: {crashed}"
        caplog.clear()


def in_the_bot(record: logging.LogRecord) -> bool:
    """The record was logged by the bot, or with a traceback through the bot's code."""
    if record.name.startswith("bot."):
        return True
    frames = traceback.extract_tb(record.exc_info[2]) if record.exc_info else []
    return any(f"{os.sep}bot{os.sep}" in frame.filename for frame in frames)


async def test_text_is_cleaned_before_it_is_stored_or_sent(bot: Harness) -> None:
    slack, openai = bot.slack, bot.openai
    ts = await slack.mention(ALICE, GENERAL, f"half a smile {LONE_SURROGATE} and a\x00 NUL")
    [answer] = await wait_answers(slack, GENERAL, ts, 1)
    assert openai.model.turns[-1].user_texts[-1] == "half a smile \ufffd and a NUL"
    assert "\ufffd and a NUL" in answer.text

    openai.model.enqueue(Reply(text="That is a lot."))
    huge = mention(slack, "word " * 30_000)
    await deliver(bot, huge)
    await wait_answers(slack, GENERAL, huge["ts"], 1)
    assert len(openai.model.turns[-1].user_texts[-1]) <= 40_000, "no more than Slack allows"


async def test_a_message_with_more_files_than_allowed_is_answered_with_the_first_ones(
    harness: Harness,
) -> None:
    await harness.start(MAX_FILES_PER_MESSAGE="3")
    slack, openai = harness.slack, harness.openai
    shared = files(slack, 5, "txt")
    ts = await slack.mention(ALICE, GENERAL, "compare these", files=shared)
    await wait_answers(slack, GENERAL, ts, 1)
    await harness.drain_idle()
    uploaded = sorted(f.filename for f in openai.files.values())
    assert uploaded == ["file01.txt", "file02.txt", "file03.txt"]
    [note] = slack.ephemerals(GENERAL, ALICE)
    assert note == (
        "I take up to 3 files with one message, so I am answering with the first 3 and left out "
        "*file04.txt*, *file05.txt*. Share those in a reply in the thread if the answer needs them."
    )
    assert answers(slack, GENERAL, ts)[0].text.startswith("You said: compare these")


async def test_an_event_missing_what_a_turn_needs_is_logged_and_skipped(
    bot: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    await deliver(bot, mention(bot.slack, "no one wrote this", user=None))
    await bot.drain_idle()
    assert bot.openai.model.turns == []
    assert "event=message_skipped reason=user type=app_mention" in caplog.text
