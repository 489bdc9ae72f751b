"""The Responses / Conversations / Containers half of the OpenAI emulator, through the real SDK."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import FunctionToolParam, ResponseInputParam

from tests.emulators.common import RESET_AFTER, STALL
from tests.emulators.model import CitationSpec, ImageSpec, Reply, ToolCallSpec
from tests.emulators.openai import OpenAIEmulator
from tests.emulators.openai_responses import ResponsesState

MODEL = "gpt-4o"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
WEATHER_TOOL: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": True,
}


@pytest.fixture
async def emu() -> AsyncIterator[OpenAIEmulator]:
    emulator = OpenAIEmulator()
    await emulator.start()
    yield emulator
    await emulator.stop()
    assert emulator.spec_violations == [], "\n".join(emulator.spec_violations)


@pytest.fixture
def client(emu: OpenAIEmulator) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)


def state(emu: OpenAIEmulator) -> ResponsesState:
    responses_api: ResponsesState = emu.responses_api  # type: ignore[attr-defined]
    return responses_api


def said(text: str, count: int) -> str:
    return f"You said: {text} (message {count} of this conversation)"


async def test_a_streamed_response_on_a_conversation_follows_the_documented_event_order(
    emu: OpenAIEmulator, client: AsyncOpenAI
) -> None:
    emu.model.chunk_size = 5
    conversation = await client.conversations.create(metadata={"slack_thread": "C1/123.4"})
    assert conversation.metadata == {"slack_thread": "C1/123.4"}

    stream = await client.responses.create(
        model=MODEL,
        conversation=conversation.id,
        input="hello there",
        instructions="Be brief.",
        stream=True,
    )
    events = [event async for event in stream]

    kinds = [event.type for event in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == said("hello there", 1)
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == said("hello there", 1)
    assert (
        completed.response.conversation is not None
        and completed.response.conversation.id == conversation.id
    )
    assert completed.response.usage is not None and completed.response.usage.total_tokens > 0
    assert emu.model.turns[-1].instructions == "Be brief."

    items = await client.conversations.items.list(conversation.id, order="asc")
    assert [(item.type, getattr(item, "role", None)) for item in items.data] == [
        ("message", "user"),
        ("message", "assistant"),
    ]
    newest_first = await client.conversations.items.list(conversation.id)
    assert [item.id for item in newest_first.data] == [item.id for item in reversed(items.data)]
    first_id = items.data[0].id
    assert first_id is not None
    fetched = await client.conversations.items.retrieve(first_id, conversation_id=conversation.id)
    assert fetched.id == first_id


async def test_the_stream_helper_accumulates_text_and_the_conversation_remembers(
    client: AsyncOpenAI,
) -> None:
    conversation = await client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "an earlier note"}]
    )
    async with client.responses.stream(
        model=MODEL, conversation=conversation.id, input="first"
    ) as stream:
        snapshots = [
            event.snapshot async for event in stream if event.type == "response.output_text.delta"
        ]
        first = await stream.get_final_response()
    assert snapshots[-1] == first.output_text == said("first", 2)

    second = await client.responses.create(
        model=MODEL,
        conversation={"id": conversation.id},
        input=[{"role": "user", "content": "second"}],
    )
    assert second.output_text == said("second", 3)
    items = await client.conversations.items.list(conversation.id, order="asc", limit=2)
    assert items.has_more and len(items.data) == 2 and items.last_id
    rest = await client.conversations.items.list(conversation.id, order="asc", after=items.last_id)
    assert len(rest.data) == 3 and not rest.has_more


async def test_previous_response_id_chains_memory_and_input_items_are_listed(
    client: AsyncOpenAI,
) -> None:
    first = await client.responses.create(model=MODEL, input="one")
    second = await client.responses.create(model=MODEL, input="two", previous_response_id=first.id)
    assert second.output_text == said("two", 2)
    assert (await client.responses.retrieve(second.id)).output_text == second.output_text
    inputs = await client.responses.input_items.list(second.id)
    assert [item.type for item in inputs.data] == ["message"]

    with pytest.raises(openai.BadRequestError) as missing:
        await client.responses.create(model=MODEL, input="x", previous_response_id="resp_missing")
    assert missing.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve("resp_missing")


async def test_a_function_call_round_trip_continues_with_the_scripted_answer(
    emu: OpenAIEmulator, client: AsyncOpenAI
) -> None:
    emu.model.enqueue(
        Reply(
            tool_calls=[ToolCallSpec("get_weather", '{"city": "Oslo"}')],
            after_tools=Reply(text="Sunny in Oslo."),
        )
    )
    conversation = await client.conversations.create()
    async with client.responses.stream(
        model=MODEL, conversation=conversation.id, input="weather in Oslo?", tools=[WEATHER_TOOL]
    ) as stream:
        kinds = [event.type async for event in stream]
        asked = await stream.get_final_response()
    assert (
        "response.function_call_arguments.delta" in kinds
        and "response.function_call_arguments.done" in kinds
    )
    call = asked.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"city": "Oslo"}'

    with pytest.raises(openai.BadRequestError) as unanswered:
        await client.responses.create(model=MODEL, conversation=conversation.id, input="hello?")
    assert f"No tool output found for function call {call.call_id}" in unanswered.value.message

    answered = await client.responses.create(
        model=MODEL,
        conversation=conversation.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}],
        tools=[WEATHER_TOOL],
    )
    assert answered.output_text == "Sunny in Oslo."
    record = state(emu).responses[answered.id]
    assert record.tools == [WEATHER_TOOL]
    assert [(item["call_id"], item["output"]) for item in record.function_call_outputs] == [
        (call.call_id, "sunny, 21C")
    ]
    assert emu.model.turns[-1].tool_outputs == ["sunny, 21C"]
    items = await client.conversations.items.list(conversation.id, order="asc")
    assert [item.type for item in items.data] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]


async def test_tool_outputs_without_a_scripted_continuation_are_quoted(
    emu: OpenAIEmulator, client: AsyncOpenAI
) -> None:
    emu.model.enqueue(Reply(tool_calls=[ToolCallSpec("a"), ToolCallSpec("b", '{"x": 1}')]))
    asked = await client.responses.create(model=MODEL, input="go", tools=[WEATHER_TOOL])
    calls = [item for item in asked.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["a", "b"]
    outputs: ResponseInputParam = [
        {"type": "function_call_output", "call_id": c.call_id, "output": f"out-{c.name}"}
        for c in calls
    ]
    answered = await client.responses.create(
        model=MODEL, input=outputs, previous_response_id=asked.id
    )
    assert "out-a" in answered.output_text and "out-b" in answered.output_text

    with pytest.raises(openai.BadRequestError) as stray:
        await client.responses.create(
            model=MODEL,
            input=[{"type": "function_call_output", "call_id": "call_nope", "output": "x"}],
        )
    assert "call_nope" in stray.value.message


async def test_failed_incomplete_expired_and_cut_responses(
    emu: OpenAIEmulator, client: AsyncOpenAI
) -> None:
    emu.model.enqueue(
        Reply(fail=("server_error", "boom")),
        Reply(text="partial answer", incomplete="max_completion_tokens"),
        Reply(expire=True),
    )
    stream = await client.responses.create(model=MODEL, input="a", stream=True)
    events = [event async for event in stream]
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None and events[-1].response.error.message == "boom"

    incomplete = await client.responses.create(model=MODEL, input="b")
    assert incomplete.status == "incomplete"
    assert (
        incomplete.incomplete_details is not None
        and incomplete.incomplete_details.reason == "max_output_tokens"
    )
    assert incomplete.output_text == "partial answer"

    expired = await client.responses.create(model=MODEL, input="c")
    assert (
        expired.status == "failed"
        and expired.error is not None
        and "timed out" in expired.error.message
    )

    conversation = await client.conversations.create()
    emu.model.enqueue(
        Reply(text="this text is cut off halfway through the stream", stream_cut=True)
    )
    async with client.responses.stream(model=MODEL, input="d", conversation=conversation.id) as cut:
        kinds = [event.type async for event in cut]
        with pytest.raises(RuntimeError):
            await cut.get_final_response()
    assert "response.output_text.delta" in kinds and "response.completed" not in kinds
    assert not [kind for kind in kinds if kind in ("response.failed", "response.incomplete")]
    cut_record = state(emu).last_response()
    assert cut_record.status == "failed"
    assert state(emu).conversation_items[conversation.id] == [], (
        "a broken turn leaves the conversation alone"
    )


async def test_a_second_response_on_a_busy_conversation_is_refused_as_locked(
    emu: OpenAIEmulator, client: AsyncOpenAI
) -> None:
    emu.model.gate = asyncio.Event()
    conversation = await client.conversations.create()
    stream = await client.responses.create(
        model=MODEL, conversation=conversation.id, input="first", stream=True
    )

    with pytest.raises(openai.BadRequestError) as locked:
        await client.responses.create(model=MODEL, conversation=conversation.id, input="second")
    assert locked.value.status_code == 400
    assert locked.value.code == "conversation_locked"
    assert locked.value.param == "conversation"
    assert state(emu).locked_refusals == 1

    emu.model.gate.set()
    events = [event async for event in stream]
    assert events[-1].type == "response.completed"
    again = await client.responses.create(model=MODEL, conversation=conversation.id, input="second")
    assert again.output_text == said("second", 2)


async def test_citations_become_file_citation_annotations_after_a_file_search_call(
    emu: OpenAIEmulator, client: AsyncOpenAI
) -> None:
    uploaded = await client.files.create(
        file=("handbook.txt", b"Refunds take 14 days."), purpose="assistants"
    )
    store = await client.vector_stores.create(name="kb")
    await client.vector_stores.files.create_and_poll(uploaded.id, vector_store_id=store.id)
    text = "Refunds take 14 days. Ask support for more."
    emu.model.enqueue(Reply(text=text, citations=[CitationSpec("handbook.txt", "14 days")]))

    async with client.responses.stream(
        model=MODEL,
        input="how long do refunds take?",
        tools=[{"type": "file_search", "vector_store_ids": [store.id]}],
        include=["file_search_call.results"],
    ) as stream:
        kinds = [event.type async for event in stream]
        response = await stream.get_final_response()

    assert "response.output_text.annotation.added" in kinds
    assert kinds.index("response.file_search_call.completed") < kinds.index(
        "response.output_text.delta"
    )
    search, message = response.output
    assert search.type == "file_search_call" and search.queries == ["how long do refunds take?"]
    assert search.results and search.results[0].file_id == uploaded.id
    assert message.type == "message"
    part = message.content[0]
    assert part.type == "output_text" and part.text == text and "【" not in part.text
    (annotation,) = part.annotations
    assert annotation.type == "file_citation"
    assert (annotation.file_id, annotation.filename) == (uploaded.id, "handbook.txt")
    assert annotation.index == text.index("14 days") + len("14 days")


async def test_code_interpreter_files_are_cited_and_downloadable_from_the_container(
    emu: OpenAIEmulator, client: AsyncOpenAI
) -> None:
    data = await client.files.create(
        file=("sales.csv", b"month,total\njan,3\n"), purpose="assistants"
    )
    emu.model.enqueue(Reply(text="Here is the chart.", outputs=[ImageSpec("chart.png", PNG)]))
    stream = await client.responses.create(
        model=MODEL,
        input="plot it",
        tools=[{"type": "code_interpreter", "container": {"type": "auto", "file_ids": [data.id]}}],
        include=["code_interpreter_call.outputs"],
        stream=True,
    )
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds.index("response.code_interpreter_call.completed") < kinds.index(
        "response.output_text.delta"
    )
    final = events[-1]
    assert final.type == "response.completed"
    call, message = final.response.output
    assert call.type == "code_interpreter_call" and call.outputs
    assert call.outputs[0].type == "image"
    assert message.type == "message" and message.content[0].type == "output_text"
    (annotation,) = message.content[0].annotations
    assert annotation.type == "container_file_citation"
    assert annotation.container_id == call.container_id and annotation.filename == "chart.png"
    cited = message.content[0].text[annotation.start_index : annotation.end_index]
    assert "chart.png" in cited

    content = await client.containers.files.content.retrieve(
        annotation.file_id, container_id=call.container_id
    )
    assert content.read() == PNG
    listed = await client.containers.files.list(call.container_id)
    assert sorted(item.path for item in listed.data) == [
        "/mnt/data/chart.png",
        "/mnt/data/sales.csv",
    ]
    meta = await client.containers.files.retrieve(
        annotation.file_id, container_id=call.container_id
    )
    assert meta.bytes == len(PNG) and meta.source == "assistant"

    # Without `include`, outputs are null as in the real API; the annotation still names the file.
    emu.model.enqueue(Reply(text="Again.", outputs=[ImageSpec("chart.png", PNG)]))
    plain = await client.responses.create(
        model=MODEL,
        input="again",
        tools=[{"type": "code_interpreter", "container": call.container_id}],
    )
    assert plain.output[0].type == "code_interpreter_call" and plain.output[0].outputs is None
    assert plain.output[0].container_id == call.container_id


async def test_containers_can_be_created_listed_and_fetched(client: AsyncOpenAI) -> None:
    made = await client.containers.create(name="scratch")
    assert made.status == "running"
    assert (await client.containers.retrieve(made.id)).name == "scratch"
    assert [c.id for c in (await client.containers.list()).data] == [made.id]
    with pytest.raises(openai.NotFoundError):
        await client.containers.retrieve("cntr_missing")


async def test_only_background_responses_can_be_cancelled(
    emu: OpenAIEmulator, client: AsyncOpenAI
) -> None:
    done = await client.responses.create(model=MODEL, input="quick")
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(done.id)

    emu.model.gate = asyncio.Event()
    queued = await client.responses.create(model=MODEL, input="slow", background=True)
    assert queued.status == "queued"
    cancelled = await client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    assert (await client.responses.retrieve(queued.id)).status == "cancelled"

    stream = await client.responses.create(
        model=MODEL, input="slow stream", background=True, stream=True
    )
    created = await stream.__anext__()
    assert created.type == "response.created" and created.response.status == "queued"
    assert (await client.responses.cancel(created.response.id)).status == "cancelled"
    emu.model.gate.set()
    rest = [event.type async for event in stream]
    assert not [kind for kind in rest if kind.startswith("response.output")]
    assert "response.completed" not in rest
    assert (await client.responses.retrieve(created.response.id)).status == "cancelled"


async def test_conversations_can_be_updated_given_items_and_deleted(
    emu: OpenAIEmulator, client: AsyncOpenAI
) -> None:
    conversation = await client.conversations.create()
    updated = await client.conversations.update(conversation.id, metadata={"k": "v"})
    assert updated.metadata == {"k": "v"}
    added = await client.conversations.items.create(
        conversation.id,
        items=[
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
        ],
    )
    assert len(added.data) == 1
    deleted = await client.conversations.delete(conversation.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(conversation.id)
    assert len(state(emu).conversation_items[conversation.id]) == 1, (
        "as on OpenAI, deleting a conversation leaves its items"
    )


async def test_a_background_response_goes_on_when_its_stream_is_dropped_and_streams_again(
    emu: OpenAIEmulator, client: AsyncOpenAI
) -> None:
    emu.model.gate = asyncio.Event()
    stream = await client.responses.create(model=MODEL, input="slow", background=True, stream=True)
    created = await stream.__anext__()
    await stream.close()  # the client that started it goes away
    emu.model.gate.set()
    again = await client.responses.retrieve(created.response.id, stream=True, starting_after=0)
    events = [event async for event in again]
    assert events[0].sequence_number == 1  # only what came after the last one seen
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == (await client.responses.retrieve(created.response.id)).output_text

    done = await client.responses.create(model=MODEL, input="quick")
    with pytest.raises(openai.BadRequestError):
        await client.responses.retrieve(done.id, stream=True)


async def test_a_response_whose_stream_stalls_or_drops_frees_its_conversation(
    emu: OpenAIEmulator, client: AsyncOpenAI
) -> None:
    conversation = await client.conversations.create()
    for kind in (STALL, RESET_AFTER):
        emu.faults.clear()
        emu.faults.add(1.0, kinds=[kind], pattern="POST /v1/responses")
        stream = await client.responses.create(
            model=MODEL, conversation=conversation.id, input="hi", stream=True
        )
        seen: list[str] = []
        with contextlib.suppress(TimeoutError, openai.APIError):
            async with asyncio.timeout(0.5):  # a stalled stream would never end by itself
                async for event in stream:
                    seen.append(event.type)
        await stream.close()
        assert seen and "response.completed" not in seen
        # Once the connection is gone the response ends, failed, and the conversation is free.
        record = state(emu).last_response()
        await asyncio.wait_for(record.ended.wait(), 5)
        assert record.status == "failed"
    emu.faults.clear()
    answer = await client.responses.create(model=MODEL, conversation=conversation.id, input="again")
    assert answer.status == "completed"
