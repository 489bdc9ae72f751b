"""Log lines: text (the default) or one JSON object per line (LOG_FORMAT=json), never a secret.

The bot's own lines read `event=name key=value …`; in JSON each pair becomes a field. While a
turn runs, its workspace, channel, thread and message ids are fields of every line it logs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

SECRET = re.compile(r"\b(xox[abposr]-[\w-]+|xapp-[\w-]+|sk-[\w-]+)")
PAIR = re.compile(r"""(\w+)=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+)""")

# The ids of the turn whose task is logging (contextvars follow it into the tasks it starts).
turn_ids: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "turn_ids", default=None
)


def redact(text: str) -> str:
    return SECRET.sub(lambda m: m.group(0)[:5] + "…redacted", text)


class RedactSecrets(logging.Filter):
    """Tokens and API keys never reach a log line, whichever library wrote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if SECRET.search(message):
            record.msg = redact(message)
            record.args = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        line.update(turn_ids.get() or {})
        pairs = PAIR.findall(message) if message.startswith("event=") else []
        line.update({key: _unquoted(value) for key, value in pairs})
        line["message"] = message
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def setup_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
        )
    handler.addFilter(RedactSecrets())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # The job engine logs every job it starts and ends, with its arguments: the bot logs its
    # own events for turns instead.
    logging.getLogger("procrastinate").setLevel(max(logging.WARNING, logging.getLevelName(level)))
