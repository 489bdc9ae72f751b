"""An assistant with `tools: [web_search]` answers from the web and shows its sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import app
from tests.conftest import ALICE, GENERAL, Harness
from tests.emulators.model import Reply, WebSourceSpec
from tests.test_files import final_answers

SEARCHER = (
    "assistants:\n"
    "  - name: Helper\n"
    "    model: gpt-4o\n"
    "    instructions: You help.\n"
    "    tools: [web_search]\n"
)


@pytest.mark.parametrize("engine", ["responses"])
async def test_a_web_searched_answer_shows_footnotes_and_its_sources(
    harness: Harness, tmp_path: Path
) -> None:
    definitions = tmp_path / "assistants.yaml"
    definitions.write_text(SEARCHER)
    await harness.start(ASSISTANTS_FILE=str(definitions))
    slack = harness.slack
    harness.openai.model.enqueue(
        Reply(
            text="Python 3.15 comes out in October. Its JIT is on by default.",
            web_sources=[
                WebSourceSpec(
                    "PEP 790 – Python 3.15 Release Schedule",
                    "https://peps.python.org/pep-0790/",
                    quote="comes out in October",
                ),
                WebSourceSpec(
                    "What's new in Python 3.15",
                    "https://docs.python.org/3.15/whatsnew/3.15.html",
                    quote="on by default",
                ),
            ],
        )
    )
    ts = await slack.mention(ALICE, GENERAL, "when does Python 3.15 come out?")
    [answer] = await final_answers(harness, ts, 1)  # streamed first, then given its sources
    assert answer.text == (
        "Python 3.15 comes out in October[1]. Its JIT is on by default[2].\n\n"
        "**Sources:**\n"
        "[1] [PEP 790 – Python 3.15 Release Schedule](https://peps.python.org/pep-0790/)\n"
        "[2] [What's new in Python 3.15](https://docs.python.org/3.15/whatsnew/3.15.html)\n"
        ":hammer_and_wrench: Used web search"
    )
    [searched] = harness.openai.responses_api.last_response().tools
    assert searched == {"type": "web_search"}
    assert [item["type"] for item in harness.openai.responses_api.last_response().output] == [
        "web_search_call",
        "message",
    ]


@pytest.mark.parametrize("engine", ["assistants"])
async def test_web_search_on_the_assistants_engine_is_refused_when_loaded(
    harness: Harness, tmp_path: Path
) -> None:
    definitions = tmp_path / "assistants.yaml"
    definitions.write_text(SEARCHER)
    with pytest.raises(app.StartupError) as refused:
        await harness.start(ASSISTANTS_FILE=str(definitions))
    assert "\n" not in str(refused.value)
    assert str(refused.value).endswith(
        "assistant 'Helper': tools: web_search needs the Responses engine "
        "(the Assistants API has no web search)"
    )
