"""The query-code slip handed to a household at its enrolment (SPEC §2, "Query code").

The server's code is shown only when it is issued: `enrollments.enrol` returns it once, and the
slip is printed from that answer in the same request; the database keeps only its keyed hash.
"""

from __future__ import annotations

from datetime import date

from backend import crypto
from backend.actor import Actor
from backend.audit.service import persons, record
from backend.crypto import BIRTH_CERT, ID_NUMBER
from backend.db import Connection, load_queries
from backend.enrollment.enrollments import Enrolled, EnrollmentCreate
from backend.errors import NotFound
from backend.printing.documents import QueryCodeSlip, SlipMember, render_query_code_slip
from mobile_sync_protocol.rules.identity import mask

Q = load_queries("backend.enrollment", "slips.sql")


async def query_code_slip(
    conn: Connection, actor: Actor, data: EnrollmentCreate, enrolled: Enrolled, today: date
) -> bytes:
    """The slip of an enrolment just made: who was enrolled and, if this enrolment issued it, the
    household's query code for the year (else a line saying it was issued before)."""
    household = await conn.fetchrow(Q["slip_household"], data.household_id)
    if household is None or not actor.in_scope(household["village_code"]):
        raise NotFound()
    keyring = crypto.keys()
    rows = await conn.fetch(Q["slip_members"], data.person_ids)
    members = [
        SlipMember(
            name=r["name"],
            id_number_masked=mask(
                keyring.open(ID_NUMBER, r["id_number_enc"]) or keyring.open(BIRTH_CERT, r["birth_cert_enc"]) or ""
            ),
        )
        for r in rows
    ]
    await record(
        conn,
        actor,
        "print",
        "query_code_slip",
        data.household_id,
        division_code=household["village_code"],
        summary={
            "year": data.coverage_year,
            "code_issued": enrolled.query_code is not None,
            **persons(r["person_id"] for r in rows),
        },
    )
    slip = QueryCodeSlip(
        coverage_year=data.coverage_year,
        household_no=household["household_no"],
        village=" ".join(n for n in (household["township_name"], household["village_name"]) if n),
        members=members,
        query_code=enrolled.query_code,
        issued_on=today,
    )
    return render_query_code_slip(slip)
