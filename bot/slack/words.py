"""Every sentence the bot says in Slack, in one place: wording, tone and (later) translation.

The core and the engines report what happened as codes and data (bot/outcomes.py); listeners and
the answer's writers ask this module for the words. Text is Slack mrkdwn: names people chose are
escaped into it (`escape`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from bot.assistant_choice import Choice
from bot.definitions import AssistantDefinition
from bot.governance.prices import PRICES_CHECKED
from bot.governance.usage import UsageSummary, UsageTotal
from bot.outcomes import (
    APPROVED,
    DENIED,
    EXPIRED,
    GAVE_UP,
    INTERRUPTED,
    MAX_ATTEMPTS,
    RATE_LIMITED,
    RESTARTING,
    STOPPED,
    Answer,
    ApprovalRequest,
    Decision,
    Failure,
    FileProblem,
    LimitState,
    Refusal,
    RunningTool,
    Task,
)
from bot.text import shorten

MB = 1024 * 1024
MAX_NAMES_LISTED = 20  # file names listed in one note before "and N more"
SHORTCUT_NAME = "Switch thread assistant"  # as named in manifest.yml
KNOWLEDGE_SHORTCUT_NAME = "Add to channel knowledge"  # as named in manifest.yml
FORGET_SHORTCUT_NAME = "Forget this conversation"  # as named in manifest.yml

# --- an answer while it is written ----------------------------------------------------------

THINKING = "_Thinking…_"
STOP_LABEL = "Stop"
THINKING_STATUS = "is thinking…"  # the DM status line, after the app's name
LOADING_MESSAGES = ["Reading your message…", "Thinking it through…", "Writing an answer…"]
THREAD_READER_STATUS = "Reading the thread…"


def reading(names: Sequence[str]) -> str:
    return f"_Reading {', '.join(names)}…_"


def tool_status(tool: RunningTool) -> str:
    """What a running tool is doing: its declared status, else its name."""
    if tool.status:
        return tool.status
    return (
        f"Running `{tool.name}` on {escape(tool.server)}…"
        if tool.server
        else f"Running `{tool.name}`…"
    )


def tools_line(tools: Sequence[RunningTool]) -> str:
    return " ".join(f"_{tool_status(tool)}_" for tool in tools)


HOSTED_TASKS = {
    "web_search": "Searching the web",
    "file_search": "Searching the files",
    "code_interpreter": "Running code",
}
HOSTED_RECORD = {
    "web_search": "web search",
    "file_search": "file search",
    "code_interpreter": "code",
}


def task_title(task: Task) -> str:
    """A tool call as its task is titled in the streamed answer (plain text)."""
    if task.kind == "mcp":
        return f"{task.name} ({task.server})"
    return HOSTED_TASKS.get(task.kind) or task.name


def task_outcome(task: Task) -> str:
    """What a task that ended badly shows below its title ("" when it went well)."""
    if task.status != "error":
        return ""
    return "Not run: no one approved it" if task.not_run else "Failed"


def task_status(task: Task) -> str:
    """A task as the status line says it, where the answer cannot show tasks."""
    return f"_{escape(task_title(task))}…_"


def tools_record(tasks: Sequence[Task]) -> str:
    """The finished answer's compact record of the tools it used, in the order they ran."""
    counts: dict[str, int] = {}
    for task in tasks:
        label = escape(HOSTED_RECORD.get(task.kind) or task_title(task))
        if task.status == "error":
            label += " (not run)" if task.not_run else " (failed)"
        counts[label] = counts.get(label, 0) + 1
    used = ", ".join(f"{label} ×{n}" if n > 1 else label for label, n in counts.items())
    return f":hammer_and_wrench: Used {used}"


def reasoning_title(summary: str) -> str | None:
    """What the status line says while the model reasons: its summary's heading, or its first
    sentence, once whole (None until then, so the line changes seldom)."""
    text = summary.strip()
    if text.startswith("**"):
        end = text.find("**", 2)
        heading = text[2:end] if end > 2 else ""
    else:
        end = min((i for i in (text.find(". "), text.find("\n")) if i > 0), default=-1)
        heading = text[:end] if end > 0 else ""
    heading = heading.strip().rstrip(".…")
    return f"_{escape(shorten(heading, 80))}…_" if heading else None


# --- a finished answer ------------------------------------------------------------------------

EMPTY_ANSWER = "_(The assistant finished without writing an answer.)_"
ANSWER_BELOW = "_(The answer follows below.)_"  # a placeholder Slack would not let me delete
ONLY_FILES = "_(The assistant made the files below.)_"
SOURCES = "**Sources:**"
HELPFUL = ("👍", "This answer was helpful")
NOT_HELPFUL = ("👎", "This answer was not helpful")

INCOMPLETE_WORDS = {
    "max_completion_tokens": "the answer reached its length limit",
    "max_output_tokens": "the answer reached its length limit",
    "max_prompt_tokens": "the conversation is too long for the model's context",
    "content_filter": "the content filter stopped it",
}


def answer_text(answer: Answer) -> str:
    """The answer's text with notes on what it lacks (files not fetched, a cut-off)."""
    text = answer.text
    if answer.files_missing:
        text += f"\n\n_(I could not fetch {answer.files_missing} file(s) the assistant made.)_"
    if answer.incomplete:
        why = INCOMPLETE_WORDS.get(answer.incomplete, answer.incomplete)
        text += f"\n\n_(The answer is incomplete: {why}.)_"
    if answer.near_limit is not None:
        text += f"\n\n{near_limit(answer.near_limit)}"
    return text


def upload_failed(names: Sequence[str]) -> str:
    return f":warning: I could not upload the files the assistant made ({', '.join(names)})."


# --- an answer that ends early ----------------------------------------------------------------

# A failure code (the core's, the engine's, or the backend's own) in words. The backend's message
# is never shown: it goes to the log.
FAILURE_WORDS = {
    "rate_limit_exceeded": "The assistant service is busy right now (rate limited). "
    "Please try again in a minute.",
    "server_error": "The assistant service had an internal error while answering.",
    "expired": "The assistant took too long and the run expired.",
    "timeout": "The assistant took too long to answer, so I stopped waiting.",
    "connection_error": "I could not reach the assistant service.",
    "stream_ended": "The answer was cut off: the connection to the assistant service ended early.",
    "no_usable_files": "None of the shared files could be used, so there is nothing to answer.",
    "invalid_api_key": "The assistant service refused the bot's key: please tell whoever runs "
    "the bot.",
    "context_length_exceeded": "This conversation has grown too long for the model. "
    "Please start a new thread.",
    "internal_error": "Something went wrong in the bot while answering.",
}
COULD_NOT_ANSWER = "The assistant could not answer this message."


def failure_words(code: str) -> str:
    """A failure code as a sentence; an HTTP status (`http_503`) by its kind."""
    if code in FAILURE_WORDS:
        return FAILURE_WORDS[code]
    if code == "http_429":
        return FAILURE_WORDS["rate_limit_exceeded"]
    if code.startswith("http_5"):
        return FAILURE_WORDS["server_error"]
    return COULD_NOT_ANSWER


def failure(failed: Failure) -> str:
    """How an answer ends: stopped, cut off by a restart, or failed (in words chosen for the
    code, never the backend's own message)."""
    if failed.code == STOPPED:
        return "_Stopped._"
    if failed.code == RESTARTING:
        return "_The bot is restarting; it will answer this message when it is back._"
    if failed.code == INTERRUPTED:
        return (
            ":warning: The bot restarted while answering this message, so the answer was lost. "
            "Please send it again."
        )
    if failed.code == GAVE_UP:
        return (
            f":warning: The bot stopped each of the {_count(MAX_ATTEMPTS)} times it tried to "
            "answer this message, so it gave up. Please rephrase it, or tell whoever runs the bot."
        )
    words = failure_words(failed.code)
    return f":warning: {words} Your next message in this thread will work as usual."


def _count(number: int) -> str:
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    return words[number] if 0 <= number < len(words) else str(number)


# --- budgets and the rate limit -------------------------------------------------------------

# Whose limit it is: the subject that "has" used it, and "its" owner.
_WHOSE = {
    "person": ("You have", "your"),
    "channel": ("This channel has", "its"),
    "assistant": ("This assistant has", "its"),
    "global": ("The bot has", "its"),
}
_PER = {"minute": "a minute", "day": "daily", "week": "weekly", "month": "monthly"}


def money(usd: float) -> str:
    if 0 < usd < 0.01:
        return "<$0.01"
    return f"${usd:,.2f}"


def limit_amount(unit: str, value: float) -> str:
    if unit == "usd":
        return money(value)
    return f"{int(value):,} {'tokens' if unit == 'tokens' else 'messages'}"


def when(epoch: float) -> str:
    """A moment as Slack shows it, in the reader's own time zone (UTC where it cannot)."""
    fallback = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))
    return f"<!date^{int(epoch)}^{{date_short_pretty}} at {{time}}|{fallback}>"


def refusal(refused: Refusal) -> str:
    """Why a message is not answered, for its writer only."""
    limit = refused.limit
    if refused.code == RATE_LIMITED:
        return (
            f"You are sending messages faster than I take them (at most {int(limit.limit)} a "
            "minute), so I will not answer this one. Please wait a minute and send it again."
        )
    subject, owner = _WHOSE.get(limit.scope, _WHOSE["global"])
    used = f" (used: {limit_amount(limit.unit, limit.used)})" if limit.scope == "person" else ""
    return (
        f"{subject} reached {owner} {_PER.get(limit.period, limit.period)} budget of "
        f"{limit_amount(limit.unit, limit.limit)}{used}, so I did not send your message to the "
        f"assistant. The budget starts afresh {when(limit.resets_at)}."
    )


def near_limit(limit: LimitState) -> str:
    """One short warning under the answer that took its asker near a limit."""
    subject, owner = _WHOSE.get(limit.scope, _WHOSE["global"])
    share = min(100, int(100 * limit.used / limit.limit)) if limit.limit else 100
    return (
        f"_:warning: {subject} now used {share}% of {owner} "
        f"{_PER.get(limit.period, limit.period)} budget "
        f"({limit_amount(limit.unit, limit.limit)}); it starts afresh {when(limit.resets_at)}._"
    )


# The database did not answer when the message came in: nothing was recorded, nothing follows.
NOT_RECORDED = (
    ":warning: I could not take your message just now (my database is not answering), so I "
    "will not answer it. Please send it again in a minute."
)


# --- shared files -----------------------------------------------------------------------------

SLACK_INFO_REFUSED = {  # files.info errors
    "file_not_found": "Slack says there is no such file (any more)",
    "file_deleted": "Slack says it was deleted",
    "access_denied": "Slack does not let me see it",
}


def _file_reason(problem: FileProblem) -> str:
    detail = problem.detail
    kind = detail or "without an extension"
    match problem.reason:
        case "slack_info_refused":
            return f"{SLACK_INFO_REFUSED.get(detail, 'Slack would not describe it')}."
        case "slack_unreachable":
            return "asking Slack about it failed."
        case "no_download_link":
            return "Slack gave me no download link for it."
        case "link_gone":
            return "Slack gave me no download link for it (it may have been deleted)."
        case "foreign_host":
            return "its link does not point to Slack's file host, so I did not follow it."
        case "download_refused":
            return "Slack would not let me download it."
        case "sign_in_page":
            return "Slack sent a sign-in page instead of the file."
        case "download_failed":
            return "downloading it from Slack failed."
        case "over_limit":
            return f"it is larger than the limit of {problem.limit / MB:g} MB."
        case "too_large":
            return (
                f"it is too large ({problem.size / MB:.1f} MB; the limit is "
                f"{problem.limit / MB:g} MB)."
            )
        case "model_takes_no_images":
            return f"this assistant's model ({detail}) does not take images."
        case "unreadable_type":
            return f"I cannot read files of this type ({kind})."
        case "unsearchable_type":
            return f"files of this type ({kind}) cannot be searched."
        case "not_indexed" if detail == "timeout":
            return "it could not be indexed in time."
        case "not_indexed":
            return "it could not be indexed."
        case "backend_refused":
            return "the assistant service refused it."
        case "code_files_full" if detail == "searched":
            return (
                f"the assistant can run code on at most {problem.limit} files per conversation "
                "and this one has that many already, so it can only search this file. Start a "
                "new thread to work on more data files."
            )
        case "code_files_full":
            return (
                f"the assistant can run code on at most {problem.limit} files per conversation "
                "and this one has that many already. Start a new thread to work on more data "
                "files."
            )
    return "it could not be used."


def files_left_out(limit: int, left_out: Sequence[str]) -> str:
    """A message came with more files than one message may bring: the first `limit` are used."""
    listed = ", ".join(f"*{escape(name)}*" for name in left_out[:MAX_NAMES_LISTED])
    if len(left_out) > MAX_NAMES_LISTED:
        listed += f" and {len(left_out) - MAX_NAMES_LISTED} more"
    return (
        f"I take up to {limit} files with one message, so I am answering with the first {limit} "
        f"and left out {listed}. Share those in a reply in the thread if the answer needs them."
    )


def file_problem(problem: FileProblem, adding: bool = False) -> str:
    """A file that could not be used with a message (or `adding` to a channel's knowledge)."""
    name = f"*{escape(problem.file_name)}*" if problem.file_name else f"the file {problem.file_id}"
    return f"I could not {'add' if adding else 'use'} {name}: {_file_reason(problem)}"


# --- the assistant service, asked outside an answer -------------------------------------------


def service_unreachable(code: str, warning: bool = True) -> str:
    """The assistant service failed a request outside an answer (listing assistants…)."""
    text = (
        FAILURE_WORDS["rate_limit_exceeded"]
        if code in ("rate_limit_exceeded", "http_429")
        else ("I could not reach the assistant service. Please try again in a minute.")
    )
    return f":warning: {text}" if warning else text


# --- messages and buttons ---------------------------------------------------------------------

EMPTY_MESSAGE_HELP = (
    "Hi! Write your question after the mention, like `@assistant what's our refund policy?`, "
    "and I'll answer in a thread."
)
THANKS = {
    "good": "Thanks for the feedback! Glad it helped.",
    "bad": "Thanks for the feedback! It helps us improve the assistant.",
}
ALREADY_FINISHED = "That answer has already finished."
BUTTON_NOT_UNDERSTOOD = (
    "Sorry, I could not tell what that button is for; it may come from an older version of me."
)
FEEDBACK_NOT_FOUND = "Sorry, I could not find the answer this feedback is for."


def only_asker_can_stop(asker: str) -> str:
    return f"Only <@{asker}>, who asked, can stop this answer."


# --- approving a tool call --------------------------------------------------------------------

APPROVE_LABEL = "Approve"
DENY_LABEL = "Deny"
APPROVAL_ARGUMENTS_CHARS = 600  # the arguments shown on the card, at most
APPROVAL_NOT_WAITING = "That tool call is no longer waiting for a decision."
WAITING_FOR_APPROVAL = "_Waiting for approval…_"
APPROVAL_INTERRUPTED = "Withdrawn: the bot restarted while this call waited"


def approval_question(request: ApprovalRequest) -> str:
    """The card's first line (and its notification text)."""
    where = f" on *{escape(request.server)}*" if request.server else ""
    return f"The assistant wants to use *{escape(request.tool)}*{where}. Allow it?"


def approval_arguments(arguments: str) -> str:
    """The call's arguments as a code block, shortened."""
    text = arguments.strip() or "{}"
    if len(text) > APPROVAL_ARGUMENTS_CHARS:
        text = text[: APPROVAL_ARGUMENTS_CHARS - 1] + "…"
    return "```" + escape(text.replace("`", "ˋ")) + "```"


def approval_who(asker: str, timeout: float) -> str:
    return (
        f"Only <@{asker}>, who asked, or an assistant admin can decide. "
        f"No decision within {_duration(timeout)} counts as Deny."
    )


def approval_outcome(decision: Decision, timeout: float) -> str:
    if decision.outcome == APPROVED:
        return f":white_check_mark: Approved by <@{decision.by}>"
    if decision.outcome == DENIED:
        return f":no_entry_sign: Denied by <@{decision.by}>"
    if decision.outcome == EXPIRED:
        return f":hourglass: No decision within {_duration(timeout)}: denied"
    return "Withdrawn: the answer was stopped"


def only_asker_can_decide(asker: str) -> str:
    return f"Only <@{asker}>, who asked, or an assistant admin can approve or deny this call."


def _duration(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g} minutes"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"


# --- the AI-app surface -----------------------------------------------------------------------

DEFAULT_PROMPTS = (
    "What can you help me with?",
    "Summarize this thread for me",
    "Help me write a clear message to my team",
    "Explain a concept to me step by step",
)
PROMPTS_TITLE = "Try asking:"


# --- assistants and choices (the slash command, the shortcut's picker, the Home tab) ---------


def escape(text: str) -> str:
    """Text shown as mrkdwn: `&`, `<` and `>` are Slack's control characters (links, mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def name_of(assistant_id: str, assistants: Sequence[AssistantDefinition]) -> str:
    """The assistant's name in bold, or its id when it no longer exists."""
    for assistant in assistants:
        if assistant.id == assistant_id:
            return f"*{escape(assistant.name)}*"
    return f"`{escape(assistant_id)}` (no longer exists)"


def assistant_line(assistant: AssistantDefinition, here: bool = False) -> str:
    """• *Name* `model` · tools: … — description  (marked when it answers here)."""
    parts = [f"*{escape(assistant.name)}*", f"`{escape(assistant.model)}`"]
    if assistant.tool_types:
        parts.append("tools: " + ", ".join(assistant.tool_types))
    line = "• " + " · ".join(parts)
    description = shorten(assistant.description, 100)
    if description:
        line += f" — {escape(description)}"
    if here:
        line += "  :arrow_left: _answers here_"
    return line


def where(channel_id: str, is_direct: bool) -> str:
    return "this DM" if is_direct else f"<#{channel_id}>"


def why(choice: Choice, channel_id: str, is_direct: bool) -> str:
    """Why this assistant answers here, in a clause."""
    if choice.reason == "thread":
        return "it is this thread's assistant"
    if choice.reason == "channel" and is_direct:
        return "you chose it as the default for your DM with me"
    if choice.reason == "channel":
        return f"it is the default of <#{channel_id}>, set by <@{choice.set_by}>"
    return (
        "it is the bot's global default (no default is set for "
        + where(channel_id, is_direct)
        + ")"
    )


# --- /assistant -------------------------------------------------------------------------------

COMMAND_HELP = (
    "*`/assistant`* chooses which assistant answers here.\n"
    "• `/assistant list`: the assistants, and the one that answers here\n"
    "• `/assistant use NAME`: answer new conversations here with NAME (a name, the start of "
    "one, or an id); in a DM with me, it sets your DM's default\n"
    "• `/assistant current`: which assistant answers here, and why\n"
    "• `/assistant knowledge`: this channel's knowledge files (add them with the message shortcut "
    f"*{KNOWLEDGE_SHORTCUT_NAME}*)\n"
    "• `/assistant usage`: how much you used the assistants (admins: everyone)\n"
    f"To switch a single thread, use the message shortcut *{SHORTCUT_NAME}* on a message in it. "
    "Threads already going keep their assistant. "
    f"To have a thread forgotten, use *{FORGET_SHORTCUT_NAME}* on a message in it."
)
NO_ASSISTANTS_YET = (
    "There are no assistants yet; an operator adds them with `python -m bot assistants`."
)
WHICH_ASSISTANT = "Which assistant? Write `/assistant use NAME`; `/assistant list` shows the names."


def assistant_list(lines: Sequence[str], total: int, more: int) -> str:
    if more:
        lines = [*lines, f"…and {more} more."]
    return (
        f"*Assistants* ({total}):\n"
        + "\n".join(lines)
        + "\n`/assistant use NAME` changes which one answers new conversations here."
    )


def current_assistant(name: str, channel_id: str, is_direct: bool, choice: Choice) -> str:
    return (
        f"{name} answers new conversations in {where(channel_id, is_direct)}: "
        f"{why(choice, channel_id, is_direct)}.\nThreads keep the assistant they started with; "
        f"to switch one, use the message shortcut *{SHORTCUT_NAME}*."
    )


def unknown_verb(verb: str) -> str:
    return f"I don't know `/assistant {escape(verb)}`.\n\n{COMMAND_HELP}"


def only_admins_set_default(admins: Sequence[str], channel_id: str) -> str:
    listed = ", ".join(f"<@{admin}>" for admin in admins)
    return (
        f"Only the bot's admins ({listed}) can change the default assistant of <#{channel_id}>. "
        f"You can still switch a single thread with the message shortcut *{SHORTCUT_NAME}*, "
        "or choose the default for your own DM with me there."
    )


def ambiguous_assistant(query: str, found: Sequence[AssistantDefinition]) -> str:
    return (
        f"“{escape(query)}” fits several assistants: {assistant_names(found)}. "
        "Write more of the name, or the id."
    )


def unknown_assistant(query: str, close: Sequence[AssistantDefinition]) -> str:
    suggestion = f" Close matches: {assistant_names(close)}." if close else ""
    return (
        f"I don't know an assistant called “{escape(query)}”.{suggestion} "
        "`/assistant list` shows them all."
    )


NOT_ALLOWED = "I can't do that: only the bot's admins may change a channel's default assistant."


def default_set(assistant: AssistantDefinition, channel_id: str, is_direct: bool) -> str:
    return (
        f"Done: *{escape(assistant.name)}* now answers new conversations in "
        f"{where(channel_id, is_direct)}. Threads already going keep their assistant."
    )


def assistant_names(assistants: Sequence[AssistantDefinition]) -> str:
    return ", ".join(f"*{escape(a.name)}* (`{a.id}`)" for a in assistants)


# --- /assistant usage ------------------------------------------------------------------------

USAGE_HELP = (
    "*`/assistant usage`* shows how much the assistants were used, and what it cost at OpenAI's "
    "list prices: your own use over the last day, 7 and 30 days (the bot's admins see everyone's, "
    "with the top channels, people and assistants).\n"
    "• `/assistant usage`: the top lists cover the last 30 days\n"
    "• `/assistant usage 7d`: they cover the last 7 days (any number of days from 1 to 366)"
)
_GROUP_TITLES = {"channel": "Top channels", "user": "Top people", "assistant": "Top assistants"}


def cost(total: UsageTotal) -> str:
    """What it cost; "unknown" for the tokens of models without a price."""
    if total.unpriced_tokens and not total.usd:
        return "cost unknown"
    return money(total.usd) + (" + unknown" if total.unpriced_tokens else "")


def usage_figures(total: UsageTotal) -> str:
    cached = f" ({total.cached_input_tokens:,} cached)" if total.cached_input_tokens else ""
    messages = "message" if total.turns == 1 else "messages"
    return f"{total.turns:,} {messages} · {total.tokens:,} tokens{cached} · {cost(total)}"


def _days(days: int) -> str:
    return "last day" if days == 1 else f"last {days} days"


def _usage_name(group: str, key: str, names: Mapping[str, str]) -> str:
    if group == "channel":
        return f"<#{key}>" if key else "(no channel)"
    if group == "user":
        return f"<@{key}>" if key else "(nobody)"
    if not key:
        return "(not recorded)"
    return f"*{escape(names[key])}*" if key in names else f"`{escape(key)}`"


def usage_report(
    summary: UsageSummary,
    names: Mapping[str, str],
    standing: Sequence[LimitState] = (),
    top: int = 5,
) -> str:
    """`/assistant usage` and the Home tab: totals, an admin's top lists, a person's budgets."""
    title = "*Usage of the assistants*" if summary.everyone else "*Your usage of the assistants*"
    lines = [f"{title} (cost at OpenAI's list prices of {PRICES_CHECKED}, in USD)"]
    lines += [f"• {_days(days).capitalize()}: {usage_figures(t)}" for days, t in summary.periods]
    for group, entries in summary.by.items():
        lines.append(f"*{_GROUP_TITLES.get(group, group)}* ({_days(summary.days)}):")
        if not entries:
            lines.append("• none")
        for key, figures in entries[:top]:
            lines.append(f"• {_usage_name(group, key, names)}: {usage_figures(figures)}")
        if len(entries) > top:
            lines.append(f"…and {len(entries) - top} more.")
    for limit in standing:
        lines.append(
            f"Your {_PER.get(limit.period, limit.period)} budget: "
            f"{limit_amount(limit.unit, limit.used)} of {limit_amount(limit.unit, limit.limit)} "
            f"used; it starts afresh {when(limit.resets_at)}."
        )
    unpriced = sorted(set().union(*(t.unpriced_models for _, t in summary.periods)))
    if unpriced:
        models = ", ".join(f"`{escape(m)}`" for m in unpriced)
        lines.append(f"_No price is known for {models}: their tokens are counted, not costed._")
    return "\n".join(lines)


# --- the "Switch thread assistant" shortcut ---------------------------------------------------

NOTHING_TO_PICK = "There are no assistants to choose from yet."
PICKED_ASSISTANT_GONE = "That assistant no longer exists; pick another one."
SHORTCUT_NOT_UNDERSTOOD = (
    "Sorry, I could not tell which message or thread that shortcut was used on. Please try again."
)
PICKER_NOT_UNDERSTOOD = "Sorry, I could not read this choice. Close the picker and open it again."
PICKER_TITLE = "Switch assistant"
PICKER_SUBMIT = "Switch"
PICKER_CLOSE = "Cancel"
PICKER_LABEL = "Assistant"


def picker_intro(name: str, choice: Choice, channel_id: str) -> str:
    return (
        f"{name} answers this thread now: "
        f"{why(choice, channel_id, channel_id.startswith('D'))}.\n"
        "Pick the assistant for the thread's next messages. It continues the same "
        "conversation, so it sees what was said so far."
    )


def thread_switched(user_id: str, assistant: AssistantDefinition, in_conversation: bool) -> str:
    when = (
        "from the next message on" if in_conversation else "once someone mentions me in this thread"
    )
    return f"<@{user_id}> switched this thread to *{escape(assistant.name)}*. It answers {when}."


def switch_not_said(notice: str, error: str) -> str:
    return (
        f"{notice}\n(I could not say so in the thread: {error}. "
        "Invite me to the channel with `/invite`.)"
    )


# --- a channel's knowledge --------------------------------------------------------------------

NO_FILES_TO_ADD = "That message has no files to add to this channel's knowledge."
KNOWLEDGE_REMOVED = "Removed."
KNOWLEDGE_ALREADY_GONE = "That file was no longer in this channel's knowledge."
REMOVE_LABEL = "Remove"


def adding_knowledge(names: Sequence[str]) -> str:
    return f"_Adding {', '.join(names)} to this channel's knowledge…_"


def knowledge_added(names: Sequence[str], channel_id: str) -> str:
    return (
        f"Added {', '.join(names)} to <#{channel_id}>'s knowledge: new conversations "
        "here can search it. `/assistant knowledge` lists what is in it."
    )


def no_knowledge(note: str = "") -> str:
    return (
        (f"{note} " if note else "")
        + "This channel has no knowledge files yet. Use the message shortcut "
        f"*{KNOWLEDGE_SHORTCUT_NAME}* on a message with files to add them."
    ).strip()


def knowledge_header(count: int, note: str = "") -> str:
    return (f"{note}\n" if note else "") + f"This channel's knowledge ({count} files):"


def knowledge_file(name: str, added_by: str) -> str:
    return f"*{name}* (added by <@{added_by}>)"


# --- the Home tab -----------------------------------------------------------------------------

HOME_HOW_TO_TITLE = "How to use me"
HOME_HOW_TO = (
    "• *Mention me* in a channel and I answer in a thread; reply there to go on.\n"
    "• *DM me* and I answer there too.\n"
    "• `/assistant list`, `/assistant use NAME`, `/assistant current`: choose which assistant "
    "answers new conversations in a channel (or in your DM with me).\n"
    f"• *{SHORTCUT_NAME}* (the message shortcut, under ⋮ on a message in a thread): switch the "
    "assistant of one thread.\n"
    f"• *{FORGET_SHORTCUT_NAME}* (a message shortcut too): have the assistant forget a thread "
    "you wrote in."
)
HOME_DEFAULTS_TITLE = "Defaults"
HOME_USAGE_TITLE = "Usage"
HOME_NO_ASSISTANTS = "No assistants yet."
HOME_NO_CHANNEL_DEFAULTS = (
    "No channel has a default of its own; every channel uses the global default."
)


def home_assistants_title(count: int) -> str:
    return f"Assistants ({count})"


def home_global_default(name: str) -> str:
    return f"*Global default:* {name}"


def home_dm_default(name: str) -> str:
    return f"*Your DM with me:* {name}"


def home_channel_defaults(lines: Sequence[tuple[str, str, str]], more: int) -> list[str]:
    """(channel, assistant's name, set by) per channel with a default of its own."""
    listed = ["*Channel defaults:*"]
    listed += [f"• <#{channel}>: {name} (set by <@{by}>)" for channel, name, by in lines]
    if more:
        listed.append(f"…and {more} more channels.")
    return listed


def home_who_may_change(admins: Sequence[str]) -> str:
    who = ", ".join(f"<@{admin}>" for admin in admins) if admins else "everyone"
    return f"_Who may change a channel's default: {who}._"


# --- who may use what -------------------------------------------------------------------------

NO_ASSISTANT_FOR_YOU = (
    "None of the assistants is available to you here; ask the bot's admins if you need one."
)


def access_refusal(reason: str, assistant_name: str, channel_id: str, is_direct: bool) -> str:
    """Why a message is not answered (said once per thread, only to its writer)."""
    name = f"*{escape(assistant_name)}*" if assistant_name else "The assistant"
    if reason == "bot_channel":
        return (
            f"I don't answer in <#{channel_id}>: the bot's admins have not allowed this channel. "
            "You can DM me instead, or ask them to add it."
        )
    if reason == "assistant_channel":
        return (
            f"{name} does not answer in <#{channel_id}>, so I won't answer in this thread. "
            "`/assistant list` shows the assistants you can use here."
        )
    where_to_look = (
        "`/assistant list` shows the ones you can use."
        if is_direct
        else "`/assistant list` shows the ones you can use here."
    )
    return (
        f"{name} is not available to you, so I won't answer this. {where_to_look} "
        "The bot's admins decide who may use which assistant."
    )


def not_yours_to_use(assistant: AssistantDefinition) -> str:
    return (
        f"*{escape(assistant.name)}* is not available to you here; "
        "`/assistant list` shows the ones you can use."
    )


# --- forgetting a conversation ------------------------------------------------------------------

FORGET_TITLE = "Forget conversation"
FORGET_SUBMIT = "Forget"
FORGET_CLOSE = "Cancel"
FORGET_CONFIRM = (
    "Forget this thread's conversation? The assistant's memory of it, the files shared in it and "
    "the stored texts of its messages are deleted for good. The Slack messages stay; a new "
    "message in the thread starts a new conversation."
)
NOTHING_TO_FORGET = "There is nothing to forget here: I have not taken part in this thread."
FORGET_BUSY = "An answer is still being written in this thread; forget it once it is finished."


def only_participants_forget(admins: Sequence[str]) -> str:
    who = ", ".join(f"<@{admin}>" for admin in admins)
    also = f" and the bot's admins ({who})" if who else ""
    return "Only the people who wrote to the assistant in this thread" + also + " can forget it."


def forgotten(user_id: str) -> str:
    return (
        f"<@{user_id}> had this conversation forgotten: the assistant no longer remembers it, "
        "and a new message here starts a new conversation."
    )


FORGOTTEN_BY_OPERATOR = (
    "This conversation was forgotten at an operator's request: the assistant no longer "
    "remembers it, and a new message here starts a new conversation."
)
FORGET_FAILED = (
    ":warning: I could not forget all of this conversation: the assistant service did not "
    "answer. Please try again in a minute; what was deleted stays deleted."
)
