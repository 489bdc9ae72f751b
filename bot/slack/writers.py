"""The two ways an answer's messages are written into a Slack thread.

`StreamWriter` streams each message (`chat.startStream` / `appendStream` / `stopStream`) while
the placeholder above keeps the Stop button and the tools' status; `EditWriter` edits the
messages (`chat.update`, the placeholder becoming the first) and posts the ones that follow. An
answer starts streaming and goes on editing where Slack refuses or ends its stream; both write
into the same `AnswerThread`, so whatever was shown stays.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.messages import IncomingMessage
from bot.slack.blocks import (
    Content,
    answer_content,
    feedback_block,
    progress_content,
    status_block,
)
from bot.slack.retries import SLACK_FAILURES, failure_name, post_message, start_stream

log = logging.getLogger(__name__)

# chat.appendStream is a Tier 4 method; chat.update allows about one edit a second per message.
STREAM_INTERVAL = 0.5
UPDATE_INTERVAL = 1.0
# An edit that fails with these says the message again instead.
MESSAGE_GONE = {"message_not_found", "cant_update_message", "edit_window_closed"}
# Errors that mean streaming will not work for this app at all (rather than for this message).
STREAMING_UNAVAILABLE = {"not_allowed_token_type", "missing_scope", "unknown_method", "not_allowed"}


@dataclass
class Shown:
    """One Slack message of the answer."""

    ts: str
    sent: str = ""  # streamed into it so far
    streaming: bool = False
    content: Content | None = None  # last shown by chat.postMessage / chat.update


class AnswerThread:
    """The thread an answer is written into: its placeholder, its messages, and the calls that
    both writers make on them."""

    def __init__(
        self, client: AsyncWebClient, message: IncomingMessage, placeholder: Shown
    ) -> None:
        self.client = client
        self.message = message
        self.channel = message.key.channel_id
        self.thread_ts = message.key.thread_ts
        self.placeholder: Shown | None = placeholder
        self.messages: list[Shown] = []
        self.chunks: list[dict[str, Any]] = []  # task updates not streamed yet
        self.record = ""  # the finished answer's record of the tools it used
        # Told where the answer is written (its messages' ts) each time it takes a new message.
        self.on_moved: Callable[[str], Awaitable[None]] | None = None

    async def add(self, shown: Shown) -> None:
        """One more message of the answer."""
        self.messages.append(shown)
        if self.on_moved is not None:
            try:
                await self.on_moved(" ".join(m.ts for m in self.messages))
            except Exception as exc:  # the answer goes on; only a take-over would miss it
                log.warning(
                    "event=answer_ref_not_kept channel=%s error=%s",
                    self.channel,
                    type(exc).__name__,
                )

    async def post(self, content: Content) -> str:
        text, blocks = content
        return await post_message(
            self.client, self.channel, self.thread_ts, text=text, blocks=blocks
        )

    @property
    def latest_ts(self) -> str:
        """The latest message of this answer (or its placeholder), else the thread's first."""
        shown = [m.ts for m in self.messages] + ([self.placeholder.ts] if self.placeholder else [])
        return max(shown, key=float, default=self.thread_ts)

    async def show(self, shown: Shown, content: Content) -> None:
        """Make `shown` show `content`: edited, or said anew where it can no longer be edited."""
        text, blocks = content
        if shown.streaming:  # a rewrite replaces what a stream showed: end that stream first
            shown.streaming = False
            with contextlib.suppress(*SLACK_FAILURES):  # (it may have expired, or be stopped)
                await self.client.chat_stopStream(channel=self.channel, ts=shown.ts)
        try:
            await self.client.chat_update(
                channel=self.channel, ts=shown.ts, text=text, blocks=blocks
            )
        except SlackApiError as exc:
            if exc.response.get("error") not in MESSAGE_GONE:
                raise
            # The message is gone (deleted by someone) or cannot be edited: say it anew.
            log.warning(
                "event=update_failed channel=%s error=%s", self.channel, exc.response.get("error")
            )
            shown.ts = await self.post(content)
        shown.content = content

    async def show_progress(self, status: str) -> None:
        """While the placeholder stands above the answer, it shows the status and Stop."""
        if self.placeholder is None:
            return
        content = progress_content(status, self.message)
        if self.placeholder.content != content:
            await self.show(self.placeholder, content)

    async def delete(self, ts: str) -> bool:
        """False when the message is still there."""
        try:
            await self.client.chat_delete(channel=self.channel, ts=ts)
        except SlackApiError as exc:
            error = exc.response.get("error")
            log.info("event=delete_failed channel=%s error=%s", self.channel, error)
            return bool(error == "message_not_found")
        except SLACK_FAILURES as exc:
            log.warning("event=delete_failed channel=%s error=%s", self.channel, failure_name(exc))
            return False
        return True


class Writer:
    """Brings the thread in step with the answer's laid-out `texts` (the last still growing
    unless `final`); `status` is what the assistant is doing, `succeeded` earns feedback buttons.
    """

    def __init__(self, thread: AnswerThread, interval: float) -> None:
        self.thread = thread
        self.interval = interval  # at most one sync this often while the answer is written

    async def sync(self, texts: Sequence[str], final: bool, status: str, succeeded: bool) -> bool:
        """False when this writer cannot go on: the edit writer takes over from where it was."""
        raise NotImplementedError


class StreamWriter(Writer):
    def __init__(self, thread: AnswerThread, interval: float = STREAM_INTERVAL) -> None:
        super().__init__(thread, interval)
        self.unavailable = False  # Slack said this app cannot stream at all

    async def sync(self, texts: Sequence[str], final: bool, status: str, succeeded: bool) -> bool:
        thread = self.thread
        client, channel = thread.client, thread.channel
        try:
            if not await self.stream_tasks():
                return False
            for index in range(max(len(thread.messages) - 1, 0), len(texts)):
                text = texts[index]
                last = index == len(texts) - 1
                if index == len(thread.messages):
                    if not text:
                        break
                    ts = await self._start(text)
                    if ts is None:
                        return False
                    await thread.add(Shown(ts, sent=text, streaming=True))
                shown = thread.messages[index]
                if len(text) > len(shown.sent):
                    await client.chat_appendStream(
                        channel=channel, ts=shown.ts, markdown_text=text[len(shown.sent) :]
                    )
                    shown.sent = text
                if shown.streaming and (final or not last):
                    if final and last and succeeded:
                        blocks = [feedback_block(thread.message)]
                        if thread.record:
                            blocks.insert(0, status_block(thread.record))
                        await client.chat_stopStream(channel=channel, ts=shown.ts, blocks=blocks)
                    else:
                        await client.chat_stopStream(channel=channel, ts=shown.ts)
                    shown.streaming = False
        except SLACK_FAILURES as exc:
            # Expired, refused or lost mid-answer (an append whose answer was lost may or may not
            # have been shown): editing rewrites the open messages whole, after ending their
            # streams. Messages closed properly earlier stay as they are.
            log.warning("event=stream_lost channel=%s error=%s", channel, failure_name(exc))
            metrics.stream_fallback()
            for index, shown in enumerate(thread.messages):
                if not shown.streaming:
                    shown.content = answer_content(texts[index], thread.message)
            return False
        if not final:
            await thread.show_progress(status)
        return True

    async def stream_tasks(self) -> bool:
        """Stream the task updates that came, into the answer's latest message (the first
        message starts with them when no text came yet); False when streaming was refused."""
        thread = self.thread
        chunks, thread.chunks = thread.chunks, []
        if not chunks:
            return True
        if not thread.messages:
            ts = await self._start("", chunks)
            if ts is None:
                return False
            thread.messages.append(Shown(ts, streaming=True))
            return True
        latest = thread.messages[-1]
        if latest.streaming:
            await thread.client.chat_appendStream(
                channel=thread.channel, ts=latest.ts, chunks=chunks
            )
        return True

    async def _start(self, text: str, chunks: list[dict[str, Any]] | None = None) -> str | None:
        thread = self.thread
        try:
            return await start_stream(
                thread.client,
                thread.channel,
                thread.thread_ts,
                thread.latest_ts,
                text,
                recipient_team_id=thread.message.key.team_id,
                recipient_user_id=thread.message.user_id,
                chunks=chunks,
            )
        except SLACK_FAILURES as exc:
            error = failure_name(exc)
            log.warning("event=stream_refused channel=%s error=%s", thread.channel, error)
            metrics.stream_fallback()
            self.unavailable = error in STREAMING_UNAVAILABLE
            return None


class EditWriter(Writer):
    def __init__(self, thread: AnswerThread, interval: float = UPDATE_INTERVAL) -> None:
        super().__init__(thread, interval)

    async def sync(self, texts: Sequence[str], final: bool, status: str, succeeded: bool) -> bool:
        thread = self.thread
        for index, text in enumerate(texts):
            last = index == len(texts) - 1
            content = answer_content(
                text,
                thread.message,
                status=status,
                live=last and not final,
                feedback=last and final and succeeded,
                record=thread.record,
            )
            if index < len(thread.messages):
                if thread.messages[index].content != content:
                    await thread.show(thread.messages[index], content)
            elif index == 0 and thread.placeholder is not None:
                shown, thread.placeholder = thread.placeholder, None
                await thread.add(shown)
                if shown.content != content:
                    await thread.show(shown, content)
            else:
                await thread.add(Shown(await thread.post(content), content=content))
        for shown in thread.messages[len(texts) :]:
            await thread.delete(shown.ts)
        del thread.messages[len(texts) :]
        return True
