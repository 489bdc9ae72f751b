"""Answers into Slack: a sign of life at once, then the answer as it is written.

A placeholder ("Thinking…" and a Stop button) is posted in the thread as soon as a message is
taken. The answer then streams into a new message and the placeholder goes away; where Slack
refuses streaming, or a stream expires, the text is shown by editing messages instead (see
writers.py). Either way updates are coalesced (Slack rate-limits them), an answer longer than one
message continues in new messages (layout.py), and the finished answer carries feedback buttons
(blocks.py). In DMs the thread's status line says what the assistant is doing (status.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from slack_sdk.web.async_client import AsyncWebClient

from bot.engine.base import GeneratedFile
from bot.messages import IncomingMessage
from bot.outcomes import (
    WITHDRAWN,
    Answer,
    ApprovalRequest,
    Decision,
    Failure,
    FileProblem,
    Refusal,
    RunningTool,
    Task,
)
from bot.slack import words
from bot.slack.approvals import Approvals
from bot.slack.blocks import answer_content, progress_content, task_chunk
from bot.slack.layout import Draft, with_footnotes
from bot.slack.retries import SLACK_FAILURES, failure_name, post_message
from bot.slack.status import STATUS_REFRESH, StatusLine
from bot.slack.writers import (
    STREAM_INTERVAL,
    UPDATE_INTERVAL,
    AnswerThread,
    EditWriter,
    Shown,
    StreamWriter,
    Writer,
)

log = logging.getLogger(__name__)


class SlackSurface:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        stream_interval: float = STREAM_INTERVAL,
        update_interval: float = UPDATE_INTERVAL,
        status_refresh: float = STATUS_REFRESH,
        approvals: Approvals | None = None,
    ) -> None:
        self.client = client
        self.approvals = approvals
        self.streaming = True  # until Slack says streaming is not available to this app
        self.stream_interval = stream_interval
        self.update_interval = update_interval
        self.status_refresh = status_refresh

    async def begin(self, message: IncomingMessage) -> SlackReply:
        content = progress_content("", message)
        text, blocks = content
        ts = await post_message(
            self.client, message.key.channel_id, message.key.thread_ts, text=text, blocks=blocks
        )
        return SlackReply(self, message, Shown(ts, content=content))

    def reattach(self, message: IncomingMessage, ref: str, answer_ref: str = "") -> SlackReply:
        """The answer to `message` whose placeholder (posted by `begin`) has the ts `ref`;
        `answer_ref` names the messages (ts, space-separated) a process that died was writing
        the answer into: the answer from now on rewrites them."""
        reply = SlackReply(self, message, Shown(ref, content=progress_content("", message)))
        if answer_ref.split():
            reply.rewrite(answer_ref.split())
        return reply

    async def refuse(self, message: IncomingMessage, refusal: Refusal) -> None:
        """An ephemeral note to the message's writer: in its thread when it was a reply, else
        beside it, where they are looking."""
        key = message.key
        in_thread = key.thread_ts if key.thread_ts != message.ts else None
        try:
            await self.client.chat_postEphemeral(
                channel=key.channel_id,
                user=message.user_id,
                thread_ts=in_thread,
                text=words.refusal(refusal),
            )
        except SLACK_FAILURES as exc:
            log.warning(
                "event=refusal_not_shown channel=%s error=%s", key.channel_id, failure_name(exc)
            )


class SlackReply:
    """One answer: takes what the core reports and keeps the thread in step with it."""

    def __init__(self, surface: SlackSurface, message: IncomingMessage, placeholder: Shown) -> None:
        self.surface = surface
        self.thread = AnswerThread(surface.client, message, placeholder)
        self.ref = placeholder.ts
        self.writer: Writer = (
            StreamWriter(self.thread, surface.stream_interval)
            if surface.streaming
            else EditWriter(self.thread, surface.update_interval)
        )
        self.draft = Draft()
        self.message = message
        self.tool_status = ""
        self.succeeded = False
        self.status = (
            StatusLine(
                surface.client, self.thread.channel, self.thread.thread_ts, surface.status_refresh
            )
            if message.is_direct
            else None
        )
        self._progress_dirty = False
        self._closed = False
        self._next_sync = 0.0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    def track(self, moved: Callable[[str], Awaitable[None]]) -> None:
        self.thread.on_moved = moved

    def rewrite(self, written: Sequence[str]) -> None:
        """The answer was being written into these messages: the whole answer replaces what they
        show, by edits (a stream still open is stopped first), and extra ones go."""
        thread = self.thread
        if thread.placeholder is not None and thread.placeholder.ts in written:
            thread.placeholder = None  # the edit writer had made it the answer's first message
        thread.messages = [Shown(ts, streaming=True) for ts in written]
        self.writer = EditWriter(thread, self.surface.update_interval)

    # --- what the core reports -------------------------------------------------------------

    async def started(self) -> None:
        if self.status is not None:
            await self.status.show(words.LOADING_MESSAGES)

    async def text_delta(self, text: str) -> None:
        self.draft.add(text)
        if self.tool_status:
            self.tool_status = ""
            self._progress_dirty = True
            self._wake.set()
        self._kick()

    async def tools_running(self, tools: Sequence[RunningTool]) -> None:
        self.draft.new_round()
        self.tool_status = words.tools_line(tools)
        self._progress_dirty = True
        self._wake.set()
        self._kick()
        if self.status is not None:
            await self.status.show([words.tool_status(tool) for tool in tools])

    async def task_update(self, task: Task) -> None:
        if isinstance(self.writer, StreamWriter):
            self.thread.chunks.append(task_chunk(task))
            self._wake.set()
            self._kick()
        if task.status != "in_progress" or task.kind in ("function", "mcp"):
            return  # (function calls are shown by tools_running, with their declared status)
        self.draft.new_round()
        self.tool_status = words.task_status(task)
        self._progress_dirty = True
        self._wake.set()
        self._kick()
        if self.status is not None:
            await self.status.show([self.tool_status.strip("_")])

    async def reasoning(self, summary: str) -> None:
        title = words.reasoning_title(summary)
        if title is None or title == self.tool_status:
            return
        self.tool_status = title
        self._progress_dirty = True
        self._wake.set()
        self._kick()
        if self.status is not None:
            await self.status.show([title.strip("_")])

    async def approve(self, request: ApprovalRequest) -> Decision:
        approvals = self.surface.approvals
        if approvals is None:
            return Decision(WITHDRAWN)  # no one can be asked here
        before, self.tool_status = self.tool_status, words.WAITING_FOR_APPROVAL
        self._progress_dirty = True
        self._wake.set()
        self._kick()
        try:
            return await approvals.ask(self.thread.client, self.message, request)
        finally:
            if self.tool_status == words.WAITING_FOR_APPROVAL:
                self.tool_status = before  # the tool runs now, or is not run
                self._progress_dirty = True
                self._kick()

    async def reading(self, names: Sequence[str]) -> None:
        self.tool_status = words.reading(names)
        async with self._lock:
            try:
                await self.thread.show_progress(self.tool_status)
            except SLACK_FAILURES as exc:  # the answer that follows shows that something happens
                log.warning(
                    "event=progress_failed channel=%s error=%s",
                    self.thread.channel,
                    failure_name(exc),
                )

    async def file_problem(self, problem: FileProblem) -> None:
        await self._note(words.file_problem(problem))

    async def _note(self, text: str) -> None:
        """A note beside the answer; the answer goes on when Slack will not take it."""
        thread = self.thread
        try:
            await post_message(thread.client, thread.channel, thread.thread_ts, text=text)
        except SLACK_FAILURES as exc:
            log.warning("event=note_failed channel=%s error=%s", thread.channel, failure_name(exc))

    async def finish(self, answer: Answer) -> None:
        text = words.answer_text(answer).strip()
        shown = with_footnotes(text, answer.citations) if text else ""
        if not shown and answer.files:
            shown = words.ONLY_FILES
        if answer.tasks:
            self.thread.record = words.tools_record(answer.tasks)
        await self._close(shown, succeeded=True)
        if answer.files:
            await self._upload(answer.files)

    async def _upload(self, files: Sequence[GeneratedFile]) -> None:
        channel = self.thread.channel
        try:
            await self.thread.client.files_upload_v2(
                channel=channel,
                thread_ts=self.thread.thread_ts,
                file_uploads=[
                    {"content": file.content, "filename": file.name, "title": file.name}
                    for file in files
                ],
            )
        except SLACK_FAILURES as exc:
            log.warning("event=upload_failed channel=%s error=%s", channel, failure_name(exc))
            await self._note(words.upload_failed([file.name for file in files]))

    async def fail(self, failure: Failure) -> None:
        await self._close(words.failure(failure), succeeded=False)

    # --- keeping Slack in step ---------------------------------------------------------------

    def _kick(self) -> None:
        if not self._closed and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._closed and (
                self._progress_dirty or self.draft.has_news() or self.thread.chunks
            ):
                delay = self._next_sync - loop.time()
                if delay > 0 and not self._wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                self._wake.clear()
                async with self._lock:
                    if self._closed:
                        return
                    await self._sync(final=False)
                self._next_sync = loop.time() + self.writer.interval
        except Exception:
            # The final sync shows everything anyway; until then the thread just looks slower.
            log.exception("event=answer_update_failed channel=%s", self.thread.channel)

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
                if not succeeded:
                    self.draft.end_with(text)
                    if not self.thread.messages:
                        # Nothing streamed: the placeholder says what happened. (An answer still
                        # streams, so that answers keep the order they were written in.)
                        self._edit_from_now_on()
                elif self.draft.complete(text or self.draft.received.strip() or words.EMPTY_ANSWER):
                    log.info("event=answer_rewritten channel=%s", self.thread.channel)
                    await self._stream_last_tasks()
                    for shown in self.thread.messages:
                        shown.content = None
                    self._edit_from_now_on()
                await self._sync_final()
                await self._retire_placeholder()
            finally:
                if self.status is not None:
                    await self.status.clear()

    async def _stream_last_tasks(self) -> None:
        """The tasks that ended last, streamed before the answer is rewritten by editing."""
        if isinstance(self.writer, StreamWriter) and self.thread.chunks:
            try:
                await self.writer.stream_tasks()
            except SLACK_FAILURES as exc:
                log.info("event=tasks_not_shown channel=%s error=%s", self.thread.channel, exc)

    async def _sync_final(self) -> None:
        """Show the whole answer; when Slack fails even after its retries, write it anew once."""
        try:
            await self._sync(final=True)
            return
        except SLACK_FAILURES:
            log.warning("event=answer_not_shown channel=%s retry=edit", self.thread.channel)
        self._edit_from_now_on()
        for shown in self.thread.messages:
            shown.content = None
        try:
            await self._sync(final=True)
        except SLACK_FAILURES:
            log.exception("event=answer_not_shown channel=%s", self.thread.channel)

    async def _retire_placeholder(self) -> None:
        """The placeholder goes away; one that cannot be deleted stops saying Thinking…."""
        placeholder, self.thread.placeholder = self.thread.placeholder, None
        if placeholder is None or await self.thread.delete(placeholder.ts):
            return
        try:
            await self.thread.show(
                placeholder, answer_content(words.ANSWER_BELOW, self.thread.message)
            )
        except SLACK_FAILURES:
            log.exception("event=placeholder_left channel=%s", self.thread.channel)

    async def _sync(self, final: bool) -> None:
        chunk = self.draft.lay_out(final)
        self._progress_dirty = False
        texts = self.draft.messages
        if not await self.writer.sync(texts, final, self.tool_status, self.succeeded):
            self._edit_from_now_on()
            await self.writer.sync(texts, final, self.tool_status, self.succeeded)
        if self.status is not None and chunk.strip():
            await self.status.clear()  # the answer itself now shows that something happens

    def _edit_from_now_on(self) -> None:
        self.thread.chunks.clear()  # tasks show in the status line from now on
        if isinstance(self.writer, StreamWriter):
            if self.writer.unavailable:
                self.surface.streaming = False
            self.writer = EditWriter(self.thread, self.surface.update_interval)
