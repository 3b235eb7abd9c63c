"""The 应保尽保 summary refreshed once per person per transaction, at its commit (issue 20 point 3).

Migration 0030's statement triggers refreshed the persons a statement touched at the end of that
statement. A transaction that writes the same person in several statements paid for each: a tablet's
household is registered (membership), enrolled (enrolment) and paid (enrolment made paid) in one
push, three refreshes of every member, one by one — 0.08 ms each, 475 ms of the 1.74 s PostgreSQL
spent on a push of 5,000 mutations (bench/sync_push.py, track_functions). Now:

- `coverage_refresh_some(ids)`, which the triggers call, only notes the persons in `coverage_dirty`
  (one row per transaction and person; unlogged: a row lives no longer than its transaction).
- The transaction's first note also inserts its row in `coverage_dirty_xacts`, whose deferred
  constraint trigger runs once, at the commit: it takes every person the transaction noted and
  refreshes them at once (`coverage_refresh_now`, 0030's refresh: one by one up to 64 persons, as
  one set above). (A trigger on `coverage_dirty` itself would run once per person noted: 0.14 ms
  each, more than the refreshes it saves.)
- Same figures, same transaction: the refresh still runs before the commit, under the same
  `coverage_persons` row locks, now taken in one id order for the whole transaction (two
  transactions can no longer deadlock on them through two statements' orders). A savepoint rolled
  back takes its notes with it. `SET CONSTRAINTS coverage_dirty_at_commit IMMEDIATE` refreshes
  earlier, for a reader of the summary inside the writing transaction. Above 64 persons each row is
  taken in id order before the set refresh, which would insert the rows it misses before locking
  the others (a deadlock with a transaction refreshing the same persons one by one).

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-05
"""

from migrations import run_sql

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    CREATE UNLOGGED TABLE coverage_dirty (
        xact      xid8 NOT NULL,
        person_id uuid NOT NULL,
        PRIMARY KEY (xact, person_id)
    );
    -- One row per transaction with persons noted: its insertion queues the refresh at the commit.
    CREATE UNLOGGED TABLE coverage_dirty_xacts (xact xid8 PRIMARY KEY);

    ALTER FUNCTION coverage_refresh_some(uuid[]) RENAME TO coverage_refresh_now;

    -- The persons whose figures may have moved: refreshed at the commit (coverage_flush).
    CREATE FUNCTION coverage_refresh_some(ids uuid[]) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        IF coalesce(cardinality(ids), 0) = 0 THEN
            RETURN;
        END IF;
        INSERT INTO coverage_dirty (xact, person_id)
        SELECT pg_current_xact_id(), i FROM unnest(ids) AS i WHERE i IS NOT NULL
        ON CONFLICT DO NOTHING;
        INSERT INTO coverage_dirty_xacts VALUES (pg_current_xact_id()) ON CONFLICT DO NOTHING;
    END
    $$;

    CREATE FUNCTION coverage_flush() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        ids uuid[];
        person uuid;
    BEGIN
        DELETE FROM coverage_dirty_xacts WHERE xact = NEW.xact;
        WITH noted AS (
            DELETE FROM coverage_dirty WHERE xact = NEW.xact RETURNING person_id
        )
        SELECT array_agg(person_id ORDER BY person_id) INTO ids FROM noted;
        IF cardinality(ids) > 64 THEN
            -- The set refresh (0026) inserts the rows it misses before it locks the others: with a
            -- person one by one in another transaction, two orders, a deadlock. Each row is taken
            -- first, in id order, inserted if missing, as the refresh of one person does.
            FOREACH person IN ARRAY ids LOOP
                INSERT INTO coverage_persons (person_id) VALUES (person) ON CONFLICT DO NOTHING;
                PERFORM 1 FROM coverage_persons WHERE person_id = person FOR UPDATE;
            END LOOP;
        END IF;
        PERFORM coverage_refresh_now(ids);
        RETURN NULL;
    END
    $$;

    CREATE CONSTRAINT TRIGGER coverage_dirty_at_commit AFTER INSERT ON coverage_dirty_xacts
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION coverage_flush();

    -- The application role writes the summary already (its triggers run as the role that writes the
    -- facts): it may use the new tables from this commit on, not only once `canbao migrate` has
    -- applied the grants after the last migration (backend/roles.py), or a service running
    -- meanwhile could commit no write of the facts.
    DO $grants$
    DECLARE
        writer text;
    BEGIN
        FOR writer IN
            SELECT DISTINCT grantee FROM information_schema.role_table_grants
            WHERE table_schema = 'public' AND table_name = 'coverage_persons' AND privilege_type = 'UPDATE'
              AND grantee <> current_user
        LOOP
            EXECUTE format('GRANT SELECT, INSERT, DELETE ON coverage_dirty, coverage_dirty_xacts TO %I', writer);
        END LOOP;
    END
    $grants$;
    """)


def downgrade() -> None:
    run_sql("""
    DROP TRIGGER coverage_dirty_at_commit ON coverage_dirty_xacts;
    DROP FUNCTION coverage_flush();
    DROP FUNCTION coverage_refresh_some(uuid[]);
    ALTER FUNCTION coverage_refresh_now(uuid[]) RENAME TO coverage_refresh_some;
    DROP TABLE coverage_dirty_xacts;
    DROP TABLE coverage_dirty;
    """)
