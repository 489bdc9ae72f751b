"""What OpenAI's models write, made fit to show: citation markers and sandbox links cleaned out
of the text (at the end, and while it streams), and the files they make named as files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from bot import filetypes
from bot.engine.base import Citation, GeneratedFile

# A link code_interpreter writes to a file in its sandbox: useless outside it (the file itself is
# uploaded next to the answer), so the link becomes its label.
SANDBOX_LINK = re.compile(r"\[([^\]]*)\]\(sandbox:[^)\s]*\)")
# What may still become a sandbox link, or a citation marker (【4:0†report.pdf】), once more text
# arrives; longer than HOLD_LIMIT it is plain text after all.
PARTIAL_SANDBOX_LINK = re.compile(r"\[[^\]\n]*(\](\((s(a(n(d(b(o(x(:[^)\s]*)?)?)?)?)?)?)?)?)?)?\Z")
PARTIAL_MARKER = re.compile(r"【[^】\n]*\Z")
HOLD_LIMIT = 300


class StreamCleaner:
    """Text deltas as they may be shown while streaming: what `clean_answer` will remove at the
    end (citation markers, sandbox links) never reaches the screen.

    A delta that might begin a marker or a link is held back until it is clear which it is.
    """

    def __init__(self) -> None:
        self._held = ""

    def feed(self, delta: str) -> str:
        text = self._held + delta
        self._held = ""
        if "【" not in text and "[" not in text:
            return text
        shown: list[str] = []
        cursor = 0
        for match in re.finditer(r"【|\[", text):
            start = match.start()
            if start < cursor:
                continue
            rest = text[start:]
            marker_end = text.find("】", start) if rest[0] == "【" else -1
            link = SANDBOX_LINK.match(text, start) if rest[0] == "[" else None
            if marker_end >= 0:
                shown.append(text[cursor:start])
                cursor = marker_end + 1
            elif link is not None:
                shown.append(text[cursor:start] + link.group(1))
                cursor = link.end()
            elif len(rest) < HOLD_LIMIT and (
                PARTIAL_MARKER.match(rest) or PARTIAL_SANDBOX_LINK.match(rest)
            ):
                shown.append(text[cursor:start])
                self._held = rest
                return "".join(shown)
        shown.append(text[cursor:])
        return "".join(shown)


def generated(name: str, content: bytes) -> GeneratedFile:
    return GeneratedFile(name, content, is_image=filetypes.extension(name) in filetypes.IMAGES)


def clean_answer(
    text: str,
    removals: Sequence[tuple[int, int]],
    cited: Sequence[Citation],
    offset: int = 0,
) -> tuple[str, list[Citation]]:
    """The text without citation markers (`removals`) and with sandbox links as plain labels.

    `cited` holds citations at their positions in the original text; they come back at
    their positions in the cleaned text, shifted by `offset` (where this text starts in the answer).
    """
    edits = sorted(
        [(start, end, "") for start, end in removals]
        + [(m.start(), m.end(), m.group(1)) for m in SANDBOX_LINK.finditer(text)]
    )
    pieces: list[str] = []
    mapped: list[tuple[int, int, int, int]] = []  # old start, old end, new start, new end
    cursor = 0
    length = 0
    for start, end, replacement in edits:
        if start < cursor:
            continue  # overlaps an earlier edit
        pieces += [text[cursor:start], replacement]
        length += start - cursor
        mapped.append((start, end, length, length + len(replacement)))
        length += len(replacement)
        cursor = end
    pieces.append(text[cursor:])

    def new_position(old: int) -> int:
        moved = old
        for start, end, new_start, new_end in mapped:
            if old < start:
                break
            moved = new_start if old < end else new_end + (old - end)
        return moved

    citations = [replace(c, position=new_position(c.position) + offset) for c in cited]
    return "".join(pieces), citations
