"""A team picks its assistants: /assistant, channel and DM defaults, per-thread switching, Home."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.config import ConfigError, load_settings
from bot.definitions import AssistantDefinition
from tests.conftest import ALICE, BOB, GENERAL, Harness, wait_answers
from tests.emulators.model import Reply, TurnContext
from tests.emulators.slack import SlackEmulator

RANDOM = "C0RANDOM"
TEAM = (
    ("Support Bot", "Answers customer questions", ()),
    ("Code Helper", "Reviews and writes code", ("code_interpreter",)),
    ("Code Reviewer", "Nitpicks pull requests", ()),
    ("Research Assistant", "Digs through sources", ("file_search",)),
)


def who_answers(context: TurnContext) -> Reply:
    """The model names the assistant answering (by its instructions) and counts the messages."""
    return Reply(
        text=f"[{context.instructions}] {context.user_texts[-1]} (#{len(context.user_texts)})"
    )


async def start_with_team(harness: Harness, **env: str) -> dict[str, str]:
    """Start the bot with the Helper default plus four more assistants; their ids by name."""
    bot = await harness.start(**env)
    harness.openai.model.respond = who_answers
    ids = {}
    for name, description, tools in TEAM:
        created = await bot.backend.catalog.create_assistant(
            AssistantDefinition(
                name=name,
                model="gpt-4o-mini",
                instructions=f"You are {name}.",
                description=description,
                tools=tuple({"type": tool} for tool in tools),
            )
        )
        ids[name] = created.id
    return ids


async def command(slack: SlackEmulator, user: str, channel: str, text: str) -> str:
    """`user` types `/assistant TEXT` in `channel`; the ephemeral answer only they see."""
    before = len(slack.ephemerals(channel, user))
    delivery = await slack.slash_command(user, channel, "/assistant", text)
    assert delivery.status == 200 and not delivery.timed_out
    await slack.wait_for(lambda: len(slack.ephemerals(channel, user)) > before)
    return slack.ephemerals(channel, user)[-1]


async def ask(slack: SlackEmulator, channel: str, text: str, user: str = ALICE) -> str:
    """Mention the bot (or DM it) and return its answer."""
    if channel.startswith("D"):
        ts = await slack.dm(user, text)
    else:
        ts = await slack.mention(user, channel, text)
    return (await wait_answers(slack, channel, ts, 1))[0].text


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_assistant_alone_or_with_help_explains_itself(harness: Harness, mode: str) -> None:
    harness.mode = mode
    bot = harness
    await harness.start()
    for text in ("", "help"):
        shown = await command(bot.slack, ALICE, GENERAL, text)
        assert "`/assistant list`" in shown and "`/assistant use NAME`" in shown
        assert "`/assistant current`" in shown and "Switch thread assistant" in shown
    shown = await command(bot.slack, ALICE, GENERAL, "frobnicate")
    assert shown.startswith("I don't know `/assistant frobnicate`")
    assert bot.slack.channel_messages(GENERAL) == [], "answers are ephemeral"


async def test_list_shows_every_assistant_and_marks_the_one_answering_here(
    harness: Harness,
) -> None:
    await start_with_team(harness)
    slack = harness.slack
    shown = await command(slack, ALICE, GENERAL, "list")
    lines = shown.splitlines()
    assert lines[0] == "*Assistants* (5):"
    helper = next(line for line in lines if "*Helper*" in line)
    assert helper.endswith(":arrow_left: _answers here_")
    code = next(line for line in lines if "*Code Helper*" in line)
    assert code == (
        "• *Code Helper* · `gpt-4o-mini` · tools: code_interpreter — Reviews and writes code"
    )
    assert sum("answers here" in line for line in lines) == 1

    await command(slack, ALICE, GENERAL, "use research")
    shown = await command(slack, ALICE, GENERAL, "list")
    marked = [line for line in shown.splitlines() if "answers here" in line]
    assert len(marked) == 1 and "*Research Assistant*" in marked[0]
    elsewhere = await command(slack, ALICE, RANDOM, "list")
    assert "*Helper*" in next(line for line in elsewhere.splitlines() if "answers here" in line)


async def test_use_sets_the_channel_default_and_threads_already_going_keep_theirs(
    harness: Harness,
) -> None:
    await start_with_team(harness)
    slack = harness.slack
    old_thread = await slack.mention(ALICE, GENERAL, "first question")
    first = await wait_answers(slack, GENERAL, old_thread, 1)
    assert first[0].text.startswith("[You help.]")

    shown = await command(slack, ALICE, GENERAL, "use Support Bot")
    assert shown == (
        "Done: *Support Bot* now answers new conversations in <#C0GENERAL>. "
        "Threads already going keep their assistant."
    )
    assert (await ask(slack, GENERAL, "new question")).startswith("[You are Support Bot.]")
    assert (await ask(slack, RANDOM, "other channel")).startswith("[You help.]")

    await slack.post(BOB, GENERAL, "and a follow-up", thread_ts=old_thread)
    both = await wait_answers(slack, GENERAL, old_thread, 2)
    assert both[1].text == "[You help.] and a follow-up (#2)"


@pytest.mark.parametrize(
    ("typed", "chosen"),
    [
        ("support", "Support Bot"),
        ("RESEARCH ASSISTANT", "Research Assistant"),
        ("id", "Code Helper"),
    ],
)
async def test_use_takes_a_name_a_unique_prefix_or_an_id_in_any_case(
    harness: Harness, typed: str, chosen: str
) -> None:
    ids = await start_with_team(harness)
    typed = ids["Code Helper"] if typed == "id" else typed
    shown = await command(harness.slack, ALICE, GENERAL, f"use {typed}")
    assert shown.startswith(f"Done: *{chosen}* now answers")
    assert (await ask(harness.slack, GENERAL, "hi")).startswith(f"[You are {chosen}.]")


async def test_an_unknown_or_ambiguous_name_lists_the_close_matches_and_changes_nothing(
    harness: Harness,
) -> None:
    ids = await start_with_team(harness)
    slack = harness.slack
    shown = await command(slack, ALICE, GENERAL, "use code")
    assert shown == (
        f"“code” fits several assistants: *Code Helper* (`{ids['Code Helper']}`), "
        f"*Code Reviewer* (`{ids['Code Reviewer']}`). Write more of the name, or the id."
    )
    shown = await command(slack, ALICE, GENERAL, "use suport bot")
    assert shown.startswith("I don't know an assistant called “suport bot”. Close matches: ")
    assert "*Support Bot*" in shown and shown.endswith("`/assistant list` shows them all.")
    shown = await command(slack, ALICE, GENERAL, "use")
    assert shown.startswith("Which assistant?")
    assert (await ask(slack, GENERAL, "hi")).startswith("[You help.]")


async def test_current_says_which_assistant_answers_here_and_why(harness: Harness) -> None:
    await start_with_team(harness)
    slack = harness.slack
    shown = await command(slack, ALICE, GENERAL, "current")
    assert shown.startswith(
        "*Helper* answers new conversations in <#C0GENERAL>: it is the bot's global default "
        "(no default is set for <#C0GENERAL>)."
    )
    assert "Threads keep the assistant they started with" in shown

    await command(slack, BOB, GENERAL, "use code helper")
    shown = await command(slack, ALICE, GENERAL, "current")
    assert shown.startswith(
        "*Code Helper* answers new conversations in <#C0GENERAL>: "
        "it is the default of <#C0GENERAL>, set by <@U0BOB>."
    )


async def test_a_dm_default_is_its_persons_own_even_when_admins_guard_channels(
    harness: Harness,
) -> None:
    await start_with_team(harness, ASSISTANT_ADMINS=BOB)
    slack = harness.slack
    dm = slack.dm_channel(ALICE)
    shown = await command(slack, ALICE, dm, "use research")
    assert shown == (
        "Done: *Research Assistant* now answers new conversations in this DM. "
        "Threads already going keep their assistant."
    )
    assert (await ask(slack, dm, "hello")).startswith("[You are Research Assistant.]")
    shown = await command(slack, ALICE, dm, "current")
    assert shown.startswith(
        "*Research Assistant* answers new conversations in this DM: "
        "you chose it as the default for your DM with me."
    )
    bobs_dm = slack.dm_channel(BOB)
    assert (await ask(slack, bobs_dm, "hello", user=BOB)).startswith("[You help.]")
    assert (await ask(slack, GENERAL, "hello")).startswith("[You help.]")


async def test_only_admins_may_change_a_channel_default_when_admins_are_set(
    harness: Harness,
) -> None:
    await start_with_team(harness, ASSISTANT_ADMINS=f"{BOB}, U0CAROL")
    slack = harness.slack
    shown = await command(slack, ALICE, GENERAL, "use support")
    assert shown.startswith(
        "Only the bot's admins (<@U0BOB>, <@U0CAROL>) can change the default assistant of "
        "<#C0GENERAL>. You can still switch a single thread with the message shortcut "
        "*Switch thread assistant*"
    )
    assert (await ask(slack, GENERAL, "hi")).startswith("[You help.]")
    assert (await command(slack, BOB, GENERAL, "use support")).startswith("Done: *Support Bot*")
    assert (await ask(slack, GENERAL, "hi again")).startswith("[You are Support Bot.]")


async def open_picker(slack: SlackEmulator, user: str, channel: str, ts: str) -> dict[str, Any]:
    """`user` picks "Switch thread assistant" on a message; the modal that opens."""
    opened = len(slack.calls_to("views.open"))
    payload = slack.message_shortcut_payload(user, channel, ts, "switch_thread_assistant")
    delivery = await slack.interaction(payload)
    assert delivery.status == 200 and not delivery.timed_out
    await slack.wait_for(lambda: len(slack.calls_to("views.open")) > opened)
    return next(v for v in reversed(slack.views.values()) if v["type"] == "modal")


def options(view: dict[str, Any]) -> dict[str, str]:
    select = view["blocks"][1]["element"]
    return {o["text"]["text"]: o["value"] for o in select["options"]}


async def pick(slack: SlackEmulator, user: str, view: dict[str, Any], value: str) -> Any:
    state = {
        "assistant": {"choice": {"type": "static_select", "selected_option": {"value": value}}}
    }
    payload = slack.view_submission_payload(
        user, view["id"], view["callback_id"], state, private_metadata=view["private_metadata"]
    )
    delivery = await slack.interaction(payload)
    assert delivery.status == 200 and not delivery.timed_out
    return delivery.body


async def test_the_shortcut_switches_a_thread_which_goes_on_with_the_same_conversation(
    harness: Harness,
) -> None:
    ids = await start_with_team(harness)
    slack = harness.slack
    root = await slack.mention(ALICE, GENERAL, "help me with this stack trace")
    await wait_answers(slack, GENERAL, root, 1)
    reply = await slack.post(ALICE, GENERAL, "it happens on deploy", thread_ts=root)
    await wait_answers(slack, GENERAL, root, 2)

    view = await open_picker(slack, BOB, GENERAL, reply)
    assert view["title"]["text"] == "Switch assistant"
    assert (
        "*Helper* answers this thread now: it is this thread's assistant."
        in (view["blocks"][0]["text"]["text"])
    )
    assert set(options(view)) == {"Helper", *ids}
    assert view["blocks"][1]["element"]["initial_option"]["text"]["text"] == "Helper"

    assert await pick(slack, BOB, view, ids["Code Helper"]) in ("", None, {})
    await slack.wait_for(lambda: len(slack.bot_replies(GENERAL, root)) == 3)
    notice = slack.bot_replies(GENERAL, root)[-1].text
    assert notice == (
        "<@U0BOB> switched this thread to *Code Helper*. It answers from the next message on."
    )

    await slack.post(ALICE, GENERAL, "so what is wrong?", thread_ts=root)
    latest = (await wait_answers(slack, GENERAL, root, 4))[-1].text
    assert latest == "[You are Code Helper.] so what is wrong? (#3)", "same backend conversation"
    assert harness.backend_conversations() == 1

    view = await open_picker(slack, ALICE, GENERAL, root)
    assert view["blocks"][1]["element"]["initial_option"]["text"]["text"] == "Code Helper"
    assert (await ask(slack, GENERAL, "a new thread")).startswith("[You help.]")


async def test_a_thread_the_bot_is_not_in_keeps_the_choice_until_someone_mentions_it(
    harness: Harness,
) -> None:
    ids = await start_with_team(harness)
    slack = harness.slack
    root = await slack.post(BOB, GENERAL, "we need to dig into churn numbers")
    view = await open_picker(slack, ALICE, GENERAL, root)
    assert (
        "*Helper* answers this thread now: it is the bot's global default"
        in (view["blocks"][0]["text"]["text"])
    )
    await pick(slack, ALICE, view, ids["Research Assistant"])
    await slack.wait_for(lambda: len(slack.bot_replies(GENERAL, root)) == 1)
    assert slack.bot_replies(GENERAL, root)[0].text == (
        "<@U0ALICE> switched this thread to *Research Assistant*. "
        "It answers once someone mentions me in this thread."
    )

    await slack.post(BOB, GENERAL, "no bot here yet", thread_ts=root)
    await harness.drain_idle()
    assert len(slack.bot_replies(GENERAL, root)) == 1, "a switch alone does not join the thread"

    await slack.mention(BOB, GENERAL, "what drives churn?", thread_ts=root)
    answered = await wait_answers(slack, GENERAL, root, 2)
    assert answered[-1].text == "[You are Research Assistant.] what drives churn? (#1)"


async def test_picking_an_assistant_deleted_meanwhile_is_refused_in_the_picker(
    harness: Harness,
) -> None:
    ids = await start_with_team(harness)
    slack = harness.slack
    root = await slack.mention(ALICE, GENERAL, "hi")
    await wait_answers(slack, GENERAL, root, 1)
    view = await open_picker(slack, ALICE, GENERAL, root)
    assert harness.bot is not None
    await harness.bot.backend.catalog.delete_assistant(ids["Code Reviewer"])
    body = await pick(slack, ALICE, view, ids["Code Reviewer"])
    assert body == {
        "response_action": "errors",
        "errors": {"assistant": "That assistant no longer exists; pick another one."},
    }
    await slack.post(ALICE, GENERAL, "still there?", thread_ts=root)
    answered = await wait_answers(slack, GENERAL, root, 2)
    assert answered[-1].text.startswith("[You help.]")


async def test_a_thread_whose_assistant_was_deleted_says_so_and_can_be_switched(
    harness: Harness,
) -> None:
    ids = await start_with_team(harness)
    slack = harness.slack
    root = await slack.mention(ALICE, GENERAL, "hi")
    await wait_answers(slack, GENERAL, root, 1)
    view = await open_picker(slack, ALICE, GENERAL, root)
    await pick(slack, ALICE, view, ids["Code Reviewer"])
    await slack.wait_for(lambda: len(slack.bot_replies(GENERAL, root)) == 2)
    assert harness.bot is not None
    await harness.bot.backend.catalog.delete_assistant(ids["Code Reviewer"])

    await slack.post(ALICE, GENERAL, "review this", thread_ts=root)
    answered = await wait_answers(slack, GENERAL, root, 3)
    assert answered[-1].text.startswith(":warning: The assistant could not answer")
    assert "Your next message in this thread will work as usual." in answered[-1].text

    view = await open_picker(slack, ALICE, GENERAL, root)
    await pick(slack, ALICE, view, ids["Support Bot"])
    await slack.wait_for(lambda: len(slack.bot_replies(GENERAL, root)) == 4)
    await slack.post(ALICE, GENERAL, "and now?", thread_ts=root)
    answered = await wait_answers(slack, GENERAL, root, 5)
    assert answered[-1].text.startswith("[You are Support Bot.] and now?")


async def test_home_tab_shows_the_assistants_the_defaults_and_how_to_use_the_bot(
    harness: Harness,
) -> None:
    await start_with_team(harness)
    slack = harness.slack
    await command(slack, BOB, GENERAL, "use support")
    await command(slack, ALICE, slack.dm_channel(ALICE), "use code helper")
    await slack.open_app_home(ALICE)
    await slack.wait_for(lambda: slack.home_view(ALICE) is not None)
    home = slack.home_view(ALICE)
    assert home is not None
    shown = "\n".join(
        block["text"]["text"] for block in home["blocks"] if block["type"] != "divider"
    )
    assert "*Mention me* in a channel" in shown and "`/assistant use NAME`" in shown
    assert "*Global default:* *Helper*" in shown
    assert "*Your DM with me:* *Code Helper*" in shown
    assert "• <#C0GENERAL>: *Support Bot* (set by <@U0BOB>)" in shown
    assert "_Who may change a channel's default: everyone._" in shown
    assert "Assistants (5)" in shown
    for name, description, _ in TEAM:
        assert f"*{name}*" in shown and description in shown

    await slack.open_app_home(BOB)
    await slack.wait_for(lambda: slack.home_view(BOB) is not None)
    bobs = json.dumps(slack.home_view(BOB))
    assert "Your DM with me" not in bobs, "a DM default is shown to its own person only"


async def test_assistant_names_are_escaped_in_slack(harness: Harness) -> None:
    bot = await harness.start()
    await bot.backend.catalog.create_assistant(
        AssistantDefinition(name="R&D <!channel>", model="gpt-4o", description="<b>labs</b>")
    )
    slack = harness.slack
    shown = await command(slack, ALICE, GENERAL, "list")
    assert "*R&amp;D &lt;!channel&gt;*" in shown and "&lt;b&gt;labs&lt;/b&gt;" in shown
    assert "<!channel>" not in shown
    shown = await command(slack, ALICE, GENERAL, "use r&d")
    assert shown.startswith("Done: *R&amp;D &lt;!channel&gt;* now answers")


@pytest.mark.parametrize("engine", ["assistants"])
async def test_the_list_covers_every_page_of_the_backends_assistants(harness: Harness) -> None:
    for number in range(1, 106):
        harness.openai.add_assistant(name=f"Agent {number:03d}", description=f"number {number}")
    await harness.start()
    shown = await command(harness.slack, ALICE, GENERAL, "list")
    assert shown.splitlines()[0] == "*Assistants* (106):"
    assert "*Agent 001*" in shown and "*Agent 105*" in shown
    pages = [r for r in harness.openai.requests if r.method == "GET" and r.path == "/v1/assistants"]
    assert len(pages) >= 2 and any("after" in r.query for r in pages)


def test_assistant_admins_must_be_slack_user_ids() -> None:
    env = {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_APP_TOKEN": "xapp-1",
        "OPENAI_API_KEY": "sk-1",
        "ASSISTANT_ID": "asst_1",
    }
    settings = load_settings(env | {"ASSISTANT_ADMINS": " U0BOB ,W0CAROL,"}, env_file=None)
    assert settings.assistant_admins == {"U0BOB", "W0CAROL"}
    assert load_settings(env, env_file=None).assistant_admins == frozenset()
    with pytest.raises(ConfigError) as raised:
        load_settings(env | {"ASSISTANT_ADMINS": "U0BOB, @alice"}, env_file=None)
    assert raised.value.problems == [
        "ASSISTANT_ADMINS must be Slack user ids like U0123ABCD, comma-separated; got '@alice'."
    ]
