"""Foundation: divisions, users, devices, refresh tokens, partners, login failures, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from migrations import run_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    CREATE TABLE divisions (
        code        text PRIMARY KEY CHECK (code ~ '^[0-9]{12}$'),
        parent_code text REFERENCES divisions (code),
        level       text NOT NULL CHECK (level IN ('province', 'city', 'district', 'township', 'village')),
        name        text NOT NULL CHECK (btrim(name) <> ''),
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT divisions_parent_not_self CHECK (parent_code <> code)
    );
    CREATE INDEX divisions_parent_idx ON divisions (parent_code);

    CREATE TABLE users (
        id            uuid PRIMARY KEY,
        username      text NOT NULL CHECK (username ~ '^[A-Za-z0-9_.@-]{3,64}$'),
        full_name     text NOT NULL DEFAULT '',
        password_hash text NOT NULL,
        role          text NOT NULL CHECK (role IN
                        ('township_staff', 'township_reviewer', 'civil_affairs', 'district_admin')),
        division_code text NOT NULL REFERENCES divisions (code),
        active        boolean NOT NULL DEFAULT true,
        created_at    timestamptz NOT NULL DEFAULT now(),
        updated_at    timestamptz NOT NULL DEFAULT now(),
        disabled_at   timestamptz
    );
    CREATE UNIQUE INDEX users_username_key ON users (lower(username));
    CREATE INDEX users_division_idx ON users (division_code);

    CREATE TABLE devices (
        id            uuid PRIMARY KEY,
        owner_id      uuid NOT NULL REFERENCES users (id),
        label         text NOT NULL DEFAULT '',
        model         text NOT NULL,
        app_version   text NOT NULL,
        secret_hash   bytea NOT NULL,
        status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'revoked')),
        registered_at timestamptz NOT NULL DEFAULT now(),
        suspended_at  timestamptz,
        revoked_at    timestamptz,
        last_seen_at  timestamptz,
        CONSTRAINT devices_revoked_has_time CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
    );
    CREATE INDEX devices_owner_idx ON devices (owner_id);

    -- A family is one login's chain of rotating refresh tokens; reuse of a spent token revokes it.
    CREATE TABLE refresh_families (
        id            uuid PRIMARY KEY,
        user_id       uuid NOT NULL REFERENCES users (id),
        device_id     uuid REFERENCES devices (id),
        created_at    timestamptz NOT NULL DEFAULT now(),
        revoked_at    timestamptz,
        revoke_reason text
    );
    CREATE INDEX refresh_families_user_idx ON refresh_families (user_id) WHERE revoked_at IS NULL;
    CREATE INDEX refresh_families_device_idx ON refresh_families (device_id) WHERE revoked_at IS NULL;

    CREATE TABLE refresh_tokens (
        id          uuid PRIMARY KEY,
        family_id   uuid NOT NULL REFERENCES refresh_families (id),
        token_hash  bytea NOT NULL UNIQUE,
        issued_at   timestamptz NOT NULL,
        expires_at  timestamptz NOT NULL,
        used_at     timestamptz,
        replaced_by uuid REFERENCES refresh_tokens (id)
    );
    CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

    CREATE TABLE partners (
        id          uuid PRIMARY KEY,
        name        text NOT NULL CHECK (btrim(name) <> ''),
        division_code text NOT NULL REFERENCES divisions (code),
        client_id   text NOT NULL UNIQUE,
        secret_hash bytea NOT NULL,
        active      boolean NOT NULL DEFAULT true,
        created_at  timestamptz NOT NULL DEFAULT now(),
        rotated_at  timestamptz,
        disabled_at timestamptz
    );
    CREATE UNIQUE INDEX partners_name_key ON partners (lower(name));

    -- Failed logins per key (a keyed hash of the username or client address), in fixed windows.
    CREATE TABLE login_failures (
        key          bytea PRIMARY KEY,
        window_start timestamptz NOT NULL,
        failures     integer NOT NULL
    );

    CREATE TABLE audit_log (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at            timestamptz NOT NULL DEFAULT now(),
        actor_kind    text NOT NULL CHECK (actor_kind IN ('user', 'partner', 'resident', 'system')),
        actor_id      uuid,
        device_id     uuid,
        action        text NOT NULL,
        entity        text NOT NULL,
        entity_id     text,
        division_code text,
        summary       jsonb NOT NULL DEFAULT '{}',
        request_id    text
    );
    CREATE INDEX audit_log_at_idx ON audit_log (at, id);
    CREATE INDEX audit_log_entity_idx ON audit_log (entity, entity_id);
    CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, at);
    CREATE INDEX audit_log_division_idx ON audit_log (division_code, at);

    -- Append-only for every role the application can connect as: rows are never changed or removed.
    CREATE FUNCTION forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$;
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION forbid_change();
    CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION forbid_change();
    """)


def downgrade() -> None:
    run_sql("""
    DROP TABLE audit_log;
    DROP FUNCTION forbid_change();
    DROP TABLE login_failures;
    DROP TABLE partners;
    DROP TABLE refresh_tokens;
    DROP TABLE refresh_families;
    DROP TABLE devices;
    DROP TABLE users;
    DROP TABLE divisions;
    """)
