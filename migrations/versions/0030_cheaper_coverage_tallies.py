"""The 应保尽保 summary's upkeep for a fraction of its cost (issue 20 point 2): same figures, same
transaction, same locks.

Migration 0026's triggers cost about 1 ms of PostgreSQL per write statement, and most of it was
planning: `coverage_refresh(ids)` ran one statement of five CTEs whose plan for `= ANY (ids)` is
costed by the array's length, so PL/pgSQL's plan cache kept making a custom plan (≈ 2 ms) on every
call instead of reusing one. Now:

- `coverage_now(person)`: what a person adds to the report now (village of their current household
  if it is active, and their class per year).
- `coverage_refresh_person(person)`: the refresh of one person in three statements whose plans are
  made once per connection (a key equality costs the same for any key): lock their
  `coverage_persons` row, read what they add now, and only if it changed, keep it and insert the
  difference as deltas. A person not yet counted is inserted with what they add (the insertion is
  the lock: another transaction refreshing them waits at the key, then finds the row).
- `coverage_refresh_some(ids)`: each person once, in id order (two statements refreshing the same
  persons cannot deadlock), or 0026's set refresh `coverage_refresh(ids)` above 64 persons, its
  plan made for the persons at hand (`coverage_rebuild()` uses it: 7 s for 260,000 persons, where
  the same refresh reading `coverage_now` person by person took 9–14 s). Its query and
  `coverage_now` say the same thing twice; tests/enrollment/test_coverage_tallies_random.py
  compares both with the facts.
- `coverage_facts_changed()`: the same statement triggers, which also pass over changes that cannot
  move a figure: an enrolment inserted or deleted already cancelled, paid ↔ subsidised (funded
  either way), a membership inserted, deleted or changed that is not current before or after.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-12
"""

from __future__ import annotations

from migrations import run_sql

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    -- What a person adds to the report now: the village of their current household if it is active
    -- (NULL: counted nowhere) and, there, per year, their class: a live enrolment's, or, without one,
    -- a non-cancelled history year's (funded). Years ascending; no years without a village.
    CREATE FUNCTION coverage_now(person uuid)
    RETURNS TABLE (village_code text, years integer[], classes text[]) LANGUAGE sql STABLE AS $$
        SELECT h.village_code, coalesce(y.years, '{}'), coalesce(y.classes, '{}')
        FROM (VALUES (person)) AS me (id)
        LEFT JOIN (memberships m JOIN households h ON h.id = m.household_id AND h.status = 'active')
               ON m.person_id = me.id AND m.left_at IS NULL
        LEFT JOIN LATERAL (
            SELECT array_agg(u.coverage_year ORDER BY u.coverage_year) AS years,
                   array_agg(u.class ORDER BY u.coverage_year) AS classes
            FROM (
                SELECT e.coverage_year,
                       CASE e.status WHEN 'registered' THEN 'registered_unpaid'
                                     WHEN 'confirmed' THEN 'confirmed' ELSE 'funded' END AS class
                FROM enrollments e
                WHERE e.person_id = person AND e.status <> 'cancelled'
                UNION ALL
                SELECT eh.coverage_year, 'funded'
                FROM persons p
                JOIN enrollment_history eh ON eh.id_number_hash = p.id_number_hash
                WHERE p.id = person AND eh.status <> 'cancelled'
                  AND NOT EXISTS (SELECT 1 FROM enrollments e
                                  WHERE e.person_id = person AND e.coverage_year = eh.coverage_year
                                    AND e.status <> 'cancelled')
            ) AS u
            WHERE h.village_code IS NOT NULL
        ) AS y ON true
    $$;

    -- The deltas of a person going from what they added (`was_*`) to what they add now: +1/−1 person
    -- on the rows of year 0 of the villages, ±1 per year in its class.
    CREATE FUNCTION coverage_deltas(was_village text, was_years integer[], was_classes text[],
                                    now_village text, now_years integer[], now_classes text[])
    RETURNS SETOF coverage_tallies LANGUAGE sql IMMUTABLE AS $$
        SELECT d.coverage_year, d.village_code, sum(d.persons)::integer, sum(d.funded)::integer,
               sum(d.registered_unpaid)::integer, sum(d.confirmed)::integer
        FROM (
            SELECT 0, now_village, 1, 0, 0, 0 WHERE now_village IS NOT NULL
            UNION ALL
            SELECT 0, was_village, -1, 0, 0, 0 WHERE was_village IS NOT NULL
            UNION ALL
            SELECT u.y, now_village, 0, (u.c <> 'registered_unpaid')::integer,
                   (u.c = 'registered_unpaid')::integer, (u.c = 'confirmed')::integer
            FROM unnest(now_years, now_classes) AS u (y, c)
            UNION ALL
            SELECT u.y, was_village, 0, -(u.c <> 'registered_unpaid')::integer,
                   -(u.c = 'registered_unpaid')::integer, -(u.c = 'confirmed')::integer
            FROM unnest(was_years, was_classes) AS u (y, c)
        ) AS d (coverage_year, village_code, persons, funded, registered_unpaid, confirmed)
        GROUP BY d.coverage_year, d.village_code
        HAVING (sum(d.persons), sum(d.funded), sum(d.registered_unpaid), sum(d.confirmed)) <> (0, 0, 0, 0)
    $$;

    -- One person's refresh (see coverage_refresh in 0026: the same result, in three statements).
    CREATE FUNCTION coverage_refresh_person(person uuid) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        was_village text;
        was_years integer[];
        was_classes text[];
        now_village text;
        now_years integer[];
        now_classes text[];
    BEGIN
        SELECT c.village_code, c.years, c.classes INTO was_village, was_years, was_classes
        FROM coverage_persons c WHERE c.person_id = person FOR UPDATE;
        IF NOT FOUND THEN
            -- Counted nowhere yet: the row is inserted with what they add now. Until this
            -- transaction ends, another one refreshing them waits at the key, then does nothing and
            -- locks the row (below); if one inserted it meanwhile, this one does that.
            SELECT n.village_code, n.years, n.classes INTO now_village, now_years, now_classes
            FROM coverage_now(person) AS n;
            INSERT INTO coverage_persons (person_id, village_code, years, classes)
            VALUES (person, now_village, now_years, now_classes)
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                INSERT INTO coverage_tallies
                SELECT * FROM coverage_deltas(NULL, '{}', '{}', now_village, now_years, now_classes);
                RETURN;
            END IF;
            SELECT c.village_code, c.years, c.classes INTO was_village, was_years, was_classes
            FROM coverage_persons c WHERE c.person_id = person FOR UPDATE;
        END IF;
        -- After the lock: what the transaction that held it committed is read here.
        SELECT n.village_code, n.years, n.classes INTO now_village, now_years, now_classes
        FROM coverage_now(person) AS n;
        IF (now_village, now_years, now_classes) IS NOT DISTINCT FROM (was_village, was_years, was_classes) THEN
            RETURN;
        END IF;
        WITH kept AS (
            UPDATE coverage_persons SET village_code = now_village, years = now_years, classes = now_classes
            WHERE person_id = person
        )
        INSERT INTO coverage_tallies
        SELECT * FROM coverage_deltas(was_village, was_years, was_classes, now_village, now_years, now_classes);
    END
    $$;

    -- Each person once, in id order (as coverage_refresh locks them); the set refresh above 64.
    CREATE FUNCTION coverage_refresh_some(ids uuid[]) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        person uuid;
    BEGIN
        IF cardinality(ids) = 1 THEN
            PERFORM coverage_refresh_person(ids[1]);
        ELSIF cardinality(ids) > 64 THEN
            PERFORM coverage_refresh(ids);
        ELSIF cardinality(ids) > 1 THEN
            FOR person IN SELECT DISTINCT i FROM unnest(ids) AS i ORDER BY i LOOP
                PERFORM coverage_refresh_person(person);
            END LOOP;
        END IF;
    END
    $$;

    -- The persons whose rows changed a column the report reads, in a way that can move a figure.
    CREATE OR REPLACE FUNCTION coverage_facts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        ids uuid[];
    BEGIN
        IF TG_TABLE_NAME = 'enrollments' THEN
            IF TG_OP = 'INSERT' THEN
                ids := ARRAY(SELECT person_id FROM new_rows WHERE status <> 'cancelled');
            ELSIF TG_OP = 'DELETE' THEN
                ids := ARRAY(SELECT person_id FROM old_rows WHERE status <> 'cancelled');
            ELSE
                -- paid and subsidised are the same class (funded).
                ids := ARRAY(
                    SELECT unnest(ARRAY[o.person_id, n.person_id])
                    FROM old_rows o JOIN new_rows n USING (id)
                    WHERE (o.person_id, o.coverage_year, CASE o.status WHEN 'subsidised' THEN 'paid' ELSE o.status END)
                          IS DISTINCT FROM
                          (n.person_id, n.coverage_year, CASE n.status WHEN 'subsidised' THEN 'paid' ELSE n.status END)
                      AND (o.status <> 'cancelled' OR n.status <> 'cancelled'));
            END IF;
        ELSIF TG_TABLE_NAME = 'memberships' THEN
            IF TG_OP = 'INSERT' THEN
                ids := ARRAY(SELECT person_id FROM new_rows WHERE left_at IS NULL);
            ELSIF TG_OP = 'DELETE' THEN
                ids := ARRAY(SELECT person_id FROM old_rows WHERE left_at IS NULL);
            ELSE
                ids := ARRAY(
                    SELECT unnest(ARRAY[o.person_id, n.person_id])
                    FROM old_rows o JOIN new_rows n USING (id)
                    WHERE (o.left_at IS NULL OR n.left_at IS NULL)
                      AND (o.person_id, o.household_id, o.left_at IS NULL)
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
        PERFORM coverage_refresh_some(ids);
        RETURN NULL;
    END
    $$;
    """)


def downgrade() -> None:
    run_sql("""
    -- 0026's trigger function as it was.
    CREATE OR REPLACE FUNCTION coverage_facts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
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

    DROP FUNCTION coverage_refresh_some(uuid[]);
    DROP FUNCTION coverage_refresh_person(uuid);
    DROP FUNCTION coverage_deltas(text, integer[], text[], text, integer[], text[]);
    DROP FUNCTION coverage_now(uuid);
    """)
