"""An operator manages assistants with `python -m bot assistants …`, on both engines."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot import backend as backends
from bot.config import load_backend_settings
from bot.definitions import AssistantDefinition
from bot.store import Store
from tests.emulators.openai import OpenAIEmulator
from tests.test_operations import run_bot

YAML_FILE = """
assistants:
  - name: Support Bot
    model: gpt-4o-mini
    instructions: Answer customer questions politely.
    description: Customer support
    temperature: 0.2
    metadata: {team: support}
  - name: Code Helper
    model: gpt-4.1
    instructions: Review code.
    tools:
      - code_interpreter
      - type: function
        function:
          name: run_tests
          description: Run the test suite
          parameters: {type: object, properties: {path: {type: string}}}
  - name: Research Assistant
    model: gpt-4.1
    top_p: 0.9
    tools: [file_search]
    tool_resources: {file_search: {vector_store_ids: [vs_research]}}
"""

TOML_FILE = """
[[assistants]]
name = "Support Bot"
model = "gpt-4o-mini"
instructions = "Answer customer questions politely."
description = "Customer support"
temperature = 0.2
metadata = { team = "support" }

[[assistants]]
name = "Code Helper"
model = "gpt-4.1"
instructions = "Review code."
tools = [
  "code_interpreter",
  { type = "function", function = { name = "run_tests", description = "Run the test suite", parameters = { type = "object", properties = { path = { type = "string" } } } } },
]

[[assistants]]
name = "Research Assistant"
model = "gpt-4.1"
top_p = 0.9
tools = ["file_search"]
tool_resources = { file_search = { vector_store_ids = ["vs_research"] } }
"""


@pytest.fixture
def cli_env(engine: str, openai_emu: OpenAIEmulator, tmp_path: Path) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": openai_emu.api_key,
        "OPENAI_BASE_URL": openai_emu.base_url,
        "BOT_ENGINE": engine,
        "DATABASE_PATH": str(tmp_path / "bot.sqlite3"),
    }


async def assistants(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    code, out, err = await run_bot("assistants", *args, env=env, cwd=cwd)
    assert "Traceback" not in err
    return code, out, err


async def held(env: dict[str, str]) -> dict[str, AssistantDefinition]:
    """What the backend (or, for the Responses engine, the bot's database) holds now, by name."""
    settings = load_backend_settings(env, env_file=None)
    store = await Store.open(settings.database_url)
    assert settings.engine is not None
    backend = backends.make_backend(settings.engine, backends.make_openai_client(settings), store)
    try:
        return {a.name: a for a in await backend.catalog.list_assistants()}
    finally:
        await backend.close()
        await store.close()


async def test_create_list_show_update_and_delete_an_assistant(
    cli_env: dict[str, str], tmp_path: Path, engine: str, openai_emu: OpenAIEmulator
) -> None:
    code, out, _ = await assistants(cli_env, tmp_path, "list")
    assert (code, out) == (0, "No assistants.\n")

    code, out, err = await assistants(
        cli_env,
        tmp_path,
        "create",
        "--name",
        "Support Bot",
        "--model",
        "gpt-4o-mini",
        "--instructions",
        "Be kind.\nBe brief.",
        "--description",
        "Customer support",
        "--tool",
        "code_interpreter",
        "--tool",
        "file_search",
        "--temperature",
        "0.5",
        "--top-p",
        "0.8",
    )
    assert code == 0, err
    assert out.startswith("created Support Bot (asst_")
    assistant_id = out.strip().split("(")[1].rstrip(")")
    if engine == "assistants":
        assert openai_emu.assistants[assistant_id]["instructions"] == "Be kind.\nBe brief."

    code, out, _ = await assistants(cli_env, tmp_path, "list")
    assert code == 0
    assert out.split() == [
        "Support",
        "Bot",
        assistant_id,
        "gpt-4o-mini",
        "code_interpreter,",
        "file_search",
        "Customer",
        "support",
    ]

    code, out, _ = await assistants(cli_env, tmp_path, "show", "support bot")
    assert code == 0
    assert out.splitlines() == [
        "name: Support Bot",
        f"id: {assistant_id}",
        "model: gpt-4o-mini",
        "description: Customer support",
        "tools: code_interpreter, file_search",
        "tool_resources: -",
        "temperature: 0.5",
        "top_p: 0.8",
        "metadata: -",
        "instructions:",
        "  Be kind.",
        "  Be brief.",
    ]

    code, out, _ = await assistants(
        cli_env, tmp_path, "update", "Support Bot", "--model", "gpt-4.1", "--name", "Helpdesk"
    )
    assert (code, out) == (0, f"updated Helpdesk ({assistant_id})\n")
    code, out, _ = await assistants(cli_env, tmp_path, "show", assistant_id)
    assert "model: gpt-4.1" in out.splitlines() and "name: Helpdesk" in out.splitlines()
    assert "temperature: 0.5" in out.splitlines(), "fields not given are kept"

    code, out, _ = await assistants(cli_env, tmp_path, "delete", "helpdesk")
    assert (code, out) == (0, f"deleted Helpdesk ({assistant_id})\n")
    assert await held(cli_env) == {}


# Only the bot's own definitions keep suggested prompts (the Assistants API has no place for them).
@pytest.mark.parametrize("engine", ["responses"])
async def test_update_keeps_what_it_was_not_told_to_change_suggested_prompts_included(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    declared = tmp_path / "assistants.yaml"
    declared.write_text(
        "assistants:\n"
        "  - name: Helper\n"
        "    model: gpt-4o\n"
        "    tools: [file_search]\n"
        "    metadata: {team: support}\n"
        "    suggested_prompts: [Summarise this thread, Draft a reply]\n"
    )
    code, _, err = await assistants(cli_env, tmp_path, "sync", str(declared))
    assert code == 0, err

    code, out, err = await assistants(cli_env, tmp_path, "update", "Helper", "--temperature", "1")
    assert (code, out) == (0, f"updated Helper ({(await held(cli_env))['Helper'].id})\n"), err
    helper = (await held(cli_env))["Helper"]
    assert helper.temperature == 1.0
    assert helper.suggested_prompts == ("Summarise this thread", "Draft a reply")
    assert (helper.tool_types, helper.metadata) == (("file_search",), {"team": "support"})


async def test_unknown_and_duplicate_names_are_one_clear_line(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    created = ("create", "--name", "Support Bot", "--model", "gpt-4o")
    assert (await assistants(cli_env, tmp_path, *created))[0] == 0
    code, out, err = await assistants(cli_env, tmp_path, *created)
    assert code == 1 and out == ""
    assert err.startswith("error: an assistant named 'Support Bot' already exists (asst_")
    code, _, err = await assistants(cli_env, tmp_path, "delete", "Support")
    assert code == 1
    assert err == "error: no assistant named 'Support'; did you mean 'Support Bot'?\n"
    assert list(await held(cli_env)) == ["Support Bot"], "a prefix never deletes"


@pytest.mark.parametrize("engine", ["assistants"])
async def test_list_follows_the_backends_pages(
    cli_env: dict[str, str], tmp_path: Path, openai_emu: OpenAIEmulator
) -> None:
    for number in range(1, 106):
        openai_emu.add_assistant(name=f"Agent {number:03d}")
    code, out, _ = await assistants(cli_env, tmp_path, "list")
    assert code == 0
    listed = sorted(line.split("  ")[0] for line in out.splitlines())
    assert listed == [f"Agent {number:03d}" for number in range(1, 106)]
    pages = [r for r in openai_emu.requests if r.method == "GET" and r.path == "/v1/assistants"]
    assert len(pages) == 2 and pages[1].query.get("after")


async def test_sync_from_yaml_creates_updates_leaves_alone_and_prunes(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    declared = tmp_path / "assistants.yaml"
    declared.write_text(YAML_FILE)
    code, out, err = await assistants(cli_env, tmp_path, "sync", str(declared))
    assert code == 0, err
    assert out.splitlines() == [
        "created: Support Bot",
        "created: Code Helper",
        "created: Research Assistant",
        "sync done: 3 created, 0 updated, 0 unchanged, 0 deleted",
    ]
    assert_as_declared(await held(cli_env))

    declared.write_text(YAML_FILE.replace("Review code.", "Review code carefully."))
    extra = ("create", "--name", "Old Bot", "--model", "gpt-4o")
    assert (await assistants(cli_env, tmp_path, *extra))[0] == 0
    code, out, _ = await assistants(cli_env, tmp_path, "sync", str(declared))
    assert out.splitlines() == [
        "updated: Code Helper",
        "unchanged: Support Bot",
        "unchanged: Research Assistant",
        "sync done: 0 created, 1 updated, 2 unchanged, 0 deleted",
    ]
    now = await held(cli_env)
    assert now["Code Helper"].instructions == "Review code carefully."
    assert "Old Bot" in now, "kept without --prune"

    code, out, _ = await assistants(cli_env, tmp_path, "sync", str(declared), "--prune")
    assert out.splitlines() == [
        "unchanged: Support Bot",
        "unchanged: Code Helper",
        "unchanged: Research Assistant",
        "deleted: Old Bot",
        "sync done: 0 created, 0 updated, 3 unchanged, 1 deleted",
    ]
    assert sorted(await held(cli_env)) == ["Code Helper", "Research Assistant", "Support Bot"]


async def test_sync_from_toml_reads_the_same_definitions(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    declared = tmp_path / "assistants.toml"
    declared.write_text(TOML_FILE)
    code, out, err = await assistants(cli_env, tmp_path, "sync", str(declared))
    assert code == 0, err
    assert out.splitlines()[-1] == "sync done: 3 created, 0 updated, 0 unchanged, 0 deleted"
    assert_as_declared(await held(cli_env))
    yaml_twin = tmp_path / "assistants.yaml"
    yaml_twin.write_text(YAML_FILE)
    code, out, _ = await assistants(cli_env, tmp_path, "sync", str(yaml_twin))
    assert out.splitlines()[-1] == "sync done: 0 created, 0 updated, 3 unchanged, 0 deleted"


def assert_as_declared(assistants: dict[str, AssistantDefinition]) -> None:
    support, code, research = (
        assistants["Support Bot"],
        assistants["Code Helper"],
        assistants["Research Assistant"],
    )
    assert (support.model, support.temperature, support.metadata) == (
        "gpt-4o-mini",
        0.2,
        {"team": "support"},
    )
    assert support.instructions == "Answer customer questions politely."
    assert code.tool_types == ("code_interpreter", "function")
    assert code.tools[1]["function"]["name"] == "run_tests"
    assert code.tools[1]["function"]["parameters"]["properties"] == {"path": {"type": "string"}}
    assert research.top_p == 0.9 and research.tool_types == ("file_search",)
    assert research.tool_resources == {"file_search": {"vector_store_ids": ["vs_research"]}}


INVALID_FLAGS = [
    (
        ("--name", "X", "--model", "gpt-4o", "--tool", "web_browser"),
        "error: assistant 'X': tools[0]: unknown tool type 'web_browser' "
        "(known: code_interpreter, file_search, function)",
    ),
    (("--name", "X"), "error: assistant 'X': 'model' is required"),
    (
        ("--name", "X", "--model", "gpt-4o", "--temperature", "3"),
        "error: assistant 'X': 'temperature' must be a number from 0 to 2, got 3.0",
    ),
    (("--model", "gpt-4o"), "error: assistant: 'name' is required"),
]

INVALID_ENTRIES = [
    ("- {name: A, model: gpt-4o, tools: [browser]}", "tools[0]: unknown tool type 'browser'"),
    ("- {name: A}", "assistant 'A': 'model' is required"),
    ("- {name: A, model: gpt-4o, temperature: hot}", "'temperature' must be a number"),
    ("- {name: A, model: gpt-4o, top_p: 1.5}", "'top_p' must be a number from 0 to 1"),
    ("- {name: A, model: gpt-4o, colour: red}", "unknown field 'colour'"),
]


# Validation happens before any backend call, the same for both engines: one engine suffices.
@pytest.mark.parametrize("engine", ["responses"])
async def test_invalid_definitions_are_refused_naming_the_field_and_change_nothing(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    files = []
    for number, (entry, _) in enumerate(INVALID_ENTRIES):
        declared = tmp_path / f"invalid{number}.yaml"
        declared.write_text(f"assistants:\n  - {{name: Fine, model: gpt-4o}}\n  {entry}\n")
        files.append(declared)
    outcomes = await asyncio.gather(
        *(assistants(cli_env, tmp_path, "create", *args) for args, _ in INVALID_FLAGS),
        *(assistants(cli_env, tmp_path, "sync", str(f)) for f in files),
    )
    expected = [message for _, message in INVALID_FLAGS] + [m for _, m in INVALID_ENTRIES]
    for (code, out, err), message in zip(outcomes, expected, strict=True):
        assert code == 1 and out == "", err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert await held(cli_env) == {}


async def test_missing_settings_and_a_bad_flag_are_explained(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    code, _, err = await assistants({"BOT_ENGINE": "responses"}, tmp_path, "list")
    assert code == 2
    assert "  - OPENAI_API_KEY is missing" in err
    assert "SLACK_BOT_TOKEN" not in err and "ASSISTANT_ID" not in err, "only what it needs"
    code, _, err = await assistants(cli_env, tmp_path, "create", "--temperature", "warm")
    assert code == 2 and "argument --temperature: invalid float value: 'warm'" in err


@pytest.mark.parametrize("engine", ["assistants"])
async def test_a_server_without_the_assistants_api_is_explained(
    cli_env: dict[str, str], tmp_path: Path, openai_emu: OpenAIEmulator
) -> None:
    openai_emu.assistants_retired = True
    code, _, err = await assistants(cli_env, tmp_path, "list")
    assert code == 1
    assert err.startswith("error: the server does not serve the Assistants API.")
    assert "BOT_ENGINE=responses" in err
