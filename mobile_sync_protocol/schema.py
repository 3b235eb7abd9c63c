"""The JSON Schema export of the wire messages: `python -m mobile_sync_protocol.schema`.

The document is the contract with tablet developers, so its text comes from our code alone: every
description is a docstring or a `Meta(description=…)` cleaned by `inspect.cleandoc`, whatever
indentation the installed msgspec keeps (0.23 dedents docstrings, earlier versions did not), and the
alternatives of an `anyOf` come in one order (msgspec 0.19–0.21 put `null` first, 0.22 last).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import msgspec

from mobile_sync_protocol import messages as m

ROOTS: tuple[Any, ...] = (m.PushRequest, m.PushResponse, m.PullRequest, m.PullResponse, m.Problem, m.AnyMutation)


def schema_document() -> dict[str, Any]:
    roots, components = msgspec.json.schema_components(ROOTS, ref_template="#/$defs/{name}")
    # On the wire each entry is a mutation; the server decodes them one by one (msgspec.Raw).
    components["PushRequest"]["properties"]["mutations"]["items"] = roots[-1]
    document: dict[str, Any] = _cleaned(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Canbao mobile sync protocol",
            "protocol_version": m.PROTOCOL_VERSION,
            "supported_versions": list(m.SUPPORTED_VERSIONS),
            "mutation_types": list(m.MUTATION_TYPES),
            "entities": list(m.ENTITIES),
            "roots": dict(
                zip(
                    ("PushRequest", "PushResponse", "PullRequest", "PullResponse", "Problem", "Mutation"),
                    roots,
                    strict=True,
                )
            ),
            "$defs": components,
        }
    )
    return document


def _cleaned(node: Any) -> Any:
    """The same tree with every `description` cleaned as `inspect.cleandoc` cleans a docstring and
    every `anyOf` in the order of its members' canonical JSON text."""
    if isinstance(node, dict):
        return {key: _cleaned_value(key, value) for key, value in node.items()}
    if isinstance(node, list):
        return [_cleaned(item) for item in node]
    return node


def _cleaned_value(key: str, value: Any) -> Any:
    if key == "description" and isinstance(value, str):
        return inspect.cleandoc(value)
    if key == "anyOf" and isinstance(value, list):
        return sorted((_cleaned(item) for item in value), key=lambda item: json.dumps(item, sort_keys=True))
    return _cleaned(value)


def main() -> None:
    print(json.dumps(schema_document(), indent=2, ensure_ascii=False, sort_keys=True))


if __name__ == "__main__":
    main()
