"""Replays the golden vectors of `vectors/` (format: PROTOCOL.md §9) — the Python twin of what a
Kotlin or Swift client does with the same files.

Rule vectors (`rules_*.json`) run the pure premium and coverage rules the tablet computes with
offline; sync vectors (`push_*.json`, `pull_*.json`) go through a `SyncClient` to a server set up as
the vector's `world` says. Each returns the list of mismatches: empty when the vector holds.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec

from mobile_sync_protocol.client import SyncClient, SyncFailed
from mobile_sync_protocol.rules import coverage as c
from mobile_sync_protocol.rules import exemptions as ex
from mobile_sync_protocol.rules import gaps as g
from mobile_sync_protocol.rules import premium as p

VECTORS = Path(__file__).resolve().parent / "vectors"


def vector_files(prefix: str = "") -> list[Path]:
    return sorted(VECTORS.glob(f"{prefix}*.json"))


def load(path: Path) -> dict[str, Any]:
    vector: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return vector


def subset_mismatches(got: Any, expected: Any, where: str = "$") -> list[str]:
    """Where `got` differs from `expected`: objects are compared on the keys `expected` names
    (a key expected as null must be absent or null), lists element by element and in full length."""
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return [f"{where}: expected an object, got {got!r}"]
        out: list[str] = []
        for key, value in expected.items():
            out += subset_mismatches(got.get(key), value, f"{where}.{key}")
        return out
    if isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            return [f"{where}: expected {len(expected)} items, got {got!r}"]
        pairs = enumerate(zip(got, expected, strict=True))
        return [x for i, (g, e) in pairs for x in subset_mismatches(g, e, f"{where}[{i}]")]
    if got != expected:
        return [f"{where}: expected {expected!r}, got {got!r}"]
    return []


# Rule vectors -------------------------------------------------------------------------------------


def _rule_functions() -> dict[str, Callable[[dict[str, Any]], Any]]:
    # The pure rules (mobile_sync_protocol.rules: stdlib and msgspec only) are what the tablet runs offline.

    def premium_due(x: dict[str, Any]) -> Any:
        return p.premium_due(msgspec.convert(x["policy"], p.SubsidyPolicy), x["categories"], age=x.get("age"))

    def household_due(x: dict[str, Any]) -> Any:
        policy = msgspec.convert(x["policy"], p.SubsidyPolicy)
        return p.household_due(p.premium_due(policy, held) for held in x["members"])

    def waiting_period(x: dict[str, Any]) -> Any:
        policy = msgspec.convert(x["policy"], c.WaitingPolicy)
        return c.waiting_period(
            policy,
            coverage_year=x["coverage_year"],
            gap_years=x.get("gap_years", 0),
            back_paid_years=x.get("back_paid_years", 0),
        )

    def coverage_for(x: dict[str, Any]) -> Any:
        return c.coverage_for(
            coverage_year=x["coverage_year"],
            business_date=date.fromisoformat(x["business_date"]),
            window=msgspec.convert(x["window"], c.EnrolmentWindow),
            policy=msgspec.convert(x["policy"], c.WaitingPolicy),
            exemption=x.get("exemption"),
            birth_date=None if x.get("birth_date") is None else date.fromisoformat(x["birth_date"]),
            gap_years=x.get("gap_years", 0),
            back_paid_years=x.get("back_paid_years", 0),
            extended=None if x.get("extended") is None else msgspec.convert(x["extended"], c.ExtendedPeriod),
            evidence=None if x.get("evidence") is None else msgspec.convert(x["evidence"], c.ExemptionEvidence),
            new_student=x.get("new_student", False),
            new_students=None
            if x.get("new_students") is None
            else msgspec.convert(x["new_students"], c.NewStudentRule),
        )

    def exemption_for(i: dict[str, Any]) -> Any:
        return ex.exemption_for(
            msgspec.convert(i["policy"], c.WaitingPolicy),
            msgspec.convert(i["evidence"], list[c.ExemptionEvidence]),
            coverage_year=i["coverage_year"],
            business_date=date.fromisoformat(i["business_date"]),
        )

    def gap_years(x: dict[str, Any]) -> Any:
        return g.gap_years(
            msgspec.convert(x["policy"], c.WaitingPolicy),
            coverage_year=x["coverage_year"],
            birth_year=x["birth_year"],
            covered=set(x["covered"]),
            uncovered=set(x["uncovered"]),
        )

    return {
        "percent_of": lambda x: p.percent_of(x["amount_fen"], x["basis_points"]),
        "premium_due": premium_due,
        "household_due": household_due,
        "add_months": lambda x: c.add_months(date.fromisoformat(x["day"]), x["months"]),
        "waiting_period": waiting_period,
        "coverage_for": coverage_for,
        "gap_years": gap_years,
        "age_on_1_january": lambda x: p.age_on_1_january(date.fromisoformat(x["birth_date"]), x["coverage_year"]),
        "exemption_for": exemption_for,
    }


def rule_output(function: str, inputs: dict[str, Any]) -> Any:
    """What the rules answer, as JSON values; an input the rules refuse is `{"error": "refused"}`."""
    try:
        result = _rule_functions()[function](inputs)
    except (ValueError, msgspec.ValidationError):  # CoverageInputError; a policy that does not decode
        return {"error": "refused"}
    return json.loads(msgspec.json.encode(result))


def replay_rules(vector: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for case in vector["cases"]:
        got = rule_output(case["function"], case["input"])
        if got != case["expected"]:  # rule vectors compare in full: every field is a literal
            out.append(f"{case['name']}: expected {case['expected']!r}, got {got!r}")
    return out


# Sync vectors -------------------------------------------------------------------------------------


class _Places:
    """The values a vector names by placeholder: `$DEVICE`, `$CURSOR`, `$PAGE_TOKEN`, and
    `{"$query_code_hash": {household_id, coverage_year, code}}` (keyed with the tablet's key)."""

    def __init__(self, client: SyncClient) -> None:
        self.client = client
        self.cursor: str | None = None
        self.page_token: str | None = None

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            if value == "$DEVICE":
                return str(self.client.device_id)
            if value == "$CURSOR":
                return self.cursor
            if value == "$PAGE_TOKEN":
                return self.page_token
            return value
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, dict):
            if set(value) == {"$query_code_hash"}:
                spec = value["$query_code_hash"]
                digest = self.client.query_code_hash(UUID(spec["household_id"]), spec["coverage_year"], spec["code"])
                # MessagePack carries bytes as bin, JSON as standard base64.
                return digest if self.client.fmt == "msgpack" else base64.b64encode(digest).decode()
            return {k: self.fill(v) for k, v in value.items()}
        return value


async def replay_sync(
    client: SyncClient, vector: dict[str, Any], seen: list[Any] | None = None, other: SyncClient | None = None
) -> list[str]:
    """Sends each step through `client` (in its format) and compares the answers; a step marked
    `"by": "other"` goes through `other`, the world's second tablet. `seen`, when given, receives
    each step's answer as compared (to write or inspect a vector)."""
    devices = {"tablet": _Places(client)} | ({"other": _Places(other)} if other is not None else {})
    for places in devices.values():
        if places.client.store.locked:  # the world's tablets are registered and online: they hold their keys
            await places.client.unlock()
    sent: list[tuple[str, str, Any]] = []
    out: list[str] = []
    for i, step in enumerate(vector["steps"]):
        if "repeat" in step:
            by, path, payload = sent[step["repeat"]]
        else:
            by = step.get("by", "tablet")
            if by not in devices:
                out.append(f"step {i}: no client for {by!r}")
                continue
            kind = "push" if "push" in step else "pull"
            path, payload = f"/api/v1/sync/{kind}", devices[by].fill(step[kind])
        sent.append((by, path, payload))
        places = devices[by]
        try:
            status, got = 200, await places.client.send(path, payload)
        except SyncFailed as exc:
            status, got = exc.status, {"code": exc.code}
        expected = dict(step["expected"])
        if status != expected.pop("status", 200):
            out.append(f"step {i}: status {status} {got}")
            continue
        if path.endswith("/pull") and status == 200:
            if not got.get("has_more") and got.get("cursor") is None:
                out.append(f"step {i}: the last page of a pull carries no cursor")
            places.page_token = got.get("page_token")
            if got.get("cursor") is not None:
                places.cursor = got["cursor"]
            if got.get("query_code_key") is not None:
                places.client.keep_query_code_key(got["query_code_key"])
            got = _pull_view(got)
        if seen is not None:
            seen.append(got)
        out += [f"step {i}: {x}" for x in subset_mismatches(got, expected)]
    return out


def _pull_view(page: dict[str, Any]) -> dict[str, Any]:
    """A pull page as vectors state it (server-made ids differ from run to run): `upserts` and
    `tombstones` count the changes by entity, `rows` holds each upserted row under "entity:id",
    `gone` each tombstone's "entity:id"."""
    upserts: dict[str, int] = {}
    tombstones: dict[str, int] = {}
    rows: dict[str, Any] = {}
    gone: dict[str, bool] = {}
    for change in page.get("changes", []):
        if change["type"] == "upsert":
            row = change["row"]
            upserts[row["type"]] = upserts.get(row["type"], 0) + 1
            rows[f"{row['type']}:{row['id']}"] = row
        else:
            tombstones[change["entity"]] = tombstones.get(change["entity"], 0) + 1
            gone[f"{change['entity']}:{change['id']}"] = True
    return {**page, "upserts": upserts, "tombstones": tombstones, "rows": rows, "gone": gone}
