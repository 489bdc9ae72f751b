"""Extract the part of OpenAI's OpenAPI spec that the test emulators serve.

Usage (from the repository root, with ../shared beside it):

    python tests/openapi/extract.py [../shared/openai-openapi.yaml]

Writes tests/openapi/openai-subset.json: the served paths, every component they reference
transitively, and the named stream-event schemas (AssistantStreamEvent, ResponseStreamEvent).
The `x-oaiMeta` documentation blocks (examples for the docs site) are dropped to keep it small.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[2] / "shared" / "openai-openapi.yaml"
OUTPUT = HERE / "openai-subset.json"

# Path prefixes the emulators serve; each matches the prefix itself and everything below it.
SERVED_PREFIXES = (
    "/assistants",
    "/threads",
    "/files",
    "/vector_stores",
    "/responses",
    "/conversations",
    "/containers",
    "/models",
)
# Named schemas kept even when no path references them (the SSE event unions).
EXTRA_SCHEMAS = ("AssistantStreamEvent", "ResponseStreamEvent", "ErrorResponse")
DROPPED_KEYS = {"x-oaiMeta"}


def is_served(path: str) -> bool:
    bare = path.split("?", 1)[0]
    return any(bare == prefix or bare.startswith(prefix + "/") for prefix in SERVED_PREFIXES)


def strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k not in DROPPED_KEYS}
    if isinstance(node, list):
        return [strip(item) for item in node]
    return node


def refs_in(node: Any) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/"):
                found.add(ref)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    paths = {p: strip(v) for p, v in spec["paths"].items() if is_served(p)}
    components: dict[str, dict[str, Any]] = {}
    pending = refs_in(paths) | {f"#/components/schemas/{name}" for name in EXTRA_SCHEMAS}
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, section, name = ref.split("/", 3)
        node = strip(spec["components"][section][name])
        components.setdefault(section, {})[name] = node
        pending |= refs_in(node) - seen
    for items in components.values():
        for name in sorted(items):
            items[name] = items.pop(name)
    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": spec.get("servers", []),
        "paths": paths,
        "components": dict(sorted(components.items())),
    }


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE
    with source.open(encoding="utf-8") as handle:
        spec = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    subset = extract(spec)
    OUTPUT.write_text(json.dumps(subset, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    counts = {section: len(items) for section, items in subset["components"].items()}
    print(f"wrote {OUTPUT}: {len(subset['paths'])} paths, components {counts}")


if __name__ == "__main__":
    main()
