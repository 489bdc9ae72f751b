"""What a killed or crashed process left in Slack threads, tidied before its turns go on.

Such a process leaves *Thinking…* placeholders (with a Stop button naming the message each one
answers), maybe an answer half streamed, or half written into the placeholder itself. Nothing
about them was recorded, so the thread is read back (conversations.replies) and the bot's own
messages are recognised by their buttons: a Stop button names the message of an unfinished
answer, feedback buttons close a finished one, and Approve marks a tool call's approval card (its
buttons go: no turn waits for them any more).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import ChatError, LeftBehind
from bot.messages import ConversationKey, IncomingMessage
from bot.outcomes import Failure
from bot.slack import words
from bot.slack.blocks import (
    APPROVE_ACTION,
    FEEDBACK_ACTION,
    STOP_ACTION,
    parse_feedback_value,
    parse_stop_value,
    status_block,
)

log = logging.getLogger(__name__)

PAGES = 10  # of 200 replies: the threads an answer is left in are rarely longer
MARKDOWN_LIMIT = 12_000  # characters in a message's markdown blocks


class SlackLeftovers:
    def __init__(self, client: AsyncWebClient, bot_user_id: str, bot_id: str) -> None:
        self.client = client
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id

    async def tidy(
        self,
        key: ConversationKey,
        waiting: Sequence[IncomingMessage],
        cut_off: Sequence[IncomingMessage],
        failure: Failure,
    ) -> None:
        """Tidy the thread; ChatError if Slack refuses or keeps failing (the client has already
        retried what Slack says to retry)."""
        try:
            await self._tidy(key, waiting, cut_off, words.failure(failure))
        except SlackApiError as exc:
            raise ChatError(
                str(exc.response.get("error") or f"http_{exc.response.status_code}")
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ChatError(type(exc).__name__) from exc

    async def take_back(
        self,
        message: IncomingMessage,
        reply_ref: str,
        answer_ref: str,
        keep: Callable[[str], Awaitable[None]],
    ) -> LeftBehind:
        """What a process that died while answering `message` left of the answer: shown whole
        (then its placeholder goes, if left), or written into the messages of `answer_ref` and
        any stream after the placeholder that is still open (stopped now, each one `keep`-ed
        first). ChatError if Slack refuses or keeps failing."""
        try:
            return await self._take_back(message, reply_ref, answer_ref, keep)
        except SlackApiError as exc:
            raise ChatError(
                str(exc.response.get("error") or f"http_{exc.response.status_code}")
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ChatError(type(exc).__name__) from exc

    async def _take_back(
        self,
        message: IncomingMessage,
        reply_ref: str,
        answer_ref: str,
        keep: Callable[[str], Awaitable[None]],
    ) -> LeftBehind:
        key, channel = message.key, message.key.channel_id
        replies = await self._own_replies(key, message.ts)
        if any(_rates(reply) == message.ts for reply in replies):
            for shown in _live(replies, message.ts):
                await self._delete(channel, shown["ts"])
            return LeftBehind(shown_whole=True)
        written = answer_ref.split()
        for reply in replies:
            if float(reply["ts"]) <= float(reply_ref) or reply["ts"] in written or _controls(reply):
                continue
            if _asks_approval(reply):
                # No one waits for this decision any more: the turn taken over asks anew.
                await self._withdraw(channel, reply)
                continue
            # A stream the dead process started (its ts may not have been kept): Slack says
            # which messages are still streaming only by refusing to stop the others. It is
            # kept before it is stopped: once stopped, it could not be found again.
            await keep(" ".join(sorted([*written, reply["ts"]], key=float)))
            try:
                await self.client.chat_stopStream(channel=channel, ts=reply["ts"])
            except SlackApiError as exc:
                if exc.response.get("error") != "message_not_in_streaming_state":
                    raise
                continue
            written.append(reply["ts"])
        return LeftBehind(answer_ref=" ".join(sorted(written, key=float)))

    async def _tidy(
        self,
        key: ConversationKey,
        waiting: Sequence[IncomingMessage],
        cut_off: Sequence[IncomingMessage],
        note: str,
    ) -> None:
        oldest = min((m.ts for m in (*waiting, *cut_off)), key=float)
        replies = await self._own_replies(key, oldest)
        for message in waiting:
            for shown in _live(replies, message.ts):
                await self._delete(key.channel_id, shown["ts"])
        if cut_off:
            for card in [reply for reply in replies if _asks_approval(reply)]:
                await self._withdraw(key.channel_id, card)
        for message in cut_off:
            live = _live(replies, message.ts)
            if live:  # else the answer had ended before the restart: it stays as it is
                await self._end(key, live, replies, note)
                log.info(
                    "event=answer_ended_after_restart channel=%s ts=%s", key.channel_id, message.ts
                )
        if any(message.is_direct for message in cut_off):
            try:  # the DM's "is thinking…" line; Slack also clears it on the bot's next reply
                await self.client.assistant_threads_setStatus(
                    channel_id=key.channel_id, thread_ts=key.thread_ts, status=""
                )
            except SlackApiError as exc:
                log.info("event=status_clear_failed error=%s", exc.response.get("error"))

    async def _own_replies(self, key: ConversationKey, oldest: str) -> list[dict[str, Any]]:
        """The bot's messages in the thread after `oldest`, oldest first."""
        own: list[dict[str, Any]] = []
        cursor = None
        for _ in range(PAGES):
            page = await self.client.conversations_replies(
                channel=key.channel_id, ts=key.thread_ts, oldest=oldest, limit=200, cursor=cursor
            )
            for reply in page.get("messages") or []:
                if reply.get("ts") != key.thread_ts and self._is_own(reply):
                    own.append(reply)
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return sorted(own, key=lambda reply: float(reply["ts"]))

    def _is_own(self, reply: dict[str, Any]) -> bool:
        return bool(
            (self.bot_id and reply.get("bot_id") == self.bot_id)
            or reply.get("user") == self.bot_user_id
        )

    async def _end(
        self,
        key: ConversationKey,
        live: list[dict[str, Any]],
        replies: list[dict[str, Any]],
        note: str,
    ) -> None:
        """End an answer cut off halfway: `note` follows what was shown, the controls go."""
        channel = key.channel_id
        message_ts = _stop_ts(live[0])
        if any(_rates(reply) == message_ts for reply in replies):
            # The answer was finished (it has feedback buttons); only its placeholder was left.
            for shown in live:
                await self._delete(channel, shown["ts"])
            return
        after = [r for r in replies if float(r["ts"]) > float(live[0]["ts"]) and not _controls(r)]
        noted = any(note in str(r.get("text") or "") for r in after)  # by an earlier attempt
        # The answer's stream (a message without buttons after the placeholder) is still open:
        # it ends with the note. Which one it is, Slack does not say; a closed one refuses.
        for reply in reversed(after):
            if noted:
                break
            try:
                await self.client.chat_stopStream(
                    channel=channel, ts=reply["ts"], markdown_text="\n\n" + note
                )
                noted = True
            except SlackApiError as exc:
                if exc.response.get("error") != "message_not_in_streaming_state":
                    raise
        for shown in live:
            answer = _markdown(shown)
            if answer and not noted and len(answer) + len(note) + 2 <= MARKDOWN_LIMIT:
                await self._show(channel, shown["ts"], f"{answer}\n\n{note}")
                noted = True
            elif answer:
                await self._show(channel, shown["ts"], answer)  # what was written stays
            elif not noted:
                await self.client.chat_update(channel=channel, ts=shown["ts"], text=note, blocks=[])
                noted = True
            else:
                await self._delete(channel, shown["ts"])
        if not noted:
            await self.client.chat_postMessage(channel=channel, thread_ts=key.thread_ts, text=note)

    async def _withdraw(self, channel: str, card: dict[str, Any]) -> None:
        """A tool call's approval card whose answer was cut off: its buttons go (no one waits
        for the decision any more)."""
        kept = [b for b in card.get("blocks") or [] if b.get("type") == "section"]
        blocks = [*kept, status_block(words.APPROVAL_INTERRUPTED)]
        text = str(card.get("text") or words.APPROVAL_INTERRUPTED)
        await self.client.chat_update(channel=channel, ts=card["ts"], text=text, blocks=blocks)

    async def _show(self, channel: str, ts: str, markdown: str) -> None:
        await self.client.chat_update(
            channel=channel, ts=ts, text=markdown, blocks=[{"type": "markdown", "text": markdown}]
        )

    async def _delete(self, channel: str, ts: str) -> None:
        try:
            await self.client.chat_delete(channel=channel, ts=ts)
        except SlackApiError as exc:
            if exc.response.get("error") != "message_not_found":
                raise


def _buttons(reply: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        element
        for block in reply.get("blocks") or []
        if isinstance(block, dict)
        for element in block.get("elements") or []
        if isinstance(element, dict) and element.get("action_id")
    ]


def _asks_approval(reply: dict[str, Any]) -> bool:
    return any(b.get("action_id") == APPROVE_ACTION for b in _buttons(reply))


def _controls(reply: dict[str, Any]) -> bool:
    """The reply carries a Stop or feedback button: an answer's placeholder, or a finished one."""
    return any(b.get("action_id") in (STOP_ACTION, FEEDBACK_ACTION) for b in _buttons(reply))


def _stop_ts(reply: dict[str, Any]) -> str | None:
    """The message whose answer this reply's Stop button would stop."""
    for button in _buttons(reply):
        parsed = parse_stop_value(str(button.get("value") or ""))
        if button.get("action_id") == STOP_ACTION and parsed:
            return parsed[1]
    return None


def _rates(reply: dict[str, Any]) -> str | None:
    """The message whose (finished) answer this reply's feedback buttons rate."""
    for block in reply.get("blocks") or []:
        for element in block.get("elements") or [] if isinstance(block, dict) else []:
            if isinstance(element, dict) and element.get("action_id") == FEEDBACK_ACTION:
                button = element.get("positive_button") or {}
                parsed = parse_feedback_value(str(button.get("value") or ""))
                return parsed[3] if parsed else None
    return None


def _live(replies: list[dict[str, Any]], message_ts: str) -> list[dict[str, Any]]:
    """The replies with a Stop button for the message `message_ts`: its unfinished answer."""
    return [reply for reply in replies if _stop_ts(reply) == message_ts]


def _markdown(reply: dict[str, Any]) -> str:
    """The answer text written into a message (its markdown blocks), "" for a placeholder."""
    return "\n\n".join(
        str(block.get("text") or "")
        for block in reply.get("blocks") or []
        if isinstance(block, dict) and block.get("type") == "markdown"
    ).strip()
