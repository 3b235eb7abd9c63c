"""Identity, birth-certificate and phone numbers sealed at rest, found by a keyed blind index.

Every clear-text copy becomes `…_enc` (sealed under a data key, backend/crypto.py) and `…_hash`
(HMAC under the index key): persons, households, enrollment_history, list_entries,
eligibility_claims and the values kept in record_changes. Unique indexes and joins move to the
hashes, so a constraint violation can only ever log a hash. Existing rows are converted in
batches with the keys `canbao migrate` was given (alembic attribute `keyring`); a database with
rows and no keys stops here. The downgrade converts back (run it on a copy: it writes the numbers
in clear again).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

import base64
from typing import Any

from migrations import execute, fetch, keyring, run_sql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

BATCH = 5_000

# (table, key columns, [(clear column, kind, hash column, sealed column)])
TABLES: list[tuple[str, tuple[str, ...], list[tuple[str, str, str, str]]]] = [
    (
        "persons",
        ("id",),
        [
            ("id_number", "id_number", "id_number_hash", "id_number_enc"),
            ("birth_cert_no", "birth_cert", "birth_cert_hash", "birth_cert_enc"),
            ("phone", "phone", "phone_hash", "phone_enc"),
        ],
    ),
    ("households", ("id",), [("phone", "phone", "phone_hash", "phone_enc")]),
    (
        "enrollment_history",
        ("id_number", "coverage_year"),
        [("id_number", "id_number", "id_number_hash", "id_number_enc")],
    ),
    ("list_entries", ("version_id", "row_no"), [("id_number", "id_number", "id_number_hash", "id_number_enc")]),
    ("eligibility_claims", ("id",), [("id_number", "id_number", "id_number_hash", "id_number_enc")]),
]
# record_changes keeps the sealed value, base64 in its text columns, for these fields.
SEALED_FIELDS = {"id_number": "id_number", "birth_cert_no": "birth_cert", "phone": "phone"}


def _keyring() -> Any:
    return keyring("0015", "the identity numbers already stored")


def _has_rows() -> bool:
    for table, _, _ in TABLES:
        if fetch(f"SELECT 1 FROM {table} LIMIT 1"):
            return True
    return bool(fetch("SELECT 1 FROM record_changes WHERE field = ANY($1::text[]) LIMIT 1", list(SEALED_FIELDS)))


def _record_changes_sql(sealed: bool) -> str:
    """record_changes_capture() of migration 0008, with sealed or clear identity columns."""

    def value(row: str, field: str) -> str:
        if not sealed:
            return f"{row}.{field}"
        column = {"id_number": "id_number", "birth_cert_no": "birth_cert", "phone": "phone"}[field]
        return f"encode({row}.{column}_enc, 'base64')"

    def changed(field: str, column: str | None = None) -> str:
        if sealed and field in SEALED_FIELDS:
            column = {"id_number": "id_number", "birth_cert_no": "birth_cert", "phone": "phone"}[field] + "_hash"
        column = column or field
        return f"o.{column} IS DISTINCT FROM n.{column}"

    return f"""
    CREATE OR REPLACE FUNCTION record_changes_capture() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_TABLE_NAME = 'households' THEN
            INSERT INTO record_changes (household_id, person_id, field, old_value, new_value, version)
            SELECT n.id, NULL, f.field, f.old_value, f.new_value,
                   CASE WHEN n.row_version <> o.row_version THEN n.row_version END
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            CROSS JOIN LATERAL (VALUES
                ('household_no', o.household_no, n.household_no, {changed("household_no")}),
                ('address', o.address, n.address, {changed("address")}),
                ('phone', {value("o", "phone")}, {value("n", "phone")}, {changed("phone")}),
                ('head', o.head_person_id::text, n.head_person_id::text, {changed("head", "head_person_id")}),
                ('status', o.status, n.status, {changed("status")})
            ) AS f (field, old_value, new_value, changed)
            WHERE f.changed;
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
                ('name', o.name, n.name, {changed("name")}),
                ('id_number', {value("o", "id_number")}, {value("n", "id_number")}, {changed("id_number")}),
                ('birth_cert_no', {value("o", "birth_cert_no")}, {value("n", "birth_cert_no")},
                 {changed("birth_cert_no")}),
                ('birth_date', o.birth_date::text, n.birth_date::text, {changed("birth_date")}),
                ('sex', o.sex, n.sex, {changed("sex")}),
                ('phone', {value("o", "phone")}, {value("n", "phone")}, {changed("phone")})
            ) AS f (field, old_value, new_value, changed)
            WHERE f.changed;
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
    """


def _subsidies_sql(id_column: str) -> str:
    """sync_capture_subsidies() of migration 0009, joining on `id_column`."""
    return f"""
    CREATE OR REPLACE FUNCTION sync_capture_subsidies() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_TABLE_NAME = 'list_versions' THEN
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
            JOIN persons p ON p.{id_column} = e.{id_column}
            JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
            JOIN households h ON h.id = m.household_id
            WHERE n.kind = 'subsidy' AND n.status = 'loaded';
        ELSIF TG_TABLE_NAME = 'eligibility_claims' THEN
            IF TG_OP = 'UPDATE' THEN
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'subsidy', p.id, township_of(h.village_code), 'upsert'
                FROM old_rows o JOIN new_rows n ON n.id = o.id
                JOIN persons p ON p.{id_column} IN (o.{id_column}, n.{id_column})
                JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
                JOIN households h ON h.id = m.household_id
                WHERE (o.status = 'accepted' OR n.status = 'accepted')
                  AND (o.status, o.category, o.coverage_year, o.{id_column})
                      IS DISTINCT FROM (n.status, n.category, n.coverage_year, n.{id_column});
            ELSE
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'subsidy', p.id, township_of(h.village_code), 'upsert'
                FROM new_rows n
                JOIN persons p ON p.{id_column} = n.{id_column}
                JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
                JOIN households h ON h.id = m.household_id
                WHERE n.status = 'accepted';
            END IF;
        ELSIF TG_TABLE_NAME = 'persons' THEN
            INSERT INTO sync_changes (entity, entity_id, township_code, op)
            SELECT 'subsidy', n.id, township_of(h.village_code), 'upsert'
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            JOIN memberships m ON m.person_id = n.id AND m.left_at IS NULL
            JOIN households h ON h.id = m.household_id
            WHERE o.{id_column} IS DISTINCT FROM n.{id_column};
        ELSE
            IF TG_OP = 'UPDATE' THEN
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'subsidy', n.person_id, township_of(h.village_code), 'upsert'
                FROM old_rows o JOIN new_rows n ON n.id = o.id
                JOIN households h ON h.id = n.household_id
                JOIN persons p ON p.id = n.person_id
                WHERE (o.household_id <> n.household_id OR o.left_at IS DISTINCT FROM n.left_at)
                  AND (EXISTS (SELECT 1 FROM list_entries e JOIN list_versions v ON v.id = e.version_id
                               WHERE e.{id_column} = p.{id_column} AND v.kind = 'subsidy')
                       OR EXISTS (SELECT 1 FROM eligibility_claims c
                                  WHERE c.{id_column} = p.{id_column} AND c.status = 'accepted'));
            ELSE
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'subsidy', n.person_id, township_of(h.village_code), 'upsert'
                FROM new_rows n
                JOIN households h ON h.id = n.household_id
                JOIN persons p ON p.id = n.person_id
                WHERE (EXISTS (SELECT 1 FROM list_entries e JOIN list_versions v ON v.id = e.version_id
                               WHERE e.{id_column} = p.{id_column} AND v.kind = 'subsidy')
                       OR EXISTS (SELECT 1 FROM eligibility_claims c
                                  WHERE c.{id_column} = p.{id_column} AND c.status = 'accepted'));
            END IF;
        END IF;
        RETURN NULL;
    END
    $$;
    """


def _triggers(enable: bool) -> None:
    verb = "ENABLE" if enable else "DISABLE"
    tables = [table for table, _, _ in TABLES] + ["record_changes"]
    run_sql("".join(f"ALTER TABLE {table} {verb} TRIGGER USER;\n" for table in tables))


def _convert(seal: bool) -> None:
    """Rewrites every row of TABLES (and record_changes' kept values) in batches."""
    keyring = _keyring()
    for table, table_key, columns in TABLES:
        sources = [clear for clear, *_ in columns] if seal else [enc for *_, enc in columns]
        # Downgrading, the clear column of enrollment_history's key is still empty.
        key = tuple(k if seal or k != "id_number" else "id_number_hash" for k in table_key)
        key_list = ", ".join(key)
        rows_seen: tuple[Any, ...] | None = None
        while True:
            after = (
                "" if rows_seen is None else f"WHERE ({key_list}) > ({', '.join(f'${i + 1}' for i in range(len(key)))})"
            )
            batch = fetch(
                f"SELECT {key_list}, {', '.join(sources)} FROM {table} {after} ORDER BY {key_list} LIMIT {BATCH}",
                *(rows_seen or ()),
            )
            if not batch:
                break
            rows_seen = tuple(batch[-1][k] for k in key)
            keys_columns = [[row[k] for row in batch] for k in key]
            values: list[list[Any]] = []
            assignments = []
            position = len(key) + 1
            for clear, kind, hash_column, enc in columns:
                if seal:
                    values.append([keyring.index(kind, row[clear]) for row in batch])
                    values.append([keyring.seal(kind, row[clear]) for row in batch])
                    assignments += [f"{hash_column} = v.c{position}", f"{enc} = v.c{position + 1}"]
                    position += 2
                else:
                    values.append([keyring.open(kind, row[enc]) for row in batch])
                    assignments.append(f"{clear} = v.c{position}")
                    position += 1
            key_types = [_key_type(table, k) for k in key]
            value_types = ["bytea", "bytea"] * len(columns) if seal else ["text"] * len(columns)
            unnest_args = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(key_types + value_types))
            names = ", ".join(
                [f"k{i + 1}" for i in range(len(key))] + [f"c{i + len(key) + 1}" for i in range(len(value_types))]
            )
            match = " AND ".join(f"t.{k} = v.k{i + 1}" for i, k in enumerate(key))
            execute(
                f"UPDATE {table} t SET {', '.join(assignments)} FROM unnest({unnest_args}) AS v ({names}) WHERE {match}",
                *keys_columns,
                *values,
            )
    # record_changes: the kept old and new values of the sealed fields.
    last = 0
    while True:
        batch = fetch(
            "SELECT id, field, old_value, new_value FROM record_changes WHERE field = ANY($1::text[]) AND id > $2"
            f" ORDER BY id LIMIT {BATCH}",
            list(SEALED_FIELDS),
            last,
        )
        if not batch:
            break
        last = batch[-1]["id"]

        def convert(kind: str, text: str | None) -> str | None:
            if text is None:
                return None
            if seal:
                return base64.b64encode(keyring.seal(kind, text)).decode()
            opened: str = keyring.open(kind, base64.b64decode(text))
            return opened

        execute(
            "UPDATE record_changes t SET old_value = v.o, new_value = v.n"
            " FROM unnest($1::bigint[], $2::text[], $3::text[]) AS v (id, o, n) WHERE t.id = v.id",
            [row["id"] for row in batch],
            [convert(SEALED_FIELDS[row["field"]], row["old_value"]) for row in batch],
            [convert(SEALED_FIELDS[row["field"]], row["new_value"]) for row in batch],
        )


def _key_type(table: str, column: str) -> str:
    types = {
        "id": "uuid",
        "version_id": "uuid",
        "row_no": "integer",
        "coverage_year": "integer",
        "id_number_hash": "bytea",
    }
    return types.get(column, "text")


def upgrade() -> None:
    run_sql("""
    -- What the database knows of the keys: a fingerprint (a MAC of a constant), never a key.
    CREATE TABLE crypto_keys (
        role        text NOT NULL CHECK (role IN ('index', 'data')),
        key_id      integer NOT NULL CHECK (key_id >= 0),
        suite       text NOT NULL CHECK (suite IN ('aes', 'sm')),
        fingerprint bytea NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (role, key_id)
    );

    ALTER TABLE persons ADD COLUMN id_number_hash bytea, ADD COLUMN id_number_enc bytea,
                        ADD COLUMN birth_cert_hash bytea, ADD COLUMN birth_cert_enc bytea,
                        ADD COLUMN phone_hash bytea, ADD COLUMN phone_enc bytea;
    ALTER TABLE households ADD COLUMN phone_hash bytea, ADD COLUMN phone_enc bytea;
    ALTER TABLE enrollment_history ADD COLUMN id_number_hash bytea, ADD COLUMN id_number_enc bytea;
    ALTER TABLE list_entries ADD COLUMN id_number_hash bytea, ADD COLUMN id_number_enc bytea;
    ALTER TABLE eligibility_claims ADD COLUMN id_number_hash bytea, ADD COLUMN id_number_enc bytea;
    """)
    if _has_rows():
        _triggers(enable=False)
        _convert(seal=True)
        _triggers(enable=True)
    run_sql(
        """
    ALTER TABLE persons DROP COLUMN id_number, DROP COLUMN birth_cert_no, DROP COLUMN phone;
    ALTER TABLE persons
        ADD CONSTRAINT persons_identified CHECK (id_number_hash IS NOT NULL OR birth_cert_hash IS NOT NULL),
        ADD CONSTRAINT persons_id_number_sealed CHECK ((id_number_hash IS NULL) = (id_number_enc IS NULL)),
        ADD CONSTRAINT persons_birth_cert_sealed CHECK ((birth_cert_hash IS NULL) = (birth_cert_enc IS NULL)),
        ADD CONSTRAINT persons_phone_sealed CHECK ((phone_hash IS NULL) = (phone_enc IS NULL));
    CREATE UNIQUE INDEX persons_id_number_key ON persons (id_number_hash);
    CREATE UNIQUE INDEX persons_birth_cert_key ON persons (birth_cert_hash);

    ALTER TABLE households DROP COLUMN phone,
        ADD CONSTRAINT households_phone_sealed CHECK ((phone_hash IS NULL) = (phone_enc IS NULL));

    ALTER TABLE enrollment_history DROP COLUMN id_number,
        ALTER COLUMN id_number_hash SET NOT NULL, ALTER COLUMN id_number_enc SET NOT NULL,
        ADD PRIMARY KEY (id_number_hash, coverage_year);

    ALTER TABLE list_entries DROP COLUMN id_number,
        ALTER COLUMN id_number_hash SET NOT NULL, ALTER COLUMN id_number_enc SET NOT NULL,
        ADD PRIMARY KEY (version_id, id_number_hash);
    CREATE INDEX list_entries_id_number_idx ON list_entries (id_number_hash);

    ALTER TABLE eligibility_claims DROP COLUMN id_number,
        ADD CONSTRAINT eligibility_claims_id_number_sealed CHECK ((id_number_hash IS NULL) = (id_number_enc IS NULL));
    CREATE INDEX eligibility_claims_accepted_idx ON eligibility_claims (id_number_hash, coverage_year)
        WHERE status = 'accepted';
    """
        + _record_changes_sql(sealed=True)
        + _subsidies_sql("id_number_hash")
    )


def downgrade() -> None:
    run_sql("""
    ALTER TABLE persons ADD COLUMN id_number text, ADD COLUMN birth_cert_no text, ADD COLUMN phone text;
    ALTER TABLE households ADD COLUMN phone text;
    ALTER TABLE enrollment_history ADD COLUMN id_number text;
    ALTER TABLE list_entries ADD COLUMN id_number text;
    ALTER TABLE eligibility_claims ADD COLUMN id_number text;
    """)
    if _has_rows():
        _triggers(enable=False)
        _convert(seal=False)
        _triggers(enable=True)
    run_sql(
        """
    ALTER TABLE persons DROP COLUMN id_number_hash, DROP COLUMN id_number_enc, DROP COLUMN birth_cert_hash,
                        DROP COLUMN birth_cert_enc, DROP COLUMN phone_hash, DROP COLUMN phone_enc;
    ALTER TABLE persons
        ADD CONSTRAINT persons_id_number_check CHECK (id_number ~ '^[0-9]{17}[0-9X]$'),
        ADD CONSTRAINT persons_birth_cert_no_check CHECK (birth_cert_no ~ '^[A-Z][0-9]{9}$'),
        ADD CONSTRAINT persons_phone_check CHECK (phone ~ '^[0-9+-]{5,20}$'),
        ADD CONSTRAINT persons_identified CHECK (id_number IS NOT NULL OR birth_cert_no IS NOT NULL);
    CREATE UNIQUE INDEX persons_id_number_key ON persons (id_number);
    CREATE UNIQUE INDEX persons_birth_cert_no_key ON persons (birth_cert_no);

    ALTER TABLE households DROP COLUMN phone_hash, DROP COLUMN phone_enc,
        ADD CONSTRAINT households_phone_check CHECK (phone ~ '^[0-9+-]{5,20}$');

    ALTER TABLE enrollment_history DROP COLUMN id_number_hash, DROP COLUMN id_number_enc,
        ALTER COLUMN id_number SET NOT NULL,
        ADD CONSTRAINT enrollment_history_id_number_check CHECK (id_number ~ '^[0-9]{17}[0-9X]$'),
        ADD PRIMARY KEY (id_number, coverage_year);

    ALTER TABLE list_entries DROP COLUMN id_number_hash, DROP COLUMN id_number_enc,
        ALTER COLUMN id_number SET NOT NULL,
        ADD CONSTRAINT list_entries_id_number_check CHECK (id_number ~ '^[0-9]{17}[0-9X]$'),
        ADD PRIMARY KEY (version_id, id_number);
    CREATE INDEX list_entries_id_number_idx ON list_entries (id_number);

    ALTER TABLE eligibility_claims DROP COLUMN id_number_hash, DROP COLUMN id_number_enc,
        ADD CONSTRAINT eligibility_claims_id_number_check CHECK (id_number ~ '^[0-9]{17}[0-9X]$');
    CREATE INDEX eligibility_claims_accepted_idx ON eligibility_claims (id_number, coverage_year)
        WHERE status = 'accepted';
    """
        + _record_changes_sql(sealed=False)
        + _subsidies_sql("id_number")
        + "DROP TABLE crypto_keys;"
    )
