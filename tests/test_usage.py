"""Usage and cost: what each turn used is recorded, `/assistant usage` and the Home tab show it
(admins everyone's, others their own), and `python -m bot usage` prints it for operators."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.governance.prices import Prices, load_prices
from tests.conftest import ALICE, BOB, BOTH_DATABASES, GENERAL, Harness
from tests.emulators.model import Reply, ToolCallSpec
from tests.emulators.slack import SlackEmulator

RANDOM = "C0RANDOM"
GPT_4O = Prices().price_of("gpt-4o")


@dataclass(frozen=True)
class Reported:
    """What the OpenAI emulator reported using, summed over every run or response."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def usd(self) -> float:
        assert GPT_4O is not None
        uncached = self.input_tokens - self.cached_input_tokens
        return (
            uncached * GPT_4O.input
            + self.cached_input_tokens * GPT_4O.cached_input
            + self.output_tokens * GPT_4O.output
        ) / 1_000_000


def reported(harness: Harness) -> Reported:
    if harness.engine == "assistants":
        runs = [run.obj["usage"] for run in harness.openai.runs.values() if run.obj.get("usage")]
        return Reported(
            sum(u["prompt_tokens"] for u in runs), 0, sum(u["completion_tokens"] for u in runs)
        )
    responses = harness.openai.responses_api.responses.values()
    usages = [r.body["usage"] for r in responses if r.body.get("usage")]
    return Reported(
        sum(u["input_tokens"] for u in usages),
        sum(u["input_tokens_details"]["cached_tokens"] for u in usages),
        sum(u["output_tokens"] for u in usages),
    )


async def command(slack: SlackEmulator, user: str, channel: str, text: str) -> str:
    before = len(slack.ephemerals(channel, user))
    delivery = await slack.slash_command(user, channel, "/assistant", text)
    assert delivery.status == 200 and not delivery.timed_out
    await slack.wait_for(lambda: len(slack.ephemerals(channel, user)) > before)
    return slack.ephemerals(channel, user)[-1]


async def converse(harness: Harness) -> tuple[Reported, Reported]:
    """Alice asks in #general and follows up in the thread; Bob asks in #random, and the model
    calls a tool for him. What the emulator reported for Alice's turns, and for Bob's."""
    slack = harness.slack
    thread = await slack.mention(ALICE, GENERAL, "what is the refund policy?")
    await harness.drain_idle()
    await slack.post(ALICE, GENERAL, "and for gift cards?", thread_ts=thread)
    await harness.drain_idle()
    alices = reported(harness)
    harness.openai.model.enqueue(
        Reply(tool_calls=[ToolCallSpec("current_time", '{"timezone": "UTC"}')])
    )
    await slack.mention(BOB, RANDOM, "what time is it?")
    await harness.drain_idle()
    everyone = reported(harness)
    bobs = Reported(
        everyone.input_tokens - alices.input_tokens,
        everyone.cached_input_tokens - alices.cached_input_tokens,
        everyone.output_tokens - alices.output_tokens,
    )
    return alices, bobs


def figures(count: int, used: Reported) -> str:
    cached = f" ({used.cached_input_tokens:,} cached)" if used.cached_input_tokens else ""
    return f"{count} message{'s' if count != 1 else ''} · {used.tokens:,} tokens{cached}"


@pytest.mark.parametrize("database", BOTH_DATABASES, indirect=True)
async def test_the_usage_report_adds_up_to_the_tokens_the_backend_reported(
    harness: Harness,
) -> None:
    await harness.start(ASSISTANT_ADMINS=ALICE)
    alices, bobs = await converse(harness)
    everyone = reported(harness)
    assert alices.tokens and bobs.tokens
    if harness.engine == "responses":
        assert alices.cached_input_tokens, "the follow-up read the conversation from the cache"

    shown = await command(harness.slack, ALICE, GENERAL, "usage")
    lines = shown.splitlines()
    assert lines[0] == "*Usage of the assistants* (cost at OpenAI's list prices of 2026-11, in USD)"
    for period in ("Last day", "Last 7 days", "Last 30 days"):
        assert f"• {period}: {figures(3, everyone)} · " in shown
    assert f"• <@{ALICE}>: {figures(2, alices)} · " in shown
    assert f"• <@{BOB}>: {figures(1, bobs)} · " in shown
    assert f"• <#{GENERAL}>: {figures(2, alices)} · " in shown
    assert f"• <#{RANDOM}>: {figures(1, bobs)} · " in shown
    assert f"• *Helper*: {figures(3, everyone)} · " in shown
    assert "*Top people* (last 30 days):" in lines
    assert harness.slack.channel_messages(GENERAL)[-1].text != shown, "only Alice sees it"


async def test_someone_who_is_not_an_admin_sees_only_their_own_usage(harness: Harness) -> None:
    await harness.start(ASSISTANT_ADMINS=ALICE)
    alices, bobs = await converse(harness)
    shown = await command(harness.slack, BOB, GENERAL, "usage")
    assert shown.startswith("*Your usage of the assistants*")
    assert f"• Last day: {figures(1, bobs)} · " in shown
    assert ALICE not in shown and GENERAL not in shown and RANDOM not in shown
    assert "Top" not in shown
    assert f"{alices.tokens:,}" not in shown and f"{alices.tokens + bobs.tokens:,}" not in shown


async def test_without_admins_nobody_sees_anyone_elses_usage_in_slack(harness: Harness) -> None:
    await harness.start()
    await converse(harness)
    shown = await command(harness.slack, ALICE, GENERAL, "usage 7d")
    assert shown.startswith("*Your usage of the assistants*") and BOB not in shown


async def test_usage_with_a_span_shows_the_top_lists_over_it_and_garbage_gets_the_help(
    harness: Harness,
) -> None:
    await harness.start(ASSISTANT_ADMINS=ALICE)
    await converse(harness)
    shown = await command(harness.slack, ALICE, GENERAL, "usage 7d")
    assert "*Top channels* (last 7 days):" in shown
    assert "*Top people* (last day):" in await command(harness.slack, ALICE, GENERAL, "usage 1")
    for garbage in ("lots", "0d", "999d", "7d please", "-1"):
        shown = await command(harness.slack, ALICE, GENERAL, f"usage {garbage}")
        assert shown.startswith("*`/assistant usage`* shows how much the assistants were used")
    assert "`/assistant usage`" in await command(harness.slack, ALICE, GENERAL, "help")


async def test_the_home_tab_shows_the_usage_summary_to_admins_only(harness: Harness) -> None:
    await harness.start(ASSISTANT_ADMINS=ALICE)
    _, bobs = await converse(harness)
    slack = harness.slack
    for user in (ALICE, BOB):
        await slack.open_app_home(user)
        await slack.wait_for(lambda user=user: slack.home_view(user) is not None)  # type: ignore[misc]
    alices_home = slack.home_view(ALICE)
    assert alices_home is not None
    texts = [block["text"]["text"] for block in alices_home["blocks"] if "text" in block]
    assert "Usage" in texts
    summary = "\n".join(texts)
    assert f"• <@{BOB}>: {figures(1, bobs)} · " in summary
    bobs_home = slack.home_view(BOB)
    assert bobs_home is not None
    assert "Usage" not in [b["text"]["text"] for b in bobs_home["blocks"] if "text" in b]
    assert "tokens" not in str(bobs_home)


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_model_without_a_price_counts_its_tokens_and_says_its_cost_is_unknown(
    harness: Harness, tmp_path: Path
) -> None:
    definitions = tmp_path / "house.yaml"
    definitions.write_text("assistants:\n  - name: Helper\n    model: house-model\n")
    harness.openai.models.add("house-model")
    await harness.start(ASSISTANTS_FILE=str(definitions), ASSISTANT_ADMINS=ALICE)
    await harness.slack.mention(ALICE, GENERAL, "hello")
    await harness.drain_idle()
    shown = await command(harness.slack, ALICE, GENERAL, "usage")
    assert f"• Last day: {figures(1, reported(harness))} · cost unknown" in shown
    assert "_No price is known for `house-model`: their tokens are counted, not costed._" in shown


async def run_cli(database_url: str, *args: str, **env: str) -> tuple[int, str, str]:
    """`python -m bot usage ARGS` with nothing but the database (and `env`) set."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "usage",
        *args,
        env={"PATH": os.environ.get("PATH", ""), "DATABASE_URL": database_url, **env},
        cwd=Path(__file__).parent,  # no .env there
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("database", BOTH_DATABASES, indirect=True)
async def test_the_usage_command_prints_a_table_and_csv_from_the_database_alone(
    harness: Harness, database_url: str
) -> None:
    await harness.start()
    alices, bobs = await converse(harness)
    await harness.stop()

    code, out, err = await run_cli(database_url, "--since", "7d", "--by", "user")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("Usage over the last 7d, by user; cost in USD")
    assert lines[1].split() == [
        "user",
        "turns",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "cost_usd",
    ]
    table = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    for user, used, turns in ((ALICE, alices, 2), (BOB, bobs, 1)):
        counted = [turns, used.input_tokens, used.cached_input_tokens, used.output_tokens]
        assert table[user][:4] == [str(n) for n in counted]
        assert table[user][4] == f"{used.usd:.4f}"
    assert table["total"][0] == "3"

    code, out, _ = await run_cli(database_url, "--by", "channel", "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["channel"] for row in rows] == sorted(
        [GENERAL, RANDOM], key=lambda c: -(alices if c == GENERAL else bobs).usd
    )
    everyone = reported(harness)
    assert sum(int(r["input_tokens"]) + int(r["output_tokens"]) for r in rows) == everyone.tokens
    assert sum(float(r["cost_usd"]) for r in rows) == pytest.approx(everyone.usd, abs=1e-9)
    assert all(row["unpriced_tokens"] == "0" for row in rows)


async def test_prices_file_changes_and_adds_prices_and_the_command_uses_it(
    harness: Harness, database_url: str, tmp_path: Path
) -> None:
    await harness.start()
    await converse(harness)
    await harness.stop()
    everyone = reported(harness)
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  gpt-4o: {input: 1000000, output: 0}\n")
    code, out, _ = await run_cli(database_url, "--by", "model", "--csv", PRICES_FILE=str(prices))
    assert code == 0
    (row,) = csv.DictReader(io.StringIO(out))
    assert row["model"].startswith("gpt-4o")
    assert float(row["cost_usd"]) == pytest.approx(everyone.input_tokens)  # $1 a token

    code, _, err = await run_cli(database_url, "--since", "forever")
    assert code == 2 and "not a span of time like 30d" in err
    missing = tmp_path / "none.sqlite3"
    code, _, err = await run_cli(f"sqlite:///{missing}")
    assert (code, err) == (
        1,
        f"usage: FAILED there is no database at {missing}: set DATABASE_URL.\n",
    )
    assert not missing.exists(), "a report creates no database"


def test_a_dated_snapshot_costs_what_its_model_does_and_cached_tokens_cost_less() -> None:
    prices = Prices()
    assert prices.price_of("gpt-4o-2024-08-06") == prices.price_of("gpt-4o")
    assert prices.price_of("GPT-4.1-mini") is not None
    assert prices.price_of("house-model") is None
    full = prices.cost("gpt-4.1", 1_000_000, 0, 0)
    cached = prices.cost("gpt-4.1", 1_000_000, 1_000_000, 0)
    assert full == pytest.approx(2.0) and cached == pytest.approx(0.5)


def test_a_prices_file_in_toml_adds_a_model_whose_cached_input_costs_its_input(
    tmp_path: Path,
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[models."house-model"]\ninput = 1.0\noutput = 3.0\n')
    prices = load_prices(path)
    assert prices.cost("house-model", 1_000_000, 500_000, 1_000_000) == pytest.approx(4.0)
    assert prices.price_of("gpt-4o") == Prices().price_of("gpt-4o"), "the rest stay built in"
