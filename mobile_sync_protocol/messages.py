"""The sync wire messages (protocol version 1), shared by the server and the reference client.

Evolution rules (msgspec): a new field gets a default; a field never changes type; a mutation
tag never changes meaning (a new shape is a new tag such as "payment.record.v2"); unknown fields
are ignored on decode, so no wire Struct sets `forbid_unknown_fields`.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from mobile_sync_protocol import query_codes as _query_codes
from mobile_sync_protocol.rules.coverage import ExemptionEvidence
from mobile_sync_protocol.rules.policy import PolicyRules

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)

JSON = "application/json"
MSGPACK = "application/msgpack"

Seq = Annotated[int, msgspec.Meta(ge=1)]
Version = Annotated[int, msgspec.Meta(ge=1)]
Fen = Annotated[int, msgspec.Meta(ge=1, le=100_000_000)]
Year = Annotated[int, msgspec.Meta(ge=2000, le=2100)]
Relation = Literal["head", "spouse", "child", "parent", "grandchild", "grandparent", "sibling", "child_in_law", "other"]
Sex = Literal["male", "female"]
QueryCodeHash = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]  # base64 in JSON, bin in MessagePack

# Query codes (query_codes.py), under the names this module has always offered.
QUERY_CODE_ALPHABET = _query_codes.QUERY_CODE_ALPHABET
QUERY_CODE_LENGTH = _query_codes.QUERY_CODE_LENGTH
new_query_code = _query_codes.new_query_code
query_code_hash = _query_codes.query_code_hash


# Push: mutations -------------------------------------------------------------------------------


class Mutation(msgspec.Struct, kw_only=True, tag_field="type"):
    """Fields every mutation carries. `seq` is the device's sequence number (1, 2, 3, … never
    reused, never renumbered); `mutation_id` names the mutation across retries; `device_time`
    is the tablet's clock when it was made: information only, never used for ordering."""

    seq: Seq
    mutation_id: UUID
    device_time: datetime | None = None


class NewMember(msgspec.Struct, kw_only=True):
    person_id: UUID  # generated on the tablet
    name: str
    relation: Relation
    id_number: str | None = None
    birth_cert_no: str | None = None  # a newborn without an identity number yet
    birth_date: date | None = None
    sex: Sex | None = None
    phone: str | None = None


class HouseholdCreate(Mutation, kw_only=True, tag="household.create"):
    household_id: UUID  # generated on the tablet
    village_code: str
    household_no: str
    address: str = ""
    phone: str | None = None
    members: list[NewMember]


class HouseholdUpdate(Mutation, kw_only=True, tag="household.update"):
    """Descriptive fields; a field left out (null) is unchanged."""

    household_id: UUID
    base_version: Version  # the household's row_version the tablet edited
    household_no: str | None = None
    address: str | None = None
    phone: str | None = None


class HouseholdDissolve(Mutation, kw_only=True, tag="household.dissolve"):
    household_id: UUID
    base_version: Version
    reason: Literal["removed", "data_error"]


class MemberCreate(Mutation, kw_only=True, tag="member.create"):
    household_id: UUID
    base_version: Version
    member: NewMember


class MemberUpdate(Mutation, kw_only=True, tag="member.update"):
    """A field left out (null) is unchanged. `base_version` is the household's row_version."""

    household_id: UUID
    person_id: UUID
    base_version: Version
    name: str | None = None
    relation: Relation | None = None
    former_head_relation: Relation | None = None  # when this member becomes head
    id_number: str | None = None
    birth_date: date | None = None
    sex: Sex | None = None
    phone: str | None = None


class MemberMove(Mutation, kw_only=True, tag="member.move"):
    household_id: UUID
    person_id: UUID
    base_version: Version
    to_household_id: UUID
    relation: Relation
    note: str = ""


class MemberRemove(Mutation, kw_only=True, tag="member.remove"):
    household_id: UUID
    person_id: UUID
    base_version: Version
    reason: Literal["removed", "deceased", "data_error"]


class EnrollmentCreate(Mutation, kw_only=True, tag="enrollment.create"):
    """`query_code_hash`: the keyed hash of the query code the tablet made for the household and
    year (see `query_code_hash`); stored when the household has no code for the year yet."""

    household_id: UUID
    coverage_year: Year
    person_ids: list[UUID]
    query_code_hash: QueryCodeHash | None = None
    # Every person of it is a new university student, enrolled at the school (PROTOCOL.md §
    # "New university students"); refused (rejected) when the year's policy has no `new_students`.
    new_student: bool = False


class EnrollmentCancel(Mutation, kw_only=True, tag="enrollment.cancel"):
    """By person and year: at most one live enrolment exists for them, and the tablet may not
    know the server's enrolment id yet."""

    person_id: UUID
    coverage_year: Year
    reason: Literal["employee_insurance", "deceased", "duplicate", "moved_away", "data_error"]
    note: str = ""


class PaymentRecord(Mutation, kw_only=True, tag="payment.record"):
    """A payment is a fact: keyed by `payment_id` and the hash of its content (see
    `payment_content_hash`). `due_fen` is what the tablet computed as owed (information: the
    payment stands whatever the server computes). `acknowledge_no_cover`: the resident was told
    that the cover this payment buys starts only after the coverage year ends (the rules' reason
    `no_cover_this_year`); without it such a payment is quarantined (`no_cover_this_year`), never
    refused. Not a fact of the money: left out of the content hash."""

    payment_id: UUID
    household_id: UUID
    coverage_year: Year
    person_ids: list[UUID]
    amount_fen: Fen
    method: Literal["cash", "qr", "bank"]
    kind: Literal["premium", "back_payment"] = "premium"
    back_years: list[Year] = []
    receipt_no: str
    collected_at: datetime
    channel_ref: str | None = None
    due_fen: int | None = None
    acknowledge_no_cover: bool = False


class PaymentVoid(Mutation, kw_only=True, tag="payment.void"):
    payment_id: UUID
    reason: str
    note: str = ""


AnyMutation = (
    HouseholdCreate
    | HouseholdUpdate
    | HouseholdDissolve
    | MemberCreate
    | MemberUpdate
    | MemberMove
    | MemberRemove
    | EnrollmentCreate
    | EnrollmentCancel
    | PaymentRecord
    | PaymentVoid
)
MUTATION_TYPES: tuple[str, ...] = tuple(t.__struct_config__.tag for t in AnyMutation.__args__)


class MutationHead(msgspec.Struct, kw_only=True):
    """What the server reads of a mutation before knowing its type: enough to answer it."""

    type: str | None = None
    seq: int | None = None
    mutation_id: UUID | None = None


# Push: envelope and answers ----------------------------------------------------------------------


class VersionProbe(msgspec.Struct, kw_only=True):
    protocol_version: int


class PushRequest(msgspec.Struct, kw_only=True):
    protocol_version: int
    device_id: UUID
    app_version: str = ""
    device_time: datetime | None = None
    # Each mutation is decoded on its own, so one malformed or unknown mutation gets its own answer.
    mutations: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=5000)]


Status = Literal["applied", "duplicate", "applied_with_conflict", "rejected", "quarantined", "not_applied"]


class Answer(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The server's answer to one mutation.

    applied / applied_with_conflict / rejected / quarantined are final: the mutation is in the
    ledger and the device drops it from its queue. duplicate: already answered before; `first`
    holds that first answer. not_applied: nothing happened (a gap in `seq`, or a `seq` reused
    for another body); the device resends from `expected_seq`.
    """

    seq: int | None
    mutation_id: UUID | None = None
    status: Status
    code: str | None = None
    detail: str | None = None
    expected_seq: int | None = None
    first: Answer | None = None
    household_version: int | None = None  # the household's row_version after the mutation
    conflict_fields: list[str] = []
    # The conflict records this mutation left (PROTOCOL.md §3, Conflicts): a value it replaced that another
    # had written since its base (applied_with_conflict), or the edit held for a reviewer
    # (quarantined, code stale_identity, stale_membership, update_after_remove, member_moved or
    # duplicate_household). Conflicts travel back in pulls as `conflict` rows.
    conflict_ids: list[UUID] = []
    quarantine_id: UUID | None = None
    due_fen: int | None = None  # payments: the household's amount due for the year, as the server sees it
    paid_fen: int | None = None
    balance_fen: int | None = None  # due − paid: > 0 still owed, < 0 a refund is due
    void_request_id: UUID | None = None
    # enrollment.create with a query_code_hash: true, the tablet's code is the household's code for
    # the year; false, the household already had one (the tablet's code is void: do not hand it out).
    query_code_stored: bool | None = None


class PushResponse(msgspec.Struct, kw_only=True):
    protocol_version: int
    device_id: UUID
    last_seq: int  # the highest seq the server holds for this device; the queue drops seq ≤ last_seq
    answers: list[Answer]
    server_time: datetime
    clock_skew_s: int | None = None  # device_time − server time, when the envelope carried device_time
    clock_flag: Literal["ahead", "behind"] | None = None


# Pull ------------------------------------------------------------------------------------------


class PullRequest(msgspec.Struct, kw_only=True):
    protocol_version: int
    device_id: UUID
    cursor: str | None = None  # None: first sync (a snapshot of the scope)
    page_token: str | None = None  # resume a page sequence
    limit: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 1000


class HouseholdRow(msgspec.Struct, kw_only=True, tag="household"):
    id: UUID
    village_code: str
    household_no: str
    address: str
    phone: str | None
    head_person_id: UUID | None
    status: str
    row_version: int


class PersonRow(msgspec.Struct, kw_only=True, tag="person"):
    id: UUID
    household_id: UUID | None
    id_number: str | None
    birth_cert_no: str | None
    name: str
    sex: str
    birth_date: date
    phone: str | None
    row_version: int


class MembershipRow(msgspec.Struct, kw_only=True, tag="membership"):
    id: UUID
    person_id: UUID
    household_id: UUID
    relation: str
    joined_at: datetime
    left_at: datetime | None
    left_reason: str | None


class EnrollmentRow(msgspec.Struct, kw_only=True, tag="enrollment"):
    id: UUID
    person_id: UUID
    household_id: UUID
    village_code: str
    coverage_year: int
    status: str
    premium_fen: int | None
    subsidy_fen: int
    coverage_start: date | None  # a new student's: in the year before coverage_year
    coverage_end: date | None
    cancel_reason: str | None
    row_version: int
    new_student: bool = False  # registered as a new university student's


class PaymentRow(msgspec.Struct, kw_only=True, tag="payment"):
    id: UUID
    household_id: UUID
    village_code: str
    coverage_year: int
    person_ids: list[UUID]
    amount_fen: int
    method: str
    kind: str
    receipt_no: str
    collector_id: UUID
    device_id: UUID | None
    collected_at: datetime
    business_date: date


class PaymentEventRow(msgspec.Struct, kw_only=True, tag="payment_event"):
    id: UUID
    payment_id: UUID
    kind: str
    request_id: UUID | None
    amount_fen: int | None
    reason: str
    at: datetime


class ReceiptBlockRow(msgspec.Struct, kw_only=True, tag="receipt_block"):
    id: UUID
    prefix: str
    first_no: int
    last_no: int
    digits: int
    collector_id: UUID
    device_id: UUID | None
    retired: list[tuple[int, int]]


class PolicyRow(msgspec.Struct, kw_only=True, tag="policy_version"):
    id: UUID
    coverage_year: int
    version: int
    effective_from: date
    premium_fen: int
    window_start: date
    window_end: date
    rules: PolicyRules


class ConflictRow(msgspec.Struct, kw_only=True, tag="conflict"):
    """What a push could not merge on its own, and how a reviewer settled it."""

    id: UUID
    household_id: UUID
    person_id: UUID | None
    kind: str  # field_overwritten, stale_identity, stale_membership, update_after_remove, member_moved,
    #            duplicate_household
    outcome: str  # applied: the tablet's value stands, the replaced one is kept here; held: waits for a reviewer
    fields: list[str]
    base_values: dict[str, Any]
    server_values: dict[str, Any]
    tablet_values: dict[str, Any]
    other_household_id: UUID | None
    device_id: UUID | None
    seq: int | None
    at: datetime
    status: str  # open, resolved
    resolution: str | None  # kept, restored, applied, discarded
    resolution_note: str | None
    resolved_at: datetime | None


class SubsidyGrant(msgspec.Struct, kw_only=True):
    """One reason a person holds a subsidy category (特困, 低保, …): a row of a civil-affairs list,
    held from `valid_from` to `valid_to` (inclusive; None: open), or a claim civil affairs
    accepted, held for its `coverage_year`."""

    category: str  # the list type, e.g. te_kun, di_bao
    source: str  # list, claim
    valid_from: date | None  # list: the later of the row's start and its version's effective date
    valid_to: date | None  # list: the earlier of the row's end and the day before a newer version applies
    coverage_year: int | None  # claim: the coverage year it was accepted for
    list_id: UUID | None  # list: the version and row, for the explanation
    list_version: int | None
    row_no: int | None
    claim_id: UUID | None  # claim


class HeldEvidence(ExemptionEvidence, frozen=True, kw_only=True, omit_defaults=True):
    """One piece of evidence that can show a person exempt from the waiting period, exactly as
    `exemption_for` takes it (`ExemptionEvidence`: a list row with the row's own dates, or a claim
    civil affairs accepted with the dates of its proof), and when the server reads it: a list row
    while its version is in force (`in_force_from` … `in_force_to`, both included; null: open), a
    claim for the coverage year it was accepted for. `SubsidyRow.evidence_on` applies both."""

    in_force_from: date | None = None  # list: its version's effective date
    in_force_to: date | None = None  # list: the day before a newer version of the list applies
    coverage_year: int | None = None  # claim: the coverage year it was accepted for

    def evidence(self) -> ExemptionEvidence:
        """The evidence alone, as the server's coverage facts name it."""
        fields = ExemptionEvidence.__struct_fields__
        return ExemptionEvidence(**{f: getattr(self, f) for f in fields})


class SubsidyRow(msgspec.Struct, kw_only=True, tag="subsidy"):
    """The subsidy categories and the exemption evidence of one person of the scope (`id` is the
    person's id). A person with neither has no row; a row that goes away travels as a tombstone.
    Grants that ended before the snapshot's horizon (90 days back), list rows whose version stopped
    being in force before it, and claims for years before its year are left out."""

    id: UUID  # = person_id
    person_id: UUID
    household_id: UUID
    grants: list[SubsidyGrant]  # empty when the person holds only evidence
    # New in issue 17 point 1 (older tablets ignore it): rows of the subsidy and evidence lists and
    # of ended employee insurance, and accepted claims (PROTOCOL.md §4, Exemptions offline).
    evidence: list[HeldEvidence] = []

    def evidence_on(self, day: date, coverage_year: int) -> list[ExemptionEvidence]:
        """The evidence a payment on `day` for `coverage_year` is judged on, as the server reads it
        (list rows of the versions in force that day, whatever the rows' own dates: the rule judges
        those; claims accepted for that year): what `exemption_for` takes offline."""
        return [
            e.evidence()
            for e in self.evidence
            if (e.source == "claim" and e.coverage_year == coverage_year)
            or (
                e.source == "list"
                and (e.in_force_from is None or e.in_force_from <= day)
                and (e.in_force_to is None or day <= e.in_force_to)
            )
        ]

    def categories_on(self, day: date, coverage_year: int) -> list[str]:
        """The categories held on `day` for `coverage_year`, as the server's eligibility check
        finds them (list rows in force that day, claims accepted for that year): what
        `premium_due` takes to compute the subsidy offline."""
        held = {
            g.category
            for g in self.grants
            if (g.source == "claim" and g.coverage_year == coverage_year)
            or (
                g.source == "list"
                and (g.valid_from is None or g.valid_from <= day)
                and (g.valid_to is None or day <= g.valid_to)
            )
        }
        return sorted(held)


Row = (
    HouseholdRow
    | PersonRow
    | MembershipRow
    | EnrollmentRow
    | PaymentRow
    | PaymentEventRow
    | ReceiptBlockRow
    | PolicyRow
    | ConflictRow
    | SubsidyRow
)
ENTITIES: tuple[str, ...] = tuple(t.__struct_config__.tag for t in Row.__args__)


class Upsert(msgspec.Struct, kw_only=True, tag="upsert"):
    row: Row


class Tombstone(msgspec.Struct, kw_only=True, tag="tombstone"):
    """The record was removed, or left the device's scope: drop the local synced copy."""

    entity: str
    id: UUID


Change = Upsert | Tombstone


class PullResponse(msgspec.Struct, kw_only=True):
    protocol_version: int
    changes: list[Change]
    reset: bool = False  # drop the synced copy (never the queue) before applying this page
    has_more: bool = False  # pull again with page_token
    page_token: str | None = None
    cursor: str | None = None  # set on the last page only: keep it for the next pull
    last_seq: int = 0  # the device's last seq the server holds
    server_time: datetime
    # This tablet's key for query-code hashes (32 bytes; base64 in JSON); the same on every pull.
    query_code_key: bytes | None = None


# The local store's key ---------------------------------------------------------------------------


class StoreKeyRequest(msgspec.Struct, kw_only=True):
    """Asks for the key of this tablet's local store (PROTOCOL.md §5, A lost tablet)."""

    protocol_version: int
    device_id: UUID


class StoreKeyResponse(msgspec.Struct, kw_only=True):
    """The key that seals the personal data in the tablet's local store: 32 bytes (base64 in JSON),
    the same for the device's whole life, handed only to the device's own token while the device is
    active. Keep it in memory (or the platform keystore behind the user's unlock), never in a file."""

    protocol_version: int
    device_id: UUID
    store_key: bytes


# Errors ----------------------------------------------------------------------------------------


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A whole request failed (RFC 9457 problem+json)."""

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    supported_versions: list[int] | None = None
    last_seq: int | None = None


def payment_content_hash(m: PaymentRecord) -> bytes:
    """SHA-256 over the payment's facts in a fixed order: what makes two reports the same payment.

    The sequence number, mutation id, device time, the tablet's own `due_fen` and
    `acknowledge_no_cover` are not facts of the payment. Times are compared as UTC instants to the microsecond.
    """
    collected = m.collected_at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    facts = [
        str(m.payment_id),
        str(m.household_id),
        m.coverage_year,
        [str(p) for p in m.person_ids],
        m.amount_fen,
        m.method,
        m.kind,
        list(m.back_years),
        m.receipt_no,
        collected,
        m.channel_ref,
    ]
    return hashlib.sha256(msgspec.json.encode(facts)).digest()
