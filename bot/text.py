"""Plain-text helpers shared by the chat surfaces and the command line."""

from __future__ import annotations

import re

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


# Code points that cannot be stored or sent: lone UTF-16 surrogates (JSON can carry them as
# "\ud800", and SQLite, HTTP and the backends all refuse them), NUL and the other C0 controls
# bar tab, newline and carriage return, and DEL.
_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
REPLACEMENT = "\ufffd"


def clean(text: str) -> str:
    """`text` safe to store and send: a lone surrogate becomes U+FFFD, control characters go."""
    return _CONTROLS.sub("", _SURROGATES.sub(REPLACEMENT, text))
