"""Resident login with ID number, name and query code, and the household's coverage view.

A login for an unknown person does the same work as one with a wrong name or code: the same
queries, the same keyed hashes (against dummy values), the same audit row, the same answer.
"""

from __future__ import annotations

import hmac
import unicodedata
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from uuid import UUID

import msgspec

from backend import crypto
from backend.actor import Actor
from backend.audit.service import persons, record
from backend.auth import limits
from backend.auth.service import AuthContext
from backend.auth.tokens import ACT_RESIDENT, SCOPE_RESIDENT, AccessClaims, encode_access, epoch
from backend.config import Settings
from backend.crypto import BIRTH_CERT, ID_NUMBER
from backend.db import Connection, load_queries
from backend.eligibility import check as eligibility
from backend.enrollment import explain
from backend.enrollment.continuity import (
    CeilingView,
    PersonContinuity,
    ceiling_view,
    known_years_and_policy_of_household,
    person_ceiling,
    person_continuity,
)
from backend.enrollment.quotes import HouseholdTotals
from backend.errors import DomainError, InvalidInput, NotFound, TooManyAttempts
from backend.i18n import N_, _, percent, terms, yuan
from backend.ids import uuid7
from backend.policy import service as policy
from backend.policy.service import Benefits
from backend.premiums.payments import HouseholdMoney
from backend.sync import query_codes
from mobile_sync_protocol.query_codes import normal_query_code
from mobile_sync_protocol.rules.coverage_state import CoverageStateCode, coverage_state
from mobile_sync_protocol.rules.identity import IdentityNumberError, mask, parse_resident_id

Q = load_queries("backend.residents")

# The codes of a household's two latest coverage years open the door: next year's slip from the
# enrolment window, or last year's before renewal. Always this many are checked, real or dummy.
CODE_SLOTS = 2
_NO_HOUSEHOLD = UUID(int=0)
_NO_HASH = bytes(32)  # never an HMAC-SHA256 output in practice, so a dummy slot never matches
_NO_NAME = "\x00"


class ResidentLoginFailed(DomainError):
    """ID number, name or query code is wrong"""

    status, code = 401, "invalid_credentials"


class ResidentToken(msgspec.Struct, frozen=True):
    access_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105 (a token type, not a secret)


def _normal_name(name: str) -> str:
    return "".join(unicodedata.normalize("NFKC", name).split())


async def login(ctx: AuthContext, id_number: str, name: str, code: str, client_addr: str, today: date) -> ResidentToken:
    settings = ctx.settings
    try:
        number = parse_resident_id(id_number, today=today).number
    except IdentityNumberError as exc:
        # The number's own form, not whether anyone holds it: nothing is learnt about persons.
        raise InvalidInput("id_number", _(exc.template, **exc.params), reason=exc.code) from exc
    id_key = ctx.key.keyed_hash("resident-id", number)
    addr_key = ctx.key.keyed_hash("resident-addr", client_addr)
    subject = id_key[:8].hex()  # a pseudonym for the audit: attempts on one number can be linked
    async with ctx.pool.acquire() as conn:
        # Autocommit: a failed attempt is counted and audited although the request fails.
        locks = [
            await limits.reserve(
                conn,
                id_key,
                window_s=settings.resident_failure_window_s,
                max_failures=settings.resident_max_failures_per_id,
                lockout_s=settings.resident_lockout_s,
            ),
            await limits.reserve(
                conn,
                addr_key,
                window_s=settings.resident_failure_window_s,
                max_failures=settings.resident_max_failures_per_address,
                lockout_s=settings.resident_lockout_s,
            ),
        ]
        if any(lock is not None for lock in locks):
            await record(
                conn,
                None,
                "resident_login_refused",
                "resident_login",
                None,
                summary={"reason": "too_many_attempts", "subject": subject},
            )
            raise TooManyAttempts(retry_after_s=max(lock or 0 for lock in locks))

        rows = await conn.fetch(Q["login_candidate"], crypto.keys().index(ID_NUMBER, number))
        person = rows[0] if rows else None
        household_id = person["household_id"] if person else _NO_HOUSEHOLD
        slots = [
            (r["coverage_year"], bytes(r["code_hash"]), r["device_id"]) for r in rows if r["coverage_year"] is not None
        ][:CODE_SLOTS]
        slots += [(today.year, _NO_HASH, None)] * (CODE_SLOTS - len(slots))
        code_ok = False
        for year, stored, device_id in slots:
            expected = query_codes.stored_hash(ctx.key.secret, household_id, year, normal_query_code(code), device_id)
            code_ok |= hmac.compare_digest(expected, stored)
        name_ok = hmac.compare_digest(
            _normal_name(name).encode(), _normal_name(person["name"] if person else _NO_NAME).encode()
        )
        if not (person is not None and name_ok and code_ok):
            await record(
                conn,
                None,
                "resident_login_failed",
                "resident_login",
                None,
                # Whom the number names, if anyone: whose door was tried (the same keys either way).
                summary={
                    "reason": "credentials",
                    "subject": subject,
                    **persons([person["person_id"] if person is not None else None]),
                },
            )
            raise ResidentLoginFailed()

        async with conn.transaction():
            await limits.clear(conn, id_key)
            await limits.forgive(conn, addr_key)
            session_id, token_id = uuid7(), uuid7()
            now = datetime.now(UTC).replace(microsecond=0)
            ttl = settings.resident_token_ttl_s
            await conn.execute(
                Q["insert_session"], session_id, person["person_id"], household_id, now, now + timedelta(seconds=ttl)
            )
            actor = Actor.resident(person["person_id"], household_id, session_id)
            await record(
                conn,
                actor,
                "login",
                "resident_session",
                session_id,
                division_code=person["village_code"],
                summary={"household_id": str(household_id), **persons([person["person_id"]])},
            )
        iat = epoch(now)
        claims = AccessClaims(
            sub=person["person_id"],
            sid=session_id,
            act=ACT_RESIDENT,
            scope=SCOPE_RESIDENT,
            jti=token_id,
            iat=iat,
            exp=iat + ttl,
        )
        return ResidentToken(access_token=encode_access(ctx.key, claims), expires_in=ttl)


async def logout(conn: Connection, actor: Actor) -> None:
    await conn.execute(Q["end_session"], actor.session_id, actor.id)
    await record(conn, actor, "logout", "resident_session", actor.session_id)


# Coverage ----------------------------------------------------------------------------------------


class MemberCoverage(msgspec.Struct, frozen=True, kw_only=True):
    person_id: UUID
    name: str
    id_number_masked: str  # e.g. 110105********002X
    relation: str
    enrollment_status: Literal["registered", "paid", "subsidised", "confirmed", "cancelled"] | None
    enrollment_status_name: str | None  # the status in the reader's language
    in_force_today: bool
    coverage_state: CoverageStateCode
    coverage_start: date | None
    coverage_end: date | None
    waiting_until: date | None  # cover starts on this date after a waiting period
    # in_window, waiting_period, newborn, exempt, extended_period, new_student, no_cover_this_year;
    # history: the imported history
    coverage_reason_code: str | None
    coverage_reason_name: str | None
    explanation: str  # the state today and how the dates were reached, in plain words
    state_words: str  # the state today alone
    reason_words: str | None  # how the cover dates were reached (a funded enrolment)
    subsidy_categories: list[str]  # codes
    subsidy_category_names: list[str]  # the same categories by name, in the same order
    premium_fen: int
    premium_yuan: str  # the amount beside it as the reader's language writes money: ¥420.00
    subsidy_fen: int
    subsidy_yuan: str
    due_fen: int
    due_yuan: str
    paid_fen: int
    paid_yuan: str
    balance_fen: int  # > 0 still owed, < 0 to be refunded
    balance_yuan: str
    last_receipt_no: str | None
    # What the cover shown comes from: an enrolment here, or (no live enrolment for the year) the
    # enrolment history imported from the previous system, which covers the whole year; None: neither.
    coverage_source: Literal["enrolment", "history"] | None = None
    # Continuous years of basic insurance as of the year asked (issue 17 point 3).
    continuity: PersonContinuity | None = None
    # The serious-illness insurance ceiling for the year with its reasons, for a member covered that
    # year when the year's policy carries the incentives; else None.
    serious_illness_ceiling: CeilingView | None = None
    # The next year's enrolment already gives cover today (a new university student's cover starts
    # on 1 September of the year before): its year; `in_force_today` is then true and the
    # explanation says so. None otherwise.
    in_force_by_year: int | None = None


class Money(msgspec.Struct, frozen=True, kw_only=True):
    """The household's money for the year in one picture: premium − subsidy − paid = balance."""

    premium_fen: int  # Σ the premiums of the enrolments live in the household (its members')
    premium_yuan: str
    subsidy_fen: int  # Σ their government subsidies
    subsidy_yuan: str
    # What is paid for those enrolments, whichever household's payment it was (an enrolment follows
    # its person, and so does its money), and what the household's own payments left over; net of
    # voids and refunds
    paid_fen: int
    paid_yuan: str
    balance_fen: int  # premium − subsidy − paid: > 0 still owed, < 0 to be refunded
    balance_yuan: str
    words: str  # the sum written out


HOSPITAL_LEVEL_NAMES = {
    "township": N_("Township health centre"),
    "county": N_("County hospital"),
    "above_county": N_("Hospital above the county"),
}


class LevelBenefitView(msgspec.Struct, frozen=True, kw_only=True):
    level: str  # township, county, above_county
    level_name: str
    deductible_fen: int
    deductible_yuan: str
    reimbursement_basis_points: int
    reimbursement_rate: str  # 70%
    words: str  # the level's facts in one sentence


class BenefitsView(msgspec.Struct, frozen=True, kw_only=True):
    """The year's benefit facts from the policy in force (`rules.benefits`), in plain words: what
    basic insurance pays for a hospital stay at each level, and the year's ceiling. Each member's
    own serious-illness ceiling (with its raise for continuity) is on the member."""

    coverage_year: int
    levels: list[LevelBenefitView]
    annual_ceiling_fen: int
    annual_ceiling_yuan: str
    ceiling_words: str


def benefits_view(year: int, benefits: Benefits) -> BenefitsView:
    levels = []
    for level in benefits.levels:
        name = _(HOSPITAL_LEVEL_NAMES[level.level])
        rate = percent(level.reimbursement_basis_points / 10_000, digits=0)
        levels.append(
            LevelBenefitView(
                level=level.level,
                level_name=name,
                deductible_fen=level.deductible_fen,
                deductible_yuan=yuan(level.deductible_fen),
                reimbursement_basis_points=level.reimbursement_basis_points,
                reimbursement_rate=rate,
                words=_(
                    "{level}: the first {deductible} of a hospital stay are paid by you (deductible), "
                    "{rate} of the covered costs above it by the insurance.",
                    level=name,
                    deductible=yuan(level.deductible_fen),
                    rate=rate,
                ),
            )
        )
    return BenefitsView(
        coverage_year=year,
        levels=levels,
        annual_ceiling_fen=benefits.annual_ceiling_fen,
        annual_ceiling_yuan=yuan(benefits.annual_ceiling_fen),
        ceiling_words=_(
            "Basic medical insurance pays at most {ceiling} in {year} for each insured person.",
            ceiling=yuan(benefits.annual_ceiling_fen),
            year=year,
        ),
    )


class HouseholdCoverage(msgspec.Struct, frozen=True, kw_only=True):
    household_id: UUID
    household_no: str
    coverage_year: int
    as_of: date
    members: list[MemberCoverage]
    money: Money
    due_fen: int
    due_yuan: str
    paid_fen: int  # payments − voids − refunds, as on the receipts
    paid_yuan: str
    balance_fen: int  # > 0 still owed
    balance_yuan: str
    refund_due_fen: int  # > 0 to be refunded
    refund_due_yuan: str
    last_receipt_no: str | None
    # The year's benefit facts of the policy in force today (None: the policy gives none).
    benefits: BenefitsView | None = None


def money_picture(premium_fen: int, subsidy_fen: int, paid_fen: int) -> Money:
    """把帐算清楚: what the members' premiums come to, what the government pays of them, what the
    household paid, and what is left (owed, or to be refunded when negative)."""
    balance = premium_fen - subsidy_fen - paid_fen
    if balance >= 0:
        words = _(
            "Premium {premium} − government subsidy {subsidy} − paid {paid} = still owed {balance}",
            premium=yuan(premium_fen),
            subsidy=yuan(subsidy_fen),
            paid=yuan(paid_fen),
            balance=yuan(balance),
        )
    else:
        words = _(
            "Premium {premium} − government subsidy {subsidy} − paid {paid}: {refund} to be refunded",
            premium=yuan(premium_fen),
            subsidy=yuan(subsidy_fen),
            paid=yuan(paid_fen),
            refund=yuan(-balance),
        )
    return Money(
        premium_fen=premium_fen,
        premium_yuan=yuan(premium_fen),
        subsidy_fen=subsidy_fen,
        subsidy_yuan=yuan(subsidy_fen),
        paid_fen=paid_fen,
        paid_yuan=yuan(paid_fen),
        balance_fen=balance,
        balance_yuan=yuan(balance),
        words=words,
    )


async def coverage(
    conn: Connection, actor: Actor, year: int, today: date, *, reads: Connection | None = None
) -> HouseholdCoverage:
    """The household's year as its resident reads it. Read on `reads` when given (a replica that has
    replayed what the primary had committed, backend.replicas); the audit row written on `conn`."""
    reads = reads or conn
    if actor.kind != "resident" or actor.household_id is None:
        raise NotFound()
    household_id = actor.household_id
    # Few round trips (issue 20): the household with its money and its members' last receipts, the
    # members with their next year's early cover, what is known of the members' years once (for
    # continuity and ceilings) with the policy in force (for subsidies, continuity, ceilings and
    # benefits).
    household = await reads.fetchrow(Q["household"], household_id, year)
    if household is None:
        raise NotFound()
    rows = await reads.fetch(Q["members_coverage"], household_id, year, today)
    # The members' years come with the policy in force; a household without members asks for it.
    known, version = await known_years_and_policy_of_household(reads, household_id, year, today)
    if not known:
        version = await policy.in_force(reads, year, today)
    # The categories are shown only beside a subsidy: persons without one need no look-up (the
    # members' rows hold what it needs of them).
    subsidised = [
        (r["person_id"], r["id_number_hash"], r["birth_date"])
        for r in rows
        if r["status"] not in (None, "cancelled") and min(r["subsidy_fen"] or 0, r["premium_fen"] or 0)
    ]
    dues = await eligibility.subsidies_of(reads, subsidised, year, today, version) if subsidised and version else {}
    receipts = {  # per person: the receipt number and time of the latest payment that covered them
        person: (number, at)
        for person, number, at in zip(
            household["receipt_person_ids"], household["receipt_nos"], household["receipt_collected_ats"], strict=True
        )
    }
    incentive = version.rules.serious_illness if version is not None else None
    first = incentive.count_from_year if incentive is not None else None
    runs = {p: person_continuity(k, year, first) for p, k in known.items()}
    ceiling_of = (
        {}
        if incentive is None
        else {
            r["person_id"]: ceiling_view(person_ceiling(incentive, known[r["person_id"]], year))
            for r in rows
            if r["person_id"] in known
            and (
                r["status"] in explain.HISTORY_FUNDED
                or (r["status"] in (None, "cancelled") and r["history_status"] in explain.HISTORY_FUNDED)
            )
        }
    )
    keyring = crypto.keys()
    members = []
    for record_row in rows:
        r = dict(record_row.items())
        source: Literal["enrolment", "history"] | None = None
        if r["status"] not in (None, "cancelled"):
            source = "enrolment"
        elif r["history_status"] in explain.HISTORY_FUNDED:
            # No live enrolment here, but the imported history says the year was paid for: covered.
            r.update(explain.history_cover(year, r["history_status"]))
            source = "history"
        state = coverage_state(
            year=year,
            on=today,
            status=explain.state_status(r),
            start=r["coverage_start"],
            end=r["coverage_end"],
            reason_code=r["coverage_reason"],
            cancel_reason=r["cancel_reason"],
        )
        live = source == "enrolment"
        premium = (r["premium_fen"] or 0) if live else 0
        subsidy = min(r["subsidy_fen"] or 0, premium) if live else 0
        paid_fen = r["paid_fen"]
        due = dues.get(r["person_id"])
        words, why = explain.explanation(r, state, year)
        categories = list(due.chosen_categories) if due is not None and subsidy else []
        receipt = receipts.get(r["person_id"])
        explained = words if why is None else _("{state} {reason}", state=words, reason=why)
        next_year = r["next_year"] if not state.in_force else None
        if next_year is not None:
            explained = _(
                "{explanation} Covered today by the enrolment for {year}, from {start} to {end}.",
                explanation=explained,
                year=next_year,
                start=explain.day(r["next_year_start"]),
                end=explain.day(r["next_year_end"]),
            )
        members.append(
            MemberCoverage(
                person_id=r["person_id"],
                name=r["name"],
                id_number_masked=mask(
                    keyring.open(ID_NUMBER, r["id_number_enc"]) or keyring.open(BIRTH_CERT, r["birth_cert_enc"]) or ""
                ),
                relation=r["relation"],
                enrollment_status=r["status"],
                enrollment_status_name=terms.name("enrollment_status", r["status"]),
                in_force_today=state.in_force or next_year is not None,
                coverage_state=state.code,
                coverage_start=r["coverage_start"],
                coverage_end=r["coverage_end"],
                waiting_until=state.starts_on if state.code == "waiting_period" else None,
                coverage_reason_code=r["coverage_reason"],
                coverage_reason_name=_(explain.HISTORY_NAME)
                if source == "history"
                else terms.name("coverage_reason", r["coverage_reason"]),
                explanation=explained,
                state_words=words,
                reason_words=why,
                subsidy_categories=categories,
                subsidy_category_names=[terms.name("list_type", c) or c for c in categories],
                premium_fen=premium,
                premium_yuan=yuan(premium),
                subsidy_fen=subsidy,
                subsidy_yuan=yuan(subsidy),
                due_fen=premium - subsidy,
                due_yuan=yuan(premium - subsidy),
                paid_fen=paid_fen,
                paid_yuan=yuan(paid_fen),
                balance_fen=premium - subsidy - paid_fen,
                balance_yuan=yuan(premium - subsidy - paid_fen),
                last_receipt_no=receipt[0] if receipt else None,
                coverage_source=source,
                continuity=runs.get(r["person_id"]),
                serious_illness_ceiling=ceiling_of.get(r["person_id"]),
                in_force_by_year=next_year,
            )
        )
    # The household's year over the enrolments live in it now; what is paid for them whichever
    # household paid (the money follows the enrolment), with what its own payments left over.
    totals = HouseholdTotals(
        premium_fen=household["premium_fen"], subsidy_fen=household["subsidy_fen"], paid_fen=household["paid_fen"]
    )
    subsidy_total = totals.subsidy_fen
    due_total = totals.premium_fen - subsidy_total
    money = HouseholdMoney(due_fen=due_total, paid_fen=totals.paid_fen, balance_fen=due_total - totals.paid_fen)
    latest = max(receipts.values(), key=lambda r: r[1], default=None)
    await record(
        conn,
        actor,
        "read",
        "resident_coverage",
        household_id,
        division_code=household["village_code"],
        summary={"year": year, "members": len(members)},
        flushed=False,  # the only write: a resident's read of their own household
    )
    balance, refund = max(money.balance_fen, 0), max(-money.balance_fen, 0)
    benefits = version.rules.benefits if version is not None else None
    return HouseholdCoverage(
        household_id=household_id,
        household_no=household["household_no"],
        coverage_year=year,
        as_of=today,
        members=members,
        money=money_picture(totals.premium_fen, subsidy_total, money.paid_fen),
        due_fen=money.due_fen,
        due_yuan=yuan(money.due_fen),
        paid_fen=money.paid_fen,
        paid_yuan=yuan(money.paid_fen),
        balance_fen=balance,
        balance_yuan=yuan(balance),
        refund_due_fen=refund,
        refund_due_yuan=yuan(refund),
        last_receipt_no=latest[0] if latest else None,
        benefits=None if benefits is None else benefits_view(year, benefits),
    )


async def expire_login_limits(conn: Connection, settings: Settings, now: datetime) -> int:
    """Housekeeping: resident login windows that can no longer limit anyone (lockouts run out first)."""
    before = now - timedelta(seconds=settings.resident_failure_window_s)
    return await limits.expire(conn, before)
