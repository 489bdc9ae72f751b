"""Validation against the extracted OpenAI OpenAPI subset (tests/openapi/openai-subset.json).

The spec says OpenAPI 3.1 but still marks many fields with the 3.0 keyword `nullable: true`;
those schemas are rewritten once at load time so that JSON Schema 2020-12 accepts `null` there.
Vendor keys (`x-*`) and `discriminator` are unknown keywords to jsonschema and so are ignored.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SUBSET_PATH = Path(__file__).resolve().parents[1] / "openapi" / "openai-subset.json"
_ROOT_URI = "urn:openai-openapi-subset"


def _allow_null(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 `nullable: true` into JSON Schema, recursively."""
    if isinstance(node, list):
        return [_allow_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _allow_null(value) for key, value in node.items()}
    # `allOf: [{$ref: X}, {nullable: true}]` means "X or null".
    parts = node.get("allOf")
    if isinstance(parts, list) and any(_is_bare_nullable(part) for part in parts):
        rest = [part for part in parts if not _is_bare_nullable(part)]
        node["allOf"] = rest
        node["nullable"] = True
    if not node.pop("nullable", False):
        return node
    kind = node.get("type")
    if isinstance(kind, str) and "$ref" not in node and not _has_combinator(node):
        node["type"] = [kind, "null"]
        if "enum" in node and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
        return node
    return {"anyOf": [{"type": "null"}, node]}


def _is_bare_nullable(part: Any) -> bool:
    return isinstance(part, dict) and part.get("nullable") is True and len(part) == 1


def _has_combinator(node: dict[str, Any]) -> bool:
    return any(key in node for key in ("allOf", "anyOf", "oneOf"))


@cache
def load_subset() -> dict[str, Any]:
    with SUBSET_PATH.open(encoding="utf-8") as handle:
        document: dict[str, Any] = json.load(handle)
    components = _allow_null(document["components"])
    _apply_errata(components["schemas"])
    return {**document, "components": components}


def _apply_errata(schemas: dict[str, Any]) -> None:
    """Known places where the live API differs from the published spec.

    Cursor lists (`List*Response`): the API answers `"first_id": null, "last_id": null` for an
    empty page, while the spec types both as plain strings.

    `InputItem`: a user message whose content is a list of parts (text and an image) fits both
    `EasyInputMessage` and `InputMessage`, so the spec's `oneOf` refuses it; the API takes it.

    `MCPApprovalResponse` requires a `request_id` it does not define (the SDK, generated from the
    same spec, requires `approval_request_id`, `approve` and `type` only).
    """
    approval = schemas.get("MCPApprovalResponse")
    if isinstance(approval, dict) and "request_id" in approval.get("required", []):
        approval["required"] = [r for r in approval["required"] if r != "request_id"]
    input_item = schemas.get("InputItem")
    if isinstance(input_item, dict) and "oneOf" in input_item:
        input_item["anyOf"] = input_item.pop("oneOf")
    for name, schema in schemas.items():
        if not (name.startswith("List") and name.endswith("Response")):
            continue
        properties = schema.get("properties", {})
        for key in ("first_id", "last_id"):
            prop = properties.get(key)
            if isinstance(prop, dict) and prop.get("type") == "string":
                properties[key] = {**prop, "type": ["string", "null"]}


@cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = DRAFT202012.create_resource(load_subset())
    registry: Registry[Any] = Registry().with_resource(_ROOT_URI, resource)
    return registry


@cache
def validator(schema: str) -> Draft202012Validator:
    if schema not in load_subset()["components"]["schemas"]:
        raise KeyError(f"schema {schema!r} is not in {SUBSET_PATH.name}")
    return Draft202012Validator(
        {"$ref": f"{_ROOT_URI}#/components/schemas/{schema}"}, registry=_registry()
    )


def violations(instance: Any, schema: str) -> list[str]:
    """Readable messages for every way `instance` breaks `#/components/schemas/<schema>`."""
    found = []
    for error in validator(schema).iter_errors(instance):
        where = "/".join(str(part) for part in error.absolute_path) or "<root>"
        found.append(f"{schema} at {where}: {_best_message(error)}")
    return found


def _best_message(error: Any) -> str:
    """For oneOf/anyOf failures name the deepest cause, which is what a reader needs."""
    message: str = error.message
    if error.context:
        deepest = max(error.context, key=lambda sub: len(sub.absolute_path))
        message = f"{message[:200]} (e.g. {'/'.join(map(str, deepest.absolute_path))}: "
        message += f"{deepest.message[:200]})"
    return message
