"""The 应保尽保 report from a summary kept by the transaction that changes the facts.

The report counted, per village, the current members of active households and, for a year, those
with a funded live enrolment (or, without one, a non-cancelled imported history year), a registered
one, a confirmed one: a join of every membership, household and enrolment of the scope, linear in
persons (3.4 s for the district at 1,000,000 persons, 9–17 s expected at 5,000,000). Now:

- `coverage_persons`: what each person adds to the report today — the village of their current
  household if it is active, and their class per year (`funded`, `registered_unpaid`,
  `confirmed`, which is funded too). One row per person, locked while it is recomputed.
- `coverage_tallies`: insert-only deltas per (coverage year, village): persons (on the rows of
  year 0: a person counts whatever the year), funded, registered_unpaid, confirmed. The report sums
  them; inserting never waits for another transaction on the same village (no hot row).
- `coverage_refresh(person ids)`: locks those persons' rows, recomputes what they add from the
  facts (after the lock, so a concurrent transaction's committed change is seen), writes the
  difference as deltas and keeps the new state. Idempotent: calling it twice adds nothing.
- Statement triggers (transition tables) on enrollments, memberships, households, persons and
  enrollment_history call it for the persons whose rows changed a column the report reads.
- `coverage_compact()`: folds the deltas into one row per key under an advisory lock; the sums are
  unchanged, so it is safe at any time (housekeeping runs it).
- `coverage_rebuild()`: recomputes both tables from the facts (this migration's backfill; a bulk
  load that bypassed the triggers).

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06
"""

from migrations import run_sql

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    CREATE TABLE coverage_persons (
        person_id    uuid PRIMARY KEY,
        village_code text,  -- of the current household when it is active; NULL: not counted
        years        integer[] NOT NULL DEFAULT '{}',
        classes      text[] NOT NULL DEFAULT '{}',  -- per year: funded, registered_unpaid, confirmed
        CONSTRAINT coverage_persons_classes CHECK (
            cardinality(years) = cardinality(classes)
            AND classes <@ ARRAY['funded', 'registered_unpaid', 'confirmed']
            AND (village_code IS NOT NULL OR cardinality(years) = 0))
    );

    CREATE TABLE coverage_tallies (
        coverage_year     integer NOT NULL,  -- 0: the persons of the village, whatever the year
        village_code      text NOT NULL,
        persons           integer NOT NULL DEFAULT 0,
        funded            integer NOT NULL DEFAULT 0,
        registered_unpaid integer NOT NULL DEFAULT 0,
        confirmed         integer NOT NULL DEFAULT 0
    );
    CREATE INDEX coverage_tallies_key ON coverage_tallies (coverage_year, village_code)
        INCLUDE (persons, funded, registered_unpaid, confirmed);

    -- What `ids` add to the report now, against what they added before: the difference as deltas.
    CREATE FUNCTION coverage_refresh(ids uuid[]) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        IF coalesce(cardinality(ids), 0) = 0 THEN
            RETURN;
        END IF;
        INSERT INTO coverage_persons (person_id)
        SELECT DISTINCT i FROM unnest(ids) AS i WHERE i IS NOT NULL ORDER BY i
        ON CONFLICT DO NOTHING;
        -- In one order, so two transactions refreshing the same persons cannot deadlock here. After
        -- the lock, each statement below reads what the transaction that held it committed.
        PERFORM 1 FROM coverage_persons WHERE person_id = ANY (ids) ORDER BY person_id FOR UPDATE;
        WITH placed AS (
            SELECT c.person_id, h.village_code
            FROM coverage_persons c
            LEFT JOIN memberships m ON m.person_id = c.person_id AND m.left_at IS NULL
            LEFT JOIN households h ON h.id = m.household_id AND h.status = 'active'
            WHERE c.person_id = ANY (ids)
        ), fresh AS (
            SELECT pl.person_id, pl.village_code,
                   coalesce(array_agg(y.coverage_year ORDER BY y.coverage_year)
                            FILTER (WHERE y.coverage_year IS NOT NULL), '{}') AS years,
                   coalesce(array_agg(y.class ORDER BY y.coverage_year)
                            FILTER (WHERE y.coverage_year IS NOT NULL), '{}') AS classes
            FROM placed pl
            LEFT JOIN LATERAL (
                SELECT e.coverage_year,
                       CASE e.status WHEN 'registered' THEN 'registered_unpaid'
                                     WHEN 'confirmed' THEN 'confirmed' ELSE 'funded' END AS class
                FROM enrollments e
                WHERE e.person_id = pl.person_id AND e.status <> 'cancelled'
                UNION ALL
                -- Without a live enrolment, a non-cancelled history year covers it.
                SELECT eh.coverage_year, 'funded'
                FROM persons p
                JOIN enrollment_history eh ON eh.id_number_hash = p.id_number_hash
                WHERE p.id = pl.person_id AND eh.status <> 'cancelled'
                  AND NOT EXISTS (SELECT 1 FROM enrollments e
                                  WHERE e.person_id = p.id AND e.coverage_year = eh.coverage_year
                                    AND e.status <> 'cancelled')
            ) AS y ON pl.village_code IS NOT NULL
            GROUP BY pl.person_id, pl.village_code
        ), changed AS (
            SELECT f.*, c.village_code AS old_village, c.years AS old_years, c.classes AS old_classes
            FROM fresh f JOIN coverage_persons c USING (person_id)
            WHERE (f.village_code, f.years, f.classes) IS DISTINCT FROM (c.village_code, c.years, c.classes)
        ), kept AS (
            UPDATE coverage_persons c
            SET village_code = ch.village_code, years = ch.years, classes = ch.classes
            FROM changed ch WHERE c.person_id = ch.person_id
        ), deltas AS (
            SELECT village_code, 0 AS coverage_year, 1 AS persons, NULL AS class, 1 AS sign
            FROM changed WHERE village_code IS NOT NULL
            UNION ALL
            SELECT old_village, 0, 1, NULL, -1 FROM changed WHERE old_village IS NOT NULL
            UNION ALL
            SELECT ch.village_code, u.year, 0, u.class, 1
            FROM changed ch, unnest(ch.years, ch.classes) AS u (year, class)
            UNION ALL
            SELECT ch.old_village, u.year, 0, u.class, -1
            FROM changed ch, unnest(ch.old_years, ch.old_classes) AS u (year, class)
        )
        INSERT INTO coverage_tallies (coverage_year, village_code, persons, funded, registered_unpaid, confirmed)
        SELECT * FROM (
            SELECT coverage_year, village_code, sum(sign * persons) AS persons,
                   coalesce(sum(sign) FILTER (WHERE class IN ('funded', 'confirmed')), 0) AS funded,
                   coalesce(sum(sign) FILTER (WHERE class = 'registered_unpaid'), 0) AS registered_unpaid,
                   coalesce(sum(sign) FILTER (WHERE class = 'confirmed'), 0) AS confirmed
            FROM deltas
            GROUP BY coverage_year, village_code
        ) AS d
        WHERE (persons, funded, registered_unpaid, confirmed) <> (0, 0, 0, 0);
    END
    $$;

    -- The persons whose rows changed a column the report reads.
    CREATE FUNCTION coverage_facts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        ids uuid[];
    BEGIN
        IF TG_TABLE_NAME IN ('enrollments', 'memberships') THEN
            IF TG_OP = 'INSERT' THEN
                ids := ARRAY(SELECT person_id FROM new_rows);
            ELSIF TG_OP = 'DELETE' THEN
                ids := ARRAY(SELECT person_id FROM old_rows);
            ELSIF TG_TABLE_NAME = 'enrollments' THEN
                ids := ARRAY(
                    SELECT unnest(ARRAY[o.person_id, n.person_id])
                    FROM old_rows o JOIN new_rows n USING (id)
                    WHERE (o.person_id, o.coverage_year, o.status)
                          IS DISTINCT FROM (n.person_id, n.coverage_year, n.status));
            ELSE
                ids := ARRAY(
                    SELECT unnest(ARRAY[o.person_id, n.person_id])
                    FROM old_rows o JOIN new_rows n USING (id)
                    WHERE (o.person_id, o.household_id, o.left_at IS NULL)
                          IS DISTINCT FROM (n.person_id, n.household_id, n.left_at IS NULL));
            END IF;
        ELSIF TG_TABLE_NAME = 'households' THEN
            ids := ARRAY(
                SELECT m.person_id
                FROM old_rows o JOIN new_rows n USING (id)
                JOIN memberships m ON m.household_id = n.id AND m.left_at IS NULL
                WHERE (o.status, o.village_code) IS DISTINCT FROM (n.status, n.village_code));
        ELSIF TG_TABLE_NAME = 'persons' THEN
            ids := ARRAY(
                SELECT n.id FROM old_rows o JOIN new_rows n USING (id)
                WHERE o.id_number_hash IS DISTINCT FROM n.id_number_hash);
        ELSIF TG_TABLE_NAME = 'enrollment_history' THEN
            IF TG_OP = 'INSERT' THEN
                ids := ARRAY(SELECT p.id FROM new_rows r JOIN persons p ON p.id_number_hash = r.id_number_hash);
            ELSIF TG_OP = 'DELETE' THEN
                ids := ARRAY(SELECT p.id FROM old_rows r JOIN persons p ON p.id_number_hash = r.id_number_hash);
            ELSE
                ids := ARRAY(
                    SELECT p.id FROM (SELECT id_number_hash FROM old_rows UNION SELECT id_number_hash FROM new_rows) r
                    JOIN persons p ON p.id_number_hash = r.id_number_hash);
            END IF;
        END IF;
        PERFORM coverage_refresh(ids);
        RETURN NULL;
    END
    $$;

    CREATE TRIGGER enrollments_coverage_insert AFTER INSERT ON enrollments
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION coverage_facts_changed();
    CREATE TRIGGER enrollments_coverage_update AFTER UPDATE ON enrollments
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION coverage_facts_changed();
    CREATE TRIGGER enrollments_coverage_delete AFTER DELETE ON enrollments
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION coverage_facts_changed();
    CREATE TRIGGER memberships_coverage_insert AFTER INSERT ON memberships
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION coverage_facts_changed();
    CREATE TRIGGER memberships_coverage_update AFTER UPDATE ON memberships
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION coverage_facts_changed();
    CREATE TRIGGER memberships_coverage_delete AFTER DELETE ON memberships
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION coverage_facts_changed();
    CREATE TRIGGER households_coverage_update AFTER UPDATE ON households
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION coverage_facts_changed();
    CREATE TRIGGER persons_coverage_update AFTER UPDATE ON persons
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION coverage_facts_changed();
    CREATE TRIGGER enrollment_history_coverage_insert AFTER INSERT ON enrollment_history
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION coverage_facts_changed();
    CREATE TRIGGER enrollment_history_coverage_update AFTER UPDATE ON enrollment_history
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION coverage_facts_changed();
    CREATE TRIGGER enrollment_history_coverage_delete AFTER DELETE ON enrollment_history
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION coverage_facts_changed();

    -- One row per key with the same sums; deltas inserted meanwhile by other transactions are not
    -- seen by the DELETE and stay. Returns how many rows it folded away.
    CREATE FUNCTION coverage_compact() RETURNS integer LANGUAGE plpgsql AS $$
    DECLARE
        folded integer;
    BEGIN
        IF NOT pg_try_advisory_xact_lock(hashtext('coverage_compact')) THEN
            RETURN 0;
        END IF;
        WITH gone AS (
            DELETE FROM coverage_tallies
            WHERE (coverage_year, village_code) IN (SELECT coverage_year, village_code FROM coverage_tallies
                                                    GROUP BY coverage_year, village_code HAVING count(*) > 1)
            RETURNING *
        ), kept AS (
            INSERT INTO coverage_tallies (coverage_year, village_code, persons, funded, registered_unpaid, confirmed)
            SELECT coverage_year, village_code, sum(persons), sum(funded), sum(registered_unpaid), sum(confirmed)
            FROM gone GROUP BY coverage_year, village_code
            HAVING (sum(persons), sum(funded), sum(registered_unpaid), sum(confirmed)) <> (0, 0, 0, 0)
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept) INTO folded;
        RETURN folded;
    END
    $$;

    -- Both tables from the facts, whole (waits for, and holds off, every refresh meanwhile).
    CREATE FUNCTION coverage_rebuild() RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        LOCK TABLE coverage_persons IN EXCLUSIVE MODE;
        DELETE FROM coverage_tallies;
        DELETE FROM coverage_persons;
        PERFORM coverage_refresh(ARRAY(SELECT id FROM persons));
        PERFORM coverage_compact();
    END
    $$;

    SELECT coverage_rebuild();
    """)


def downgrade() -> None:
    run_sql("""
    DROP TRIGGER enrollment_history_coverage_delete ON enrollment_history;
    DROP TRIGGER enrollment_history_coverage_update ON enrollment_history;
    DROP TRIGGER enrollment_history_coverage_insert ON enrollment_history;
    DROP TRIGGER persons_coverage_update ON persons;
    DROP TRIGGER households_coverage_update ON households;
    DROP TRIGGER memberships_coverage_delete ON memberships;
    DROP TRIGGER memberships_coverage_update ON memberships;
    DROP TRIGGER memberships_coverage_insert ON memberships;
    DROP TRIGGER enrollments_coverage_delete ON enrollments;
    DROP TRIGGER enrollments_coverage_update ON enrollments;
    DROP TRIGGER enrollments_coverage_insert ON enrollments;
    DROP FUNCTION coverage_rebuild();
    DROP FUNCTION coverage_compact();
    DROP FUNCTION coverage_facts_changed();
    DROP FUNCTION coverage_refresh(uuid[]);
    DROP TABLE coverage_tallies;
    DROP TABLE coverage_persons;
    """)
