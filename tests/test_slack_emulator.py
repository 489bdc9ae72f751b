"""Self-tests of the Slack emulator, driven by a tiny real Bolt app over HTTP and Socket Mode."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond, AsyncSay
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks.block_elements import UrlSourceElement
from slack_sdk.models.messages.chunk import PlanUpdateChunk, TaskUpdateChunk
from slack_sdk.web.async_client import AsyncWebClient

from tests.emulators.common import (
    FAULT_KINDS,
    HTTP_500,
    HTTP_503,
    OBSERVER_HEADER,
    RATE_LIMITED,
    RESET_AFTER,
    RESET_BEFORE,
    STALL,
    Faults,
)
from tests.emulators.slack import NotSentBySlack, SlackEmulator

ALICE = "U0ALICE"
GENERAL = "C0GENERAL"

# The tiny app these self-tests install: a legacy assistant-view app with the scopes it uses.
TINY_APP_MANIFEST = {
    "display_information": {"name": "Tiny"},
    "features": {"assistant_view": {"assistant_description": "Tiny"}},
    "oauth_config": {
        "scopes": {
            "bot": [
                "app_mentions:read",
                "assistant:write",
                "channels:history",
                "chat:write",
                "commands",
                "files:read",
                "files:write",
                "im:history",
                "im:read",
            ]
        }
    },
    "settings": {
        "event_subscriptions": {
            "bot_events": [
                "app_mention",
                "assistant_thread_started",
                "message.channels",
                "message.im",
            ]
        }
    },
}


@dataclass
class TinyBot:
    app: AsyncApp
    client: AsyncWebClient
    events: list[dict[str, Any]] = field(default_factory=list)


def make_bot(emu: SlackEmulator) -> TinyBot:
    client = AsyncWebClient(token=emu.bot_token, base_url=emu.api_url)
    app = AsyncApp(client=client, signing_secret=emu.signing_secret)
    bot = TinyBot(app, client)

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: AsyncSay) -> None:
        bot.events.append(event)
        text = event["text"].split(">", 1)[1].strip()
        await say(text=f"echo: {text}", thread_ts=event.get("thread_ts") or event["ts"])

    @app.event("message")
    async def on_message(event: dict[str, Any]) -> None:
        bot.events.append(event)

    @app.command("/ask")
    async def on_ask(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        await ack(f"got {command['text']}")
        await respond(f"answer to {command['text']}")

    @app.action("vote")
    async def on_vote(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await respond(text=f"voted {body['actions'][0]['value']}", replace_original=True)

    @app.view("survey")
    async def on_survey(ack: AsyncAck, view: dict[str, Any]) -> None:
        await ack(response_action="errors", errors={"q": f"bad: {view['private_metadata']}"})

    @app.event("assistant_thread_started")
    async def on_thread_started(event: dict[str, Any], client: AsyncWebClient) -> None:
        bot.events.append(event)
        thread = event["assistant_thread"]
        await client.assistant_threads_setStatus(
            channel_id=thread["channel_id"], thread_ts=thread["thread_ts"], status="is thinking..."
        )

    return bot


@pytest.fixture
async def emu() -> AsyncIterator[SlackEmulator]:
    emulator = SlackEmulator(TINY_APP_MANIFEST)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
def client(emu: SlackEmulator) -> AsyncWebClient:
    return AsyncWebClient(token=emu.bot_token, base_url=emu.api_url)


@pytest.fixture(params=["http", "socket"])
async def bot(emu: SlackEmulator, request: pytest.FixtureRequest) -> AsyncIterator[TinyBot]:
    tiny = make_bot(emu)
    if request.param == "http":
        runner = web.AppRunner(tiny.app.web_app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        emu.events_url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        yield tiny
        await runner.cleanup()
    else:
        handler = AsyncSocketModeHandler(tiny.app, emu.app_token)
        await handler.connect_async()  # type: ignore[no-untyped-call]
        await emu.wait_socket_connected()
        yield tiny
        await handler.close_async()  # type: ignore[no-untyped-call]


@pytest.fixture
async def http_bot(emu: SlackEmulator) -> AsyncIterator[TinyBot]:
    tiny = make_bot(emu)
    runner = web.AppRunner(tiny.app.web_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    emu.events_url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    yield tiny
    await runner.cleanup()


async def test_mention_delivers_app_mention_and_message(emu: SlackEmulator, bot: TinyBot) -> None:
    ts = await emu.mention(ALICE, GENERAL, "hello")
    await emu.wait_for(lambda: len(bot.events) == 2)
    assert sorted(e["type"] for e in bot.events) == ["app_mention", "message"]
    assert {e["ts"] for e in bot.events} == {ts}
    assert all(e["text"] == "<@U0BOT> hello" for e in bot.events)
    message = next(e for e in bot.events if e["type"] == "message")
    assert message["channel_type"] == "channel"
    sent = emu.deliveries[-2:]
    assert [d.payload["event"]["type"] for d in sent] == ["app_mention", "message"]
    assert len({d.event_id for d in sent}) == 2
    assert all(d.status == 200 and not d.timed_out for d in sent)
    assert all(d.payload["authorizations"][0]["user_id"] == emu.bot_user_id for d in sent)


async def test_say_in_thread_shows_in_thread(
    emu: SlackEmulator, bot: TinyBot, client: AsyncWebClient
) -> None:
    ts = await emu.mention(ALICE, GENERAL, "ping")
    await emu.wait_for(lambda: len(emu.bot_replies(GENERAL, ts)) == 1)
    thread = emu.thread(GENERAL, ts)
    assert [(m.user, m.text, m.bot) for m in thread] == [
        (ALICE, "<@U0BOT> ping", False),
        (emu.bot_user_id, "echo: ping", True),
    ]
    reply_ts = await emu.mention(ALICE, GENERAL, "again", thread_ts=ts)
    await emu.wait_for(lambda: len(emu.bot_replies(GENERAL, ts)) == 2)
    replies = await client.conversations_replies(channel=GENERAL, ts=ts)
    assert replies["messages"][0]["reply_count"] == 3
    assert [m["ts"] for m in replies["messages"]][2] == reply_ts
    assert emu.channel_messages(GENERAL)[0].ts == ts


async def test_dm_is_a_message_event_only(emu: SlackEmulator, bot: TinyBot) -> None:
    ts = await emu.dm(ALICE, "hi there")
    await emu.wait_for(lambda: len(bot.events) == 1)
    assert bot.events[0]["channel"] == emu.dm_channel(ALICE)
    assert bot.events[0]["channel_type"] == "im"
    assert bot.events[0]["ts"] == ts
    info = await make_bot(emu).client.conversations_info(channel=emu.dm_channel(ALICE))
    assert info["channel"]["is_im"] is True


async def test_forged_signature_is_rejected(emu: SlackEmulator, http_bot: TinyBot) -> None:
    body = json.dumps(emu.event_callback(emu.bot_message_event(GENERAL, "hi"))).encode()
    headers = {"Content-Type": "application/json", **emu.sign(body)}
    forged = {**headers, "X-Slack-Signature": "v0=" + "0" * 64}
    status, _ = await emu.send_raw(body, forged)
    assert status == 401
    status, _ = await emu.send_raw(body, headers)
    assert status == 200


async def test_slash_command_ack_body_and_response_url(emu: SlackEmulator, bot: TinyBot) -> None:
    delivery = await emu.slash_command(ALICE, GENERAL, "/ask", "the time")
    assert delivery.status == 200
    assert delivery.body == {"text": "got the time"}
    await emu.wait_for(lambda: len(emu.ephemerals(GENERAL, ALICE)) == 2)
    assert sorted(emu.ephemerals(GENERAL, ALICE)) == ["answer to the time", "got the time"]


async def test_block_action_replaces_the_original(
    emu: SlackEmulator, bot: TinyBot, client: AsyncWebClient
) -> None:
    ts = await emu.post(ALICE, GENERAL, "vote please")
    posted = await client.chat_postMessage(
        channel=GENERAL,
        thread_ts=ts,
        text="Vote",
        blocks=[
            {
                "type": "actions",
                "block_id": "b",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "vote",
                        "value": "yes",
                        "text": {"type": "plain_text", "text": "Yes"},
                    }
                ],
            }
        ],
    )
    delivery = await emu.interaction(
        emu.block_action_payload(ALICE, GENERAL, posted["ts"], "vote", "yes")
    )
    assert delivery.status == 200
    await emu.wait_for(lambda: emu.bot_replies(GENERAL, ts)[0].text == "voted yes")
    assert emu.bot_replies(GENERAL, ts)[0].edited


async def test_view_submission_ack_errors(emu: SlackEmulator, bot: TinyBot) -> None:
    payload = emu.view_submission_payload(ALICE, "V0001", "survey", {"q": {}}, private_metadata="m")
    delivery = await emu.interaction(payload)
    assert delivery.body == {"response_action": "errors", "errors": {"q": "bad: m"}}


async def test_assistant_thread_status(emu: SlackEmulator, bot: TinyBot) -> None:
    thread_ts = await emu.open_assistant_thread(ALICE)
    channel = emu.dm_channel(ALICE)
    await emu.wait_for(lambda: emu.statuses(channel, thread_ts) == ["is thinking..."])
    assert bot.events[0]["assistant_thread"]["user_id"] == ALICE


async def test_a_call_without_a_scope_it_needs_is_refused(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    with pytest.raises(SlackApiError) as refused:
        await client.users_info(user=ALICE)
    assert (refused.value.response["error"], refused.value.response["needed"]) == (
        "missing_scope",
        "users:read",
    )
    emu.add_channel("G0SECRET", "secret", is_private=True)
    with pytest.raises(SlackApiError) as refused:
        await client.conversations_replies(channel="G0SECRET", ts="1.000001")
    assert refused.value.response["needed"] == "groups:history"


async def test_slack_sends_no_event_the_app_does_not_subscribe_to(emu: SlackEmulator) -> None:
    with pytest.raises(NotSentBySlack):
        await emu.open_messages_tab(ALICE)


async def test_legacy_prompts_without_a_thread_go_to_the_latest_message(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    dm = emu.dm_channel(ALICE)
    emu.add_message(ALICE, dm, "first")
    latest = emu.add_message(ALICE, dm, "second")
    prompts = [{"title": "Hi", "message": "Hi there"}]
    await client.assistant_threads_setSuggestedPrompts(channel_id=dm, prompts=prompts)
    assert emu.suggested_prompts(dm, latest)[0]["prompts"] == prompts


async def test_agent_view_prompts_top_the_dm_and_a_thread_ts_silently_does_nothing() -> None:
    agent_app = TINY_APP_MANIFEST | {"features": {"agent_view": {"agent_description": "Tiny"}}}
    async with SlackEmulator(agent_app) as agent_emu:
        client = AsyncWebClient(token=agent_emu.bot_token, base_url=agent_emu.api_url)
        dm = agent_emu.dm_channel(ALICE)
        ts = agent_emu.add_message(ALICE, dm, "hello")
        prompts = [{"title": "Hi", "message": "Hi there"}]
        ignored = await client.assistant_threads_setSuggestedPrompts(
            channel_id=dm, thread_ts=ts, prompts=prompts
        )
        assert ignored["ok"]
        assert agent_emu.suggested_prompts(dm) == agent_emu.suggested_prompts(dm, ts) == []
        await client.assistant_threads_setSuggestedPrompts(channel_id=dm, prompts=prompts)
        assert agent_emu.suggested_prompts(dm)[0]["prompts"] == prompts
        with pytest.raises(NotSentBySlack):
            await agent_emu.open_assistant_thread(ALICE)


async def test_streamed_message_reads_as_joined_text(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    channel = emu.dm_channel(ALICE)
    ts = emu.add_message(ALICE, channel, "stream to me")
    stream = await client.chat_stream(channel=channel, thread_ts=ts, buffer_size=1)
    await stream.append(markdown_text="Hello, ")
    assert emu.bot_replies(channel, ts)[0].streaming
    await stream.append(markdown_text="**world**")
    await stream.stop(markdown_text="!")
    [reply] = emu.bot_replies(channel, ts)
    assert (reply.text, reply.streaming) == ("Hello, **world**!", False)
    with pytest.raises(SlackApiError) as e:
        await client.chat_appendStream(channel=channel, ts=reply.ts, markdown_text="late")
    assert e.value.response["error"] == "message_not_in_streaming_state"
    with pytest.raises(SlackApiError) as e:
        await client.chat_startStream(channel=GENERAL, thread_ts=ts)
    assert e.value.response["error"] == "missing_recipient_team_id"
    with pytest.raises(SlackApiError) as e:
        await client.chat_startStream(channel=channel, thread_ts=ts, markdown_text="x" * 12_001)
    assert e.value.response["error"] == "msg_too_long"
    emu.refuse_streaming = True
    with pytest.raises(SlackApiError) as e:
        await client.chat_startStream(channel=channel, thread_ts=ts)
    assert e.value.response["error"] == "not_allowed_token_type"


async def test_task_update_chunks_are_checked_as_slack_documents_them(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    channel = emu.dm_channel(ALICE)
    ts = emu.add_message(ALICE, channel, "look it up")
    searching = TaskUpdateChunk(id="t1", title="Searching the web", status="in_progress")
    started = await client.chat_startStream(channel=channel, thread_ts=ts, chunks=[searching])
    found = TaskUpdateChunk(
        id="t1",
        title="Searching the web",
        status="complete",
        sources=[UrlSourceElement(url="https://example.com/a", text="example.com")],
    )
    await client.chat_appendStream(
        channel=channel, ts=started["ts"], chunks=[found, PlanUpdateChunk(title="Done")]
    )
    assert [(t["id"], t["status"]) for t in emu.task_updates(channel, ts)] == [
        ("t1", "in_progress"),
        ("t1", "complete"),
    ]
    refused = [
        {"type": "task_update", "id": "t2", "title": "x", "status": "done"},  # no such status
        {"type": "task_update", "id": "t2", "status": "complete"},  # no title
        {"type": "task_update", "id": "t2", "title": "x", "status": "error", "output": "o" * 257},
        {
            "type": "task_update",
            "id": "t2",
            "title": "x",
            "status": "complete",
            "sources": [{"type": "url", "url": "https://example.com"}],  # a source needs text
        },
        {"type": "images", "images": []},
    ]
    for chunk in refused:
        with pytest.raises(SlackApiError) as e:
            await client.chat_appendStream(channel=channel, ts=started["ts"], chunks=[chunk])
        assert e.value.response["error"] == "invalid_chunks", chunk


async def test_file_download_requires_the_token(emu: SlackEmulator) -> None:
    f = emu.add_file(ALICE, "notes.txt", b"secret notes", "text", "text/plain")
    async with aiohttp.ClientSession() as session:
        async with session.get(f["url_private_download"], allow_redirects=False) as resp:
            assert resp.status == 302
        async with session.get(f["url_private"]) as resp:
            assert resp.content_type == "text/html"  # the login page, not the file
        async with session.get(
            f["url_private"], headers={"Authorization": "Bearer xoxb-wrong"}
        ) as resp:
            assert resp.status == 403
        auth = {"Authorization": f"Bearer {emu.bot_token}"}
        async with session.get(f["url_private_download"], headers=auth) as resp:
            assert (resp.status, await resp.read()) == (200, b"secret notes")


async def test_user_file_share_reaches_the_bot(emu: SlackEmulator, bot: TinyBot) -> None:
    f = emu.add_file(ALICE, "data.csv", b"a,b\n1,2\n", "csv", "text/csv")
    await emu.dm(ALICE, "see attached", files=[f])
    await emu.wait_for(lambda: len(bot.events) == 1)
    assert bot.events[0]["subtype"] == "file_share"
    assert bot.events[0]["files"][0]["id"] == f["id"]


async def test_slack_connect_channels_share_file_stubs_that_files_info_fills_in(
    emu: SlackEmulator, bot: TinyBot, client: AsyncWebClient
) -> None:
    emu.add_channel("C0PARTNER", "acme-shared", slack_connect=True)
    f = emu.add_file(ALICE, "report.pdf", b"%PDF-1.7", "pdf", "application/pdf")
    await emu.mention(ALICE, "C0PARTNER", "see attached", files=[f])
    await emu.wait_for(lambda: len(bot.events) == 2)
    stub = {
        "id": f["id"],
        "mode": "file_access",
        "file_access": "check_file_info",
        "created": 0,
        "timestamp": 0,
        "user": "",
    }
    assert [e["files"] for e in bot.events] == [[stub], [stub]]
    assert all(d.payload["is_ext_shared_channel"] for d in emu.deliveries[-2:])
    assert emu.channels["C0PARTNER"].slack_connect
    info = await client.files_info(file=f["id"])
    assert info["file"]["name"] == "report.pdf"
    assert info["file"]["url_private_download"] == f["url_private_download"]
    emu.delete_file(f["id"])
    with pytest.raises(SlackApiError) as e:
        await client.files_info(file=f["id"])
    assert e.value.response["error"] == "file_not_found"


async def test_files_upload_v2_appears_in_uploads(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    ts = emu.add_message(ALICE, GENERAL, "make a chart")
    await client.files_upload_v2(
        channel=GENERAL, thread_ts=ts, content=b"\x89PNG...", filename="chart.png", title="Chart"
    )
    [upload] = emu.uploads(GENERAL, ts)
    assert (upload.name, upload.title, upload.content) == ("chart.png", "Chart", b"\x89PNG...")
    [reply] = emu.bot_replies(GENERAL, ts)
    assert reply.files[0]["name"] == "chart.png"
    info = await client.files_info(file=upload.file_id)
    assert info["file"]["title"] == "Chart"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_web_api_errors_and_injected_failures(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    for token, error in ((None, "not_authed"), ("xoxb-nope", "invalid_auth")):
        with pytest.raises(SlackApiError) as e:
            await AsyncWebClient(token=token, base_url=emu.api_url).auth_test()
        assert e.value.response["error"] == error
    auth = await client.auth_test()
    assert (auth["user_id"], auth["bot_id"], auth["team_id"]) == ("U0BOT", "B0BOT", "T0TEAM")
    emu.fail_next("chat.postMessage", times=1, retry_after=7)
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel=GENERAL, text="hi")
    assert (e.value.response.status_code, e.value.response.headers["Retry-After"]) == (429, "7")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"text": "x" * 40_001}, "msg_too_long"),
        ({"text": "t", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
        ({"text": "t", "markdown_text": "**t**"}, "markdown_text_conflict"),
        ({"markdown_text": "x" * 12_001}, "msg_too_long"),
        ({}, "no_text"),
    ]
    for kwargs, error in cases:
        with pytest.raises(SlackApiError) as e:
            await client.chat_postMessage(channel=GENERAL, **kwargs)
        assert e.value.response["error"] == error
    posted = await client.chat_postMessage(channel=GENERAL, markdown_text="**bold**")
    await client.chat_update(
        channel=GENERAL,
        ts=posted["ts"],
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "from blocks"}}],
    )
    assert emu.channel_messages(GENERAL)[-1].text == "from blocks"
    assert [c.method for c in emu.calls][-2:] == ["chat.postMessage", "chat.update"]


async def test_replies_paginate(emu: SlackEmulator, client: AsyncWebClient) -> None:
    ts = emu.add_message(ALICE, GENERAL, "parent")
    for i in range(5):
        await client.chat_postMessage(channel=GENERAL, thread_ts=ts, text=f"r{i}")
    seen: list[str] = []
    cursor = None
    while True:
        page = await client.conversations_replies(channel=GENERAL, ts=ts, limit=2, cursor=cursor)
        seen += [m["text"] for m in page["messages"]]
        cursor = page["response_metadata"]["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == ["parent", "r0", "r1", "r2", "r3", "r4"]


async def test_wait_for_times_out_with_the_calls_seen(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    await client.auth_test()
    with pytest.raises(AssertionError, match=r"auth\.test ok"):
        await emu.wait_for(lambda: False, timeout=0.05)


async def test_event_builders_update_history(emu: SlackEmulator, bot: TinyBot) -> None:
    ts = emu.next_ts()
    event = emu.message_event(ALICE, GENERAL, "original", ts=ts)
    await emu.deliver(event, event_id="EvSAME")
    redelivered = await emu.deliver(
        event, event_id="EvSAME", retry_num=1, retry_reason="http_timeout"
    )
    assert redelivered.status == 200 and redelivered.retry_num == 1
    reply = emu.message_event(emu.bot_user_id, GENERAL, "bot words", thread_ts=ts)
    assert reply["bot_id"] == emu.bot_id and reply["parent_user_id"] == ALICE
    edit = emu.edit_event(ALICE, GENERAL, ts, "changed")
    assert (edit["subtype"], edit["message"]["text"]) == ("message_changed", "changed")
    assert emu.thread(GENERAL, ts)[0].edited
    await emu.deliver(edit)
    deleted = emu.delete_event(GENERAL, ts)
    assert deleted["deleted_ts"] == ts
    assert emu.thread(GENERAL, ts)[0].text == "This message was deleted."  # it has a reply
    await emu.deliver(deleted)
    await emu.wait_for(lambda: len(bot.events) == 4)
    assert [e.get("subtype") for e in bot.events[2:]] == ["message_changed", "message_deleted"]


async def test_events_go_round_robin_over_replicas_and_one_not_acked_is_sent_to_the_next(
    emu: SlackEmulator, http_bot: TinyBot
) -> None:
    second = make_bot(emu)
    runner = web.AppRunner(second.app.web_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    first_url = emu.events_url
    assert first_url is not None
    second_url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    emu.events_urls = [first_url, second_url]
    try:
        for number in range(4):
            await emu.deliver(emu.message_event(ALICE, GENERAL, f"hello {number}"))
        assert (len(http_bot.events), len(second.events)) == (2, 2)
        assert [d.url for d in emu.deliveries] == [first_url, second_url] * 2

        emu.redeliveries = 3
        gone = f"http://127.0.0.1:{unused_port()}/slack/events"  # a replica that died
        emu.events_urls = [gone, second_url]
        delivery = await emu.deliver(emu.message_event(ALICE, GENERAL, "anyone?"))
        assert (delivery.status, delivery.retry_num, delivery.url) == (200, 1, second_url)
        assert second.events[-1]["text"] == "anyone?"
        refused = emu.deliveries[-2]
        assert (refused.url, refused.status, refused.retry_num) == (gone, 0, None)

        emu.events_urls = [gone]
        delivery = await emu.deliver(emu.message_event(ALICE, GENERAL, "nobody?"))
        assert [d.retry_num for d in emu.deliveries[-4:]] == [None, 1, 2, 3]
        assert delivery.status == 0  # Slack gives up after three retries
    finally:
        await runner.cleanup()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_socket_mode_reconnects_after_disconnect(emu: SlackEmulator) -> None:
    tiny = make_bot(emu)
    handler = AsyncSocketModeHandler(tiny.app, emu.app_token)
    await handler.connect_async()  # type: ignore[no-untyped-call]
    await emu.wait_socket_connected()
    await emu.disconnect_socket()
    await emu.wait_for(lambda: len(emu.calls_to("apps.connections.open")) == 2)
    await emu.wait_socket_connected()
    ts = await emu.mention(ALICE, GENERAL, "still there?")
    await emu.wait_for(lambda: len(emu.bot_replies(GENERAL, ts)) == 1)
    await handler.close_async()  # type: ignore[no-untyped-call]


def test_faults_are_drawn_at_their_rate_and_the_same_seed_draws_the_same() -> None:
    def draws(seed: int) -> list[str | None]:
        faults = Faults(seed=seed)
        faults.add(0.2, pattern="chat.*")
        return [faults.pick("chat.postMessage", f"C1:{i % 7}") for i in range(2000)]

    first = draws(1)
    assert first == draws(1) and first != draws(2)
    assert 300 < sum(kind is not None for kind in first) < 500  # 20% of 2000
    # A stall needs a stream; every other kind comes up.
    assert set(first) == {None, *FAULT_KINDS} - {STALL}
    unmatched = Faults()
    unmatched.add(1.0, pattern="chat.*")
    assert unmatched.pick("users.info") is None


def test_faults_in_a_row_are_bounded_when_asked() -> None:
    faults = Faults(seed=3, max_in_a_row=2)
    faults.add(0.9, kinds=[HTTP_500])
    picks = [faults.pick("chat.update", "C1:1") for _ in range(300)]
    runs = "".join("x" if kind else "." for kind in picks).split(".")
    assert max(len(run) for run in runs) == 2
    assert faults.counts() == {HTTP_500: sum(kind is not None for kind in picks)}


async def test_injected_faults_fail_calls_as_slack_does(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    ts = emu.add_message(ALICE, GENERAL, "parent")
    emu.faults.retry_after = 2
    for kind, status, error in (
        (HTTP_500, 500, "internal_error"),
        (HTTP_503, 503, "service_unavailable"),
        (RATE_LIMITED, 429, "ratelimited"),
    ):
        emu.faults.clear()
        emu.faults.add(1.0, kinds=[kind], pattern="chat.postMessage")
        with pytest.raises(SlackApiError) as e:
            await client.chat_postMessage(channel=GENERAL, thread_ts=ts, text="hi")
        assert (e.value.response.status_code, e.value.response["error"]) == (status, error)
        if kind == RATE_LIMITED:
            assert e.value.response.headers["Retry-After"] == "2"
    assert emu.bot_replies(GENERAL, ts) == []

    # A reset before the request is handled: nothing happened. After: the message is there,
    # but its answer never arrived. (The client's default handler would retry the reset once.)
    client.retry_handlers.clear()
    for kind, posted in ((RESET_BEFORE, 0), (RESET_AFTER, 1)):
        emu.faults.clear()
        emu.faults.add(1.0, kinds=[kind], pattern="chat.postMessage")
        with pytest.raises(aiohttp.ClientError):
            await client.chat_postMessage(channel=GENERAL, thread_ts=ts, text=kind)
        assert [m.text for m in emu.bot_replies(GENERAL, ts)].count(kind) == posted

    # A test's own calls can be spared.
    observer = AsyncWebClient(
        token=emu.bot_token, base_url=emu.api_url, headers={OBSERVER_HEADER: "1"}
    )
    await observer.chat_postMessage(channel=GENERAL, thread_ts=ts, text="seen")
    assert emu.bot_replies(GENERAL, ts)[-1].text == "seen"
    assert [fault.kind for fault in emu.faults.injected] == [
        HTTP_500,
        HTTP_503,
        RATE_LIMITED,
        RESET_BEFORE,
        RESET_AFTER,
    ]
