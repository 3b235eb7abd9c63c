"""FHIR R4 resources as plain dicts: Coverage, CoverageEligibilityResponse, a searchset Bundle,
OperationOutcome. Built here, validated in the tests with the `fhir.resources` models.

Codes and extensions of our own live under https://canbao.dev/fhir/. Texts people read (`display`,
`text`, `disposition`, OperationOutcome diagnostics) are in the request's language; codes are not.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

from backend.enrollment import explain
from backend.enrollment.continuity import CeilingView
from backend.i18n import N_, _
from mobile_sync_protocol.rules.coverage_state import CoverageState

FHIR_JSON = "application/fhir+json"

BASE = "https://canbao.dev/fhir"
RESIDENT_ID_SYSTEM = f"{BASE}/sid/resident-id-number"  # 公民身份号码, 18 characters
EXT_COVERAGE_STATE = f"{BASE}/StructureDefinition/coverage-state"
EXT_COVER_STARTS_ON = f"{BASE}/StructureDefinition/cover-starts-on"
EXT_ENROLLMENT_STATUS = f"{BASE}/StructureDefinition/enrollment-status"
EXT_COVERAGE_REASON = f"{BASE}/StructureDefinition/coverage-reason"
# The serious-illness insurance ceiling of the year with its reasons (issue 17 point 3): a complex
# extension of ceiling, original (Money), continuousYears, zeroReimbursementYear and reason (each
# coded, with its words).
EXT_SERIOUS_ILLNESS_CEILING = f"{BASE}/StructureDefinition/serious-illness-ceiling"
CS_CEILING_REASON = f"{BASE}/CodeSystem/serious-illness-ceiling-reason"
CS_COVERAGE_STATE = f"{BASE}/CodeSystem/coverage-state"
CS_PROBLEM = "https://canbao.dev/problems"
CS_PLAN = f"{BASE}/CodeSystem/insurance-plan"
COVERAGE_CLASS = "http://terminology.hl7.org/CodeSystem/coverage-class"

PAYOR = N_("Urban-rural resident basic medical insurance")

# Enrolment status → Coverage.status: cover follows payment, so paid awaiting review is active.
COVERAGE_STATUS = {
    "registered": "draft",
    "paid": "active",
    "subsidised": "active",
    "confirmed": "active",
    "cancelled": "cancelled",
}


def resident_identifier(number: str) -> dict[str, Any]:
    return {"system": RESIDENT_ID_SYSTEM, "value": number}


def money(fen: int) -> dict[str, Any]:
    return {"value": fen // 100 if fen % 100 == 0 else fen / 100, "currency": "CNY"}


def ceiling_extension(ceiling: CeilingView) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"url": "ceiling", "valueMoney": money(ceiling.ceiling_fen)},
        {"url": "original", "valueMoney": money(ceiling.original_fen)},
        {"url": "continuousYears", "valueUnsignedInt": ceiling.continuous_years},
    ]
    if ceiling.zero_claim_year is not None:
        parts.append({"url": "zeroReimbursementYear", "valueInteger": ceiling.zero_claim_year})
    parts.extend(
        {
            "url": "reason",
            "valueCodeableConcept": {"coding": [{"system": CS_CEILING_REASON, "code": code}], "text": words},
        }
        for code, words in zip(ceiling.reason_codes, ceiling.reasons, strict=True)
    )
    parts.append({"url": "text", "valueString": ceiling.words})
    return {"url": EXT_SERIOUS_ILLNESS_CEILING, "extension": parts}


def coverage(
    enrollment: dict[str, Any],
    identifier: dict[str, Any],
    *,
    local_id: str | None = None,
    ceiling: CeilingView | None = None,
) -> dict[str, Any]:
    """One enrolment (one person, one coverage year) as a Coverage. `local_id` names it when
    contained; `ceiling`, the person's serious-illness ceiling of the year (active cover only)."""
    year = enrollment["coverage_year"]
    resource: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": local_id or str(enrollment["id"]),
        "extension": [{"url": EXT_ENROLLMENT_STATUS, "valueCode": enrollment["status"]}],
        "status": COVERAGE_STATUS[enrollment["status"]],
        "type": {"coding": [{"system": CS_PLAN, "code": "urrbmi", "display": _(PAYOR)}]},
        "beneficiary": {"identifier": identifier},
        "payor": [{"display": _(PAYOR)}],
        "class": [
            {
                "type": {"coding": [{"system": COVERAGE_CLASS, "code": "plan"}]},
                "value": str(year),
                "name": _("Coverage year {year}", year=year),
            }
        ],
    }
    facts = explain.coverage_facts(enrollment.get("coverage_facts"))
    why = explain.cover_words(facts) if facts is not None else enrollment["coverage_note"]
    if why and enrollment["status"] != "cancelled":
        resource["extension"].append({"url": EXT_COVERAGE_REASON, "valueString": why})
    if ceiling is not None and COVERAGE_STATUS[enrollment["status"]] == "active":
        resource["extension"].append(ceiling_extension(ceiling))
    if enrollment["coverage_start"] is not None:
        resource["period"] = {
            "start": enrollment["coverage_start"].isoformat(),
            "end": enrollment["coverage_end"].isoformat(),
        }
    return resource


def eligibility_response(
    *,
    response_id: UUID,
    created: datetime,
    request: dict[str, Any],
    patient: dict[str, Any],
    serviced: date,
    state: CoverageState,
    enrollment: dict[str, Any] | None,
    ceiling: CeilingView | None = None,
) -> dict[str, Any]:
    """The answer to a CoverageEligibilityRequest (purpose validation) for one person and date."""
    words = explain.state_words(
        state,
        year=serviced.year,
        status=explain.state_status(enrollment) if enrollment else None,
        start=enrollment["coverage_start"] if enrollment else None,
        end=enrollment["coverage_end"] if enrollment else None,
        cancel_reason=enrollment["cancel_reason"] if enrollment else None,
    )
    state_ext: list[dict[str, Any]] = [
        {
            "url": EXT_COVERAGE_STATE,
            "valueCodeableConcept": {
                "coding": [{"system": CS_COVERAGE_STATE, "code": state.code}],
                "text": words,
            },
        }
    ]
    if state.starts_on is not None:
        state_ext.append({"url": EXT_COVER_STARTS_ON, "valueDate": state.starts_on.isoformat()})
    insurance: dict[str, Any] = {
        "extension": state_ext,
        "coverage": {"reference": "#coverage"}
        if enrollment is not None
        else {"display": _("No enrolment for {year}", year=serviced.year)},
        "inforce": state.in_force,
    }
    resource: dict[str, Any] = {
        "resourceType": "CoverageEligibilityResponse",
        "id": str(response_id),
        "status": "active",
        "purpose": ["validation"],
        "patient": patient,
        "servicedDate": serviced.isoformat(),
        "created": created.isoformat(),
        "request": request,
        "outcome": "complete",
        "disposition": words,
        "insurer": {"display": _(PAYOR)},
        "insurance": [insurance],
    }
    if enrollment is not None:
        resource["contained"] = [
            coverage(enrollment, patient.get("identifier") or {}, local_id="coverage", ceiling=ceiling)
        ]
        if enrollment["coverage_start"] is not None:
            insurance["benefitPeriod"] = {
                "start": enrollment["coverage_start"].isoformat(),
                "end": enrollment["coverage_end"].isoformat(),
            }
    return resource


def searchset(bundle_id: UUID, timestamp: datetime, self_url: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": str(bundle_id),
        "type": "searchset",
        "timestamp": timestamp.isoformat(),
        "total": len(resources),
        "link": [{"relation": "self", "url": self_url}],
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r, "search": {"mode": "match"}} for r in resources],
    }


# HTTP status → OperationOutcome.issue.code (FHIR issue-type).
_ISSUE_TYPE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
}


def operation_outcome(status: int, problem: dict[str, Any]) -> dict[str, Any]:
    """A problem+json body as an OperationOutcome: the stable `code` becomes the issue's detail code."""
    issue: dict[str, Any] = {
        "severity": "error" if status < 500 else "fatal",
        "code": _ISSUE_TYPE.get(status, "exception"),
        "details": {
            "coding": [{"system": CS_PROBLEM, "code": problem.get("code", "error")}],
            "text": problem.get("title") or _("Request cannot be processed"),
        },
    }
    if problem.get("detail"):
        issue["diagnostics"] = problem["detail"]
    fields = [e["field"] for e in problem.get("errors", []) if isinstance(e, dict) and e.get("field")]
    if fields:
        issue["expression"] = fields
    return {"resourceType": "OperationOutcome", "issue": [issue]}
