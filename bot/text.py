"""Plain-text helpers shared by the chat surfaces and the command line."""

from __future__ import annotations

ELLIPSIS = "…"


def shorten(text: str, limit: int) -> str:
    """`text` on one line (each run of white space one space) in at most `limit` characters.

    A longer text ends with '…' after its last whole word that fits, or is cut inside a word
    when that would keep less than half of `limit`.
    """
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    room = limit - len(ELLIPSIS)
    space = line.rfind(" ", 0, room + 1)
    cut = line[:space] if space >= limit // 2 else line[:room]
    return cut.rstrip() + ELLIPSIS
