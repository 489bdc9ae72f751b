"""The audit log: admin actions with who, what and when; `python -m bot audit` prints them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.__main__ import print_audit
from tests.conftest import ALICE, BOB, BOTH_DATABASES, GENERAL, Harness
from tests.test_assistants_cli import cli_env
from tests.test_choosing_assistants import command
from tests.test_files import pdf
from tests.test_operations import run_bot

__all__ = ["cli_env"]  # a fixture this module uses

NEW_TEAM = """
assistants:
  - name: Helper
    model: gpt-4o
    instructions: You help.
    description: General help
  - name: Support Bot
    model: gpt-4o
    instructions: You answer customers.
"""


@pytest.mark.parametrize("database", BOTH_DATABASES, indirect=True)
async def test_the_audit_log_lists_a_channel_default_change_with_who_changed_it(
    harness: Harness, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    team = tmp_path / "team.yaml"
    team.write_text(NEW_TEAM)
    await harness.start(ASSISTANTS_FILE=str(team))
    assert (await command(harness.slack, BOB, GENERAL, "use Support Bot")).startswith("Done")
    capsys.readouterr()

    assert await print_audit(database_url, "7d") == 0
    lines = capsys.readouterr().out.splitlines()
    changed = [line for line in lines if "channel_default_set" in line]
    assert len(changed) == 1
    assert " U0BOB " in changed[0] and "channel=C0GENERAL" in changed[0]
    assert "assistant=Support Bot" in changed[0]
    created = [line for line in lines if "assistant_created" in line and "Support Bot" in line]
    assert len(created) == 1 and " startup " in created[0], "ASSISTANTS_FILE made it at start-up"


async def test_channel_knowledge_added_and_removed_is_in_the_audit_log(harness: Harness) -> None:
    bot = await harness.start()
    slack = harness.slack
    ts = await slack.post(BOB, GENERAL, "the policy", files=[pdf(slack)])
    await slack.interaction(
        slack.message_shortcut_payload(BOB, GENERAL, ts, "add_channel_knowledge")
    )
    await slack.wait_for(lambda: any("Added" in e for e in slack.ephemerals(GENERAL, BOB)))
    await slack.slash_command(ALICE, GENERAL, "/assistant", "knowledge")
    await slack.wait_for(lambda: any("report.pdf" in e for e in slack.ephemerals(GENERAL, ALICE)))
    listing = next(p for p in slack.response_url_posts if p.get("blocks"))
    [button] = [b["accessory"] for b in listing["blocks"] if "accessory" in b]
    await slack.interaction(
        slack.block_action_payload(
            ALICE, GENERAL, slack.next_ts(), button["action_id"], value=button["value"]
        )
    )
    await slack.wait_for(lambda: any("Removed" in e for e in slack.ephemerals(GENERAL, ALICE)))

    entries = [
        (e.actor, e.action, e.detail)
        for e in await bot.store.audit_entries(0)
        if e.action.startswith("knowledge")
    ]
    assert entries == [
        (BOB, "knowledge_added", {"channel": GENERAL, "files": ["report.pdf"]}),
        (ALICE, "knowledge_removed", {"channel": GENERAL, "file": button["value"]}),
    ]


async def test_audit_since_takes_a_period_and_refuses_anything_else(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await print_audit(database_url, "soon") == 2
    assert "not a period like 30m, 12h, 7d or 2w" in capsys.readouterr().err
    assert await print_audit(database_url, "12h") == 0
    assert "nothing recorded in the last 12h" in capsys.readouterr().out


async def test_assistants_created_updated_and_deleted_from_the_command_line_are_audited(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    for args in (
        ("create", "--name", "Support Bot", "--model", "gpt-4.1"),
        ("update", "Support Bot", "--model", "gpt-4.1-mini"),
        ("delete", "Support Bot"),
    ):
        code, _, err = await run_bot("assistants", *args, env=cli_env, cwd=tmp_path)
        assert code == 0, err
    code, out, err = await run_bot("audit", "--since", "1h", env=cli_env, cwd=tmp_path)
    assert code == 0, err
    done = [line.split()[2:4] for line in out.splitlines()]
    assert done == [
        ["cli", "assistant_created"],
        ["cli", "assistant_updated"],
        ["cli", "assistant_deleted"],
    ]
    assert all("assistant=Support Bot" in line for line in out.splitlines())
