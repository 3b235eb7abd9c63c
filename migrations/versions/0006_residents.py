"""Residents and partners: resident sessions, and the resident-login attempt limits with lockout.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from migrations import run_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    -- Failed resident logins per key: a keyed hash (HMAC) of the ID number or of the client address,
    -- never the value in clear. Past the limit in a window the key is locked out, for longer each
    -- time it happens again (the count of lockouts survives a window; a success clears it).
    CREATE TABLE resident_login_limits (
        key          bytea PRIMARY KEY,
        window_start timestamptz NOT NULL,
        failures     integer NOT NULL,
        lockouts     integer NOT NULL DEFAULT 0,
        locked_until timestamptz
    );

    -- A resident's login: the access token names it, so logout, a move out of the household or a
    -- dissolved household end the token at its next request.
    CREATE TABLE resident_sessions (
        id           uuid PRIMARY KEY,
        person_id    uuid NOT NULL REFERENCES persons (id),
        household_id uuid NOT NULL REFERENCES households (id),
        created_at   timestamptz NOT NULL DEFAULT now(),
        expires_at   timestamptz NOT NULL,
        revoked_at   timestamptz
    );
    CREATE INDEX resident_sessions_person_idx ON resident_sessions (person_id, created_at);
    """)


def downgrade() -> None:
    run_sql("""
    DROP TABLE resident_sessions;
    DROP TABLE resident_login_limits;
    """)
