"""The JSON Schema export of the wire messages: `python -m mobile_sync_protocol.schema`.

The document is the contract with tablet developers, so its text comes from our code alone: every
description is a docstring or a `Meta(description=…)` cleaned by `inspect.cleandoc`, whatever
indentation the installed msgspec keeps (0.23 dedents docstrings, earlier versions did not), and the
alternatives of an `anyOf` come in one order (msgspec 0.19–0.21 put `null` first, 0.22 last), as do
the members of a set's default (a frozenset iterates in an order that varies with string hashing).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import msgspec

from mobile_sync_protocol import messages as m

ROOTS: tuple[Any, ...] = (
    m.PushRequest,
    m.PushResponse,
    m.PullRequest,
    m.PullResponse,
    m.StoreKeyRequest,
    m.StoreKeyResponse,
    m.Problem,
    m.AnyMutation,
)
ROOT_NAMES = (
    "PushRequest",
    "PushResponse",
    "PullRequest",
    "PullResponse",
    "StoreKeyRequest",
    "StoreKeyResponse",
    "Problem",
    "Mutation",
)


def schema_document() -> dict[str, Any]:
    roots, components = msgspec.json.schema_components(ROOTS, ref_template="#/$defs/{name}")
    # On the wire each entry is a mutation; the server decodes them one by one (msgspec.Raw).
    components["PushRequest"]["properties"]["mutations"]["items"] = roots[-1]
    _mark_sets(components)
    _sort_set_defaults(components, components)
    document: dict[str, Any] = _cleaned(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Canbao mobile sync protocol",
            "protocol_version": m.PROTOCOL_VERSION,
            "supported_versions": list(m.SUPPORTED_VERSIONS),
            "mutation_types": list(m.MUTATION_TYPES),
            "entities": list(m.ENTITIES),
            "roots": dict(zip(ROOT_NAMES, roots, strict=True)),
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


def _mark_sets(components: dict[str, Any]) -> None:
    """Every set-typed field says `uniqueItems` (msgspec says so from 0.20 on, 0.19 did not)."""
    for info in msgspec.inspect.multi_type_info(ROOTS):
        for struct in _structs(info, set()):
            properties = components.get(struct.cls.__name__, {}).get("properties", {})
            for field in struct.fields:
                if not _is_set(field.type):
                    continue
                schema = properties[field.encode_name]
                for option in [schema, *schema.get("anyOf", ())]:
                    if option.get("type") == "array":
                        option["uniqueItems"] = True


def _structs(info: Any, seen: set[type]) -> list[Any]:
    """The Struct types reachable from `info`."""
    found: list[Any] = []
    children: list[Any]
    if isinstance(info, msgspec.inspect.StructType):
        if info.cls in seen:
            return found
        seen.add(info.cls)
        found.append(info)
        children = [field.type for field in info.fields]
    elif isinstance(info, msgspec.inspect.UnionType):
        children = list(info.types)
    elif isinstance(info, msgspec.inspect.Metadata):
        children = [info.type]
    elif isinstance(info, msgspec.inspect.DictType):
        children = [info.key_type, info.value_type]
    else:
        children = [getattr(info, "item_type", None), *getattr(info, "item_types", ())]
    for child in children:
        if child is not None:
            found.extend(_structs(child, seen))
    return found


def _is_set(info: Any) -> bool:
    """A set or frozenset, also under constraints or as `… | None`."""
    while isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    if isinstance(info, msgspec.inspect.UnionType):
        return any(_is_set(option) for option in info.types)
    return isinstance(info, msgspec.inspect.SetType | msgspec.inspect.FrozenSetType)


def _sort_set_defaults(node: Any, defs: dict[str, Any]) -> None:
    """Sorts, in place, every default that holds a set: msgspec lists a frozenset in its iteration
    order, which string hashing varies from one process to the next (also inside the default of a
    Struct-typed field, so defaults are followed through `$ref`s)."""
    if isinstance(node, list):
        for item in node:
            _sort_set_defaults(item, defs)
    elif isinstance(node, dict):
        if "default" in node:
            node["default"] = _sorted_sets(node["default"], node, defs)
        for value in node.values():
            _sort_set_defaults(value, defs)


def _sorted_sets(value: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    if isinstance(value, list) and schema.get("uniqueItems"):
        return sorted(value, key=lambda item: json.dumps(item, sort_keys=True))
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {key: _sorted_sets(item, properties.get(key, {}), defs) for key, item in value.items()}
    return value


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
