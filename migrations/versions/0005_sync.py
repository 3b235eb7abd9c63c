"""Offline sync: change capture for pull, the per-device mutation ledger, quarantine.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from migrations import run_sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Tables whose writes reach the tablets, with how each names its township.
_CAPTURED = ["households", "persons", "memberships", "enrollments", "payments", "payment_events",
             "receipt_blocks", "receipt_retirements", "policy_versions"]  # fmt: skip


def upgrade() -> None:
    run_sql("""
    -- Every write to a synced table, stamped with the writing transaction's id. A pull returns the
    -- changes of finished transactions only (xid below the current snapshot's xmin), so a change
    -- that commits late is never skipped; the new cursor is that xmin.
    CREATE TABLE sync_changes (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        xid           xid8 NOT NULL DEFAULT pg_current_xact_id(),
        entity        text NOT NULL,
        entity_id     uuid NOT NULL,
        township_code text,  -- NULL: the whole district (policies)
        op            text NOT NULL CHECK (op IN ('upsert', 'delete')),
        at            timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX sync_changes_xid_idx ON sync_changes (xid, id);

    -- Changes below floor_xid have been pruned: an older cursor must start again from a snapshot.
    CREATE TABLE sync_horizon (
        only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        floor_xid xid8 NOT NULL DEFAULT '0'
    );
    INSERT INTO sync_horizon DEFAULT VALUES;

    CREATE FUNCTION township_of(code text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
        SELECT left(code, 9) || '000'
    $$;

    CREATE FUNCTION sync_capture() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_TABLE_NAME = 'households' THEN
            INSERT INTO sync_changes (entity, entity_id, township_code, op)
            SELECT DISTINCT 'household', id, township_of(village_code), 'upsert' FROM new_rows;
            IF TG_OP = 'UPDATE' THEN
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'household', o.id, township_of(o.village_code), 'upsert'
                FROM old_rows o JOIN new_rows n ON n.id = o.id
                WHERE township_of(o.village_code) <> township_of(n.village_code);
            END IF;
        ELSIF TG_TABLE_NAME = 'persons' THEN
            INSERT INTO sync_changes (entity, entity_id, township_code, op)
            SELECT DISTINCT 'person', n.id, township_of(h.village_code), 'upsert'
            FROM new_rows n
            JOIN memberships m ON m.person_id = n.id AND m.left_at IS NULL
            JOIN households h ON h.id = m.household_id;
        ELSIF TG_TABLE_NAME = 'memberships' THEN
            INSERT INTO sync_changes (entity, entity_id, township_code, op)
            SELECT e.entity, e.id, township_of(h.village_code), 'upsert'
            FROM new_rows n
            JOIN households h ON h.id = n.household_id
            CROSS JOIN LATERAL (VALUES ('membership', n.id), ('person', n.person_id)) AS e (entity, id);
        ELSIF TG_TABLE_NAME = 'enrollments' OR TG_TABLE_NAME = 'payments' THEN
            INSERT INTO sync_changes (entity, entity_id, township_code, op)
            SELECT left(TG_TABLE_NAME, -1), id, township_of(village_code), 'upsert' FROM new_rows;
        ELSIF TG_TABLE_NAME = 'payment_events' THEN
            INSERT INTO sync_changes (entity, entity_id, township_code, op)
            SELECT 'payment_event', n.id, township_of(p.village_code), 'upsert'
            FROM new_rows n JOIN payments p ON p.id = n.payment_id;
        ELSIF TG_TABLE_NAME = 'receipt_blocks' THEN
            INSERT INTO sync_changes (entity, entity_id, township_code, op)
            SELECT 'receipt_block', id, township_of(township_code), 'upsert' FROM new_rows;
        ELSIF TG_TABLE_NAME = 'receipt_retirements' THEN
            INSERT INTO sync_changes (entity, entity_id, township_code, op)
            SELECT DISTINCT 'receipt_block', b.id, township_of(b.township_code), 'upsert'
            FROM new_rows n JOIN receipt_blocks b ON b.id = n.block_id;
        ELSIF TG_TABLE_NAME = 'policy_versions' THEN
            INSERT INTO sync_changes (entity, entity_id, township_code, op)
            SELECT 'policy_version', id, NULL, 'upsert' FROM new_rows;
        END IF;
        RETURN NULL;
    END
    $$;
    """)
    updatable = {"households", "persons", "memberships", "enrollments", "receipt_blocks", "policy_versions"}
    for table in _CAPTURED:
        events = ["INSERT", "UPDATE"] if table in updatable else ["INSERT"]
        if table == "persons":
            events = ["UPDATE"]  # a new person is captured with their membership
        for event in events:
            old = "OLD TABLE AS old_rows " if event == "UPDATE" else ""
            run_sql(f"""
            CREATE TRIGGER {table}_sync_{event.lower()} AFTER {event} ON {table}
                REFERENCING {old}NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION sync_capture();
            """)
    run_sql("""
    -- A tablet's place in its own sequence of mutations; locked by each push (NOWAIT).
    CREATE TABLE sync_devices (
        device_id         uuid PRIMARY KEY REFERENCES devices (id),
        last_seq          bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
        last_push_at      timestamptz,
        last_pull_at      timestamptz,
        last_app_version  text,
        last_clock_skew_s integer
    );
    INSERT INTO sync_devices (device_id) SELECT id FROM devices;

    CREATE FUNCTION sync_device_registered() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO sync_devices (device_id) SELECT id FROM new_rows ON CONFLICT DO NOTHING;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER devices_sync_register AFTER INSERT ON devices
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sync_device_registered();

    -- The ledger: one row per (device, seq) answered, written in the transaction of its effects.
    CREATE TABLE sync_mutations (
        device_id   uuid NOT NULL REFERENCES sync_devices (device_id),
        seq         bigint NOT NULL CHECK (seq >= 1),
        mutation_id uuid,
        kind        text NOT NULL,
        user_id     uuid NOT NULL REFERENCES users (id),
        body_hash   bytea NOT NULL,
        status      text NOT NULL CHECK (status IN ('applied', 'applied_with_conflict', 'duplicate', 'rejected', 'quarantined')),
        answer      jsonb NOT NULL,
        device_time timestamptz,
        at          timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (device_id, seq)
    );
    CREATE TRIGGER sync_mutations_append_only BEFORE UPDATE OR DELETE ON sync_mutations
        FOR EACH ROW EXECUTE FUNCTION forbid_change();

    -- Work acknowledged but not applied (money is never dropped), until a reviewer settles it.
    CREATE TABLE sync_quarantine (
        id              uuid PRIMARY KEY,
        device_id       uuid NOT NULL REFERENCES devices (id),
        seq             bigint NOT NULL,
        user_id         uuid NOT NULL REFERENCES users (id),
        township_code   text NOT NULL,  -- the collector's township: its reviewers settle it
        kind            text NOT NULL,
        payment_id      uuid,
        content_hash    bytea,
        reason          text NOT NULL,
        detail          text,
        body            jsonb NOT NULL,
        status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'applied', 'dismissed')),
        settled_by      uuid REFERENCES users (id),
        settled_at      timestamptz,
        settlement_note text,
        at              timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT sync_quarantine_settled CHECK ((status = 'open') = (settled_at IS NULL))
    );
    CREATE INDEX sync_quarantine_queue_idx ON sync_quarantine (township_code, status, at);
    CREATE INDEX sync_quarantine_payment_idx ON sync_quarantine (payment_id) WHERE payment_id IS NOT NULL;
    """)


def downgrade() -> None:
    run_sql("""
    DROP TABLE sync_quarantine;
    DROP TABLE sync_mutations;
    DROP TRIGGER devices_sync_register ON devices;
    DROP FUNCTION sync_device_registered();
    DROP TABLE sync_devices;
    """)
    for table in _CAPTURED:
        run_sql(f"""
        DROP TRIGGER IF EXISTS {table}_sync_insert ON {table};
        DROP TRIGGER IF EXISTS {table}_sync_update ON {table};
        """)
    run_sql("""
    DROP FUNCTION sync_capture();
    DROP FUNCTION township_of(text);
    DROP TABLE sync_horizon;
    DROP TABLE sync_changes;
    """)
