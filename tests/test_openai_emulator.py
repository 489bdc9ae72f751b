"""The OpenAI emulator, driven by the real `openai` SDK over HTTP (Assistants v2, Files, Vector
stores). Every test ends by checking that all requests and answers matched OpenAI's spec."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.beta import FunctionToolParam
from openai.types.beta.threads.run_submit_tool_outputs_params import ToolOutput

from tests.emulators.common import (
    HTTP_500,
    HTTP_503,
    OBSERVER_HEADER,
    RATE_LIMITED,
    RESET_AFTER,
    RESET_BEFORE,
    STALL,
)
from tests.emulators.model import CitationSpec, ImageSpec, Reply, ToolCallSpec
from tests.emulators.openai import OpenAIEmulator

# The SDK marks every Assistants call deprecated: runs and threads with "The Assistants API is
# deprecated in favor of the Responses API", the assistants resource with just "deprecated".
pytestmark = [
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"),
]


@pytest.fixture
async def emu() -> AsyncIterator[OpenAIEmulator]:
    emulator = OpenAIEmulator()
    await emulator.start()
    yield emulator
    await emulator.stop()
    assert emulator.spec_violations == [], "\n".join(emulator.spec_violations)


@pytest.fixture
async def client(emu: OpenAIEmulator) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=emu.base_url, api_key=emu.api_key) as sdk:
        yield sdk


@pytest.fixture
async def assistant_id(client: AsyncOpenAI) -> str:
    assistant = await client.beta.assistants.create(
        model="gpt-4o", name="Helper", instructions="You help.", tools=[]
    )
    return assistant.id


async def test_streamed_run_with_the_sdk_helper(
    emu: OpenAIEmulator, client: AsyncOpenAI, assistant_id: str
) -> None:
    emu.model.chunk_size = 5
    thread = await client.beta.threads.create()
    await client.beta.threads.messages.create(thread.id, role="user", content="hello there")

    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant_id
    ) as stream:
        deltas = [text async for text in stream.text_deltas]
        run = await stream.get_final_run()
        (message,) = await stream.get_final_messages()

    expected = "You said: hello there (message 1 of this conversation)"
    assert "".join(deltas) == expected
    assert len(deltas) == len(emu.model.chunks(expected))
    assert message.content[0].type == "text"
    assert message.content[0].text.value == expected
    assert run.status == "completed"
    assert run.usage is not None and run.usage.total_tokens > 0
    assert emu.model.turns[-1].user_texts == ["hello there"]
    assert emu.model.turns[-1].instructions == "You help."
    assert emu.model.turns[-1].assistant_name == "Helper"

    listed = await client.beta.threads.messages.list(thread.id)
    assert [m.role for m in listed.data] == ["assistant", "user"]  # newest first
    assert listed.data[0].status == "completed"


async def test_run_create_stream_true_sends_the_documented_events(
    emu: OpenAIEmulator, client: AsyncOpenAI, assistant_id: str
) -> None:
    emu.model.chunk_size = 4
    emu.model.enqueue(Reply(text="twelve chars"))
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])

    stream = await client.beta.threads.runs.create(
        thread.id, assistant_id=assistant_id, stream=True
    )
    events = [event async for event in stream]

    assert [event.event for event in events] == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.message.created",
        "thread.message.in_progress",
        "thread.message.delta",
        "thread.message.delta",
        "thread.message.delta",
        "thread.message.completed",
        "thread.run.step.completed",
        "thread.run.completed",
    ]
    raw = [r for r in emu.requests if r.path == f"/v1/threads/{thread.id}/runs"]
    assert raw[0].json == {"assistant_id": assistant_id, "stream": True}


async def test_tool_call_round_trip_with_streams(
    emu: OpenAIEmulator, client: AsyncOpenAI, assistant_id: str
) -> None:
    emu.model.enqueue(
        Reply(
            tool_calls=[ToolCallSpec("get_weather", '{"city": "Paris"}')],
            after_tools=Reply(text="It is sunny in Paris."),
        )
    )
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "weather?"}])
    tools: list[FunctionToolParam] = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    ]

    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant_id, tools=tools
    ) as stream:
        await stream.until_done()
        run = stream.current_run
    assert run is not None and run.status == "requires_action"
    assert run.required_action is not None
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
    assert emu.runs[run.id].tools == tools

    async with client.beta.threads.runs.submit_tool_outputs_stream(
        thread_id=thread.id,
        run_id=run.id,
        tool_outputs=[{"tool_call_id": call.id, "output": "sunny, 24C"}],
    ) as stream:
        await stream.until_done()
        final = await stream.get_final_run()
        (message,) = await stream.get_final_messages()

    assert final.status == "completed"
    assert message.content[0].type == "text"
    assert message.content[0].text.value == "It is sunny in Paris."
    assert emu.runs[run.id].tool_outputs == [{"tool_call_id": call.id, "output": "sunny, 24C"}]
    assert emu.model.turns[-1].tool_outputs == ["sunny, 24C"]
    steps = await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc")
    assert [step.type for step in steps.data] == ["tool_calls", "message_creation"]


async def test_default_reply_after_tools_quotes_the_outputs(
    emu: OpenAIEmulator, client: AsyncOpenAI, assistant_id: str
) -> None:
    emu.model.enqueue(Reply(tool_calls=[ToolCallSpec("lookup"), ToolCallSpec("lookup")]))
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "go"}])
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant_id
    )
    assert run.status == "requires_action" and run.required_action is not None
    calls = run.required_action.submit_tool_outputs.tool_calls
    outputs: list[ToolOutput] = [
        {"tool_call_id": c.id, "output": f"out{i}"} for i, c in enumerate(calls)
    ]

    with pytest.raises(openai.BadRequestError, match="Expected tool outputs"):
        await client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread.id, tool_outputs=outputs[:1]
        )
    run = await client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=outputs
    )

    assert run.status == "completed"
    latest = (await client.beta.threads.messages.list(thread.id, limit=1)).data[0]
    assert latest.content[0].type == "text"
    assert latest.content[0].text.value == "The tools returned: out0; out1"


async def test_a_message_or_run_during_an_active_run_is_refused(
    emu: OpenAIEmulator, client: AsyncOpenAI, assistant_id: str
) -> None:
    emu.model.gate = asyncio.Event()
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "one"}])
    run = await client.beta.threads.runs.create(thread.id, assistant_id=assistant_id)
    assert run.status == "queued"

    with pytest.raises(openai.BadRequestError) as refused:
        await client.beta.threads.messages.create(thread.id, role="user", content="two")
    assert refused.value.status_code == 400
    assert refused.value.message.endswith(
        f"Can't add messages to {thread.id} while a run {run.id} is active."
    )
    with pytest.raises(openai.BadRequestError, match="already has an active run"):
        await client.beta.threads.runs.create(thread.id, assistant_id=assistant_id)

    emu.model.gate.set()
    run = await client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert run.status == "completed"
    await client.beta.threads.messages.create(thread.id, role="user", content="two")


async def test_cancel_a_waiting_run(
    emu: OpenAIEmulator, client: AsyncOpenAI, assistant_id: str
) -> None:
    emu.model.gate = asyncio.Event()
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "one"}])
    run = await client.beta.threads.runs.create(thread.id, assistant_id=assistant_id)

    cancelling = await client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelling.status == "cancelling"
    run = await client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert run.status == "cancelled" and run.cancelled_at is not None


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply(fail=("server_error", "boom")), "failed"),
        (Reply(text="partial", incomplete="max_completion_tokens"), "incomplete"),
        (Reply(expire=True), "expired"),
    ],
)
async def test_unhappy_outcomes(
    emu: OpenAIEmulator, client: AsyncOpenAI, assistant_id: str, reply: Reply, status: str
) -> None:
    emu.model.enqueue(reply)
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "x"}])

    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant_id
    )

    assert run.status == status
    if status == "failed":
        assert run.last_error is not None
        assert (run.last_error.code, run.last_error.message) == ("server_error", "boom")
    if status == "incomplete":
        assert run.incomplete_details is not None
        assert run.incomplete_details.reason == "max_completion_tokens"


async def test_a_cut_stream_ends_without_a_final_event(
    emu: OpenAIEmulator, client: AsyncOpenAI, assistant_id: str
) -> None:
    emu.model.chunk_size = 2
    emu.model.enqueue(Reply(text="this stream breaks off", stream_cut=True))
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "x"}])

    stream = await client.beta.threads.runs.create(
        thread.id, assistant_id=assistant_id, stream=True
    )
    names = [event.event async for event in stream]

    assert names[-1] == "thread.message.delta"
    run_id = next(r.id for r in emu.runs.values() if r.thread_id == thread.id)
    run = await client.beta.threads.runs.retrieve(run_id, thread_id=thread.id)
    assert run.status == "in_progress"


async def test_create_thread_and_run_stream(
    emu: OpenAIEmulator, client: AsyncOpenAI, assistant_id: str
) -> None:
    async with client.beta.threads.create_and_run_stream(
        assistant_id=assistant_id, thread={"messages": [{"role": "user", "content": "hey"}]}
    ) as stream:
        names = [event.event async for event in stream]
        (message,) = await stream.get_final_messages()

    assert names[0] == "thread.created" and names[-1] == "thread.run.completed"
    assert message.content[0].type == "text"
    assert message.content[0].text.value.startswith("You said: hey")


async def test_citations_images_and_files(
    emu: OpenAIEmulator, client: AsyncOpenAI, assistant_id: str
) -> None:
    report = await client.files.create(
        file=("report.pdf", b"Revenue grew 12% in 2025."), purpose="assistants"
    )
    png = b"\x89PNG\r\n\x1a\nfake"
    emu.model.enqueue(
        Reply(
            text="Revenue grew 12%.",
            citations=[CitationSpec("report.pdf", "Revenue grew 12%")],
            outputs=[ImageSpec("chart.png", png), ImageSpec("data.csv", b"a,b\n1,2\n", False)],
        )
    )
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "numbers?"}])

    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant_id
    ) as stream:
        (streamed,) = await stream.get_final_messages()
    stored = await client.beta.threads.messages.retrieve(streamed.id, thread_id=thread.id)

    text_part, image_part = stored.content
    assert text_part.type == "text" and image_part.type == "image_file"
    value = text_part.text.value
    citation, file_link = text_part.text.annotations
    assert citation.type == "file_citation" and citation.file_citation.file_id == report.id
    assert value[citation.start_index : citation.end_index] == "【4:0†report.pdf】"
    assert file_link.type == "file_path"
    assert value[file_link.start_index : file_link.end_index] == "sandbox:/mnt/data/data.csv"
    assert (await client.files.content(image_part.image_file.file_id)).content == png
    csv = await client.files.content(file_link.file_path.file_id)
    assert csv.content == b"a,b\n1,2\n"
    # The snapshot the SDK accumulated from the deltas equals the stored message.
    assert streamed.content[0].type == "text"
    assert streamed.content[0].text.value == value
    assert len(streamed.content[0].text.annotations) == 2


async def test_a_citation_of_an_unknown_file_fails_the_run(
    emu: OpenAIEmulator, client: AsyncOpenAI, assistant_id: str
) -> None:
    emu.model.enqueue(Reply(text="see", citations=[CitationSpec("missing.pdf")]))
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant_id
    )
    assert run.status == "failed" and run.last_error is not None
    assert "missing.pdf" in run.last_error.message


async def test_rate_limits_and_server_errors_are_retried(
    emu: OpenAIEmulator, client: AsyncOpenAI
) -> None:
    emu.fail_next("/threads", 429, retry_after=0.01)
    thread = await client.beta.threads.create()
    attempts = [r for r in emu.requests if r.method == "POST" and r.path == "/v1/threads"]
    assert len(attempts) == 2 and thread.id in emu.threads

    emu.fail_next("/v1/threads", 500, times=3, method="GET", retry_after=0.01)
    with pytest.raises(openai.InternalServerError):
        await client.beta.threads.retrieve(thread.id)  # 1 try + 2 retries, all 500
    assert (await client.beta.threads.retrieve(thread.id)).id == thread.id

    emu.fail_next("/threads", 429)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.with_options(max_retries=0).beta.threads.create()
    assert limited.value.code == "rate_limit_exceeded"


async def test_auth_and_retired_assistants(emu: OpenAIEmulator, client: AsyncOpenAI) -> None:
    async with AsyncOpenAI(base_url=emu.base_url, api_key="sk-wrong-key-1234") as wrong:
        with pytest.raises(openai.AuthenticationError) as denied:
            await wrong.files.list()
    assert denied.value.code == "invalid_api_key"

    emu.assistants_retired = True
    with pytest.raises(openai.NotFoundError) as gone:
        await client.beta.threads.create()
    assert gone.value.message.endswith("Invalid URL (POST /v1/threads)")
    assert (await client.files.list()).data == []  # the rest of the API still answers


async def test_list_pagination(emu: OpenAIEmulator, client: AsyncOpenAI) -> None:
    ids = [emu.add_assistant(name=f"a{i}") for i in range(5)]

    first = await client.beta.assistants.list(limit=2, order="asc")
    assert [a.id for a in first.data] == ids[:2] and first.has_more
    everything = [a.id async for a in client.beta.assistants.list(limit=2, order="asc")]
    assert everything == ids
    newest = await client.beta.assistants.list(limit=10)
    assert [a.id for a in newest.data] == ids[::-1] and not newest.has_more
    before = await client.beta.assistants.list(order="asc", before=ids[2])
    assert [a.id for a in before.data] == ids[:2]
    assert (await client.beta.assistants.list(after=ids[0])).data == []

    modified = await client.beta.assistants.update(ids[0], name="renamed")
    assert modified.name == "renamed"
    deleted = await client.beta.assistants.delete(ids[0])
    assert deleted.deleted and ids[0] not in emu.assistants


async def test_files_and_vector_store_indexing(emu: OpenAIEmulator, client: AsyncOpenAI) -> None:
    guide = await client.files.create(
        file=("guide.md", b"# Setup\n\nInstall the bot with pip.\n\nRotate tokens monthly."),
        purpose="assistants",
    )
    empty = await client.files.create(file=("empty.txt", b""), purpose="assistants")
    binary = await client.files.create(file=("tool.exe", b"MZ\x90\x00"), purpose="assistants")
    image = await client.files.create(file=("photo.png", b"\x89PNG"), purpose="assistants")
    assert guide.bytes == len(emu.files[guide.id].content) and guide.filename == "guide.md"
    assert (await client.files.content(guide.id)).content.startswith(b"# Setup")

    store = await client.vector_stores.create(name="docs", file_ids=[guide.id])
    assert store.file_counts.in_progress == 1 and store.status == "in_progress"
    failed = await client.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=empty.id
    )
    assert failed.status == "failed" and failed.last_error is not None
    assert failed.last_error.code == "invalid_file"
    unsupported = await client.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=image.id
    )
    assert unsupported.last_error is not None
    assert unsupported.last_error.code == "unsupported_file"
    with pytest.raises(openai.BadRequestError, match=r"\.exe"):
        await client.vector_stores.files.create(vector_store_id=store.id, file_id=binary.id)

    indexed = await client.vector_stores.files.retrieve(guide.id, vector_store_id=store.id)
    assert indexed.status == "completed"
    store = await client.vector_stores.retrieve(store.id)
    counts = store.file_counts
    assert (counts.completed, counts.failed, counts.in_progress, counts.total) == (1, 2, 0, 3)
    assert store.status == "completed"
    listed = await client.vector_stores.files.list(store.id, filter="failed")
    assert {f.id for f in listed.data} == {empty.id, image.id}

    (hit,) = emu.search([store.id], "how do I rotate tokens?")
    assert hit == (emu.files[guide.id], "Rotate tokens monthly.")

    assert (await client.files.delete(binary.id)).deleted
    assert (await client.vector_stores.delete(store.id)).deleted


async def test_file_batches_and_thread_vector_store_helper(
    emu: OpenAIEmulator, client: AsyncOpenAI
) -> None:
    files = [
        await client.files.create(file=(f"n{i}.txt", f"note {i}".encode()), purpose="assistants")
        for i in range(3)
    ]
    store = await client.vector_stores.create(name="notes")
    batch = await client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[f.id for f in files]
    )
    assert batch.status == "completed" and batch.file_counts.completed == 3

    thread = await client.beta.threads.create(
        tool_resources={"file_search": {"vector_stores": [{"file_ids": [files[0].id]}]}}
    )
    assert thread.tool_resources is not None and thread.tool_resources.file_search is not None
    (store_id,) = thread.tool_resources.file_search.vector_store_ids or []
    assert emu.vector_stores[store_id].file_ids == [files[0].id]


async def test_injected_faults_fail_requests_as_the_api_does(
    emu: OpenAIEmulator, client: AsyncOpenAI, assistant_id: str
) -> None:
    once = client.with_options(max_retries=0)
    emu.faults.retry_after = 0.5
    for kind, error in (
        (HTTP_500, openai.InternalServerError),
        (HTTP_503, openai.InternalServerError),
        (RATE_LIMITED, openai.RateLimitError),
        (RESET_BEFORE, openai.APIConnectionError),
    ):
        emu.faults.clear()
        emu.faults.add(1.0, kinds=[kind], pattern="POST /v1/threads")
        with pytest.raises(error) as raised:
            await once.beta.threads.create()
        if kind == RATE_LIMITED:
            assert isinstance(raised.value, openai.RateLimitError)
            assert raised.value.response.headers["retry-after"] == "0.5"
    assert emu.threads == {}

    # Reset after the request was handled: the thread exists, its answer was lost.
    emu.faults.clear()
    emu.faults.add(1.0, kinds=[RESET_AFTER], pattern="POST /v1/threads")
    with pytest.raises(openai.APIConnectionError):
        await once.beta.threads.create()
    assert len(emu.threads) == 1
    # The test's own requests can be spared.
    observer = client.with_options(default_headers={OBSERVER_HEADER: "1"})
    await observer.beta.threads.create()
    assert len(emu.threads) == 2


async def test_a_stalled_stream_stops_sending_without_closing(
    emu: OpenAIEmulator, client: AsyncOpenAI, assistant_id: str
) -> None:
    emu.faults.add(1.0, kinds=[STALL], pattern="POST /v1/threads/*/runs")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    stream = await client.beta.threads.runs.create(
        thread.id, assistant_id=assistant_id, stream=True
    )
    seen: list[str] = []

    async def read() -> None:
        async for event in stream:
            seen.append(event.event)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(read(), 0.5)
    assert seen and "thread.run.completed" not in seen
    # The run itself goes on without its stream, as runs on the server do.
    (run,) = emu.runs.values()
    await client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert run.status == "completed"
