"""Civil-affairs list versions: a rejected upload takes no version number, a mixed file's rejected
attempt (type `auto`) has no kind, an upload may say it supersedes versions dated later, and the
version in force on a date is the newest (highest-numbered) loaded one effective on or before it.

Before this revision the version in force was the one with the latest effective date (the newest
of a day), so a version uploaded later with an earlier date was silently not in force. The
importer now refuses such a version unless the uploader says it supersedes (`supersedes`), and
then it is in force from its date on: the rule "highest number effective on the date" says both.
Versions loaded before this revision in that order now follow the new rule too.

Rejected uploads of earlier revisions keep the numbers they took (the next version is numbered
after the highest one present); new ones have none.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

import importlib

from migrations import run_sql

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_OLD_WINDOWS = """
    CREATE OR REPLACE VIEW subsidy_list_windows AS
    SELECT id AS version_id, list_type, division_code, version, effective_from,
           lead(effective_from) OVER (PARTITION BY list_type, division_code ORDER BY effective_from)
               AS superseded_on
    FROM (SELECT DISTINCT ON (list_type, division_code, effective_from)
                 id, list_type, division_code, version, effective_from
          FROM list_versions
          WHERE status = 'loaded' AND kind = 'subsidy'
          ORDER BY list_type, division_code, effective_from, version DESC) AS newest_per_day;
"""

# A version is in force from its effective date until the earliest effective date of a version
# numbered after it; one that a later-numbered version already covers on its own date never is.
_NEW_WINDOWS = """
    CREATE OR REPLACE VIEW subsidy_list_windows AS
    SELECT version_id, list_type, division_code, version, effective_from, superseded_on
    FROM (SELECT id AS version_id, list_type, division_code, version, effective_from,
                 min(effective_from) OVER (PARTITION BY list_type, division_code ORDER BY version DESC
                                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS superseded_on
          FROM list_versions
          WHERE status = 'loaded' AND kind = 'subsidy') AS w
    WHERE superseded_on IS NULL OR superseded_on > effective_from;
"""

# The versions whose window a new one cuts short: those dated on or after it (shadowed from its
# date on) and the one in force the day before it.
_OLD_CAPTURE = """                AND (v.effective_from = n.effective_from
                     OR v.effective_from = (SELECT max(w.effective_from) FROM list_versions w
                                            WHERE w.list_type = n.list_type AND w.division_code = n.division_code
                                              AND w.kind = 'subsidy' AND w.status = 'loaded'
                                              AND w.effective_from < n.effective_from))"""
_NEW_CAPTURE = """                AND (v.effective_from >= n.effective_from
                     OR v.id = (SELECT w.id FROM list_versions w
                                WHERE w.list_type = n.list_type AND w.division_code = n.division_code
                                  AND w.kind = 'subsidy' AND w.status = 'loaded'
                                  AND w.effective_from < n.effective_from
                                ORDER BY w.version DESC LIMIT 1))"""


def _capture(new: bool) -> str:
    sealed = importlib.import_module("migrations.versions.0015_sealed_numbers")
    sql: str = sealed._subsidies_sql("id_number_hash")
    assert _OLD_CAPTURE in sql
    return sql.replace(_OLD_CAPTURE, _NEW_CAPTURE) if new else sql


def upgrade() -> None:
    run_sql(
        """
    ALTER TABLE list_versions ALTER COLUMN version DROP NOT NULL;
    ALTER TABLE list_versions ALTER COLUMN kind DROP NOT NULL;
    ALTER TABLE list_versions ADD COLUMN supersedes boolean NOT NULL DEFAULT false;
    ALTER TABLE list_versions ADD CONSTRAINT list_versions_loaded_numbered
        CHECK (status = 'rejected' OR version IS NOT NULL);
    -- Only a mixed file's rejected attempt has no kind: it never became a version of any type.
    ALTER TABLE list_versions ADD CONSTRAINT list_versions_kind_known
        CHECK (kind IS NOT NULL OR (list_type = 'auto' AND status = 'rejected'));
    ALTER TABLE list_versions ADD CONSTRAINT list_versions_auto_rejected
        CHECK (list_type <> 'auto' OR (status = 'rejected' AND kind IS NULL));
    """
        + _NEW_WINDOWS
        + _capture(new=True)
    )


def downgrade() -> None:
    run_sql(
        """
    ALTER TABLE list_versions DISABLE TRIGGER list_versions_append_only;
    DELETE FROM list_versions WHERE list_type = 'auto';
    UPDATE list_versions v SET version = n.number
    FROM (SELECT id, (SELECT coalesce(max(version), 0) FROM list_versions w
                      WHERE w.list_type = r.list_type AND w.division_code = r.division_code)
                     + row_number() OVER (PARTITION BY list_type, division_code ORDER BY id) AS number
          FROM list_versions r WHERE version IS NULL) AS n
    WHERE v.id = n.id;
    ALTER TABLE list_versions ENABLE TRIGGER list_versions_append_only;
    ALTER TABLE list_versions DROP CONSTRAINT list_versions_auto_rejected;
    ALTER TABLE list_versions DROP CONSTRAINT list_versions_kind_known;
    ALTER TABLE list_versions DROP CONSTRAINT list_versions_loaded_numbered;
    ALTER TABLE list_versions DROP COLUMN supersedes;
    ALTER TABLE list_versions ALTER COLUMN kind SET NOT NULL;
    ALTER TABLE list_versions ALTER COLUMN version SET NOT NULL;
    """
        + _OLD_WINDOWS
        + _capture(new=False)
    )
