"""The Block Kit of an answer's messages: the progress line, Stop and feedback buttons.

Pure: builds what `chat.postMessage` / `chat.update` / `chat.stopStream` show, and the codecs of
the buttons' values, which the action listeners read back.
"""

from __future__ import annotations

from typing import Any

from bot.messages import ConversationKey, IncomingMessage
from bot.outcomes import ApprovalRequest, Task
from bot.slack import words
from bot.slack.words import HELPFUL, NOT_HELPFUL, STOP_LABEL, THINKING

STOP_ACTION = "stop_answer"
FEEDBACK_ACTION = "answer_feedback"
APPROVE_ACTION = "approve_tool_call"
DENY_ACTION = "deny_tool_call"
TASK_TEXT_CHARS = 256  # Slack's limit on a task's details and output

Block = dict[str, Any]
Content = tuple[str, list[Block]]  # (text, blocks) of a message


def is_progress_text(text: str) -> bool:
    """A placeholder or progress line of the bot's (not a message anyone should read back)."""
    return text == THINKING or (text.startswith("_") and text.endswith("…_"))


def stop_value(message: IncomingMessage) -> str:
    key = message.key
    return "|".join((key.team_id, key.channel_id, key.thread_ts, message.ts, message.user_id))


def parse_stop_value(value: str) -> tuple[ConversationKey, str, str] | None:
    """(conversation, message ts, asker) from a Stop button's value."""
    parts = value.split("|")
    if len(parts) != 5:
        return None
    team, channel, thread_ts, ts, user = parts
    return ConversationKey(team, channel, thread_ts), ts, user


def feedback_value(rating: str, message: IncomingMessage) -> str:
    return f"{rating}|{message.key.team_id}|{message.key.channel_id}|{message.ts}"


def parse_feedback_value(value: str) -> tuple[str, str, str, str] | None:
    """(rating, team, channel, message ts) from a feedback button's value."""
    parts = value.split("|")
    if len(parts) != 4 or parts[0] not in ("good", "bad"):
        return None
    return parts[0], parts[1], parts[2], parts[3]


def status_block(status: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": status}]}


def stop_block(message: IncomingMessage) -> Block:
    return {
        "type": "actions",
        "block_id": "answer_controls",
        "elements": [
            {
                "type": "button",
                "action_id": STOP_ACTION,
                "text": {"type": "plain_text", "text": STOP_LABEL},
                "value": stop_value(message),
            }
        ],
    }


def feedback_block(message: IncomingMessage) -> Block:
    def button(words: tuple[str, str], rating: str) -> Block:
        label, description = words
        return {
            "text": {"type": "plain_text", "text": label},
            "value": feedback_value(rating, message),
            "accessibility_label": description,
        }

    return {
        "type": "context_actions",
        "block_id": "answer_feedback",
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION,
                "positive_button": button(HELPFUL, "good"),
                "negative_button": button(NOT_HELPFUL, "bad"),
            }
        ],
    }


def progress_content(status: str, message: IncomingMessage) -> Content:
    """The placeholder: what the assistant is doing (Thinking… by default) and a Stop button."""
    status = status or THINKING
    return status, [status_block(status), stop_block(message)]


def answer_content(
    text: str,
    message: IncomingMessage,
    *,
    status: str = "",
    live: bool = False,
    feedback: bool = False,
    record: str = "",
) -> Content:
    """A message of the answer: its Markdown, then while `live` the status (when there is one,
    or no text yet) and a Stop button, or with `feedback` the feedback buttons."""
    blocks: list[Block] = [{"type": "markdown", "text": text}] if text else []
    if live:
        if status or not text:
            blocks.append(status_block(status or THINKING))
        blocks.append(stop_block(message))
    elif feedback:
        if record:
            blocks.append(status_block(record))
        blocks.append(feedback_block(message))
    return text or status or THINKING, blocks


def task_chunk(task: Task) -> Block:
    """A tool call as a `task_update` chunk of a streamed message."""
    chunk: Block = {
        "type": "task_update",
        "id": task.id,
        "title": words.task_title(task)[:TASK_TEXT_CHARS],
        "status": task.status,
    }
    if task.detail and task.kind in ("mcp", "function"):
        chunk["details"] = _cut(task.detail)
    if words.task_outcome(task):
        chunk["output"] = words.task_outcome(task)
    if task.sources:
        chunk["sources"] = [
            {"type": "url", "url": source.url, "text": _cut(source.title or source.url)}
            for source in task.sources
        ]
    return chunk


def _cut(text: str) -> str:
    return text if len(text) <= TASK_TEXT_CHARS else text[: TASK_TEXT_CHARS - 1] + "…"


def approval_content(
    request: ApprovalRequest, approval_id: str, asker: str, timeout: float, outcome: str = ""
) -> Content:
    """The card asking to approve a tool call: the tool, its server and its arguments, then the
    Approve and Deny buttons, or (`outcome`) who decided what."""
    question = words.approval_question(request)
    blocks: list[Block] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": question}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": words.approval_arguments(request.arguments)},
        },
    ]
    if outcome:
        blocks.append(status_block(outcome))
        return question, blocks
    blocks.append(status_block(words.approval_who(asker, timeout)))
    blocks.append(
        {
            "type": "actions",
            "block_id": "approval",
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION,
                    "text": {"type": "plain_text", "text": words.APPROVE_LABEL},
                    "style": "primary",
                    "value": approval_id,
                },
                {
                    "type": "button",
                    "action_id": DENY_ACTION,
                    "text": {"type": "plain_text", "text": words.DENY_LABEL},
                    "style": "danger",
                    "value": approval_id,
                },
            ],
        }
    )
    return question, blocks
