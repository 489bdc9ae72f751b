"""Messages and @mentions: the gate (what the bot ignores) and the route (what it answers).

Acked means recorded. Bolt acks an event before the listener body runs, so a message the bot
takes is recorded in a listener middleware (`take`), which Bolt runs before it acks: in HTTP
mode the ack is the response to the request, in Socket Mode it is sent once dispatch returns,
and an exception there answers 500 (no ack), so Slack sends the event again. Taking a message is
one store write and no call to Slack or the backend; what needs Slack (a hint, a note, the DM's
title) runs in the listener body, after the ack.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import Conversations
from bot.messages import ConversationKey, IncomingMessage
from bot.slack import inbound, words
from bot.slack.file_source import shared_files
from bot.slack.listeners import ai_app
from bot.store import StoreUnavailable

log = logging.getLogger(__name__)

# Message subtypes that are a person saying something; every other subtype (edits, deletions,
# joins, topic changes, bot messages…) is ignored.
SPOKEN_SUBTYPES = {None, "file_share", "thread_broadcast", "me_message"}
RECEIVED = "received_message"  # the context key `take` leaves its verdict under


@dataclass(frozen=True)
class BotIdentity:
    user_id: str
    bot_id: str


@dataclass(frozen=True)
class Skipped:
    """An event the bot would answer but cannot: it lacks (or garbles) what a turn needs."""

    reason: str


@dataclass(frozen=True)
class Received:
    """A message for the bot, and the files it leaves out (over MAX_FILES_PER_MESSAGE)."""

    message: IncomingMessage
    files_left_out: tuple[str, ...] = ()


@dataclass
class Verdict:
    """What `take` decided before the ack, for the listener body after it."""

    received: Received | None = None
    taken: bool = False
    not_recorded: bool = False  # the database did not answer: acked all the same
    new_dm: bool = False
    hint: bool = False  # an empty mention: tell its writer how to ask
    closing: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)


def register(
    app: AsyncApp,
    conversations: Conversations,
    identity: BotIdentity,
    answer_bots: bool,
    viewing: ai_app.ViewedChannels | None = None,
    max_files: int = 10,
) -> None:
    mention = re.compile(rf"<@{re.escape(identity.user_id)}(?:\|[^>]*)?>")
    # Messages whose writer was told they could not be taken: an @mention comes twice.
    told_not_recorded: dict[tuple[str, str], None] = {}

    async def take(
        body: dict[str, Any],
        context: AsyncBoltContext,
        next_: Callable[[], Awaitable[None]],
    ) -> None:
        verdict = Verdict()
        # Counted as being received from before the ack until the listener body is done, so
        # that Conversations.idle() waits for what follows the ack too.
        verdict.closing.enter_context(conversations.receiving())
        try:
            await _take(body, verdict)
        except StoreUnavailable as exc:
            # Acked all the same: Slack's retries would meet the same database; the writer of a
            # message the bot would answer is told to send it again.
            verdict.not_recorded = True
            log.warning(
                "event=message_not_recorded event_id=%s error=%s",
                inbound.text(body.get("event_id"), 40),
                exc,
            )
        except BaseException:
            verdict.closing.close()
            raise  # no ack: Slack sends the event again
        context[RECEIVED] = verdict
        await next_()

    async def _take(body: dict[str, Any], verdict: Verdict) -> None:
        event = inbound.mapping(body.get("event"))
        read = read_message(body, event, identity, answer_bots, mention, max_files)
        if isinstance(read, Skipped):
            log.warning(
                "event=message_skipped reason=%s type=%s event_id=%s",
                read.reason,
                inbound.text(event.get("type"), 40),
                inbound.text(body.get("event_id"), 40),
            )
            return
        if read is None:
            return
        message = read.message
        direct_or_mention = message.is_direct or mention.search(inbound.text(event.get("text")))
        if not direct_or_mention and not await conversations.is_conversation(message.key):
            return
        if not message.text and not message.files:
            verdict.hint = event.get("type") == "app_mention" or message.is_direct
            return
        if message.is_direct and viewing is not None:
            team = inbound.slack_id(body.get("team_id")) or message.key.team_id
            looking_at = viewing.of(team, message.user_id)
            if looking_at:
                message = dataclasses.replace(message, context=ai_app.context_note(looking_at))
                read = dataclasses.replace(read, message=message)
        verdict.received = read
        verdict.new_dm = message.is_direct and not await conversations.is_conversation(message.key)
        verdict.taken = await conversations.submit(message)

    async def after_ack(
        body: dict[str, Any], context: AsyncBoltContext, client: AsyncWebClient
    ) -> None:
        verdict: Verdict | None = context.get(RECEIVED)
        if verdict is None:
            return
        with verdict.closing:
            await _after_ack(body, verdict, client)

    async def _after_ack(body: dict[str, Any], verdict: Verdict, client: AsyncWebClient) -> None:
        event = inbound.mapping(body.get("event"))
        if verdict.hint:
            channel, user = (
                inbound.slack_id(event.get("channel")),
                inbound.slack_id(event.get("user")),
            )
            if channel and user:
                await _tell(
                    client,
                    channel,
                    user,
                    inbound.ts(event.get("thread_ts")),
                    words.EMPTY_MESSAGE_HELP,
                )
            return
        if verdict.received is None:
            return
        message = verdict.received.message
        if verdict.not_recorded:
            told = (message.key.channel_id, message.ts)
            if told not in told_not_recorded:
                told_not_recorded[told] = None
                if len(told_not_recorded) > 1000:
                    del told_not_recorded[next(iter(told_not_recorded))]
                thread_ts = inbound.ts(event.get("thread_ts"))
                await _tell(
                    client, message.key.channel_id, message.user_id, thread_ts, words.NOT_RECORDED
                )
            return
        log.info(
            "event=message_%s channel=%s ts=%s event_id=%s",
            "taken" if verdict.taken else "duplicate",
            message.key.channel_id,
            message.ts,
            inbound.text(body.get("event_id"), 40),
        )
        if not verdict.taken:
            return
        if verdict.new_dm:
            await ai_app.set_title(client, message)
        left_out = verdict.received.files_left_out
        if left_out:
            note = words.files_left_out(max_files, left_out)
            await _tell(
                client, message.key.channel_id, message.user_id, message.key.thread_ts, note
            )

    app.event("app_mention", middleware=[take])(after_ack)
    app.event("message", middleware=[take])(after_ack)


async def _tell(
    client: AsyncWebClient, channel: str, user: str, thread_ts: str | None, text: str
) -> None:
    """A private note to one person (best effort: the message itself is already taken)."""
    try:
        await client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts, text=text)
    except SlackApiError as exc:
        log.warning("event=note_failed channel=%s error=%s", channel, exc.response.get("error"))


def read_message(
    body: dict[str, Any],
    event: dict[str, Any],
    identity: BotIdentity,
    answer_bots: bool,
    mention: re.Pattern[str],
    max_files: int,
) -> Received | Skipped | None:
    """The message the bot may answer; None for what it must ignore; Skipped for an event it
    would answer but that lacks what a turn needs (or holds it garbled)."""
    subtype = event.get("subtype")
    if not (subtype is None or isinstance(subtype, str)) or subtype not in SPOKEN_SUBTYPES:
        return None
    if event.get("hidden"):
        return None
    user, bot_id = event.get("user"), event.get("bot_id")
    if user == identity.user_id or (bot_id and bot_id == identity.bot_id):
        return None
    if bot_id and not answer_bots:
        return None
    author = inbound.slack_id(user) or (inbound.slack_id(bot_id) if answer_bots else None)
    channel = inbound.slack_id(event.get("channel"))
    ts = inbound.ts(event.get("ts"))
    thread_ts = event.get("thread_ts")
    team = inbound.slack_id(event.get("team")) or inbound.slack_id(body.get("team_id"))
    for missing, lacking in (
        ("user", author is None),
        ("channel", channel is None),
        ("ts", ts is None),
        ("thread_ts", thread_ts is not None and inbound.ts(thread_ts) is None),
        ("team", team is None),
        ("text", "text" in event and not isinstance(event["text"], str)),
    ):
        if lacking:
            return Skipped(missing)
    assert author is not None and channel is not None and ts is not None and team is not None
    files = shared_files(event.get("files"))
    text = mention.sub("", inbound.text(event.get("text"))).strip()
    is_direct = event.get("channel_type") == "im" or channel.startswith("D")
    message = IncomingMessage(
        key=ConversationKey(team, channel, thread_ts or ts),
        ts=ts,
        user_id=author,
        text=text,
        is_direct=is_direct,
        files=files[:max_files],
    )
    return Received(message, tuple(f.name for f in files[max_files:]))
