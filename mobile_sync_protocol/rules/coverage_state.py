"""Whether a person's cover is in force on a date, and why not, in plain words.

One rule for the resident's own view and the hospitals' eligibility check: cover follows payment,
so a paid enrolment awaiting review is in force (SPEC §2); a reviewer's backlog never denies care.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

import msgspec

__all__ = ["CoverageState", "CoverageStateCode", "coverage_state"]

CoverageStateCode = Literal[
    "in_force",
    "waiting_period",  # funded, the waiting period runs until `starts_on`
    "not_started",  # funded, cover starts later without a waiting period (e.g. on 1 January)
    "ended",
    "no_cover_this_year",  # funded, but the waiting period runs past the year's end
    "unpaid",  # registered, the premium not (fully) paid
    "cancelled",
    "not_enrolled",
]

FUNDED = frozenset({"paid", "subsidised", "confirmed"})

_CANCEL_WORDS = {
    "employee_insurance": "the person is insured as an employee",
    "deceased": "the person has died",
    "duplicate": "the person was enrolled twice",
    "moved_away": "the person moved away",
    "data_error": "it was entered in error",
}


class CoverageState(msgspec.Struct, frozen=True, kw_only=True):
    in_force: bool
    code: CoverageStateCode
    starts_on: date | None  # when cover not yet in force will start
    words: str


def coverage_state(
    *,
    year: int,
    on: date,
    status: str | None,
    start: date | None,
    end: date | None,
    reason_code: str | None = None,
    cancel_reason: str | None = None,
) -> CoverageState:
    """The state on `on` of an enrolment for `year` (`status` None: no enrolment at all).

    `start`, `end` and `reason_code` are the enrolment's coverage dates and reason (set when it was
    funded); `cancel_reason` the code it was cancelled with.
    """
    if status is None:
        return CoverageState(in_force=False, code="not_enrolled", starts_on=None, words=f"Not enrolled for {year}.")
    if status == "cancelled":
        why = _CANCEL_WORDS.get(cancel_reason or "", "")
        return CoverageState(
            in_force=False,
            code="cancelled",
            starts_on=None,
            words=f"The enrolment for {year} was cancelled" + (f" because {why}." if why else "."),
        )
    if status not in FUNDED:
        return CoverageState(
            in_force=False,
            code="unpaid",
            starts_on=None,
            words=f"Enrolled for {year}, but the premium has not been paid: no cover until it is paid.",
        )
    if start is None or end is None:
        return CoverageState(
            in_force=False,
            code="no_cover_this_year",
            starts_on=None,
            words=f"Paid, but the waiting period runs past the end of {year}: no cover this year.",
        )
    if on < start:
        if reason_code == "waiting_period":
            return CoverageState(
                in_force=False,
                code="waiting_period",
                starts_on=start,
                words=f"In the waiting period: covered from {start.isoformat()}.",
            )
        return CoverageState(
            in_force=False, code="not_started", starts_on=start, words=f"Cover starts on {start.isoformat()}."
        )
    if on > end:
        return CoverageState(in_force=False, code="ended", starts_on=None, words=f"Cover ended on {end.isoformat()}.")
    awaiting = " (the enrolment awaits review; cover is in force meanwhile)" if status != "confirmed" else ""
    return CoverageState(
        in_force=True,
        code="in_force",
        starts_on=None,
        words=f"Covered from {start.isoformat()} to {end.isoformat()}{awaiting}.",
    )
