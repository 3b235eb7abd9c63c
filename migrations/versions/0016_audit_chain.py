"""The audit log hash-chained: each committed audit row gets a place (seq) and a hash in audit_chain.

`audit_log.xact` is the writing transaction's id, so a sealer can tell which rows are committed
(xact below the oldest running transaction) although ids are not committed in id order. Rows
written before this revision read xact 0: all of them committed long ago. audit_chain is
append-only like audit_log; the service only ever inserts into either.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from migrations import run_sql

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    -- A constant default first: no table rewrite, the rows already there read 0; then every new row
    -- takes its transaction's id (the top-level one, also inside a savepoint).
    ALTER TABLE audit_log ADD COLUMN xact xid8 NOT NULL DEFAULT '0';
    ALTER TABLE audit_log ALTER COLUMN xact SET DEFAULT pg_current_xact_id();
    -- The sealer walks rows in (xact, id) order from where it stopped.
    CREATE INDEX audit_log_xact_idx ON audit_log (xact, id);

    CREATE TABLE audit_chain (
        seq       bigint PRIMARY KEY CHECK (seq > 0),
        -- No foreign key: an audit row removed behind the triggers' back must leave its seal behind,
        -- for `canbao audit verify` to name it.
        audit_id  bigint NOT NULL UNIQUE,
        xact      xid8 NOT NULL,
        hash      bytea NOT NULL CHECK (octet_length(hash) = 32),
        sealed_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX audit_chain_sealed_idx ON audit_chain (sealed_at, seq);
    CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain
        FOR EACH ROW EXECUTE FUNCTION forbid_change();
    CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
        FOR EACH STATEMENT EXECUTE FUNCTION forbid_change();
    """)


def downgrade() -> None:
    run_sql("""
    DROP TABLE audit_chain;
    DROP INDEX audit_log_xact_idx;
    ALTER TABLE audit_log DROP COLUMN xact;
    """)
