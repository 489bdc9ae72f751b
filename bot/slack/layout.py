"""An answer's Markdown laid out for Slack: footnotes, and messages Slack will take.

Pure text, no Slack calls. All markdown blocks of one message share 12,000 characters, so a long
answer becomes several messages, split between paragraphs with code fences closed and reopened.
While an answer streams, whatever was already shown of a message stays a prefix of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.engine.base import Citation
from bot.slack.words import SOURCES

MARKDOWN_LIMIT = 12_000  # all markdown blocks of one message share 12,000 characters
FENCE_CLOSE = "\n```"
MAX_HELD_BACK = 40  # characters of an unfinished word kept back while streaming
# Mentions that notify a whole channel or group: Slack's `<!here>`, `<!channel>`, `<!everyone>`,
# `<!subteam^S…|@handle>`, and the plain `@here`-style text some clients turn into them.
SPECIAL_MENTION = re.compile(r"<!(here|channel|everyone|subteam\^[A-Za-z0-9]+)(?:\|([^>]*))?>")
AT_BROADCAST = re.compile(r"(?<![\w@])@(here|channel|everyone)\b")
WORD_JOINER = "\u2060"  # invisible: "@\u2060here" reads as @here and notifies nobody


def split_markdown(text: str, limit: int = MARKDOWN_LIMIT) -> list[str]:
    """Split Markdown into pieces of at most `limit` characters without losing a word.

    Cuts fall on paragraph breaks, else line breaks, else spaces, else anywhere; a piece that ends
    inside a fenced code block closes it, and the next piece reopens it with the same fence line.
    """
    layout = Layout(limit)
    layout.add(text.strip())
    return layout.messages


def open_fence(text: str) -> str:
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
    return f"{text.rstrip()}\n\n{SOURCES}\n{sources}"


def defuse_mentions(text: str) -> str:
    """Broadcast and group mentions made harmless, still readable: `<!here>` and `@here` become
    "@here" with an invisible joiner after the @, `<!subteam^S1|@team>` "@team". User mentions
    (`<@U…>`) and channel links stay as they are."""

    def named(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        name = (label or ("group" if target.startswith("subteam^") else target)).lstrip("@")
        return f"@{WORD_JOINER}{name}"

    text = SPECIAL_MENTION.sub(named, text)
    return AT_BROADCAST.sub(lambda match: f"@{WORD_JOINER}{match.group(1)}", text)


class Layout:
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
            fence = open_fence(closed)
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


def complete_words(text: str) -> int:
    """How much of `text` to show now: up to its last whole word, so that a message never ends
    in whitespace or half a word (a long run without spaces, like CJK text, is shown anyway)."""
    end = len(text.rstrip())
    if end < len(text):
        return end
    space = max(text.rfind(" "), text.rfind("\n"))
    if len(text) - space > MAX_HELD_BACK:
        return len(text)
    return len(text[: max(space, 0)].rstrip())


class Draft:
    """An answer as it arrives, and the part of it laid out as messages, ready to show."""

    def __init__(self, limit: int = MARKDOWN_LIMIT) -> None:
        self.limit = limit
        self.received = ""  # the answer text as it arrived
        self.laid_out = 0  # how much of `received` the layout holds
        self.layout = Layout(limit)
        self._new_round = False

    @property
    def messages(self) -> list[str]:
        return self.layout.messages

    def add(self, text: str) -> None:
        if self._new_round and self.received.strip():
            self.received += "\n\n"  # the engines join the texts of tool rounds the same way
        self._new_round = False
        self.received += text

    def new_round(self) -> None:
        """Tools run: the text that follows them starts a new paragraph."""
        self._new_round = True

    def has_news(self) -> bool:
        """Text arrived that is not laid out yet."""
        return bool(self.received[self.laid_out :].strip())

    def lay_out(self, final: bool) -> str:
        """Lay out what can be shown now (all of it when `final`); returns that text."""
        pending = self.received[self.laid_out :]
        take = len(pending) if final else complete_words(pending)
        opened = pending.rfind("<!", 0, take)
        if not final and opened >= 0 and ">" not in pending[opened:take]:
            take = opened  # a mention still arriving is shown once whole, and defused
        chunk = pending[:take]
        if not self.layout.messages[-1]:
            chunk = chunk.lstrip()
        self.layout.add(defuse_mentions(chunk.rstrip() if final else chunk))
        self.laid_out += take
        return chunk

    def complete(self, final: str) -> bool:
        """Make the answer `final`. True when that is not what arrived so far continued, so the
        layout starts anew (the messages already shown must be rewritten)."""
        so_far = self.received.strip()
        if final.startswith(so_far):
            self.received = self.received.rstrip() + final[len(so_far) :]
            return False
        self.received, self.laid_out, self.layout = final, 0, Layout(self.limit)
        return True

    def end_with(self, text: str) -> None:
        """The answer stops here: `text` follows whatever part of it arrived."""
        shown = self.received.rstrip()
        self.received = f"{shown}\n\n{text}" if shown.strip() else text
