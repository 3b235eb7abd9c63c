"""Households, persons, memberships and moves; policy versions; enrolments and query codes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from migrations import run_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    -- One row per coverage year and version; a version applies from its effective date on.
    -- Rules (subsidies, top-ups, stacking, waiting periods, exemptions, newborn rule) are one
    -- document, decoded into msgspec Structs by backend.policy.service.
    CREATE TABLE policy_versions (
        id             uuid PRIMARY KEY,
        coverage_year  integer NOT NULL CHECK (coverage_year BETWEEN 2000 AND 2100),
        version        integer NOT NULL CHECK (version >= 1),
        effective_from date NOT NULL,
        premium_fen    integer NOT NULL CHECK (premium_fen > 0),
        window_start   date NOT NULL,
        window_end     date NOT NULL,
        rules          jsonb NOT NULL,
        note           text NOT NULL DEFAULT '',
        created_by     uuid REFERENCES users (id),
        created_at     timestamptz NOT NULL DEFAULT now(),
        updated_at     timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT policy_versions_year_version_key UNIQUE (coverage_year, version),
        CONSTRAINT policy_versions_window_order CHECK (window_end >= window_start)
    );

    CREATE TABLE persons (
        id                   uuid PRIMARY KEY,
        id_number            text CHECK (id_number ~ '^[0-9]{17}[0-9X]$'),
        birth_cert_no        text CHECK (birth_cert_no ~ '^[A-Z][0-9]{9}$'),
        id_converted_from_15 boolean NOT NULL DEFAULT false,
        name                 text NOT NULL CHECK (btrim(name) <> '' AND length(name) <= 100),
        sex                  text NOT NULL CHECK (sex IN ('male', 'female')),
        birth_date           date NOT NULL,
        phone                text CHECK (phone ~ '^[0-9+-]{5,20}$'),
        row_version          integer NOT NULL DEFAULT 1,
        created_at           timestamptz NOT NULL DEFAULT now(),
        updated_at           timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT persons_identified CHECK (id_number IS NOT NULL OR birth_cert_no IS NOT NULL)
    );
    CREATE UNIQUE INDEX persons_id_number_key ON persons (id_number);
    CREATE UNIQUE INDEX persons_birth_cert_no_key ON persons (birth_cert_no);
    CREATE INDEX persons_name_idx ON persons (name COLLATE "C" text_pattern_ops);

    CREATE TABLE households (
        id             uuid PRIMARY KEY,
        village_code   text NOT NULL REFERENCES divisions (code),
        household_no   text NOT NULL CHECK (household_no ~ '^[0-9A-Za-z-]{1,30}$'),
        address        text NOT NULL DEFAULT '' CHECK (length(address) <= 200),
        phone          text CHECK (phone ~ '^[0-9+-]{5,20}$'),
        head_person_id uuid REFERENCES persons (id),
        status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'dissolved')),
        row_version    integer NOT NULL DEFAULT 1,
        created_by     uuid,
        created_at     timestamptz NOT NULL DEFAULT now(),
        updated_at     timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT households_number_key UNIQUE (village_code, household_no)
    );
    CREATE INDEX households_village_idx ON households (village_code, id);
    CREATE INDEX households_head_idx ON households (head_person_id);

    -- A person's place in a household over time; the open row (left_at IS NULL) is the current one.
    CREATE TABLE memberships (
        id           uuid PRIMARY KEY,
        person_id    uuid NOT NULL REFERENCES persons (id),
        household_id uuid NOT NULL REFERENCES households (id),
        relation     text NOT NULL CHECK (relation IN ('head', 'spouse', 'child', 'parent', 'grandchild',
                         'grandparent', 'sibling', 'child_in_law', 'other')),
        joined_at    timestamptz NOT NULL DEFAULT now(),
        left_at      timestamptz,
        left_reason  text CHECK (left_reason IN ('moved', 'removed', 'deceased', 'data_error', 'dissolved')),
        CONSTRAINT memberships_left_has_reason CHECK ((left_at IS NULL) = (left_reason IS NULL))
    );
    CREATE UNIQUE INDEX memberships_one_current_household ON memberships (person_id) WHERE left_at IS NULL;
    CREATE UNIQUE INDEX memberships_one_head ON memberships (household_id) WHERE left_at IS NULL AND relation = 'head';
    CREATE INDEX memberships_household_idx ON memberships (household_id) WHERE left_at IS NULL;
    CREATE INDEX memberships_person_idx ON memberships (person_id, joined_at);

    -- A move to a household of another township waits for that township to accept it.
    CREATE TABLE person_moves (
        id                uuid PRIMARY KEY,
        person_id         uuid NOT NULL REFERENCES persons (id),
        from_household_id uuid NOT NULL REFERENCES households (id),
        to_household_id   uuid NOT NULL REFERENCES households (id),
        relation          text NOT NULL,
        status            text NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected', 'cancelled')),
        note              text NOT NULL DEFAULT '',
        requested_by      uuid NOT NULL,
        requested_at      timestamptz NOT NULL DEFAULT now(),
        decided_by        uuid,
        decided_at        timestamptz,
        decision_reason   text
    );
    CREATE UNIQUE INDEX person_moves_one_pending ON person_moves (person_id) WHERE status = 'pending';
    CREATE INDEX person_moves_to_idx ON person_moves (to_household_id) WHERE status = 'pending';

    CREATE TABLE enrollments (
        id                uuid PRIMARY KEY,
        person_id         uuid NOT NULL REFERENCES persons (id),
        household_id      uuid NOT NULL REFERENCES households (id),
        village_code      text NOT NULL REFERENCES divisions (code),
        coverage_year     integer NOT NULL CHECK (coverage_year BETWEEN 2000 AND 2100),
        status            text NOT NULL CHECK (status IN ('registered', 'paid', 'subsidised', 'confirmed', 'cancelled')),
        funding           text CHECK (funding IN ('paid', 'subsidised')),
        source            text NOT NULL DEFAULT 'live' CHECK (source IN ('live', 'history')),
        policy_version_id uuid REFERENCES policy_versions (id),
        registered_at     timestamptz NOT NULL DEFAULT now(),
        registered_on     date NOT NULL,
        business_date     date,
        premium_fen       integer CHECK (premium_fen >= 0),
        subsidy_fen       integer NOT NULL DEFAULT 0 CHECK (subsidy_fen >= 0),
        coverage_start    date,
        coverage_end      date,
        coverage_reason   text,
        coverage_note     text,
        waiting_months    integer,
        confirmed_at      timestamptz,
        confirmed_by      uuid,
        cancelled_at      timestamptz,
        cancelled_by      uuid,
        cancel_reason     text CHECK (cancel_reason IN
                              ('employee_insurance', 'deceased', 'duplicate', 'moved_away', 'data_error')),
        cancel_note       text,
        row_version       integer NOT NULL DEFAULT 1,
        updated_at        timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT enrollments_cancel_has_reason CHECK ((status = 'cancelled') = (cancel_reason IS NOT NULL)),
        CONSTRAINT enrollments_funded_states CHECK (
            (status IN ('paid', 'subsidised', 'confirmed')) <= (funding IS NOT NULL)),
        CONSTRAINT enrollments_subsidy_within_premium CHECK (subsidy_fen <= coalesce(premium_fen, subsidy_fen))
    );
    -- At most one live enrolment per person and coverage year, in the whole system.
    CREATE UNIQUE INDEX enrollments_one_live_per_person_year ON enrollments (person_id, coverage_year)
        WHERE status <> 'cancelled';
    CREATE INDEX enrollments_household_year_idx ON enrollments (household_id, coverage_year);
    CREATE INDEX enrollments_queue_idx ON enrollments (coverage_year, status, village_code);
    CREATE INDEX enrollments_village_year_idx ON enrollments (village_code, coverage_year);

    -- Enrolment history from before go-live, by identity number, so gaps count from day one.
    CREATE TABLE enrollment_history (
        id_number     text NOT NULL CHECK (id_number ~ '^[0-9]{17}[0-9X]$'),
        coverage_year integer NOT NULL CHECK (coverage_year BETWEEN 2000 AND 2100),
        status        text NOT NULL CHECK (status IN ('paid', 'subsidised', 'confirmed', 'cancelled')),
        source_file   text NOT NULL,
        imported_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (id_number, coverage_year)
    );

    -- The short code printed on a household's enrolment slip, kept only as a keyed hash.
    CREATE TABLE household_query_codes (
        household_id  uuid NOT NULL REFERENCES households (id),
        coverage_year integer NOT NULL,
        code_hash     bytea NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (household_id, coverage_year)
    );
    """)


def downgrade() -> None:
    run_sql("""
    DROP TABLE household_query_codes;
    DROP TABLE enrollment_history;
    DROP TABLE enrollments;
    DROP TABLE person_moves;
    DROP TABLE memberships;
    DROP TABLE households;
    DROP TABLE persons;
    DROP TABLE policy_versions;
    """)
