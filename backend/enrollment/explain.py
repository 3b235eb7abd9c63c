"""An enrolment's cover in the reader's language: the state on a date, and why the cover starts
when it does, put into words when read (the resident's view, the partners' FHIR answers).

The rules (mobile_sync_protocol/rules) decide and keep English for the tablet; what they decided
is stored as facts (`enrollments.coverage_facts`, `CoverageFacts`), and said here with `_()` and
`ngettext()`. An enrolment funded before the facts were stored shows its English `coverage_note`.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import msgspec

from backend.i18n import N_, _, ngettext, terms
from mobile_sync_protocol.rules.coverage import CoverageFacts, ExemptionEvidence
from mobile_sync_protocol.rules.coverage_state import CoverageState

__all__ = [
    "HISTORY",
    "HISTORY_NAME",
    "cover_words",
    "coverage_facts",
    "day",
    "evidence_words",
    "explanation",
    "history_cover",
    "history_words",
    "state_status",
    "state_words",
]

# The coverage reason of a year that the imported enrolment history (参保历史, `enrollment_history`)
# marks paid, subsidised or confirmed, with no enrolment here: the history row gives cover for the
# whole year (the old system's exact dates are not known), shown like an enrolment.
HISTORY = "history"
HISTORY_NAME = N_("Covered according to the imported enrolment history")  # the reason's name
HISTORY_FUNDED = frozenset({"paid", "subsidised", "confirmed"})

# The groups exempt from waiting (mobile_sync_protocol/rules/coverage.py EXEMPT_GROUP_CODES).
EXEMPT_GROUPS = {
    "newborn": N_("a newborn"),
    "newly_recognised_assistance": N_(
        "newly recognised as a person in extreme poverty, a minimum living allowance recipient or a person "
        "monitored against falling back into poverty"
    ),
    "medical_assistance": N_("a recipient of medical assistance"),
    "discharged_soldier": N_("a soldier discharged from active service this year"),
    "left_employee_insurance": N_("a person who switched from employee medical insurance without a long break"),
}


def day(value: date) -> str:
    """A date as a sentence writes it: 2027-06-01 (en), 2027年6月1日 (zh_CN)."""
    return _("{year}-{month:02}-{day:02}", year=value.year, month=value.month, day=value.day)


def state_words(
    state: CoverageState,
    *,
    year: int,
    status: str | None,
    start: date | None,
    end: date | None,
    cancel_reason: str | None,
) -> str:
    """The state of an enrolment on a date (`coverage_state` of the same enrolment), as the
    reader's language says it."""
    if state.code == "not_enrolled":
        return _("Not enrolled for {year}.", year=year)
    if state.code == "cancelled":
        if cancel_reason:
            return _(
                "The enrolment for {year} was cancelled: {reason}.",
                year=year,
                reason=terms.name("cancel_reason", cancel_reason),
            )
        return _("The enrolment for {year} was cancelled.", year=year)
    if state.code == "unpaid":
        return _("Enrolled for {year}, but the premium has not been paid: no cover until it is paid.", year=year)
    if state.code == "no_cover_this_year":
        return _("Paid, but the waiting period runs past the end of {year}: no cover this year.", year=year)
    if state.code == "waiting_period" and state.starts_on is not None:
        return _(
            "In the waiting period until {last_day}: covered from {start}.",
            last_day=day(state.starts_on - timedelta(days=1)),
            start=day(state.starts_on),
        )
    if state.code == "not_started" and state.starts_on is not None:
        return _("Cover starts on {start}.", start=day(state.starts_on))
    if state.code == "ended" and end is not None:
        return _("Cover ended on {end}.", end=day(end))
    if state.code == "in_force" and start is not None and end is not None:
        if status != "confirmed":
            return _(
                "Covered from {start} to {end} (the enrolment awaits review; cover is in force meanwhile).",
                start=day(start),
                end=day(end),
            )
        return _("Covered from {start} to {end}.", start=day(start), end=day(end))
    return state.words  # (a state the rules added since: their English)


def history_cover(year: int, status: str) -> dict[str, Any]:
    """A year the imported history marks `status` (paid, subsidised or confirmed) as the columns of
    an enrolment row the views read: covered from 1 January to 31 December, reason `history`."""
    return {
        "status": status,
        "coverage_start": date(year, 1, 1),
        "coverage_end": date(year, 12, 31),
        "coverage_reason": HISTORY,
        "coverage_note": history_words(year, status),
        "coverage_facts": None,
        "cancel_reason": None,
        "premium_fen": None,
        "subsidy_fen": None,
    }


def history_words(year: int, status: str) -> str:
    return _(
        "Covered for {year} according to the enrolment history imported from the previous system ({status}).",
        year=year,
        status=terms.name("enrollment_status", status),
    )


def state_status(row: Any) -> str | None:
    """The status a row's state is told from: a history year is settled (never "awaits review")."""
    status: str | None = row["status"]
    return "confirmed" if row["coverage_reason"] == HISTORY and status in HISTORY_FUNDED else status


def coverage_facts(stored: Any) -> CoverageFacts | None:
    """The facts kept with an enrolment (jsonb), or None when it has none or they do not decode."""
    if stored is None:
        return None
    try:
        return msgspec.convert(stored, CoverageFacts)
    except msgspec.ValidationError:
        return None


def cover_words(facts: CoverageFacts) -> str:
    """Why the cover is what it is: how the person enrolled, the waiting period if any, the cover."""
    enrolled = day(facts.business_date)
    if facts.rule == "newborn":
        why = ngettext(
            "Enrolled on {date}, within {n} day of birth: no waiting period, covered from birth",
            "Enrolled on {date}, within {n} days of birth: no waiting period, covered from birth",
            facts.newborn_days or 0,
            date=enrolled,
        )
        if facts.born_before_year:
            why = _("{why}, which in {year} means from 1 January", why=why, year=facts.coverage_year)
    elif facts.rule == "in_window":
        why = _(
            "Enrolled on {date}, before the enrolment window closed on {window_end}: no waiting period",
            date=enrolled,
            window_end=day(facts.window_end),
        )
    elif facts.rule == "extended_period":
        why = _(
            "Enrolled on {date}, in the extended payment period ending {extended_end}: no waiting period",
            date=enrolled,
            extended_end=day(facts.extended_end) if facts.extended_end else "?",
        )
    elif facts.rule == "new_student":
        why = _(
            "Enrolled on {date} as a new university student, in the enrolment window from {window_start} to "
            "{window_end}, without a gap: covered from the start of the school year",
            date=enrolled,
            window_start=day(facts.window_start) if facts.window_start else "?",
            window_end=day(facts.window_end),
        )
    elif facts.rule == "exempt":
        group = EXEMPT_GROUPS.get(facts.exemption or "")
        why = _(
            "Enrolled on {date}, {late_or_gap}; exempt from the waiting period as {group}",
            date=enrolled,
            late_or_gap=_late_or_gap(facts),
            group=_(group) if group else (facts.exemption or ""),
        )
        if facts.evidence is not None:
            why = _("{why} ({evidence})", why=why, evidence=evidence_words(facts.evidence))
    else:
        why = _(
            "Enrolled on {date}, {late_or_gap}; {waiting}",
            date=enrolled,
            late_or_gap=_late_or_gap(facts),
            waiting=_waiting_words(facts),
        )
    if facts.new_student and facts.rule != "new_student":
        why = _(
            "{why} (enrolled as a new university student, but the student rule needs payment in the window "
            "without a gap)",
            why=why,
        )
    if facts.start is None or facts.end is None:
        would = facts.would_start or date(facts.coverage_year + 1, 1, 1)
        return _(
            "{why}; cover would start on {start}, after the end of {year}: no cover this year.",
            why=why,
            start=day(would),
            year=facts.coverage_year,
        )
    if facts.rule == "waiting_period":
        return _(
            "{why}; waiting until {last_day}, covered from {start} to {end}.",
            why=why,
            last_day=day(facts.start - timedelta(days=1)),
            start=day(facts.start),
            end=day(facts.end),
        )
    return _("{why}; covered from {start} to {end}.", why=why, start=day(facts.start), end=day(facts.end))


def evidence_words(evidence: ExemptionEvidence) -> str:
    """What showed an exemption: the list row (type, version, row and its dates) or the accepted claim."""
    if evidence.source == "claim":
        words = _(
            "shown by accepted claim {claim_id} ({list})",
            claim_id=evidence.claim_id,
            list=terms.name("list_type", evidence.list_type),
        )
    else:
        words = _(
            "shown by the list {list} ({list_type}) version {version} row {row}",
            list=terms.name("list_type", evidence.list_type),
            list_type=evidence.list_type,
            version=evidence.version,
            row=evidence.row,
        )
    if evidence.valid_from is not None and evidence.valid_to is not None:
        words += _(", from {start} to {end}", start=day(evidence.valid_from), end=day(evidence.valid_to))
    elif evidence.valid_from is not None:
        words += _(", from {start}", start=day(evidence.valid_from))
    return words


def _late_or_gap(facts: CoverageFacts) -> str:
    parts = []
    if facts.late:
        parts.append(_("after the enrolment window closed on {window_end}", window_end=day(facts.window_end)))
    if facts.counted_gap_years:
        parts.append(ngettext("after {n} year without cover", "after {n} years without cover", facts.counted_gap_years))
    return _(" and ").join(parts)


def _waiting_words(facts: CoverageFacts) -> str:
    waiting = facts.waiting
    if waiting is None:
        return _("waiting period")
    words = ngettext(
        "waiting period of {n} month: {fixed} fixed",
        "waiting period of {n} months: {fixed} fixed",
        waiting.months,
        fixed=waiting.fixed_months,
    )
    if waiting.gap_months:
        words += _(" + {months} for the gap", months=waiting.gap_months)
    if waiting.repaired_months:
        words += _(" - {months} repaired by paying back", months=waiting.repaired_months)
    if waiting.minimum_applied:
        words += ngettext(
            ", raised to the minimum of {months} after a gap of {n} year or more",
            ", raised to the minimum of {months} after a gap of {n} years or more",
            facts.long_gap_years or 0,
            months=facts.long_gap_min_months or 0,
        )
    return words


def explanation(row: Any, state: CoverageState, year: int) -> tuple[str, str | None]:
    """The state's words and, for a live funded enrolment, why its cover is what it is: from the
    stored facts, or the stored English note of an enrolment funded before facts were kept.
    `row` holds status, coverage_start, coverage_end, cancel_reason, coverage_facts, coverage_note."""
    words = state_words(
        state,
        year=year,
        status=state_status(row),
        start=row["coverage_start"],
        end=row["coverage_end"],
        cancel_reason=row["cancel_reason"],
    )
    if row["status"] in (None, "cancelled"):
        return words, None
    if row["coverage_reason"] == HISTORY:
        return words, history_words(year, row["status"])
    facts = coverage_facts(row["coverage_facts"])
    why: str | None = cover_words(facts) if facts is not None else row["coverage_note"]
    return words, why
