"""Conflicts: which field of which record changed at which household version, and the conflicts
a push leaves for people to settle.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from migrations import run_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    -- Every change of a household's or member's field, whoever made it (REST, sync, CLI, a
    -- reviewer): what a tablet's base version had not seen. `version` is the household's
    -- row_version that made the change visible; a change written before the household's bump in
    -- the same transaction gets it from that bump. A push compares its base version with these
    -- rows to tell a clean merge from a conflict, and takes the base value from `old_value`.
    CREATE TABLE record_changes (
        id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        household_id uuid NOT NULL,
        person_id    uuid,  -- NULL: a field of the household itself
        field        text NOT NULL,
        old_value    text,
        new_value    text,
        version      integer,
        at           timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX record_changes_household_idx ON record_changes (household_id, version);
    CREATE INDEX record_changes_pending_idx ON record_changes (household_id) WHERE version IS NULL;

    CREATE FUNCTION record_changes_capture() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_TABLE_NAME = 'households' THEN
            INSERT INTO record_changes (household_id, person_id, field, old_value, new_value, version)
            SELECT n.id, NULL, f.field, f.old_value, f.new_value,
                   CASE WHEN n.row_version <> o.row_version THEN n.row_version END
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            CROSS JOIN LATERAL (VALUES
                ('household_no', o.household_no, n.household_no),
                ('address', o.address, n.address),
                ('phone', o.phone, n.phone),
                ('head', o.head_person_id::text, n.head_person_id::text),
                ('status', o.status, n.status)
            ) AS f (field, old_value, new_value)
            WHERE f.old_value IS DISTINCT FROM f.new_value;
            -- The bump stamps what this transaction changed before it.
            UPDATE record_changes c SET version = n.row_version
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE c.household_id = n.id AND c.version IS NULL AND n.row_version <> o.row_version;
        ELSIF TG_TABLE_NAME = 'persons' THEN
            INSERT INTO record_changes (household_id, person_id, field, old_value, new_value)
            SELECT m.household_id, n.id, f.field, f.old_value, f.new_value
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            JOIN memberships m ON m.person_id = n.id AND m.left_at IS NULL
            CROSS JOIN LATERAL (VALUES
                ('name', o.name, n.name),
                ('id_number', o.id_number, n.id_number),
                ('birth_cert_no', o.birth_cert_no, n.birth_cert_no),
                ('birth_date', o.birth_date::text, n.birth_date::text),
                ('sex', o.sex, n.sex),
                ('phone', o.phone, n.phone)
            ) AS f (field, old_value, new_value)
            WHERE f.old_value IS DISTINCT FROM f.new_value;
        ELSIF TG_OP = 'UPDATE' THEN  -- memberships
            INSERT INTO record_changes (household_id, person_id, field, old_value, new_value)
            SELECT n.household_id, n.person_id, f.field, f.old_value, f.new_value
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            CROSS JOIN LATERAL (VALUES
                ('relation', o.relation, n.relation),
                ('membership', CASE WHEN o.left_at IS NULL THEN 'member' ELSE o.left_reason END,
                               CASE WHEN n.left_at IS NULL THEN 'member' ELSE n.left_reason END)
            ) AS f (field, old_value, new_value)
            WHERE f.old_value IS DISTINCT FROM f.new_value;
        ELSE  -- a person joins a household made in an earlier transaction (a household's own
              -- first members are part of its creation, which no tablet can have seen)
            INSERT INTO record_changes (household_id, person_id, field, old_value, new_value)
            SELECT n.household_id, n.person_id, 'membership', NULL, 'member'
            FROM new_rows n JOIN households h ON h.id = n.household_id
            WHERE h.created_at <> now();  -- now(): this transaction's start
        END IF;
        RETURN NULL;
    END
    $$;

    CREATE TRIGGER households_record_changes AFTER UPDATE ON households
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION record_changes_capture();
    CREATE TRIGGER persons_record_changes AFTER UPDATE ON persons
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION record_changes_capture();
    CREATE TRIGGER memberships_record_changes_update AFTER UPDATE ON memberships
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION record_changes_capture();
    CREATE TRIGGER memberships_record_changes_insert AFTER INSERT ON memberships
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION record_changes_capture();

    -- What a push could not merge on its own (PROTOCOL.md, conflicts). `applied` kinds record a
    -- value that another's edit replaced; `held` kinds record an edit that waits for a reviewer.
    CREATE TABLE sync_conflicts (
        id              uuid PRIMARY KEY,
        township_code   text NOT NULL,
        household_id    uuid NOT NULL,
        person_id       uuid,
        kind            text NOT NULL CHECK (kind IN ('field_overwritten', 'stale_identity', 'stale_membership',
                            'update_after_remove', 'member_moved', 'duplicate_household')),
        outcome         text NOT NULL CHECK (outcome IN ('applied', 'held')),
        fields          text[] NOT NULL DEFAULT '{}',
        base_version    integer,
        server_version  integer,
        base_values     jsonb NOT NULL DEFAULT '{}',
        server_values   jsonb NOT NULL DEFAULT '{}',
        tablet_values   jsonb NOT NULL DEFAULT '{}',
        mutation        jsonb,  -- a held edit, as pushed: applied as it is if a reviewer says so
        other_household_id uuid,  -- duplicate_household: the household already registered
        device_id       uuid REFERENCES devices (id),
        seq             bigint,
        raised_by       uuid NOT NULL,
        at              timestamptz NOT NULL DEFAULT now(),
        status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
        resolution      text CHECK (resolution IN ('kept', 'restored', 'applied', 'discarded')),
        resolution_note text,
        resolved_by     uuid,
        resolved_at     timestamptz,
        row_version     integer NOT NULL DEFAULT 1,
        CONSTRAINT sync_conflicts_resolved CHECK ((status = 'resolved') = (resolution IS NOT NULL))
    );
    CREATE INDEX sync_conflicts_queue_idx ON sync_conflicts (township_code, status, at);
    CREATE INDEX sync_conflicts_household_idx ON sync_conflicts (household_id);

    -- Conflicts travel to the tablets of their township like any synced record.
    CREATE FUNCTION sync_capture_conflicts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO sync_changes (entity, entity_id, township_code, op)
        SELECT 'conflict', id, township_code, 'upsert' FROM new_rows;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER sync_conflicts_sync_insert AFTER INSERT ON sync_conflicts
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sync_capture_conflicts();
    CREATE TRIGGER sync_conflicts_sync_update AFTER UPDATE ON sync_conflicts
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sync_capture_conflicts();
    """)


def downgrade() -> None:
    run_sql("""
    DROP TABLE sync_conflicts;
    DROP FUNCTION sync_capture_conflicts();
    DROP TRIGGER memberships_record_changes_insert ON memberships;
    DROP TRIGGER memberships_record_changes_update ON memberships;
    DROP TRIGGER persons_record_changes ON persons;
    DROP TRIGGER households_record_changes ON households;
    DROP FUNCTION record_changes_capture();
    DROP TABLE record_changes;
    """)
