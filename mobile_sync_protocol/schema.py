"""The JSON Schema export of the wire messages: `python -m mobile_sync_protocol.schema`."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from mobile_sync_protocol import messages as m

ROOTS: tuple[Any, ...] = (m.PushRequest, m.PushResponse, m.PullRequest, m.PullResponse, m.Problem, m.AnyMutation)


def schema_document() -> dict[str, Any]:
    roots, components = msgspec.json.schema_components(ROOTS, ref_template="#/$defs/{name}")
    # On the wire each entry is a mutation; the server decodes them one by one (msgspec.Raw).
    components["PushRequest"]["properties"]["mutations"]["items"] = roots[-1]
    return {
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


def main() -> None:
    print(json.dumps(schema_document(), indent=2, ensure_ascii=False, sort_keys=True))


if __name__ == "__main__":
    main()
