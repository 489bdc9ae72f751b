"""People share files with the bot: it reads them, cites them, and hands back what it made."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot import __main__ as cli
from bot.file_ingest import clean_up
from tests.conftest import ALICE, BOB, GENERAL, Harness, answers, wait_answers
from tests.emulators.model import CitationSpec, ImageSpec, Reply, TurnContext, default_reply
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.slack import Message, SlackEmulator

PARTNER = "C0PARTNER"  # a Slack Connect channel, shared with another organisation
REFUNDS = b"Refund policy\n\nRefunds are accepted within 30 days of purchase with a receipt.\n"
HANDBOOK = b"Handbook\n\nEvery employee gets 25 vacation days per year.\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
ANALYST = """
assistants:
  - name: Analyst
    model: gpt-4o
    instructions: You analyse data.
    tools:
      - type: code_interpreter
"""


def reads_files(openai: OpenAIEmulator) -> None:
    """The model answers from the best passage its file_search finds, citing the file."""

    def respond(context: TurnContext) -> Reply:
        question = context.user_texts[-1] if context.user_texts else ""
        found = openai.search(context.vector_store_ids, question)
        if not found:
            return default_reply(context)
        stored, passage = found[0]
        return Reply(
            text=f"According to the file: {passage}",
            citations=[CitationSpec(stored.filename, passage)],
        )

    openai.model.respond = respond


async def final_answers(harness: Harness, ts: str, count: int) -> list[Message]:
    """The answers once the bot is done: a cited answer streams first, then gets its footnotes."""
    await wait_answers(harness.slack, GENERAL, ts, count)
    await harness.drain_idle()
    return answers(harness.slack, GENERAL, ts)


def pdf(slack: SlackEmulator, name: str = "report.pdf", content: bytes = REFUNDS) -> dict[str, Any]:
    return slack.add_file(ALICE, name, content, "pdf", "application/pdf")


def said(slack: SlackEmulator, ts: str) -> list[str]:
    return [m.text for m in answers(slack, GENERAL, ts)]


def uploads_for_search(openai: OpenAIEmulator) -> list[str]:
    return [f.filename for f in openai.files.values() if f.purpose == "assistants"]


async def use_analyst(harness: Harness, tmp_path: Path) -> None:
    """Start the bot with an assistant that has code_interpreter."""
    if harness.engine == "assistants":
        analyst = harness.openai.add_assistant(
            name="Analyst", instructions="You analyse data.", tools=[{"type": "code_interpreter"}]
        )
        await harness.start(ASSISTANT_ID=analyst)
    else:
        definitions = tmp_path / "analyst.yaml"
        definitions.write_text(ANALYST)
        await harness.start(ASSISTANT_ID="Analyst", ASSISTANTS_FILE=str(definitions))


async def test_a_pdf_shared_with_a_mention_is_read_and_the_answer_cites_it(bot: Harness) -> None:
    slack, openai = bot.slack, bot.openai
    reads_files(openai)
    ts = await slack.mention(ALICE, GENERAL, "how long do refunds take?", files=[pdf(slack)])
    [answer] = await final_answers(bot, ts, 1)

    assert "Refunds are accepted within 30 days" in answer.text
    assert "[1]" in answer.text and "Sources:" in answer.text
    assert "**Sources:**\n[1] report.pdf" in answer.text
    assert "【" not in answer.text and "†" not in answer.text
    shown = [c.args.get("text") for c in slack.calls_to("chat.update")]
    assert "_Reading report.pdf…_" in shown, "the thread shows the file being read"
    [store] = openai.vector_stores.values()
    assert store.expires_after == {"anchor": "last_active_at", "days": 30}
    assert [openai.files[f].filename for f in store.file_ids] == ["report.pdf"]


async def test_a_file_shared_as_a_thread_reply_is_used_from_then_on(bot: Harness) -> None:
    slack, openai = bot.slack, bot.openai
    reads_files(openai)
    ts = await slack.mention(ALICE, GENERAL, "hello")
    await wait_answers(slack, GENERAL, ts, 1)
    await slack.post(BOB, GENERAL, "here is the policy", thread_ts=ts, files=[pdf(slack)])
    await wait_answers(slack, GENERAL, ts, 2)
    await slack.post(ALICE, GENERAL, "so how long for refunds?", thread_ts=ts)
    third = (await final_answers(bot, ts, 3))[2]
    assert "within 30 days" in third.text and "[1] report.pdf" in third.text


async def test_a_file_in_a_direct_message_is_read(bot: Harness) -> None:
    slack = bot.slack
    reads_files(bot.openai)
    dm = slack.dm_channel(ALICE)
    ts = await slack.dm(ALICE, "what do refunds need?", files=[pdf(slack)])
    [answer] = await wait_answers(slack, dm, ts, 1)
    assert "with a receipt" in answer.text and "report.pdf" in answer.text


async def test_a_file_shared_without_words_is_still_taken(bot: Harness) -> None:
    slack = bot.slack
    ts = await slack.mention(ALICE, GENERAL, "", files=[pdf(slack)])
    [answer] = await wait_answers(slack, GENERAL, ts, 1)
    assert "I shared report.pdf." in answer.text
    assert slack.ephemerals(GENERAL, ALICE) == []


async def test_the_same_slack_file_shared_twice_is_uploaded_once(bot: Harness) -> None:
    slack, openai = bot.slack, bot.openai
    shared = pdf(slack)
    first = await slack.mention(ALICE, GENERAL, "read this", files=[shared])
    await wait_answers(slack, GENERAL, first, 1)
    second = await slack.mention(BOB, GENERAL, "and this", files=[shared])
    await wait_answers(slack, GENERAL, second, 1)
    assert uploads_for_search(openai) == ["report.pdf"]
    assert len(openai.vector_stores) == 2, "each conversation has its own store"
    assert all(len(s.file_ids) == 1 for s in openai.vector_stores.values())


async def test_a_file_too_large_is_refused_by_name_and_the_message_is_still_answered(
    harness: Harness,
) -> None:
    await harness.start(MAX_FILE_MB="0.001")
    slack = harness.slack
    big = slack.add_file(ALICE, "big.pdf", b"x " * 2000, "pdf", "application/pdf")
    ts = await slack.mention(ALICE, GENERAL, "summarise it", files=[big])
    replies = await wait_answers(slack, GENERAL, ts, 2)
    texts = [m.text for m in replies]
    assert any("big.pdf" in t and "too large" in t for t in texts)
    assert any(t.startswith("You said: summarise it") for t in texts)
    assert uploads_for_search(harness.openai) == []


async def test_a_download_larger_than_slack_said_is_cut_off_at_the_limit(
    harness: Harness,
) -> None:
    await harness.start(MAX_FILE_MB="0.001")
    slack = harness.slack
    sneaky = slack.add_file(ALICE, "notes.txt", b"word " * 1000) | {"size": 10}
    ts = await slack.mention(ALICE, GENERAL, "read it", files=[sneaky])
    texts = [m.text for m in await wait_answers(slack, GENERAL, ts, 2)]
    assert any("notes.txt" in t and "larger than the limit" in t for t in texts)
    assert uploads_for_search(harness.openai) == []


async def test_an_unsupported_file_type_is_refused_by_name(bot: Harness) -> None:
    slack = bot.slack
    tool = slack.add_file(ALICE, "setup.exe", b"MZ\x90\x00", "binary", "application/octet-stream")
    ts = await slack.mention(ALICE, GENERAL, "what is this?", files=[tool, pdf(slack)])
    texts = [m.text for m in await wait_answers(slack, GENERAL, ts, 2)]
    assert any("setup.exe" in t and "cannot read files of this type (.exe)" in t for t in texts)
    assert any(t.startswith("You said: what is this?") for t in texts)
    assert uploads_for_search(bot.openai) == ["report.pdf"]


async def test_a_file_that_fails_to_index_is_named_with_the_reason(bot: Harness) -> None:
    slack = bot.slack
    empty = slack.add_file(ALICE, "empty.txt", b"   \n")
    ts = await slack.mention(ALICE, GENERAL, "anything in there?", files=[empty])
    texts = [m.text for m in await wait_answers(slack, GENERAL, ts, 2)]
    assert any("empty.txt" in t and "could not be indexed" in t for t in texts)
    assert any(t.startswith("You said: anything in there?") for t in texts)


async def test_a_link_to_another_host_is_never_followed(bot: Harness) -> None:
    slack = bot.slack
    elsewhere = slack.base_url.replace("127.0.0.1", "localhost")
    planted = pdf(slack)
    planted["url_private_download"] = planted["url_private_download"].replace(
        slack.base_url, elsewhere
    )
    ts = await slack.mention(ALICE, GENERAL, "open this", files=[planted])
    texts = [m.text for m in await wait_answers(slack, GENERAL, ts, 2)]
    assert any("report.pdf" in t and "does not point to Slack's file host" in t for t in texts)
    assert uploads_for_search(bot.openai) == []


async def test_a_pdf_shared_in_a_slack_connect_channel_is_read_and_cited(bot: Harness) -> None:
    slack = bot.slack
    slack.add_channel(PARTNER, "acme-shared", slack_connect=True)
    reads_files(bot.openai)
    report = pdf(slack)
    ts = await slack.mention(ALICE, PARTNER, "how long do refunds take?", files=[report])
    await wait_answers(slack, PARTNER, ts, 1)
    await bot.drain_idle()
    [answer] = answers(slack, PARTNER, ts)

    assert "Refunds are accepted within 30 days" in answer.text
    assert "**Sources:**\n[1] report.pdf" in answer.text
    assert [c.args["file"] for c in slack.calls_to("files.info")] == [report["id"]]
    shown = [c.args.get("text") for c in slack.calls_to("chat.update")]
    assert "_Reading report.pdf…_" in shown, "the thread names the file once Slack has"


async def test_files_slack_will_not_describe_are_each_named_with_slacks_reason(
    bot: Harness,
) -> None:
    slack = bot.slack
    slack.add_channel(PARTNER, "acme-shared", slack_connect=True)
    hidden, deleted = pdf(slack, "secret.pdf"), pdf(slack, "old.pdf")
    slack.fail_next("files.info", "access_denied")  # the first file asked about
    slack.delete_file(deleted["id"])
    ts = await slack.mention(ALICE, PARTNER, "read these", files=[hidden, deleted])
    texts = [m.text for m in await wait_answers(slack, PARTNER, ts, 3)]

    assert f"I could not use the file {hidden['id']}: Slack does not let me see it." in texts
    assert (
        f"I could not use the file {deleted['id']}: Slack says there is no such file (any more)."
    ) in texts
    assert any(t.startswith("You said: read these") for t in texts)
    assert uploads_for_search(bot.openai) == []


async def test_a_file_from_a_slack_connect_channel_can_become_channel_knowledge(
    bot: Harness,
) -> None:
    slack = bot.slack
    slack.add_channel(PARTNER, "acme-shared", slack_connect=True)
    handbook = slack.add_file(BOB, "handbook.md", HANDBOOK, "markdown", "text/markdown")
    shared = await slack.post(BOB, PARTNER, "our handbook", files=[handbook])
    await slack.interaction(
        slack.message_shortcut_payload(BOB, PARTNER, shared, "add_channel_knowledge")
    )
    await slack.wait_for(
        lambda: any("Added handbook.md" in e for e in slack.ephemerals(PARTNER, BOB))
    )
    assert uploads_for_search(bot.openai) == ["handbook.md"]


class OtherService:
    """Another server on Slack's host, on a port of its own; notes the headers it is sent."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> None:
        async def serve(request: web.Request) -> web.Response:
            self.authorizations.append(request.headers.get("Authorization"))
            return web.Response(body=REFUNDS, content_type="application/pdf")

        app = web.Application()
        app.router.add_get("/{path:.*}", serve)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def other_service() -> AsyncIterator[OtherService]:
    service = OtherService()
    await service.start()
    yield service
    await service.stop()


async def test_a_link_to_another_port_of_slacks_host_is_refused_and_gets_no_token(
    bot: Harness, other_service: OtherService
) -> None:
    slack = bot.slack
    assert other_service.base_url != slack.base_url and "127.0.0.1" in other_service.base_url
    planted = slack.add_file(
        ALICE, "report.pdf", REFUNDS, "pdf", "application/pdf", hosted_at=other_service.base_url
    )
    ts = await slack.mention(ALICE, GENERAL, "open this", files=[planted])
    await slack.wait_for(lambda: any(t.startswith("You said: open this") for t in said(slack, ts)))
    assert other_service.authorizations == [], "the bot never called the other service"
    assert any(
        "report.pdf" in t and "does not point to Slack's file host" in t for t in said(slack, ts)
    )
    assert uploads_for_search(bot.openai) == []


async def test_a_csv_goes_to_code_interpreter_and_its_chart_comes_back_into_the_thread(
    harness: Harness, tmp_path: Path
) -> None:
    await use_analyst(harness, tmp_path)
    slack, openai = harness.slack, harness.openai
    openai.model.enqueue(
        Reply(
            text="Here is the chart.",
            outputs=[ImageSpec("chart.png", PNG), ImageSpec("totals.csv", b"m,t\n", False)],
        )
    )
    sales = slack.add_file(ALICE, "sales.csv", b"month,total\nJan,10\nFeb,12\n", "csv", "text/csv")
    ts = await slack.mention(ALICE, GENERAL, "chart the totals", files=[sales])
    await wait_answers(slack, GENERAL, ts, 1)
    await slack.wait_for(lambda: len(slack.uploads(GENERAL, ts)) == 2)
    await harness.drain_idle()  # the streamed answer is rewritten once the run completes

    answer = answers(slack, GENERAL, ts)[0]  # the files come in a message of their own
    assert answer.text.startswith("Here is the chart.") and "sandbox:" not in answer.text
    uploaded = {u.name: u.content for u in slack.uploads(GENERAL, ts)}
    assert uploaded == {"chart.png": PNG, "totals.csv": b"m,t\n"}
    [csv_id] = [f.id for f in openai.files.values() if f.filename == "sales.csv"]

    await slack.post(ALICE, GENERAL, "now as bars", thread_ts=ts)
    await wait_answers(slack, GENERAL, ts, 2)
    if harness.engine == "assistants":  # the thread keeps the file: attached once
        [thread] = openai.messages.values()
        attachments = [a for m in thread if m["role"] == "user" for a in m["attachments"]]
        assert attachments == [{"file_id": csv_id, "tools": [{"type": "code_interpreter"}]}]
    else:
        tools = openai.responses_api.last_response().request["tools"]
        [code] = [t for t in tools if t["type"] == "code_interpreter"]
        assert code["container"]["file_ids"] == [csv_id], "later turns can still read it"


async def test_a_spreadsheet_needs_code_interpreter(bot: Harness) -> None:
    slack = bot.slack
    sheet = slack.add_file(ALICE, "budget.xlsx", b"PK\x03\x04", "xlsx", "application/vnd.ms-excel")
    ts = await slack.mention(ALICE, GENERAL, "sum it", files=[sheet])
    texts = [m.text for m in await wait_answers(slack, GENERAL, ts, 2)]
    assert any("budget.xlsx" in t and "(.xlsx)" in t for t in texts)


async def test_an_image_is_shown_to_the_model_as_an_image(bot: Harness) -> None:
    slack, openai = bot.slack, bot.openai
    picture = slack.add_file(ALICE, "diagram.png", PNG, "png", "image/png")
    ts = await slack.mention(ALICE, GENERAL, "what does this show?", files=[picture])
    await wait_answers(slack, GENERAL, ts, 1)
    [image] = [f for f in openai.files.values() if f.filename == "diagram.png"]
    assert image.purpose == "vision"
    if bot.engine == "assistants":
        [thread] = openai.messages.values()
        parts = [p for m in thread if m["role"] == "user" for p in m["content"]]
        assert {"type": "image_file", "image_file": {"file_id": image.id}} in parts
    else:
        [message] = openai.responses_api.last_response().request["input"]
        assert message["type"] == "message"
        assert {"type": "input_image", "file_id": image.id, "detail": "auto"} in message["content"]


async def test_a_channel_knowledge_base_is_searched_by_new_conversations_and_can_be_pruned(
    bot: Harness,
) -> None:
    slack, openai = bot.slack, bot.openai
    reads_files(openai)
    handbook = slack.add_file(BOB, "handbook.md", HANDBOOK, "markdown", "text/markdown")
    shared = await slack.post(BOB, GENERAL, "our handbook", files=[handbook])
    await slack.interaction(
        slack.message_shortcut_payload(BOB, GENERAL, shared, "add_channel_knowledge")
    )
    await slack.wait_for(
        lambda: any("Added handbook.md" in e for e in slack.ephemerals(GENERAL, BOB))
    )

    ts = await slack.mention(ALICE, GENERAL, "how many vacation days?")
    [answer] = await final_answers(bot, ts, 1)
    assert "25 vacation days" in answer.text and "[1] handbook.md" in answer.text

    await slack.slash_command(ALICE, GENERAL, "/assistant", "knowledge")
    await slack.wait_for(lambda: any("handbook.md" in e for e in slack.ephemerals(GENERAL, ALICE)))
    listing = next(p for p in slack.response_url_posts if p.get("blocks"))
    [button] = [b["accessory"] for b in listing["blocks"] if "accessory" in b]
    await slack.interaction(
        slack.block_action_payload(
            ALICE, GENERAL, slack.next_ts(), button["action_id"], value=button["value"]
        )
    )
    await slack.wait_for(lambda: any("Removed" in e for e in slack.ephemerals(GENERAL, ALICE)))
    assert all(button["value"] not in s.file_ids for s in openai.vector_stores.values())

    later = await slack.mention(ALICE, GENERAL, "how many vacation days now?")
    [again] = await wait_answers(slack, GENERAL, later, 1)
    assert "handbook.md" not in again.text


async def test_the_shortcut_on_a_message_without_files_says_so(bot: Harness) -> None:
    slack = bot.slack
    plain = await slack.post(BOB, GENERAL, "no files here")
    await slack.interaction(
        slack.message_shortcut_payload(BOB, GENERAL, plain, "add_channel_knowledge")
    )
    await slack.wait_for(lambda: any("no files" in e for e in slack.ephemerals(GENERAL, BOB)))


async def test_old_files_and_stores_are_deleted_but_channel_knowledge_stays(
    bot: Harness,
) -> None:
    slack, openai = bot.slack, bot.openai
    handbook = slack.add_file(BOB, "handbook.md", HANDBOOK, "markdown", "text/markdown")
    shared = await slack.post(BOB, GENERAL, "our handbook", files=[handbook])
    await slack.interaction(
        slack.message_shortcut_payload(BOB, GENERAL, shared, "add_channel_knowledge")
    )
    await slack.wait_for(lambda: any("Added" in e for e in slack.ephemerals(GENERAL, BOB)))
    report = pdf(slack)
    ts = await slack.mention(ALICE, GENERAL, "read it", files=[report])
    await wait_answers(slack, GENERAL, ts, 1)
    assert sorted(uploads_for_search(openai)) == ["handbook.md", "report.pdf"]
    assert bot.bot is not None

    month_later = time.time() + 31 * 86400
    assert await clean_up(bot.bot.store, bot.bot.backend.files, 30, now=month_later) == (1, 1)
    assert uploads_for_search(openai) == ["handbook.md"]
    assert len(openai.vector_stores) == 1, "only the channel's knowledge is left"

    again = await slack.mention(ALICE, GENERAL, "read it again", files=[report])
    await wait_answers(slack, GENERAL, again, 1)
    assert sorted(uploads_for_search(openai)) == ["handbook.md", "report.pdf"]


async def test_the_cleanup_command_reports_what_it_deleted(harness: Harness, capsys: Any) -> None:
    assert await cli.cleanup(harness.settings()) == 0
    assert "deleted 0 vector store(s) and 0 file(s) older than 30 days" in capsys.readouterr().out
    assert answers(harness.slack, GENERAL, "0") == []


async def test_a_thread_gives_code_interpreter_at_most_20_files_and_says_so_for_the_rest(
    harness: Harness, tmp_path: Path
) -> None:
    harness.env["MAX_FILES_PER_MESSAGE"] = "25"
    await use_analyst(harness, tmp_path)
    slack, openai = harness.slack, harness.openai
    data = [
        slack.add_file(ALICE, f"month{n:02d}.csv", b"a,b\n1,2\n", "csv", "text/csv")
        for n in range(1, 22)
    ]
    sheet = slack.add_file(ALICE, "extra.xlsx", b"PK\x03\x04", "xlsx", "application/vnd.ms-excel")
    ts = await slack.mention(ALICE, GENERAL, "compare the months", files=[*data, sheet])
    await wait_answers(slack, GENERAL, ts, 3)
    await harness.drain_idle()

    said_here = said(slack, ts)
    assert any(
        "month21.csv" in t and "at most 20 files per conversation" in t and "only search" in t
        for t in said_here
    ), said_here
    assert any(
        "extra.xlsx" in t and "at most 20 files per conversation" in t and "only search" not in t
        for t in said_here
    ), said_here
    assert any(t.startswith("You said: compare the months") for t in said_here)
    if harness.engine == "assistants":
        [thread] = openai.messages.values()
        attached = [a for m in thread if m["role"] == "user" for a in m["attachments"]]
        assert len(attached) == 20
    else:
        tools = openai.responses_api.last_response().request["tools"]
        [code] = [t for t in tools if t["type"] == "code_interpreter"]
        assert len(code["container"]["file_ids"]) == 20
