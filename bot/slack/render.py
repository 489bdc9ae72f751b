"""Answers into Slack: a sign of life at once, then the answer as it is written.

A placeholder ("Thinking…" and a Stop button) is posted in the thread as soon as a message is
taken. The answer then streams into a new message with Slack's chat streaming
(`chat.startStream` / `appendStream` / `stopStream`) and the placeholder goes away; where Slack
refuses streaming, or a stream expires, the text is shown by editing messages (`chat.update`)
instead. Either way updates are coalesced (Slack rate-limits them), an answer longer than one
message continues in new messages (split between paragraphs, code fences closed and reopened), and
the finished answer carries feedback buttons. In DMs the thread's status line says what the
assistant is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.engine.base import Citation, GeneratedFile
from bot.messages import ConversationKey, IncomingMessage

log = logging.getLogger(__name__)

MARKDOWN_LIMIT = 12_000  # all markdown blocks of one message share 12,000 characters
FENCE_CLOSE = "\n```"
MAX_HELD_BACK = 40  # characters of an unfinished word kept back while streaming
THINKING = "_Thinking…_"
EMPTY_ANSWER = "_(The assistant finished without writing an answer.)_"
STOP_ACTION = "stop_answer"
FEEDBACK_ACTION = "answer_feedback"
THINKING_STATUS = "is thinking…"
LOADING_MESSAGES = ["Reading your message…", "Thinking it through…", "Writing an answer…"]
# chat.appendStream is a Tier 4 method; chat.update allows about one edit a second per message.
STREAM_INTERVAL = 0.5
UPDATE_INTERVAL = 1.0
# Slack removes a status after two minutes without a message: refresh it well before that.
STATUS_REFRESH = 90.0
# Errors that mean streaming will not work for this app at all (rather than for this message).
MESSAGE_GONE = {"message_not_found", "cant_update_message", "edit_window_closed"}
STREAMING_UNAVAILABLE = {"not_allowed_token_type", "missing_scope", "unknown_method", "not_allowed"}


def is_progress_text(text: str) -> bool:
    """A placeholder or progress line of the bot's (not a message anyone should read back)."""
    return text == THINKING or (text.startswith("_") and text.endswith("…_"))


def split_markdown(text: str, limit: int = MARKDOWN_LIMIT) -> list[str]:
    """Split Markdown into pieces of at most `limit` characters without losing a word.

    Cuts fall on paragraph breaks, else line breaks, else spaces, else anywhere; a piece that ends
    inside a fenced code block closes it, and the next piece reopens it with the same fence line.
    """
    layout = _Layout(limit)
    layout.add(text.strip())
    return layout.messages


def _open_fence(text: str) -> str:
    """The opening line of a code fence left open at the end of `text`, or ''."""
    fence = ""
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = "" if fence else stripped
    return fence


def with_footnotes(text: str, citations: Sequence[Citation]) -> str:
    """Footnotes `[n]` where the answer cites a file, and a Sources list naming the files."""
    if not citations:
        return text
    numbers: dict[str, int] = {}
    for citation in sorted(citations, key=lambda c: c.position):
        numbers.setdefault(citation.filename or citation.file_id, len(numbers) + 1)
    marks: dict[int, list[int]] = {}
    for citation in citations:
        number = numbers[citation.filename or citation.file_id]
        at = marks.setdefault(min(max(citation.position, 0), len(text)), [])
        if number not in at:
            at.append(number)
    for position in sorted(marks, reverse=True):
        footnote = "".join(f"[{n}]" for n in sorted(marks[position]))
        text = text[:position] + footnote + text[position:]
    sources = "\n".join(f"[{n}] {name}" for name, n in numbers.items())
    return f"{text.rstrip()}\n\n**Sources:**\n{sources}"


class _Layout:
    """An answer growing at its end, laid out as Slack messages of at most `limit` characters.

    Messages only ever grow at their end (a closed one may get a closing fence), so whatever was
    already streamed into a message stays a prefix of its final text.
    """

    def __init__(self, limit: int = MARKDOWN_LIMIT) -> None:
        self.limit = limit
        self.messages = [""]

    def add(self, text: str) -> None:
        room = self.limit - len(FENCE_CLOSE)
        while text:
            current = self.messages[-1]
            if len(current) + len(text) <= room:
                self.messages[-1] = current + text
                return
            head, text = _cut(current, text, room)
            closed = current + head
            fence = _open_fence(closed)
            self.messages[-1] = closed + FENCE_CLOSE if fence else closed
            text = text if fence else text.lstrip("\n")
            if fence or text:
                self.messages.append(fence + "\n" if fence else "")


def _cut(current: str, text: str, room: int) -> tuple[str, str]:
    """Where `text` leaves the message holding `current`: at a paragraph, line or word break
    (dropped) once the message is at least half full, else as late as possible."""
    budget = room - len(current)
    for separator in ("\n\n", "\n", " "):
        index = text.rfind(separator, 0, budget + len(separator))
        if index >= 0 and len(current) + index >= room // 2:
            return text[:index], text[index + len(separator) :]
    return text[:budget], text[budget:]


def _complete_words(text: str) -> int:
    """How much of `text` to show now: up to its last whole word, so that a message never ends
    in whitespace or half a word (a long run without spaces, like CJK text, is shown anyway)."""
    end = len(text.rstrip())
    if end < len(text):
        return end
    space = max(text.rfind(" "), text.rfind("\n"))
    if len(text) - space > MAX_HELD_BACK:
        return len(text)
    return len(text[: max(space, 0)].rstrip())


def _stop_value(message: IncomingMessage) -> str:
    key = message.key
    return "|".join((key.team_id, key.channel_id, key.thread_ts, message.ts, message.user_id))


def parse_stop_value(value: str) -> tuple[ConversationKey, str, str] | None:
    """(conversation, message ts, asker) from a Stop button's value."""
    parts = value.split("|")
    if len(parts) != 5:
        return None
    team, channel, thread_ts, ts, user = parts
    return ConversationKey(team, channel, thread_ts), ts, user


def parse_feedback_value(value: str) -> tuple[str, str, str, str] | None:
    """(rating, team, channel, message ts) from a feedback button's value."""
    parts = value.split("|")
    if len(parts) != 4 or parts[0] not in ("good", "bad"):
        return None
    return parts[0], parts[1], parts[2], parts[3]


def _progress_blocks(status: str, message: IncomingMessage) -> list[dict[str, Any]]:
    return [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": status}]},
        _stop_block(message),
    ]


def _stop_block(message: IncomingMessage) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": "answer_controls",
        "elements": [
            {
                "type": "button",
                "action_id": STOP_ACTION,
                "text": {"type": "plain_text", "text": "Stop"},
                "value": _stop_value(message),
            }
        ],
    }


def _feedback_block(message: IncomingMessage) -> dict[str, Any]:
    ref = f"{message.key.team_id}|{message.key.channel_id}|{message.ts}"

    def button(label: str, value: str, description: str) -> dict[str, Any]:
        return {
            "text": {"type": "plain_text", "text": label},
            "value": f"{value}|{ref}",
            "accessibility_label": description,
        }

    return {
        "type": "context_actions",
        "block_id": "answer_feedback",
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION,
                "positive_button": button("👍", "good", "This answer was helpful"),
                "negative_button": button("👎", "bad", "This answer was not helpful"),
            }
        ],
    }


class SlackSurface:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        stream_interval: float = STREAM_INTERVAL,
        update_interval: float = UPDATE_INTERVAL,
        status_refresh: float = STATUS_REFRESH,
    ) -> None:
        self.client = client
        self.streaming = True  # until Slack says streaming is not available to this app
        self.stream_interval = stream_interval
        self.update_interval = update_interval
        self.status_refresh = status_refresh

    async def begin(self, message: IncomingMessage) -> SlackReply:
        blocks = _progress_blocks(THINKING, message)
        response = await self.client.chat_postMessage(
            channel=message.key.channel_id,
            thread_ts=message.key.thread_ts,
            text=THINKING,
            blocks=blocks,
        )
        return SlackReply(self, message, str(response["ts"]), (THINKING, blocks))


Content = tuple[str, list[dict[str, Any]]]  # (text, blocks) of a message shown by chat.update


@dataclass
class _Slot:
    """One Slack message of the answer."""

    ts: str
    sent: str = ""  # streamed so far (stream mode)
    streaming: bool = False
    content: Content | None = None  # last shown by postMessage/update (update mode)


class SlackReply:
    def __init__(
        self, surface: SlackSurface, message: IncomingMessage, placeholder_ts: str, shown: Content
    ) -> None:
        self.surface = surface
        self.client = surface.client
        self.message = message
        self.channel = message.key.channel_id
        self.thread_ts = message.key.thread_ts
        self.placeholder: _Slot | None = _Slot(placeholder_ts, content=shown)
        self.streaming = surface.streaming
        self.received = ""  # the answer text as it arrived
        self.laid_out = 0  # how much of `received` the layout holds
        self.layout = _Layout()
        self.slots: list[_Slot] = []
        self.tool_status = ""
        self.succeeded = False
        self.status = _StatusLine(self) if message.is_direct else None
        self._new_round = False
        self._progress_dirty = False
        self._closed = False
        self._next_sync = 0.0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    @property
    def ts(self) -> str:
        """The message that shows this answer (the first of them when it took several)."""
        if self.slots:
            return self.slots[0].ts
        return self.placeholder.ts if self.placeholder else ""

    # --- what the core reports -------------------------------------------------------------

    async def started(self) -> None:
        if self.status is not None:
            await self.status.show(LOADING_MESSAGES)

    async def text_delta(self, text: str) -> None:
        if self._new_round and self.received.strip():
            self.received += "\n\n"  # the engines join the texts of tool rounds the same way
        self._new_round = False
        self.received += text
        if self.tool_status:
            self.tool_status = ""
            self._progress_dirty = True
            self._wake.set()
        self._kick()

    async def tools_running(self, statuses: Sequence[str]) -> None:
        self._new_round = True
        self.tool_status = " ".join(f"_{status}_" for status in statuses)
        self._progress_dirty = True
        self._wake.set()
        self._kick()
        if self.status is not None:
            await self.status.show(list(statuses))

    async def reading(self, names: Sequence[str]) -> None:
        self.tool_status = f"_Reading {', '.join(names)}…_"
        async with self._lock:
            await self._show_progress()

    async def note(self, text: str) -> None:
        await self.client.chat_postMessage(
            channel=self.channel, thread_ts=self.thread_ts, text=text
        )

    async def finish(
        self,
        text: str,
        citations: Sequence[Citation] = (),
        files: Sequence[GeneratedFile] = (),
    ) -> None:
        answer = with_footnotes(text.strip(), citations) if text.strip() else ""
        if not answer and files:
            answer = "_(The assistant made the files below.)_"
        await self._close(answer, succeeded=True)
        if files:
            await self._upload(files)

    async def _upload(self, files: Sequence[GeneratedFile]) -> None:
        try:
            await self.client.files_upload_v2(
                channel=self.channel,
                thread_ts=self.thread_ts,
                file_uploads=[
                    {"content": file.content, "filename": file.name, "title": file.name}
                    for file in files
                ],
            )
        except SlackApiError as exc:
            log.warning(
                "event=upload_failed channel=%s error=%s", self.channel, exc.response.get("error")
            )
            names = ", ".join(file.name for file in files)
            await self.note(f":warning: I could not upload the files the assistant made ({names}).")

    async def fail(self, text: str) -> None:
        await self._close(text, succeeded=False)

    # --- keeping Slack in step ---------------------------------------------------------------

    def _kick(self) -> None:
        if not self._closed and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush_loop())

    def _interval(self) -> float:
        return self.surface.stream_interval if self.streaming else self.surface.update_interval

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._closed and self._has_news():
                delay = self._next_sync - loop.time()
                if delay > 0 and not self._wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                self._wake.clear()
                async with self._lock:
                    if self._closed:
                        return
                    await self._sync(final=False)
                self._next_sync = loop.time() + self._interval()
        except Exception:
            # The final sync shows everything anyway; until then the thread just looks slower.
            log.exception("event=answer_update_failed channel=%s", self.channel)

    def _has_news(self) -> bool:
        return self._progress_dirty or bool(self.received[self.laid_out :].strip())

    def _progress_content(self) -> Content:
        status = self.tool_status or THINKING
        return status, _progress_blocks(status, self.message)

    async def _close(self, text: str, succeeded: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        # Shielded: a turn stopped or timed out while its answer is being finished still leaves
        # the thread tidy (stream stopped, placeholder gone, status cleared).
        await asyncio.shield(self._finalize(text, succeeded))

    async def _finalize(self, text: str, succeeded: bool) -> None:
        async with self._lock:
            try:
                self.tool_status = ""
                self.succeeded = succeeded
                if succeeded:
                    self._complete(text)
                else:
                    shown = self.received.rstrip()
                    self.received = f"{shown}\n\n{text}" if shown.strip() else text
                if self.streaming and not self.slots and not succeeded:
                    # Nothing streamed: the placeholder says what happened. (An answer still
                    # streams, so that answers keep the order they were written in.)
                    self.streaming = False
                await self._sync(final=True)
                if self.placeholder is not None:
                    await self._delete(self.placeholder.ts)
                    self.placeholder = None
            finally:
                if self.status is not None:
                    await self.status.clear()

    def _complete(self, final: str) -> None:
        """Make `received` the engine's final text, rewriting the layout if they differ."""
        so_far = self.received.strip()
        final = final or so_far or EMPTY_ANSWER
        if final.startswith(so_far):
            self.received = self.received.rstrip() + final[len(so_far) :]
            return
        log.info("event=answer_rewritten channel=%s", self.channel)
        self.received, self.laid_out, self.layout = final, 0, _Layout()
        for slot in self.slots:
            slot.content = None
        self.streaming = False

    async def _sync(self, final: bool) -> None:
        pending = self.received[self.laid_out :]
        take = len(pending) if final else _complete_words(pending)
        chunk = pending[:take]
        if not self.layout.messages[-1]:
            chunk = chunk.lstrip()
        self.layout.add(chunk.rstrip() if final else chunk)
        self.laid_out += take
        self._progress_dirty = False
        if self.streaming:
            await self._sync_streams(final)
        if not self.streaming:
            await self._sync_updates(final)
        if self.status is not None and chunk.strip():
            await self.status.clear()  # the answer itself now shows that something happens

    async def _sync_streams(self, final: bool) -> None:
        messages = self.layout.messages
        start = max(len(self.slots) - 1, 0)
        try:
            for index in range(start, len(messages)):
                text = messages[index]
                last = index == len(messages) - 1
                if index == len(self.slots):
                    if not text:
                        break
                    ts = await self._start_stream(text)
                    if ts is None:
                        return
                    self.slots.append(_Slot(ts, sent=text, streaming=True))
                slot = self.slots[index]
                if len(text) > len(slot.sent):
                    await self.client.chat_appendStream(
                        channel=self.channel, ts=slot.ts, markdown_text=text[len(slot.sent) :]
                    )
                    slot.sent = text
                if slot.streaming and (final or not last):
                    blocks = [_feedback_block(self.message)] if final and last else None
                    if blocks and self.succeeded:
                        await self.client.chat_stopStream(
                            channel=self.channel, ts=slot.ts, blocks=blocks
                        )
                    else:
                        await self.client.chat_stopStream(channel=self.channel, ts=slot.ts)
                    slot.streaming = False
        except SlackApiError as exc:
            # Expired or refused mid-answer: what was streamed stays; editing finishes the job.
            log.warning(
                "event=stream_lost channel=%s error=%s", self.channel, exc.response.get("error")
            )
            self.streaming = False
            for index, slot in enumerate(self.slots):
                if not slot.streaming:  # closed properly earlier: it stays as it is
                    slot.content = self._content(messages[index], live=False, feedback=False)
                slot.streaming = False
            return
        if not final:
            await self._show_progress()

    async def _start_stream(self, text: str) -> str | None:
        try:
            response = await self.client.chat_startStream(
                channel=self.channel,
                thread_ts=self.thread_ts,
                markdown_text=text,
                recipient_team_id=self.message.key.team_id,
                recipient_user_id=self.message.user_id,
            )
        except SlackApiError as exc:
            error = exc.response.get("error")
            log.warning("event=stream_refused channel=%s error=%s", self.channel, error)
            if error in STREAMING_UNAVAILABLE:
                self.surface.streaming = False
            self.streaming = False
            return None
        return str(response["ts"])

    async def _show_progress(self) -> None:
        """While streaming, the placeholder above the answer keeps the Stop button and tool status."""
        if self.placeholder is None:
            return
        content = self._progress_content()
        if self.placeholder.content != content:
            await self._show(self.placeholder, content)

    async def _sync_updates(self, final: bool) -> None:
        messages = self.layout.messages
        for index, text in enumerate(messages):
            last = index == len(messages) - 1
            content = self._content(text, live=last and not final, feedback=last and final)
            if index < len(self.slots):
                if self.slots[index].content != content:
                    await self._show(self.slots[index], content)
            elif index == 0 and self.placeholder is not None:
                slot, self.placeholder = self.placeholder, None
                self.slots.append(slot)
                if slot.content != content:
                    await self._show(slot, content)
            else:
                response = await self.client.chat_postMessage(
                    channel=self.channel,
                    thread_ts=self.thread_ts,
                    text=content[0],
                    blocks=content[1],
                )
                self.slots.append(_Slot(str(response["ts"]), content=content))
        for slot in self.slots[len(messages) :]:
            await self._delete(slot.ts)
        del self.slots[len(messages) :]

    def _content(self, text: str, live: bool, feedback: bool) -> Content:
        blocks: list[dict[str, Any]] = [{"type": "markdown", "text": text}] if text else []
        if live:
            if self.tool_status or not text:
                status = self.tool_status or THINKING
                blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": status}]})
            blocks.append(_stop_block(self.message))
        elif feedback and self.succeeded:
            blocks.append(_feedback_block(self.message))
        return text or self.tool_status or THINKING, blocks

    async def _show(self, slot: _Slot, content: Content) -> None:
        text, blocks = content
        if slot.streaming:  # a rewrite replaces what a stream showed: end that stream first
            slot.streaming = False
            with contextlib.suppress(SlackApiError):
                await self.client.chat_stopStream(channel=self.channel, ts=slot.ts)
        try:
            await self.client.chat_update(
                channel=self.channel, ts=slot.ts, text=text, blocks=blocks
            )
        except SlackApiError as exc:
            if exc.response.get("error") not in MESSAGE_GONE:
                raise
            # The message is gone (deleted by someone) or cannot be edited: say it anew.
            log.warning(
                "event=update_failed channel=%s error=%s", self.channel, exc.response.get("error")
            )
            response = await self.client.chat_postMessage(
                channel=self.channel, thread_ts=self.thread_ts, text=text, blocks=blocks
            )
            slot.ts = str(response["ts"])
        slot.content = content

    async def _delete(self, ts: str) -> None:
        try:
            await self.client.chat_delete(channel=self.channel, ts=ts)
        except SlackApiError as exc:
            log.info(
                "event=delete_failed channel=%s error=%s", self.channel, exc.response.get("error")
            )


class _StatusLine:
    """The assistant thread's status ("is thinking…"), refreshed while it shows."""

    def __init__(self, reply: SlackReply) -> None:
        self.reply = reply
        self.shown: list[str] | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def show(self, loading_messages: list[str]) -> None:
        if self.shown == loading_messages:
            return
        self.shown = loading_messages
        await self._send(THINKING_STATUS, loading_messages)
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh())

    async def clear(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        if self.shown is not None:
            self.shown = None
            await self._send("", None)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.reply.surface.status_refresh)
            if self.shown is not None:
                await self._send(THINKING_STATUS, self.shown)

    async def _send(self, status: str, loading_messages: list[str] | None) -> None:
        try:
            await self.reply.client.assistant_threads_setStatus(
                channel_id=self.reply.channel,
                thread_ts=self.reply.thread_ts,
                status=status,
                loading_messages=loading_messages,
            )
        except SlackApiError as exc:
            log.info(
                "event=status_failed channel=%s error=%s",
                self.reply.channel,
                exc.response.get("error"),
            )
