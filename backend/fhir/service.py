"""Partners' client-credential tokens, the eligibility check and the Coverage search.

A partner asks about one person at a time, identified in the body (never the URL), and only
about enrolments in its own district; every answer is audited as a read of personal data.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import msgspec

from backend import crypto
from backend.actor import Actor, Scope, scope_args
from backend.audit.service import persons, record
from backend.auth.middleware import partner_credential_id
from backend.auth.service import AuthContext, release_attempts, reserve_attempts
from backend.auth.tokens import ACT_PARTNER, SCOPE_FHIR, AccessClaims, encode_access, epoch
from backend.crypto import ID_NUMBER
from backend.db import Connection, load_queries
from backend.enrollment import explain
from backend.enrollment.continuity import CeilingView, ceilings
from backend.errors import DomainError, InvalidInput
from backend.fhir import resources
from backend.i18n import _
from backend.ids import uuid7
from mobile_sync_protocol.rules.coverage_state import FUNDED, coverage_state
from mobile_sync_protocol.rules.identity import IdentityNumberError, parse_resident_id

Q = load_queries("backend.fhir")

_DUMMY_SECRET_HASH = hashlib.sha256(b"canbao-no-such-partner").digest()


class InvalidClient(DomainError):
    """Client id or secret is wrong"""

    status, code = 401, "invalid_client"


class PartnerToken(msgspec.Struct, frozen=True):
    access_token: str
    expires_in: int
    scope: str = SCOPE_FHIR
    token_type: str = "bearer"  # noqa: S105 (a token type, not a secret)


async def partner_token(ctx: AuthContext, client_id: str, client_secret: str, client_addr: str) -> PartnerToken:
    """OAuth 2.0 client credentials: a short-lived token for /fhir, bound to the current secret."""
    keys = [ctx.key.keyed_hash("partner-client", client_id), ctx.key.keyed_hash("partner-addr", client_addr)]
    async with ctx.pool.acquire() as conn:
        await reserve_attempts(conn, ctx, keys)  # autocommit: failures count although the request fails
        row = await conn.fetchrow(Q["partner_by_client_id"], client_id)
        stored = row["secret_hash"] if row is not None else _DUMMY_SECRET_HASH
        ok = hmac.compare_digest(stored, hashlib.sha256(client_secret.encode()).digest())
        if not (ok and row is not None and row["active"]):
            await record(
                conn,
                None,
                "login_failed",
                "partner",
                row["id"] if row else None,
                division_code=row["division_code"] if row else None,
                summary={"reason": "disabled" if ok and row is not None else "credentials"},
            )
            raise InvalidClient()
        async with conn.transaction():
            await release_attempts(conn, keys)
            actor = Actor(kind="partner", id=row["id"], role=None, scope=Scope(row["division_code"], row["level"]))
            await record(conn, actor, "login", "partner", row["id"], division_code=row["division_code"])
    now = epoch(datetime.now(UTC))
    ttl = ctx.settings.partner_token_ttl_s
    claims = AccessClaims(
        sub=row["id"],
        sid=partner_credential_id(row["secret_hash"]),
        act=ACT_PARTNER,
        scope=SCOPE_FHIR,
        jti=uuid7(),
        iat=now,
        exp=now + ttl,
    )
    return PartnerToken(access_token=encode_access(ctx.key, claims), expires_in=ttl)


# Request parsing ---------------------------------------------------------------------------------


def _resident_number(identifier: Any, field: str, today: date) -> str:
    if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
        raise InvalidInput(field, _("must be an Identifier with a value"))
    system = identifier.get("system")
    if system not in (None, resources.RESIDENT_ID_SYSTEM):
        raise InvalidInput(f"{field}.system", _("only {system} is known here", system=resources.RESIDENT_ID_SYSTEM))
    try:
        return parse_resident_id(identifier["value"], today=today).number
    except IdentityNumberError as exc:
        raise InvalidInput(f"{field}.value", _(exc.template, **exc.params), reason=exc.code) from exc


def _patient_number(body: dict[str, Any], today: date) -> str:
    """The one person asked about: `patient.identifier`, or a contained Patient it references."""
    patient = body.get("patient")
    if not isinstance(patient, dict):
        raise InvalidInput("patient", _("is required: a Reference to the person, by identifier"))
    if "identifier" in patient:
        return _resident_number(patient["identifier"], "patient.identifier", today)
    reference = patient.get("reference")
    if isinstance(reference, str) and reference.startswith("#"):
        for i, contained in enumerate(body.get("contained") or []):
            if (
                isinstance(contained, dict)
                and contained.get("resourceType") == "Patient"
                and contained.get("id") == reference[1:]
            ):
                ids = [x for x in contained.get("identifier") or [] if isinstance(x, dict)]
                ours = [x for x in ids if x.get("system") in (None, resources.RESIDENT_ID_SYSTEM)]
                if len(ours) != 1:
                    raise InvalidInput(f"contained[{i}].identifier", _("must hold exactly one resident ID number"))
                return _resident_number(ours[0], f"contained[{i}].identifier", today)
    raise InvalidInput("patient", _("must carry an identifier, or reference a contained Patient that has one"))


def _serviced_date(body: dict[str, Any], today: date) -> date:
    raw = body.get("servicedDate")
    field = "servicedDate"
    if raw is None and isinstance(body.get("servicedPeriod"), dict):
        raw, field = body["servicedPeriod"].get("start"), "servicedPeriod.start"
    if raw is None:
        return today
    try:
        return date.fromisoformat(str(raw)[:10])
    except ValueError:
        raise InvalidInput(field, _("must be a date (YYYY-MM-DD)")) from None


def _request_reference(body: dict[str, Any]) -> dict[str, Any]:
    identifiers = body.get("identifier")
    if isinstance(identifiers, list) and identifiers and isinstance(identifiers[0], dict):
        return {"identifier": identifiers[0]}
    if isinstance(body.get("id"), str):
        return {"reference": f"CoverageEligibilityRequest/{body['id']}"}
    return {"display": _("The CoverageEligibilityRequest this answers")}


# Answers -----------------------------------------------------------------------------------------


_ENROLMENT = (
    "id",
    "coverage_year",
    "status",
    "coverage_start",
    "coverage_end",
    "coverage_reason",
    "coverage_note",
    "coverage_facts",
    "cancel_reason",
    "village_code",
)


async def _enrollments(
    conn: Connection, actor: Actor, number: str, years: tuple[int, int] | None
) -> tuple[UUID | None, list[dict[str, Any]]]:
    """The person's enrolments in scope (of the years `years` from … to, else all), newest year
    first; a year with no live enrolment that the imported history marks paid, subsidised or
    confirmed is covered by it (`explain.history_cover`)."""
    first, last = years or (None, None)
    found = await conn.fetch(
        Q["coverage_of_person"], crypto.keys().index(ID_NUMBER, number), *scope_args(actor), first, last
    )
    if not found:
        return None, []
    person_id: UUID = found[0]["person_id"]
    rows = [{k: r[k] for k in _ENROLMENT} for r in found if r["coverage_year"] is not None and not r["history"]]
    live = {r["coverage_year"] for r in rows if r["status"] != "cancelled"}
    for h in found:
        if h["history"] and h["coverage_year"] not in live:
            history = {
                "id": f"history-{h['coverage_year']}-{person_id}",
                "coverage_year": h["coverage_year"],
                "village_code": h["village_code"],
                **explain.history_cover(h["coverage_year"], h["status"]),
            }
            rows.append(history)
    # Newest year first, in a year the live (or history) cover before cancelled enrolments.
    rows.sort(key=lambda r: (-r["coverage_year"], r["status"] == "cancelled"))
    return person_id, rows


async def _ceilings(
    conn: Connection, person_id: UUID | None, rows: list[dict[str, Any]], today: date
) -> dict[int, CeilingView]:
    """The person's serious-illness ceiling of each year the rows show active cover in (by year)."""
    if person_id is None:
        return {}
    years = sorted({r["coverage_year"] for r in rows if resources.COVERAGE_STATUS[r["status"]] == "active"})
    found: dict[int, CeilingView] = {}
    for year in years:  # a person's few years, one query each
        ceiling = (await ceilings(conn, [person_id], year, today)).get(person_id)
        if ceiling is not None:
            found[year] = ceiling
    return found


def _in_force(enrollment: dict[str, Any] | None, on: date) -> bool:
    """Whether a row of `_enrollments` gives cover on `on`: funded, and `on` within its dates."""
    if enrollment is None or enrollment["status"] not in FUNDED or enrollment["coverage_start"] is None:
        return False
    return bool(enrollment["coverage_start"] <= on <= enrollment["coverage_end"])


async def eligibility(
    conn: Connection, actor: Actor, body: Any, today: date, *, reads: Connection | None = None
) -> dict[str, Any]:
    """The answer is read on `reads` (a replica, backend.replicas) when given; the audit row is
    written on `conn`, the primary."""
    reads = reads or conn
    if not isinstance(body, dict) or body.get("resourceType") != "CoverageEligibilityRequest":
        raise InvalidInput("resourceType", _("must be {resource_type}", resource_type="CoverageEligibilityRequest"))
    purpose = body.get("purpose")
    if purpose is not None and (not isinstance(purpose, list) or "validation" not in purpose):
        raise InvalidInput("purpose", _("only validation (is the person covered?) is answered here"))
    number = _patient_number(body, today)
    serviced = _serviced_date(body, today)
    # The next year's too, in the same round trip: a new university student's cover for the next
    # year starts in this one (1 September); in force on the date, it answers.
    person_id, both = await _enrollments(reads, actor, number, (serviced.year, serviced.year + 1))
    rows = [r for r in both if r["coverage_year"] == serviced.year]
    enrollment = rows[0] if rows else None
    later = [r for r in both if r["coverage_year"] == serviced.year + 1]
    if not _in_force(enrollment, serviced) and later and _in_force(later[0], serviced):
        rows = later
        enrollment = later[0]
    year = enrollment["coverage_year"] if enrollment else serviced.year
    ceiling_of = await _ceilings(reads, person_id, rows[:1], today)
    state = coverage_state(
        year=year,
        on=serviced,
        status=explain.state_status(enrollment) if enrollment else None,
        start=enrollment["coverage_start"] if enrollment else None,
        end=enrollment["coverage_end"] if enrollment else None,
        reason_code=enrollment["coverage_reason"] if enrollment else None,
        cancel_reason=enrollment["cancel_reason"] if enrollment else None,
    )
    answer = resources.eligibility_response(
        response_id=uuid7(),
        created=datetime.now(UTC).replace(microsecond=0),
        request=_request_reference(body),
        patient={"identifier": resources.resident_identifier(number)},
        serviced=serviced,
        state=state,
        enrollment=enrollment,
        ceiling=ceiling_of.get(year),
    )
    await record(
        conn,
        actor,
        "read",
        "coverage_eligibility",
        person_id,
        division_code=enrollment["village_code"] if enrollment else actor.scope.division_code,
        summary={
            "serviced": serviced.isoformat(),
            "inforce": state.in_force,
            "state": state.code,
            "response_id": answer["id"],
            **persons([person_id]),
        },
    )
    return answer


SEARCH_PARAMETERS = frozenset({"identifier"})


async def search_coverage(
    conn: Connection,
    actor: Actor,
    form: list[tuple[str, str]],
    today: date,
    self_url: str,
    *,
    reads: Connection | None = None,
) -> dict[str, Any]:
    """Coverage/_search with exactly one `identifier` (`[system|]value`) in the form body; read on
    `reads` when given (a replica), the audit row written on `conn`."""
    reads = reads or conn
    unknown = sorted({k for k, _value in form} - SEARCH_PARAMETERS)
    if unknown:
        raise InvalidInput(unknown[0], _("is not a supported search parameter (only identifier)"))
    values = [v for k, v in form if k == "identifier"]
    if len(values) != 1 or "," in values[0]:
        raise InvalidInput("identifier", _("exactly one identifier: one person at a time"))
    system, bar, value = values[0].rpartition("|")
    identifier = {"system": system, "value": value} if bar and system else {"value": value}
    number = _resident_number(identifier, "identifier", today)
    person_id, rows = await _enrollments(reads, actor, number, None)
    ceiling_of = await _ceilings(reads, person_id, rows, today)
    found = [
        resources.coverage(r, resources.resident_identifier(number), ceiling=ceiling_of.get(r["coverage_year"]))
        for r in rows
    ]
    bundle = resources.searchset(uuid7(), datetime.now(UTC).replace(microsecond=0), self_url, found)
    await record(
        conn,
        actor,
        "read",
        "coverage",
        person_id,
        division_code=rows[0]["village_code"] if rows else actor.scope.division_code,
        summary={"search": "Coverage", "results": len(found), "bundle_id": bundle["id"], **persons([person_id])},
    )
    return bundle
