"""The names people read beside the codes machines use: subsidy categories, list types, enrolment
states, coverage reasons, payment methods. A code without a name here is shown as its code; the
test in tests/i18n/ walks the codes the code base defines and fails on one without a name.

The Chinese names are the official ones (docs/glossary.md); English is for developers.
"""

from __future__ import annotations

from backend.i18n import N_, _

# 医疗救助对象 and the other groups a civil-affairs list names (backend/eligibility/importer.py).
LIST_TYPES = {
    "te_kun": N_("Person in extreme poverty (te kun)"),
    "gu_er": N_("Orphan"),
    "di_bao": N_("Minimum living allowance recipient (di bao)"),
    "di_bao_bianyuan": N_("Person on the margin of the minimum living allowance"),
    "fangfan_jiance": N_("Person monitored against falling back into poverty"),
    "zhongdu_canji": N_("Person with a severe disability"),
    "employee_insurance": N_("Insured under employee medical insurance"),
    "deceased": N_("Deceased person"),
    "huji": N_("Registered resident (hukou)"),
    "zero_reimbursement": N_("No reimbursement from the fund in the year (settlement system)"),
    "tuiyi_junren": N_("Soldier discharged from active service"),
    "employee_insurance_ended": N_("Person whose employee medical insurance ended"),
}
ENROLLMENT_STATUSES = {
    "registered": N_("Registered, premium not paid"),
    "paid": N_("Paid"),
    "subsidised": N_("Paid by subsidy"),
    "confirmed": N_("Confirmed"),
    "cancelled": N_("Cancelled"),
}
COVERAGE_REASONS = {
    "in_window": N_("Enrolled within the enrolment window"),
    "waiting_period": N_("Waiting period applies"),
    "newborn": N_("Newborn enrolled within the days allowed"),
    "exempt": N_("Exempt from the waiting period"),
    "extended_period": N_("Paid in the extended payment period"),
    "new_student": N_("New university student enrolled at school"),
    "no_cover_this_year": N_("No cover this year"),
}
CANCEL_REASONS = {
    "employee_insurance": N_("Insured under employee medical insurance"),
    "deceased": N_("Deceased"),
    "duplicate": N_("Enrolled twice"),
    "moved_away": N_("Moved away"),
    "data_error": N_("Entered in error"),
}
# 与户主关系, as the household register writes it (backend/enrollment/households.py `Relation`).
RELATIONS = {
    "head": N_("Head of household"),
    "spouse": N_("Spouse"),
    "child": N_("Child"),
    "parent": N_("Parent"),
    "grandchild": N_("Grandchild"),
    "grandparent": N_("Grandparent"),
    "sibling": N_("Brother or sister"),
    "child_in_law": N_("Son-in-law or daughter-in-law"),
    "other": N_("Other relation"),
}
PAYMENT_METHODS = {"cash": N_("Cash"), "qr": N_("QR code payment"), "bank": N_("Bank transfer")}
PAYMENT_KINDS = {"premium": N_("Premium"), "back_payment": N_("Back payment of earlier years")}
CLAIM_STATUSES = {"pending": N_("Pending"), "accepted": N_("Accepted"), "rejected": N_("Rejected")}

VOCABULARIES = {
    "list_type": LIST_TYPES,
    "enrollment_status": ENROLLMENT_STATUSES,
    "coverage_reason": COVERAGE_REASONS,
    "cancel_reason": CANCEL_REASONS,
    "payment_method": PAYMENT_METHODS,
    "payment_kind": PAYMENT_KINDS,
    "claim_status": CLAIM_STATUSES,
    "relation": RELATIONS,
}


def name(vocabulary: str, code: str | None) -> str | None:
    """The name of `code` in the current language (the code itself when it has none; a district's
    own subsidy category, say)."""
    if code is None:
        return None
    words = VOCABULARIES[vocabulary].get(code)
    return _(words) if words else code
