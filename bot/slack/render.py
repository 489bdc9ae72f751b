"""Answers into Slack: a sign of life at once, then the answer as standard Markdown.

A placeholder message is posted in the thread as soon as a message is taken; it becomes the answer
(`chat.update` with `markdown_text`). An answer longer than one message continues in new messages,
split between paragraphs or lines, with code blocks closed and reopened across the split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.engine.base import Citation, GeneratedFile
from bot.messages import IncomingMessage

log = logging.getLogger(__name__)

MARKDOWN_LIMIT = 12_000  # all markdown blocks of one message share 12,000 characters
THINKING = "_Thinking…_"
EMPTY_ANSWER = "_(The assistant finished without writing an answer.)_"


def split_markdown(text: str, limit: int = MARKDOWN_LIMIT) -> list[str]:
    """Split Markdown into pieces of at most `limit` characters without losing a character.

    Cuts fall on paragraph breaks, else line breaks, else spaces, else anywhere; a piece that ends
    inside a fenced code block closes it, and the next piece reopens it with the same fence line.
    """
    pieces: list[str] = []
    rest = text
    reopen = ""
    while len(reopen) + len(rest) > limit:
        budget = limit - len(reopen) - 4  # room to close a fence: "\n```"
        cut = _cut_point(rest, budget)
        piece = reopen + rest[:cut]
        fence = _open_fence(piece)
        if fence:
            piece = piece.rstrip("\n") + "\n```"
        pieces.append(piece.rstrip())
        rest = rest[cut:].lstrip("\n") if not fence else rest[cut:]
        reopen = fence + "\n" if fence else ""
    final = (reopen + rest).rstrip()
    if final or not pieces:
        pieces.append(final)
    return pieces


def _cut_point(text: str, budget: int) -> int:
    window = text[:budget]
    for separator in ("\n\n", "\n", " "):
        index = window.rfind(separator)
        if index > budget // 2:
            return index + len(separator)
    return budget


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


class SlackSurface:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def begin(self, message: IncomingMessage) -> SlackReply:
        response = await self.client.chat_postMessage(
            channel=message.key.channel_id, thread_ts=message.key.thread_ts, text=THINKING
        )
        return SlackReply(self.client, message, str(response["ts"]))


class SlackReply:
    def __init__(self, client: AsyncWebClient, message: IncomingMessage, ts: str) -> None:
        self.client = client
        self.channel = message.key.channel_id
        self.thread_ts = message.key.thread_ts
        self.ts = ts

    async def text_delta(self, text: str) -> None:
        """Live streaming comes with the streaming renderer; this one shows the answer when done."""

    async def tools_running(self, names: Sequence[str]) -> None:
        listed = ", ".join(f"`{name}`" for name in names)
        await self._update(text=f"_Running {listed}…_")

    async def reading(self, names: Sequence[str]) -> None:
        await self._update(text=f"_Reading {', '.join(names)}…_")

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
        pieces = split_markdown(answer or EMPTY_ANSWER)
        await self._update(markdown_text=pieces[0], text=None)
        for piece in pieces[1:]:
            await self.client.chat_postMessage(
                channel=self.channel, thread_ts=self.thread_ts, markdown_text=piece
            )
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
        await self._update(text=text)

    async def _update(self, **content: Any) -> None:
        content = {k: v for k, v in content.items() if v is not None}
        try:
            await self.client.chat_update(channel=self.channel, ts=self.ts, **content)
        except SlackApiError as exc:
            # The placeholder is gone (deleted by someone) or cannot be edited: say it anew.
            log.warning(
                "event=update_failed channel=%s error=%s", self.channel, exc.response.get("error")
            )
            response = await self.client.chat_postMessage(
                channel=self.channel, thread_ts=self.thread_ts, **content
            )
            self.ts = str(response["ts"])
