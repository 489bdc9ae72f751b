"""manifest.yml: Slack accepts it, and it asks for what the bot uses and nothing more."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bot.slack.words import SHORTCUT_NAME
from tests.emulators.slack import (
    CONVERSATION_METHOD_SCOPES,
    DOWNLOAD_SCOPE,
    EVENT_SCOPES,
    KIND_SCOPE_PREFIX,
    METHOD_SCOPES,
    load_manifest,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads(
    (ROOT / "tests/slack_manifest/manifest.schema.2.0.0.json").read_text(encoding="utf-8")
)
# Sections only version 2 of the manifest format reads differently (see slack_manifest/README.md).
VERSION_2_SECTIONS = {"_metadata", "functions", "workflows", "types", "external_auth_providers"}
# slack_sdk helpers that call other Web API methods than their names say.
SDK_HELPERS = {"files_upload_v2": ("files.getUploadURLExternal", "files.completeUploadExternal")}


def bot_source() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "bot").rglob("*.py"))


def methods_the_bot_calls(source: str) -> set[str]:
    known = set(METHOD_SCOPES) | set(CONVERSATION_METHOD_SCOPES)
    methods = {method for method in known if f".{method.replace('.', '_')}(" in source}
    for helper, calls in SDK_HELPERS.items():
        if f".{helper}(" in source:
            methods.update(calls)
    return methods


def bot_scopes(manifest: dict[str, Any]) -> list[str]:
    return list(manifest["oauth_config"]["scopes"]["bot"])


def test_slack_accepts_the_manifest() -> None:
    manifest = load_manifest()
    assert not VERSION_2_SECTIONS & set(manifest), "the schema check assumes a version 1 manifest"
    jsonschema.validate(manifest, SCHEMA)


def test_a_shortcut_name_longer_than_slack_allows_is_refused() -> None:
    manifest = load_manifest()
    manifest["features"]["shortcuts"][0]["name"] = "Switch assistant for this thread"
    with pytest.raises(jsonschema.ValidationError, match="is too long"):
        jsonschema.validate(manifest, SCHEMA)


def test_every_scope_the_manifest_asks_for_is_one_the_bot_needs() -> None:
    manifest = load_manifest()
    source = bot_source()
    needed_by: dict[str, str] = {}
    for method in methods_the_bot_calls(source):
        for scope in METHOD_SCOPES.get(method, ()):
            needed_by[scope] = method
        if method in CONVERSATION_METHOD_SCOPES:  # read_slack_thread reads threads of any kind
            for prefix in KIND_SCOPE_PREFIX.values():
                needed_by[f"{prefix}:{CONVERSATION_METHOD_SCOPES[method]}"] = method
    for event in manifest["settings"]["event_subscriptions"]["bot_events"]:
        if event in EVENT_SCOPES:
            needed_by[EVENT_SCOPES[event]] = f"the {event} event"
    if "url_private" in source:
        needed_by[DOWNLOAD_SCOPE] = "downloading shared files"
    features = manifest["features"]
    if features.get("slash_commands") or features.get("shortcuts"):
        needed_by["commands"] = "the slash command and shortcuts"

    unused = [scope for scope in bot_scopes(manifest) if scope not in needed_by]
    assert unused == [], f"the manifest asks for scopes nothing uses: {unused}"


def test_every_web_api_method_the_bot_calls_has_a_scope_that_allows_it() -> None:
    granted = set(bot_scopes(load_manifest()))
    for method in methods_the_bot_calls(bot_source()):
        accepted = set(METHOD_SCOPES.get(method, ()))
        if method in CONVERSATION_METHOD_SCOPES:
            kind_scope = CONVERSATION_METHOD_SCOPES[method]
            accepted = {f"{prefix}:{kind_scope}" for prefix in KIND_SCOPE_PREFIX.values()}
            assert accepted <= granted, f"{method} needs {sorted(accepted - granted)}"
        assert not accepted or accepted & granted, f"{method} needs one of {sorted(accepted)}"


def test_the_bot_and_the_readme_name_the_shortcuts_as_the_manifest_does() -> None:
    names = [shortcut["name"] for shortcut in load_manifest()["features"]["shortcuts"]]
    assert SHORTCUT_NAME in names
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert [name for name in names if name not in readme] == []
