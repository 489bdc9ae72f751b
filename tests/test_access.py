"""Who may use what: channels the bot may answer in, and who may use which assistant."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from bot.definitions import DefinitionError, load_definitions
from tests.conftest import ALICE, BOB, BOTH_DATABASES, GENERAL, Harness, wait_answers
from tests.test_choosing_assistants import command, open_picker, options

SUPPORT = "C0SUPPORT"
CAROL = "U0CAROL"
RESEARCHERS = "S0RESEARCH"
TEAM_FILE = """
assistants:
  - name: Helper
    model: gpt-4o
    instructions: You help.
    description: General help
  - name: HR Bot
    model: gpt-4o
    instructions: You answer HR questions.
    allowed_users: [U0BOB]
  - name: Support Bot
    model: gpt-4o
    instructions: You answer customers.
    allowed_channels: [C0SUPPORT]
  - name: Research Assistant
    model: gpt-4o
    instructions: You dig.
    allowed_usergroups: [S0RESEARCH]
"""


async def start_with_rules(harness: Harness, tmp_path: Path, **env: str) -> None:
    """The bot with Helper (for everyone) and three assistants with rules, from ASSISTANTS_FILE."""
    team = tmp_path / "team.yaml"
    team.write_text(TEAM_FILE)
    harness.slack.add_channel(SUPPORT, "support")
    harness.slack.usergroups[RESEARCHERS] = [ALICE]
    await harness.start(ASSISTANTS_FILE=str(team), **env)


def model_calls(harness: Harness) -> int:
    return len(harness.openai.model.turns)


@pytest.mark.parametrize("database", BOTH_DATABASES, indirect=True)
async def test_a_channel_the_bot_may_not_answer_in_gets_one_private_explanation_and_no_answer(
    harness: Harness, tmp_path: Path
) -> None:
    await start_with_rules(harness, tmp_path, ALLOWED_CHANNELS=SUPPORT)
    slack = harness.slack
    root = await slack.mention(ALICE, GENERAL, "can you help?")
    await slack.wait_for(lambda: len(slack.ephemerals(GENERAL, ALICE)) == 1)
    told = slack.ephemerals(GENERAL, ALICE)[0]
    assert told.startswith("I don't answer in <#C0GENERAL>: the bot's admins have not allowed")

    await slack.mention(ALICE, GENERAL, "hello? anyone?", thread_ts=root)
    await harness.drain_idle()
    assert slack.ephemerals(GENERAL, ALICE) == [told], "told once per thread, not every message"
    assert slack.bot_replies(GENERAL, root) == [], "nothing said in the channel"
    assert model_calls(harness) == 0, "the model never saw these messages"

    answered = await slack.mention(ALICE, SUPPORT, "and here?")
    assert (await wait_answers(slack, SUPPORT, answered, 1))[0].text.startswith("You said:")
    dm = await slack.dm(ALICE, "and in a DM?")
    assert (await wait_answers(slack, slack.dm_channel(ALICE), dm, 1))[0].text


async def test_a_person_not_allowed_to_use_the_assistant_here_is_told_privately_and_not_answered(
    harness: Harness, tmp_path: Path
) -> None:
    await start_with_rules(harness, tmp_path)
    slack = harness.slack
    assert (await command(slack, BOB, GENERAL, "use HR Bot")).startswith("Done: *HR Bot*")

    root = await slack.mention(ALICE, GENERAL, "how many days off do I have?")
    await slack.wait_for(lambda: len(slack.ephemerals(GENERAL, ALICE)) == 1)
    assert slack.ephemerals(GENERAL, ALICE)[-1].startswith("*HR Bot* is not available to you")
    await slack.mention(ALICE, GENERAL, "please?", thread_ts=root)
    slack.add_user(CAROL, "carol")
    await slack.mention(CAROL, GENERAL, "me too", thread_ts=root)
    await slack.wait_for(lambda: len(slack.ephemerals(GENERAL, CAROL)) == 1)
    await harness.drain_idle()
    assert len(slack.ephemerals(GENERAL, ALICE)) == 1, "each person is told once per thread"
    assert model_calls(harness) == 0

    asked = await slack.mention(BOB, GENERAL, "how many days off do I have?")
    assert (await wait_answers(slack, GENERAL, asked, 1))[0].text.startswith("You said:")


async def test_assistant_list_and_the_switch_picker_show_only_what_the_person_may_use(
    harness: Harness, tmp_path: Path
) -> None:
    await start_with_rules(harness, tmp_path)
    slack = harness.slack

    def names(listing: str) -> set[str]:
        known = ("Helper", "HR Bot", "Support Bot", "Research Assistant")
        return {name for name in known if f"*{name}*" in listing}

    assert names(await command(slack, ALICE, GENERAL, "list")) == {"Helper", "Research Assistant"}
    assert names(await command(slack, BOB, GENERAL, "list")) == {"Helper", "HR Bot"}
    assert names(await command(slack, BOB, SUPPORT, "list")) == {"Helper", "HR Bot", "Support Bot"}
    refused = await command(slack, ALICE, GENERAL, "use HR Bot")
    assert refused.startswith("*HR Bot* is not available to you here")

    root = await slack.mention(ALICE, GENERAL, "hi")
    await wait_answers(slack, GENERAL, root, 1)
    assert set(options(await open_picker(slack, ALICE, GENERAL, root))) == {
        "Helper",
        "Research Assistant",
    }


def test_settings_and_rules_that_make_no_sense_stop_start_up_naming_them(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="ALLOWED_CHANNELS must be Slack channel ids"):
        load_settings(
            {
                "SLACK_BOT_TOKEN": "xoxb-1",
                "SLACK_APP_TOKEN": "xapp-1",
                "OPENAI_API_KEY": "sk-1",
                "ASSISTANT_ID": "Helper",
                "ALLOWED_CHANNELS": "C0SUPPORT,#general",
            },
            env_file=None,
        )
    with pytest.raises(ConfigError, match="TEXT_RETENTION_DAYS must be a whole number"):
        load_settings(
            {
                "SLACK_BOT_TOKEN": "xoxb-1",
                "SLACK_APP_TOKEN": "xapp-1",
                "OPENAI_API_KEY": "sk-1",
                "ASSISTANT_ID": "Helper",
                "TEXT_RETENTION_DAYS": "-3",
            },
            env_file=None,
        )
    bad = tmp_path / "team.yaml"
    bad.write_text(TEAM_FILE.replace("[U0BOB]", "[bob@example.com]"))
    with pytest.raises(DefinitionError) as refused:
        load_definitions(bad)
    assert str(refused.value) == (
        f"{bad}: assistant 'HR Bot': 'allowed_users' must be a list of Slack user ids like "
        "U0123ABCD"
    )
