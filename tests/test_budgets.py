"""Budgets and the per-person rate limit: a message over a limit is turned away privately and the
model is never asked; near a limit the answer says so once; a wrong budgets file stops start-up."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from bot.governance.budgets import period_bounds
from tests.conftest import ALICE, BOB, BOTH_DATABASES, GENERAL, Harness, answers, wait_answers
from tests.emulators.model import Reply
from tests.emulators.slack import SlackEmulator

RANDOM = "C0RANDOM"
LONG_ANSWER = "word " * 1000  # most of what each turn uses: each uses about as much


def budgets_file(tmp_path: Path, text: str, name: str = "budgets.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


async def ask(harness: Harness, user: str, channel: str, text: str) -> str:
    """`user` mentions the bot; returns the message's ts once the bot is done with it."""
    ts = await harness.slack.mention(user, channel, text)
    await harness.drain_idle()
    return ts


async def told(slack: SlackEmulator, channel: str, user: str, count: int) -> list[str]:
    await slack.wait_for(lambda: len(slack.ephemerals(channel, user)) >= count)
    return slack.ephemerals(channel, user)


@pytest.mark.parametrize("database", BOTH_DATABASES, indirect=True)
async def test_a_person_over_their_daily_budget_is_told_privately_and_the_model_is_not_called(
    harness: Harness, tmp_path: Path
) -> None:
    await harness.start(BUDGETS_FILE=budgets_file(tmp_path, "person: {tokens: 10}\n"))
    slack = harness.slack
    first = await ask(harness, ALICE, GENERAL, "first question")
    assert len(answers(slack, GENERAL, first)) == 1, "under the budget: answered"
    runs = harness.backend_runs()

    second = await ask(harness, ALICE, GENERAL, "second question")
    (note,) = await told(slack, GENERAL, ALICE, 1)
    _, day_ends = period_bounds("day", time.time())
    assert note.startswith("You have reached your daily budget of 10 tokens (used: ")
    assert "so I did not send your message to the assistant" in note
    assert f"The budget starts afresh <!date^{int(day_ends)}^" in note
    assert harness.backend_runs() == runs, "the model was not called"
    assert slack.bot_replies(GENERAL, second) == [], "nothing in the thread, not even Thinking…"
    assert slack.ephemerals(GENERAL, BOB) == []
    refusals = [
        (e.actor, e.action, e.detail["message_ts"])
        for e in await harness.bot.store.audit_entries(0)
        if e.action == "budget_refused"
    ]
    assert refusals == [(ALICE, "budget_refused", second)], "an admin can see who was refused"
    await slack.post(BOB, GENERAL, "chatter without a mention", thread_ts=second)
    await harness.drain_idle()
    assert slack.bot_replies(GENERAL, second) == [], "a refused mention does not join a thread"
    assert harness.backend_runs() == runs and slack.ephemerals(GENERAL, BOB) == []

    other = await ask(harness, BOB, GENERAL, "my own question")
    assert len(answers(slack, GENERAL, other)) == 1, "another person's budget is their own"

    # Across a restart too: the budget is counted from the stored usage.
    await harness.restart()
    await ask(harness, ALICE, RANDOM, "after a restart")
    assert len(await told(slack, RANDOM, ALICE, 1)) == 1
    assert harness.backend_runs() == runs + 1


async def test_a_refused_reply_in_a_thread_is_told_in_that_thread_once(
    harness: Harness, tmp_path: Path
) -> None:
    await harness.start(BUDGETS_FILE=budgets_file(tmp_path, "person: {tokens: 10}\n"))
    slack = harness.slack
    thread = await ask(harness, ALICE, GENERAL, "first question")
    await slack.post(ALICE, GENERAL, "and a follow-up", thread_ts=thread)
    await harness.drain_idle()
    await slack.mention(ALICE, GENERAL, "once more", thread_ts=thread)
    await harness.drain_idle()
    notes = await told(slack, GENERAL, ALICE, 2)
    assert len(notes) == 2, "one note per message, though Slack delivers a mention twice"
    calls = slack.calls_to("chat.postEphemeral")
    assert [call.args.get("thread_ts") for call in calls] == [thread, thread]
    assert len(answers(slack, GENERAL, thread)) == 1


async def test_a_channel_over_its_monthly_budget_in_usd_refuses_everyone_there(
    harness: Harness, tmp_path: Path
) -> None:
    budgets = "channel: {usd: 0.000001}\n"  # gpt-4o: any answer costs more
    await harness.start(BUDGETS_FILE=budgets_file(tmp_path, budgets))
    slack = harness.slack
    await ask(harness, ALICE, GENERAL, "first question")
    await ask(harness, BOB, GENERAL, "second question")
    (note,) = await told(slack, GENERAL, BOB, 1)
    assert note.startswith("This channel has reached its monthly budget of <$0.01, so I did not")
    assert "used" not in note, "a refusal never tells a channel's (others') usage"
    _, month_ends = period_bounds("month", time.time())
    assert f"<!date^{int(month_ends)}^" in note
    elsewhere = await ask(harness, BOB, RANDOM, "elsewhere")
    assert len(answers(slack, RANDOM, elsewhere)) == 1


async def test_admins_are_not_limited_when_the_budgets_file_exempts_them(
    harness: Harness, tmp_path: Path
) -> None:
    budgets = "person: {tokens: 10}\nglobal: {tokens: 10}\nadmins_exempt: true\n"
    await harness.start(BUDGETS_FILE=budgets_file(tmp_path, budgets), ASSISTANT_ADMINS=ALICE)
    slack = harness.slack
    for text in ("one", "two", "three"):
        ts = await ask(harness, ALICE, GENERAL, text)
        assert len(answers(slack, GENERAL, ts)) == 1
    await ask(harness, BOB, GENERAL, "me too")
    (note,) = await told(slack, GENERAL, BOB, 1)
    assert note.startswith("The bot has reached its monthly budget of 10 tokens")


async def test_the_answer_that_takes_someone_near_their_budget_warns_once(
    harness: Harness, tmp_path: Path
) -> None:
    bot = await harness.start()
    harness.openai.model.respond = lambda context: Reply(text=LONG_ANSWER)
    slack = harness.slack
    ts = await ask(harness, ALICE, GENERAL, "question 1")
    shown = [(await wait_answers(slack, GENERAL, ts, 1))[0].text]
    (used,) = await bot.store.usage(0)
    each = used.input_tokens + used.output_tokens  # each question below uses as much
    # 3.5 turns' worth: the third answer passes 80% of it, the fourth 100%.
    budgets = f"person: {{period: week, tokens: {each * 7 // 2}}}\n"
    await harness.stop()
    await harness.start(BUDGETS_FILE=budgets_file(tmp_path, budgets))
    for number in range(2, 5):
        ts = await ask(harness, ALICE, GENERAL, f"question {number}")
        shown.append((await wait_answers(slack, GENERAL, ts, 1))[0].text)
    warned = [text for text in shown if ":warning:" in text]
    assert warned == [shown[2]], "the third answer alone carries the warning"
    _, week_ends = period_bounds("week", time.time())
    limit = f"{each * 7 // 2:,}"
    warning = re.search(
        rf"\n\n_:warning: You have now used (\d+)% of your weekly budget \({limit} tokens\); "
        rf"it starts afresh <!date\^{int(week_ends)}\^[^>]*>\._$",
        shown[2],
    )
    assert warning is not None, shown[2][-200:]
    assert 80 <= int(warning.group(1)) < 100
    await ask(harness, ALICE, GENERAL, "question 5")
    assert (await told(slack, GENERAL, ALICE, 1))[0].startswith(
        f"You have reached your weekly budget of {limit} tokens"
    )


@pytest.mark.parametrize("database", BOTH_DATABASES, indirect=True)
async def test_someone_sending_too_fast_is_told_to_slow_down_and_that_message_is_never_answered(
    harness: Harness,
) -> None:
    await harness.start(USER_TURNS_PER_MINUTE="2")
    slack = harness.slack
    threads = [await ask(harness, ALICE, GENERAL, f"question {n}") for n in range(1, 4)]
    (note,) = await told(slack, GENERAL, ALICE, 1)
    assert note == (
        "You are sending messages faster than I take them (at most 2 a minute), so I will not "
        "answer this one. Please wait a minute and send it again."
    )
    assert [len(answers(slack, GENERAL, ts)) for ts in threads] == [1, 1, 0]
    assert harness.backend_runs() == 2
    bobs = await ask(harness, BOB, GENERAL, "my turn")
    assert len(answers(slack, GENERAL, bobs)) == 1, "the limit is per person"

    await harness.restart()  # not answered later, not even after a restart
    await harness.drain_idle()
    assert answers(slack, GENERAL, threads[2]) == []
    assert harness.backend_runs() == 3


BAD_BUDGETS = [
    ("person: [1, 2\n", "BUDGETS_FILE {path} is not valid YAML"),
    ("person: {usd: -5}\n", "BUDGETS_FILE {path}: person.usd must be 0 or more; got -5."),
    (
        "channel: {tokens: lots}\n",
        "BUDGETS_FILE {path}: channel.tokens must be a number; got 'lots'.",
    ),
    (
        "assistant: {period: fortnight, usd: 5}\n",
        "BUDGETS_FILE {path}: assistant.period must be one of day, week, month; got 'fortnight'.",
    ),
    (
        "person: {period: day}\n",
        "BUDGETS_FILE {path}: person sets no limit; give it usd or tokens.",
    ),
    ("team: {usd: 5}\n", "BUDGETS_FILE {path}: team is not known here; use person,"),
    ("person: {usd: 5, euros: 3}\n", "BUDGETS_FILE {path}: person.euros is not known here;"),
    ("admins_exempt: sometimes\n", "BUDGETS_FILE {path}: admins_exempt must be true or false"),
    ("- person\n", "BUDGETS_FILE {path} must hold a mapping at its top"),
]


@pytest.mark.parametrize(("text", "said"), BAD_BUDGETS)
def test_a_wrong_budgets_file_stops_start_up_with_one_line_naming_the_entry(
    tmp_path: Path, text: str, said: str
) -> None:
    path = budgets_file(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_settings(settings_env(BUDGETS_FILE=path), env_file=None)
    (problem,) = raised.value.problems
    assert problem.startswith(said.format(path=path)), problem
    assert "\n" not in problem


BAD_PRICES = [
    ("models = [", "PRICES_FILE {path} is not valid TOML"),
    ('[models."gpt-x"]\ninput = 1\n', "PRICES_FILE {path}: models.gpt-x.output is missing"),
    ('[models."gpt-x"]\ninput = -1\noutput = 2\n', "PRICES_FILE {path}: models.gpt-x.input must"),
    ('[models."gpt-x"]\ninput = "1"\noutput = 2\n', "PRICES_FILE {path}: models.gpt-x.input must"),
    ("[other]\n", "PRICES_FILE {path}: other is not known here; use models."),
]


@pytest.mark.parametrize(("text", "said"), BAD_PRICES)
def test_a_wrong_prices_file_stops_start_up_with_one_line_naming_the_entry(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(settings_env(PRICES_FILE=str(path)), env_file=None)
    (problem,) = raised.value.problems
    assert problem.startswith(said.format(path=path)), problem


def test_a_budget_in_toml_reads_like_the_yaml_one(tmp_path: Path) -> None:
    path = budgets_file(
        tmp_path,
        '[person]\nusd = 2.5\n\n[global]\nperiod = "week"\ntokens = 1000000\n',
        "budgets.toml",
    )
    settings = load_settings(settings_env(BUDGETS_FILE=path), env_file=None)
    assert settings.budgets is not None
    limits = {
        (limit.scope, limit.period, limit.unit): limit.amount for limit in settings.budgets.limits
    }
    assert limits == {("person", "day", "usd"): 2.5, ("global", "week", "tokens"): 1_000_000}


@pytest.mark.parametrize("value", ["-1", "fast", "2.5"])
def test_a_rate_limit_that_is_not_a_whole_number_stops_start_up(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(settings_env(USER_TURNS_PER_MINUTE=value), env_file=None)
    assert raised.value.problems[0].startswith("USER_TURNS_PER_MINUTE must be a whole number")


def test_periods_are_calendar_days_weeks_and_months_in_utc() -> None:
    moment = 1_798_675_200.0 + 3600 * 13  # 2026-12-31 13:00 UTC, a Thursday
    assert period_bounds("day", moment) == (1_798_675_200.0, 1_798_761_600.0)
    week_start, week_end = period_bounds("week", moment)
    assert time.strftime("%Y-%m-%d %a", time.gmtime(week_start)) == "2026-12-28 Mon"
    assert week_end - week_start == 7 * 86400
    month = [time.strftime("%Y-%m-%d", time.gmtime(t)) for t in period_bounds("month", moment)]
    assert month == ["2026-12-01", "2027-01-01"]


def settings_env(**extra: str) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": "secret",
        "OPENAI_API_KEY": "sk-test",
        "ASSISTANT_ID": "asst_test",
        **extra,
    }
