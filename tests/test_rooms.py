"""The house rules a reviewer would check by reading: what each room may hold and import.

- Only bot/slack/ speaks Slack: the core and the engines report codes and data, and
  bot/slack/words.py holds the sentences (the CLI and start-up errors speak to operators).
- No engine reaches into the store: the core hands an engine what it needs.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

BOT = Path(__file__).resolve().parent.parent / "bot"
OPERATOR_FACING = {"__main__.py", "definitions_cli.py", "app.py", "config.py"}

SLACK_MARKUP = {
    "an emoji code like :warning:": re.compile(r"(?<![\w/]):[a-z][a-z0-9_+-]*:(?![\w/])"),
    "_italics_": re.compile(r"(?:^|\s)_[^_\s](?:[^_]*[^_\s])?_(?=$|[\s.,;:!?)])"),
    "*bold*": re.compile(r"(?:^|\s)\*[^*\s](?:[^*]*[^*\s])?\*(?=$|[\s.,;:!?)])"),
    "a mention or channel link": re.compile(r"<[@#!][A-Za-z{]"),
}
NOT_MARKUP = {":memory:"}  # SQLite's in-memory database


def _modules(under: Path) -> Iterator[Path]:
    return (path for path in sorted(under.rglob("*.py")) if "__pycache__" not in path.parts)


def _strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every string literal but docstrings; an f-string with its fields as `{}`."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    inside_fstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                inside_fstrings.add(id(value))
                parts.append(value.value if isinstance(value, ast.Constant) else "{}")
            yield node.lineno, "".join(str(part) for part in parts)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and id(node) not in inside_fstrings
        ):
            yield node.lineno, node.value


def test_only_the_slack_rooms_write_slack_markup() -> None:
    found = []
    for path in _modules(BOT):
        relative = path.relative_to(BOT)
        if relative.parts[0] == "slack" or str(relative) in OPERATOR_FACING:
            continue
        for line, text in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            for what, pattern in SLACK_MARKUP.items():
                match = pattern.search(text)
                if match and match.group().strip() not in NOT_MARKUP:
                    found.append(f"bot/{relative}:{line}: {what} in {text!r}")
    assert not found, "Slack's words belong in bot/slack/words.py:\n" + "\n".join(found)


def test_the_guard_sees_markup_where_it_hides() -> None:
    """The rule above would catch what the core used to say (so its silence means something)."""
    said = [
        'STOPPED = "_Stopped._"',
        'text = f":warning: {words} Your next message in this thread will work as usual."',
        'problem = f"I could not use *{file.name}*: {exc}"',
        'note = f"Only <@{asker}>, who asked, can stop this answer."',
    ]
    for source in said:
        strings = [text for _, text in _strings(ast.parse(source))]
        assert any(pattern.search(text) for text in strings for pattern in SLACK_MARKUP.values()), (
            source
        )
    plain = 'log.info("event=turn_finished channel=%s", key.channel_id); path = "a_b_c.txt"'
    strings = [text for _, text in _strings(ast.parse(plain))]
    assert not any(p.search(t) for t in strings for p in SLACK_MARKUP.values())


def test_no_engine_imports_the_store() -> None:
    found = []
    for path in _modules(BOT / "engine"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if isinstance(node, ast.ImportFrom) and node.module == "bot":
                names += [f"bot.{alias.name}" for alias in node.names]
            found += [
                f"{path.name}:{node.lineno} imports {name}"
                for name in names
                if name == "bot.store" or name.startswith("bot.store.")
            ]
    assert not found, "engines get what they need from the core:\n" + "\n".join(found)


def test_every_reason_a_file_is_refused_for_has_its_words() -> None:
    from bot.outcomes import FileProblem
    from bot.slack import words

    reasons = {
        call.args[0].value
        for path in _modules(BOT)
        for call in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(call, ast.Call)
        and getattr(call.func, "id", None) == "FileRefused"
        and call.args
        and isinstance(call.args[0], ast.Constant)
    }
    assert len(reasons) > 10
    for reason in sorted(reasons):
        said = words.file_problem(FileProblem("report.pdf", "F1", reason, "x", 2, 1))
        assert said.startswith("I could not use *report.pdf*: ")
        assert reason not in said, f"{reason!r} has no sentence of its own in bot/slack/words.py"
