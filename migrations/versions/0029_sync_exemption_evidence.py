"""Exemption evidence travels to the tablets (issue 17 point 1): the rows of the lists that can show
a person exempt from the waiting period, each with the window in which its version is in force, and
change capture for everything that changes them.

A person's `subsidy` row (entity 'subsidy', id = the person's id) now also carries this evidence,
so it changes when a version of any list that travels is loaded (subsidy lists as before, evidence
lists such as 退役军人 `tuiyi_junren` and 职工医保停保 `employee_insurance_ended`, and the
employee-insurance list), when an accepted claim changes (an exemption claim's proof dates too),
and when a person on any of them joins or leaves a household.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-11
"""

from __future__ import annotations

import importlib

from migrations import run_sql

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


_CAPTURE = """
    CREATE OR REPLACE FUNCTION sync_capture_subsidies() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_TABLE_NAME = 'list_versions' THEN
            -- The new version's people, and those of the versions whose window it cuts short: those
            -- dated on or after it (shadowed from its date on) and the one in force the day before it.
            INSERT INTO sync_changes (entity, entity_id, township_code, op)
            SELECT DISTINCT 'subsidy', p.id, township_of(h.village_code), 'upsert'
            FROM new_rows n
            JOIN list_versions v ON v.list_type = n.list_type AND v.division_code = n.division_code
                AND v.status = 'loaded'
                AND (v.effective_from >= n.effective_from
                     OR v.id = (SELECT w.id FROM list_versions w
                                WHERE w.list_type = n.list_type AND w.division_code = n.division_code
                                  AND w.status = 'loaded' AND w.effective_from < n.effective_from
                                ORDER BY w.version DESC LIMIT 1))
            JOIN list_entries e ON e.version_id = v.id
            JOIN persons p ON p.id_number_hash = e.id_number_hash
            JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
            JOIN households h ON h.id = m.household_id
            WHERE n.status = 'loaded' AND list_travels_to_tablets(n.kind, n.list_type);
        ELSIF TG_TABLE_NAME = 'eligibility_claims' THEN
            -- Only accepted claims count; an exemption claim's proof dates are evidence too.
            IF TG_OP = 'UPDATE' THEN
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'subsidy', p.id, township_of(h.village_code), 'upsert'
                FROM old_rows o JOIN new_rows n ON n.id = o.id
                JOIN persons p ON p.id_number_hash IN (o.id_number_hash, n.id_number_hash)
                JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
                JOIN households h ON h.id = m.household_id
                WHERE (o.status = 'accepted' OR n.status = 'accepted')
                  AND (o.status, o.category, o.coverage_year, o.id_number_hash, o.purpose, o.valid_from, o.valid_to)
                      IS DISTINCT FROM
                      (n.status, n.category, n.coverage_year, n.id_number_hash, n.purpose, n.valid_from, n.valid_to);
            ELSE
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'subsidy', p.id, township_of(h.village_code), 'upsert'
                FROM new_rows n
                JOIN persons p ON p.id_number_hash = n.id_number_hash
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
            WHERE o.id_number_hash IS DISTINCT FROM n.id_number_hash;
        ELSE
            -- memberships: only people who are, or were, on a list that travels or hold an accepted claim
            IF TG_OP = 'UPDATE' THEN
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'subsidy', n.person_id, township_of(h.village_code), 'upsert'
                FROM old_rows o JOIN new_rows n ON n.id = o.id
                JOIN households h ON h.id = n.household_id
                JOIN persons p ON p.id = n.person_id
                WHERE (o.household_id <> n.household_id OR o.left_at IS DISTINCT FROM n.left_at)
                  AND (EXISTS (SELECT 1 FROM list_entries e JOIN list_versions v ON v.id = e.version_id
                               WHERE e.id_number_hash = p.id_number_hash
                                 AND list_travels_to_tablets(v.kind, v.list_type))
                       OR EXISTS (SELECT 1 FROM eligibility_claims c
                                  WHERE c.id_number_hash = p.id_number_hash AND c.status = 'accepted'));
            ELSE
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'subsidy', n.person_id, township_of(h.village_code), 'upsert'
                FROM new_rows n
                JOIN households h ON h.id = n.household_id
                JOIN persons p ON p.id = n.person_id
                WHERE (EXISTS (SELECT 1 FROM list_entries e JOIN list_versions v ON v.id = e.version_id
                               WHERE e.id_number_hash = p.id_number_hash
                                 AND list_travels_to_tablets(v.kind, v.list_type))
                       OR EXISTS (SELECT 1 FROM eligibility_claims c
                                  WHERE c.id_number_hash = p.id_number_hash AND c.status = 'accepted'));
            END IF;
        END IF;
        RETURN NULL;
    END
    $$;
"""


def upgrade() -> None:
    run_sql(
        """
    -- The lists whose rows a tablet holds: subsidy categories, evidence of an exemption from the
    -- waiting period (mobile_sync_protocol/rules/exemptions.py), and employee insurance (职工医保,
    -- an exclusion list whose ended rows show a leaver: left_employee_insurance).
    CREATE FUNCTION list_travels_to_tablets(kind text, list_type text) RETURNS boolean
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$ SELECT $1 IN ('subsidy', 'evidence') OR $2 = 'employee_insurance' $$;

    -- When each loaded version of those lists is in force: the rule of the server's exemption
    -- evidence (backend.eligibility queries `exemption_evidence`: the highest-numbered loaded
    -- version effective on or before the day), as date ranges a tablet applies offline.
    CREATE VIEW evidence_list_windows AS
    SELECT version_id, list_type, kind, division_code, version, effective_from, superseded_on
    FROM (SELECT id AS version_id, list_type, kind, division_code, version, effective_from,
                 min(effective_from) OVER (PARTITION BY list_type, division_code ORDER BY version DESC
                                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS superseded_on
          FROM list_versions
          WHERE status = 'loaded' AND list_travels_to_tablets(kind, list_type)) AS w
    WHERE superseded_on IS NULL OR superseded_on > effective_from;
    """
        + _CAPTURE
    )


def downgrade() -> None:
    precedence = importlib.import_module("migrations.versions.0019_list_precedence")
    run_sql(
        precedence._capture(new=True)
        + """
    DROP VIEW evidence_list_windows;
    DROP FUNCTION list_travels_to_tablets(text, text);
    """
    )
