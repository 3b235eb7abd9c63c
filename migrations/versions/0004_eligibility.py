"""Civil-affairs lists (民政名单) as immutable versions, eligibility claims, exclusion reviews.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from migrations import run_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    -- One row per upload of a list, accepted or not. A version is numbered per list type and the
    -- uploader's scope; the newest loaded version effective on a date is the one in force then.
    CREATE TABLE list_versions (
        id             uuid PRIMARY KEY,
        list_type      text NOT NULL CHECK (list_type ~ '^[a-z][a-z0-9_]{1,39}$'),
        kind           text NOT NULL CHECK (kind IN ('subsidy', 'exclusion', 'roster')),
        division_code  text NOT NULL REFERENCES divisions (code),  -- the uploader's scope
        scope_prefix   text NOT NULL CHECK (scope_prefix ~ '^[0-9]{2,12}$'),
        version        integer NOT NULL CHECK (version >= 1),
        effective_from date NOT NULL,
        status         text NOT NULL CHECK (status IN ('loaded', 'rejected')),
        partial        boolean NOT NULL DEFAULT false,
        rows_read      integer NOT NULL CHECK (rows_read >= 0),
        rows_loaded    integer NOT NULL CHECK (rows_loaded >= 0),
        rows_rejected  integer NOT NULL CHECK (rows_rejected >= 0),
        errors         jsonb NOT NULL DEFAULT '[]',  -- the first errors: row, column, problem
        previous_id    uuid REFERENCES list_versions (id),
        added          integer,
        removed        integer,
        changed        integer,
        file_name      text NOT NULL,
        file_sha256    bytea NOT NULL,
        uploaded_by    uuid REFERENCES users (id),
        uploaded_at    timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT list_versions_number_key UNIQUE (list_type, division_code, version),
        CONSTRAINT list_versions_loaded_has_rows CHECK (status <> 'loaded' OR rows_loaded > 0)
    );
    CREATE INDEX list_versions_in_force_idx ON list_versions (list_type, division_code, effective_from, version)
        WHERE status = 'loaded';

    -- The rows of a loaded version. No foreign key to list_versions: entries are written only by
    -- the importer, in the transaction that writes their version, and a million FK checks would
    -- double the load time. Person look-ups go through the id_number index.
    CREATE TABLE list_entries (
        version_id    uuid NOT NULL,
        row_no        integer NOT NULL CHECK (row_no >= 1),
        id_number     text NOT NULL CHECK (id_number ~ '^[0-9]{17}[0-9X]$'),
        name          text NOT NULL CHECK (btrim(name) <> ''),
        valid_from    date,
        valid_to      date,
        division_code text CHECK (division_code ~ '^[0-9]{12}$'),
        PRIMARY KEY (version_id, id_number),
        CONSTRAINT list_entries_valid_order CHECK (valid_to >= valid_from)
    );
    CREATE INDEX list_entries_id_number_idx ON list_entries (id_number);

    -- Versions are immutable once loaded: the application's role can add, never change or remove.
    CREATE TRIGGER list_versions_append_only BEFORE UPDATE OR DELETE ON list_versions
        FOR EACH ROW EXECUTE FUNCTION forbid_change();
    CREATE TRIGGER list_versions_no_truncate BEFORE TRUNCATE ON list_versions
        FOR EACH STATEMENT EXECUTE FUNCTION forbid_change();
    CREATE TRIGGER list_entries_append_only BEFORE UPDATE OR DELETE ON list_entries
        FOR EACH ROW EXECUTE FUNCTION forbid_change();
    CREATE TRIGGER list_entries_no_truncate BEFORE TRUNCATE ON list_entries
        FOR EACH STATEMENT EXECUTE FUNCTION forbid_change();

    -- A township officer's claim that a person missing from the lists holds a subsidy category for
    -- a coverage year; civil affairs accepts or rejects it. An accepted claim counts like an entry.
    CREATE TABLE eligibility_claims (
        id            uuid PRIMARY KEY,
        person_id     uuid NOT NULL REFERENCES persons (id),
        id_number     text CHECK (id_number ~ '^[0-9]{17}[0-9X]$'),
        village_code  text NOT NULL REFERENCES divisions (code),
        coverage_year integer NOT NULL CHECK (coverage_year BETWEEN 2000 AND 2100),
        category      text NOT NULL CHECK (category ~ '^[a-z][a-z0-9_]{1,39}$'),
        note          text NOT NULL DEFAULT '' CHECK (length(note) <= 1000),
        evidence_ref  text NOT NULL DEFAULT '' CHECK (length(evidence_ref) <= 200),
        status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'rejected')),
        raised_by     uuid NOT NULL REFERENCES users (id),
        raised_at     timestamptz NOT NULL DEFAULT now(),
        decided_by    uuid REFERENCES users (id),
        decided_at    timestamptz,
        reason        text CHECK (length(reason) <= 500),
        row_version   integer NOT NULL DEFAULT 1,
        CONSTRAINT eligibility_claims_decided CHECK ((status = 'pending') = (decided_by IS NULL)),
        CONSTRAINT eligibility_claims_rejection_has_reason CHECK (status <> 'rejected' OR btrim(reason) <> '')
    );
    CREATE UNIQUE INDEX eligibility_claims_one_open ON eligibility_claims (person_id, coverage_year, category)
        WHERE status IN ('pending', 'accepted');
    CREATE INDEX eligibility_claims_queue_idx ON eligibility_claims (status, village_code, id);
    CREATE INDEX eligibility_claims_accepted_idx ON eligibility_claims (id_number, coverage_year)
        WHERE status = 'accepted';

    -- A live enrolment of someone who appears on an exclusion list later: a reviewer decides,
    -- nothing is cancelled silently.
    CREATE TABLE exclusion_reviews (
        id              uuid PRIMARY KEY,
        enrollment_id   uuid NOT NULL REFERENCES enrollments (id),
        village_code    text NOT NULL REFERENCES divisions (code),
        coverage_year   integer NOT NULL,
        list_type       text NOT NULL,
        list_version_id uuid NOT NULL REFERENCES list_versions (id),
        row_no          integer NOT NULL,
        status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'cancelled', 'kept')),
        created_at      timestamptz NOT NULL DEFAULT now(),
        decided_by      uuid REFERENCES users (id),
        decided_at      timestamptz,
        note            text NOT NULL DEFAULT '',
        CONSTRAINT exclusion_reviews_once UNIQUE (enrollment_id, list_type),
        CONSTRAINT exclusion_reviews_decided CHECK ((status = 'open') = (decided_by IS NULL))
    );
    CREATE INDEX exclusion_reviews_queue_idx ON exclusion_reviews (status, village_code, id);
    """)


def downgrade() -> None:
    run_sql("""
    DROP TABLE exclusion_reviews;
    DROP TABLE eligibility_claims;
    DROP TABLE list_entries;
    DROP TABLE list_versions;
    """)
