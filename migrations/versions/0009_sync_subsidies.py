"""Subsidy categories travel to the tablets: the windows in which each subsidy list version is in
force, and change capture for everything that changes a person's categories.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from migrations import run_sql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    -- When each loaded subsidy list version is in force: from its effective date until the next
    -- effective date of the same list (type and uploader). Of versions with the same effective date
    -- the newest wins, so the older ones have no window at all. This is the rule of the eligibility
    -- check (backend.eligibility queries `entries_in_force`), written as date ranges so that a
    -- tablet can apply it offline to any day.
    CREATE VIEW subsidy_list_windows AS
    SELECT id AS version_id, list_type, division_code, version, effective_from,
           lead(effective_from) OVER (PARTITION BY list_type, division_code ORDER BY effective_from)
               AS superseded_on
    FROM (SELECT DISTINCT ON (list_type, division_code, effective_from)
                 id, list_type, division_code, version, effective_from
          FROM list_versions
          WHERE status = 'loaded' AND kind = 'subsidy'
          ORDER BY list_type, division_code, effective_from, version DESC) AS newest_per_day;

    -- A person's subsidy row (entity 'subsidy', id = the person's id) changes when a list version
    -- naming them is loaded, when a claim for them is accepted or withdrawn, when their identity
    -- number changes, and when they join or leave a household (another township's tablets must
    -- get or drop the row). Captured like every synced record: in the writing transaction, with
    -- the township of the person's household. A capture that turns out to change nothing costs one
    -- row image in a pull; a missed one would leave a tablet wrong, so the tests err on the wide side.
    CREATE FUNCTION sync_capture_subsidies() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_TABLE_NAME = 'list_versions' THEN
            -- The new version's people, and those of the versions whose window it cuts short: the
            -- ones of the same day (now shadowed) and the latest effective before it.
            INSERT INTO sync_changes (entity, entity_id, township_code, op)
            SELECT DISTINCT 'subsidy', p.id, township_of(h.village_code), 'upsert'
            FROM new_rows n
            JOIN list_versions v ON v.list_type = n.list_type AND v.division_code = n.division_code
                AND v.kind = 'subsidy' AND v.status = 'loaded'
                AND (v.effective_from = n.effective_from
                     OR v.effective_from = (SELECT max(w.effective_from) FROM list_versions w
                                            WHERE w.list_type = n.list_type AND w.division_code = n.division_code
                                              AND w.kind = 'subsidy' AND w.status = 'loaded'
                                              AND w.effective_from < n.effective_from))
            JOIN list_entries e ON e.version_id = v.id
            JOIN persons p ON p.id_number = e.id_number
            JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
            JOIN households h ON h.id = m.household_id
            WHERE n.kind = 'subsidy' AND n.status = 'loaded';
        ELSIF TG_TABLE_NAME = 'eligibility_claims' THEN
            -- Only accepted claims count (a pending or rejected one changes no category).
            IF TG_OP = 'UPDATE' THEN
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'subsidy', p.id, township_of(h.village_code), 'upsert'
                FROM old_rows o JOIN new_rows n ON n.id = o.id
                JOIN persons p ON p.id_number IN (o.id_number, n.id_number)
                JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
                JOIN households h ON h.id = m.household_id
                WHERE (o.status = 'accepted' OR n.status = 'accepted')
                  AND (o.status, o.category, o.coverage_year, o.id_number)
                      IS DISTINCT FROM (n.status, n.category, n.coverage_year, n.id_number);
            ELSE
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'subsidy', p.id, township_of(h.village_code), 'upsert'
                FROM new_rows n
                JOIN persons p ON p.id_number = n.id_number
                JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
                JOIN households h ON h.id = m.household_id
                WHERE n.status = 'accepted';
            END IF;
        ELSIF TG_TABLE_NAME = 'persons' THEN
            -- Lists and claims name people by identity number.
            INSERT INTO sync_changes (entity, entity_id, township_code, op)
            SELECT 'subsidy', n.id, township_of(h.village_code), 'upsert'
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            JOIN memberships m ON m.person_id = n.id AND m.left_at IS NULL
            JOIN households h ON h.id = m.household_id
            WHERE o.id_number IS DISTINCT FROM n.id_number;
        ELSE
            -- memberships: only people who are, or were, on a subsidy list or hold an accepted claim
            -- (two index probes: the people who never had a category cost a push nothing more)
            IF TG_OP = 'UPDATE' THEN
                -- A membership that ends (or changes household): the row leaves that township.
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'subsidy', n.person_id, township_of(h.village_code), 'upsert'
                FROM old_rows o JOIN new_rows n ON n.id = o.id
                JOIN households h ON h.id = n.household_id
                JOIN persons p ON p.id = n.person_id
                WHERE (o.household_id <> n.household_id OR o.left_at IS DISTINCT FROM n.left_at)
                  AND (EXISTS (SELECT 1 FROM list_entries e JOIN list_versions v ON v.id = e.version_id
                               WHERE e.id_number = p.id_number AND v.kind = 'subsidy')
                       OR EXISTS (SELECT 1 FROM eligibility_claims c
                                  WHERE c.id_number = p.id_number AND c.status = 'accepted'));
            ELSE
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'subsidy', n.person_id, township_of(h.village_code), 'upsert'
                FROM new_rows n
                JOIN households h ON h.id = n.household_id
                JOIN persons p ON p.id = n.person_id
                WHERE (EXISTS (SELECT 1 FROM list_entries e JOIN list_versions v ON v.id = e.version_id
                               WHERE e.id_number = p.id_number AND v.kind = 'subsidy')
                       OR EXISTS (SELECT 1 FROM eligibility_claims c
                                  WHERE c.id_number = p.id_number AND c.status = 'accepted'));
            END IF;
        END IF;
        RETURN NULL;
    END
    $$;

    CREATE TRIGGER list_versions_sync_subsidy AFTER INSERT ON list_versions
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sync_capture_subsidies();
    CREATE TRIGGER eligibility_claims_sync_subsidy_insert AFTER INSERT ON eligibility_claims
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sync_capture_subsidies();
    CREATE TRIGGER eligibility_claims_sync_subsidy_update AFTER UPDATE ON eligibility_claims
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION sync_capture_subsidies();
    CREATE TRIGGER persons_sync_subsidy AFTER UPDATE ON persons
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION sync_capture_subsidies();
    CREATE TRIGGER memberships_sync_subsidy_insert AFTER INSERT ON memberships
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sync_capture_subsidies();
    CREATE TRIGGER memberships_sync_subsidy_update AFTER UPDATE ON memberships
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION sync_capture_subsidies();
    """)


def downgrade() -> None:
    run_sql("""
    DROP TRIGGER memberships_sync_subsidy_update ON memberships;
    DROP TRIGGER memberships_sync_subsidy_insert ON memberships;
    DROP TRIGGER persons_sync_subsidy ON persons;
    DROP TRIGGER eligibility_claims_sync_subsidy_update ON eligibility_claims;
    DROP TRIGGER eligibility_claims_sync_subsidy_insert ON eligibility_claims;
    DROP TRIGGER list_versions_sync_subsidy ON list_versions;
    DROP FUNCTION sync_capture_subsidies();
    DROP VIEW subsidy_list_windows;
    """)
