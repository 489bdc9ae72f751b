"""How one message's thread ended, as the person who sent it sees it: the answer, a failure
message, or nothing; and what was left behind (*Thinking…*, a stream never closed)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.emulators.slack import Message

THINKING = "_Thinking…_"
STOP_ACTION = "stop_answer"
# What a failure shown to people must not quote: status codes, SDK and exception wording.
RAW_TEXT = re.compile(
    r"http_\d{3}|Error code: \d{3}|\b[A-Z]\w+(Error|Exception)\b|internal_error|Traceback"
)


@dataclass
class Outcome:
    answers: int = 0  # messages holding the complete answer
    failures: int = 0  # failure messages (":warning: …") without it
    raw_failures: int = 0  # of which quote raw backend or HTTP text
    thinking: int = 0  # placeholders still saying Thinking… or offering Stop
    open_streams: int = 0

    @property
    def stale(self) -> bool:
        return self.thinking > 0 or self.open_streams > 0

    @property
    def settled(self) -> bool:
        return (self.answers or self.failures) > 0 and not self.stale

    @property
    def verdict(self) -> str:
        """answered, failed plainly, failed with raw text, or lost."""
        if self.answers:
            return "answered"
        if self.failures > self.raw_failures:
            return "failed plainly"
        return "failed with raw text" if self.failures else "lost"

    @property
    def duplicated(self) -> bool:
        return self.answers + self.failures > 1


def outcome(replies: list[Message], answer: str) -> Outcome:
    """What the bot's `replies` in a thread amount to, `answer` being the complete answer."""
    seen = Outcome()
    for message in replies:
        if message.streaming:
            seen.open_streams += 1
        elif message.text == THINKING or has_stop_button(message):
            seen.thinking += 1
        elif answer in message.text:
            seen.answers += 1
        elif ":warning:" in message.text:
            seen.failures += 1
            seen.raw_failures += bool(RAW_TEXT.search(message.text))
    return seen


def has_stop_button(message: Message) -> bool:
    return any(
        element.get("action_id") == STOP_ACTION
        for block in message.blocks
        for element in block.get("elements") or []
        if isinstance(element, dict)
    )
