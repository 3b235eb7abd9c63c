"""A policy version's rules as one document: what the server stores and a tablet receives with
each `policy_version` row, to compute premiums, subsidies and coverage dates offline.

A wire type: unknown fields are ignored (a newer server may send more), new fields come at the end
with defaults. The server's input type for a new version refuses unknown fields
(`backend.policy.service.PolicyRules`, a subclass).
"""

from __future__ import annotations

import msgspec

from mobile_sync_protocol.rules.continuity import SeriousIllnessIncentive
from mobile_sync_protocol.rules.coverage import ExtendedPeriod, NewStudentRule, WaitingPolicy
from mobile_sync_protocol.rules.premium import CategorySubsidy, TopUp


class PolicyRules(msgspec.Struct, frozen=True, kw_only=True):
    """Everything of a version besides premium and window: stored as one JSON document."""

    categories: tuple[CategorySubsidy, ...] = ()
    categories_stack: bool = False
    top_ups: tuple[TopUp, ...] = ()
    waiting: WaitingPolicy = WaitingPolicy()
    # Cases in which money is given back after remittance (typically double enrolment).
    refundable_reasons: tuple[str, ...] = ("double_enrolment", "employee_insurance", "overpayment", "deceased")
    # An extended payment period after the window (Fujian: 1 Jan – end of Feb of the coverage
    # year): paid in it without a counted gap, covered from the day of payment. None: no such period.
    extended_payment: ExtendedPeriod | None = None

    # --- Continuity incentives (issue 17 point 3, 国办发〔2024〕38号) -----------------------------
    # The serious-illness insurance ceiling and its raises (rules/continuity.py); None: the year's
    # policy carries no incentive (no ceiling is shown).
    serious_illness: SeriousIllnessIncentive | None = None

    # --- New university students (闽政办〔2025〕3号 §1) ------------------------------------------
    # Enrolled at their school as new students, continuously insured and paid in the window:
    # covered from this day of the year before (rules/coverage.py, rule 1a). None: no such rule.
    new_students: NewStudentRule | None = None
