"""Registering a household starts by looking its people up by number: planned once per connection
(issue 20 point 5).

The lookup (`village_and_people_by_identity` in backend/enrollment/households.sql) is the first
statement of the registration's transaction, so the generic plans it asks for the rest of the
transaction (`plan_cache_mode`) come too late for itself, and under the default PostgreSQL chose a
custom plan for its arrays on every request (2,012 custom plans in 2,012 runs): 0.19 ms of planning
for 0.03 ms of work, a tenth of PostgreSQL's time per household in bench/household_create.py. The
same query, in a function that plans it generically (a `SET` of the function's own), is planned once
per connection: 185 → 103 µs per lookup with its transaction, on one connection.

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-05
"""

from migrations import run_sql

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    -- The level of division `village` (NULL if there is none) on every row, with who already holds
    -- one of these numbers and the village of their current household (if any): one row of NULLs
    -- when nobody does.
    CREATE FUNCTION village_and_people_by_identity(village text, numbers bytea[], certs bytea[])
    RETURNS TABLE (level text, id uuid, id_number_hash bytea, birth_cert_hash bytea, household_id uuid,
                   village_code text)
    LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
    BEGIN
        RETURN QUERY
        SELECT d.level, p.id, p.id_number_hash, p.birth_cert_hash, h.id, h.village_code
        FROM (SELECT (SELECT dv.level FROM divisions dv WHERE dv.code = village) AS level) AS d
        LEFT JOIN (persons p
                   LEFT JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
                   LEFT JOIN households h ON h.id = m.household_id)
               ON p.id_number_hash = ANY (numbers) OR p.birth_cert_hash = ANY (certs);
    END
    $$;
    """)


def downgrade() -> None:
    run_sql("DROP FUNCTION village_and_people_by_identity(text, bytea[], bytea[]);")
