"""Assistant definitions: name, model, instructions, tools and sampling, validated field by field.

One shape for both engines: the Assistants engine sends them to the backend's `/assistants`;
the Responses engine uses the bot's own, kept in its store (`StoredAssistants`; OpenAI's prompt
objects are not used).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

if TYPE_CHECKING:
    from bot.store import Store

TOOL_TYPES = ("code_interpreter", "file_search", "function", "web_search")
MCP_FIELDS = (
    "name",
    "url",
    "headers",
    "command",
    "args",
    "env",
    "allowed_tools",
    "require_approval",
    "via",
)
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
# Who may use an assistant: Slack ids of channels (C…, G…), people (U…, W…), user groups (S…).
ALLOWED_IDS = {
    "allowed_channels": (re.compile(r"^[CG][A-Z0-9]{2,}$"), "channel ids like C0123ABCD"),
    "allowed_users": (re.compile(r"^[UW][A-Z0-9]{2,}$"), "user ids like U0123ABCD"),
    "allowed_usergroups": (re.compile(r"^S[A-Z0-9]{2,}$"), "user group ids like S0123ABCD"),
}


class DefinitionError(ValueError):
    """An invalid definition; the message names the field."""


@dataclass(frozen=True)
class AssistantDefinition:
    """An assistant. Its fields are the one list of what a definition holds: files, the store,
    the command line and the engines take theirs from here (`SETTINGS`, `settings()`)."""

    name: str
    model: str
    instructions: str = ""
    description: str = ""
    tools: tuple[dict[str, Any], ...] = ()
    tool_resources: dict[str, Any] = field(default_factory=dict)
    temperature: float | None = None
    top_p: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    suggested_prompts: tuple[str, ...] = ()
    mcp_servers: tuple[dict[str, Any], ...] = ()
    allowed_channels: tuple[str, ...] = ()  # empty: any channel
    allowed_users: tuple[str, ...] = ()  # empty (with no usergroups): anyone
    allowed_usergroups: tuple[str, ...] = ()
    reasoning_effort: str | None = None  # reasoning models, Responses engine only
    id: str = ""

    @property
    def tool_types(self) -> tuple[str, ...]:
        return tuple(str(tool["type"]) for tool in self.tools)

    def settings(self) -> dict[str, Any]:
        """Every field but the id, in JSON's shapes (lists, not tuples)."""
        return {
            name: list(value) if isinstance(value := getattr(self, name), tuple) else value
            for name in SETTINGS
        }

    def to_json(self) -> str:
        return json.dumps(self.settings())

    @classmethod
    def from_json(cls, assistant_id: str, text: str) -> AssistantDefinition:
        return parse_definition({**json.loads(text), "id": assistant_id})

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AssistantDefinition:
        """A definition from what a backend holds, as it is (not validated): the fields it has
        (others are ignored), missing or null ones left at their defaults."""
        values: dict[str, Any] = {
            name: tuple(value) if isinstance(value := record[name], list) else value
            for name in FIELDS
            if record.get(name) is not None
        }
        return cls(**values)


SETTINGS = tuple(f.name for f in fields(AssistantDefinition) if f.name != "id")
FIELDS = ("id", *SETTINGS)
BOT_ONLY = (
    "suggested_prompts",
    "mcp_servers",
    "allowed_channels",
    "allowed_users",
    "allowed_usergroups",
    "reasoning_effort",
)  # settings only the bot keeps: the Assistants API has no place


def parse_definition(raw: Any, where: str = "assistant", source: str = "") -> AssistantDefinition:
    """A definition, validated; `source` (a file) is named in errors."""
    if not isinstance(raw, Mapping):
        raise DefinitionError(f"{where}: expected a table of fields, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise DefinitionError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError(f"{where}: 'name' is required (a non-empty string)")
    where = f"{source}: assistant {name!r}" if source else f"assistant {name!r}"
    model = raw.get("model")
    if not isinstance(model, str) or not model.strip():
        raise DefinitionError(f"{where}: 'model' is required, e.g. model = \"gpt-4.1\"")
    for text_field in ("instructions", "description"):
        if not isinstance(raw.get(text_field, ""), str):
            raise DefinitionError(f"{where}: {text_field!r} must be text")
    tools = tuple(
        _parse_tool(tool, f"{where}: tools[{i}]") for i, tool in enumerate(raw.get("tools") or ())
    )
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, Mapping) or not all(isinstance(v, str) for v in metadata.values()):
        raise DefinitionError(f"{where}: 'metadata' must be a table of text values")
    resources = raw.get("tool_resources") or {}
    if not isinstance(resources, Mapping):
        raise DefinitionError(f"{where}: 'tool_resources' must be a table")
    prompts = raw.get("suggested_prompts") or ()
    if not isinstance(prompts, list | tuple) or not all(isinstance(p, str) for p in prompts):
        raise DefinitionError(f"{where}: 'suggested_prompts' must be a list of text")
    servers = raw.get("mcp_servers") or ()
    if not isinstance(servers, list | tuple):
        raise DefinitionError(f"{where}: 'mcp_servers' must be a list of servers")
    mcp_servers = tuple(
        _parse_mcp_server(server, f"{where}: mcp_servers[{i}]") for i, server in enumerate(servers)
    )
    effort = raw.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise DefinitionError(
            f"{where}: 'reasoning_effort' must be one of {', '.join(REASONING_EFFORTS)}, "
            f"got {effort!r}"
        )
    names = [server["name"] for server in mcp_servers]
    if len(set(names)) != len(names):
        raise DefinitionError(f"{where}: 'mcp_servers' names a server twice")
    allowed = {name: _ids(raw, name, where) for name in ALLOWED_IDS}
    return AssistantDefinition(
        id=str(raw.get("id") or ""),
        name=name.strip(),
        model=model.strip(),
        instructions=raw.get("instructions") or "",
        description=raw.get("description") or "",
        tools=tools,
        tool_resources=dict(resources),
        temperature=_number(raw, "temperature", 0.0, 2.0, where),
        top_p=_number(raw, "top_p", 0.0, 1.0, where),
        metadata={str(k): str(v) for k, v in metadata.items()},
        suggested_prompts=tuple(prompts),
        mcp_servers=mcp_servers,
        **allowed,
        reasoning_effort=effort,
    )


def _ids(raw: Mapping[str, Any], name: str, where: str) -> tuple[str, ...]:
    pattern, kind = ALLOWED_IDS[name]
    values = raw.get(name) or ()
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list | tuple) or not all(
        isinstance(v, str) and pattern.match(v.strip()) for v in values
    ):
        raise DefinitionError(f"{where}: {name!r} must be a list of Slack {kind}")
    return tuple(dict.fromkeys(v.strip() for v in values))


def _parse_mcp_server(server: Any, where: str) -> dict[str, Any]:
    """An MCP server: `url` (streamable HTTP) or `command` (stdio). Secrets are kept as
    `${ENV_VAR}` references, resolved only when connecting (`resolve_references`)."""
    if not isinstance(server, Mapping):
        raise DefinitionError(f"{where}: expected a table of fields")
    unknown = sorted(set(server) - set(MCP_FIELDS))
    if unknown:
        raise DefinitionError(
            f"{where}: unknown field {unknown[0]!r} (known: {', '.join(MCP_FIELDS)})"
        )
    name = server.get("name")
    if not isinstance(name, str) or not SERVER_NAME.match(name):
        raise DefinitionError(f"{where}.name: required, letters, digits, _ or - (at most 32)")
    url, command = server.get("url"), server.get("command")
    if (url is None) == (command is None):
        raise DefinitionError(f"{where}: give either 'url' or 'command'")
    if url is not None and (
        not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https")
    ):
        raise DefinitionError(f"{where}.url: must be an http(s) URL, got {url!r}")
    if command is not None and (not isinstance(command, str) or not command.strip()):
        raise DefinitionError(f"{where}.command: must be a command line's program")
    via = server.get("via", "bot")
    if via not in ("bot", "openai"):
        raise DefinitionError(f"{where}.via: 'bot' (the default) or 'openai', got {via!r}")
    if via == "openai" and (url is None or server.get("env")):
        raise DefinitionError(f"{where}.via: openai reaches a server by its url (no command, env)")
    args = server.get("args") or []
    allowed = server.get("allowed_tools")
    for field_name, value in (("args", args), ("allowed_tools", allowed or [])):
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise DefinitionError(f"{where}.{field_name}: must be a list of text")
    for table in ("headers", "env"):
        values = server.get(table) or {}
        if not isinstance(values, Mapping) or not all(isinstance(v, str) for v in values.values()):
            raise DefinitionError(f"{where}.{table}: must be a table of text values")
        for key, value in values.items():
            for variable in ENV_REFERENCE.findall(value):
                if variable not in os.environ:
                    raise DefinitionError(
                        f"{where}.{table}.{key}: the environment variable {variable} is not set"
                    )
    approval = server.get("require_approval", "never")
    if approval not in ("never", "always") and not (
        isinstance(approval, list | tuple) and all(isinstance(v, str) for v in approval)
    ):
        raise DefinitionError(
            f"{where}.require_approval: 'never', 'always' or a list of tool names, got {approval!r}"
        )
    parsed: dict[str, Any] = {k: v for k, v in server.items() if v is not None}
    if isinstance(approval, list | tuple):
        parsed["require_approval"] = list(approval)
    for listed in ("args", "allowed_tools"):
        if listed in parsed:
            parsed[listed] = list(parsed[listed])
    return parsed


def hosted_by_openai(server: Mapping[str, Any]) -> bool:
    """A server OpenAI connects to itself (`via: openai`, Responses engine), not the bot."""
    return server.get("via") == "openai"


def requires_approval(server: Mapping[str, Any], tool: str) -> bool:
    """Whether a call of the server's tool waits for a person's Approve (require_approval)."""
    approval = server.get("require_approval", "never")
    return approval == "always" or (isinstance(approval, list) and tool in approval)


def resolve_references(value: str) -> str:
    """`${ENV_VAR}` references replaced by the environment's values (never stored, never logged)."""
    return ENV_REFERENCE.sub(lambda m: os.environ.get(m.group(1), ""), value)


def _parse_tool(tool: Any, where: str) -> dict[str, Any]:
    if isinstance(tool, str):
        tool = {"type": tool}
    if not isinstance(tool, Mapping) or tool.get("type") not in TOOL_TYPES:
        kind = tool.get("type") if isinstance(tool, Mapping) else tool
        raise DefinitionError(
            f"{where}: unknown tool type {kind!r} (known: {', '.join(TOOL_TYPES)})"
        )
    if tool["type"] == "function":
        function = tool.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise DefinitionError(f"{where}: a function tool needs function.name")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, Mapping):
            raise DefinitionError(f"{where}: function.parameters must be a JSON schema object")
    return dict(tool)


def _number(raw: Mapping[str, Any], name: str, low: float, high: float, where: str) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise DefinitionError(
            f"{where}: {name!r} must be a number from {low:g} to {high:g}, got {value!r}"
        )
    return float(value)


def load_definitions(path: Path) -> list[AssistantDefinition]:
    """Definitions from a YAML or TOML file: a list under `assistants` (or `[[assistants]]`)."""
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise DefinitionError(
            f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}"
        ) from exc
    entries = data.get("assistants") if isinstance(data, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise DefinitionError(f"{path}: expected a non-empty list under 'assistants'")
    definitions = [
        parse_definition(entry, f"{path}: assistants[{i}]", str(path))
        for i, entry in enumerate(entries)
    ]
    names = [d.name for d in definitions]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DefinitionError(f"{path}: the name {duplicated[0]!r} is used twice")
    return definitions


class StoredAssistants:
    """The bot's own definitions as an assistant catalogue, kept in its store."""

    keeps_bot_settings = True

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get_assistant(self, assistant_id: str) -> AssistantDefinition | None:
        return await self.store.get_definition(assistant_id)

    async def list_assistants(self) -> list[AssistantDefinition]:
        return await self.store.list_definitions()

    async def create_assistant(self, definition: AssistantDefinition) -> AssistantDefinition:
        created = replace(definition, id=definition.id or f"asst_bot_{secrets.token_hex(8)}")
        await self.store.save_definition(created)
        return created

    async def update_assistant(
        self, assistant_id: str, definition: AssistantDefinition
    ) -> AssistantDefinition:
        updated = replace(definition, id=assistant_id)
        await self.store.save_definition(updated)
        return updated

    async def delete_assistant(self, assistant_id: str) -> bool:
        return await self.store.delete_definition(assistant_id)
