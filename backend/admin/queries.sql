-- name: division_level
SELECT level FROM divisions WHERE code = $1;

-- name: insert_user
INSERT INTO users (id, username, full_name, password_hash, role, division_code)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, username, full_name, role, division_code, active, created_at, updated_at, disabled_at;

-- name: get_user
SELECT id, username, full_name, role, division_code, active, created_at, updated_at, disabled_at
FROM users WHERE id = $1;

-- name: get_user_for_update
-- A change reads, decides and writes the whole row: the lock keeps a concurrent change from being lost.
SELECT id, username, full_name, role, division_code, active, created_at, updated_at, disabled_at
FROM users WHERE id = $1
FOR UPDATE;

-- name: get_user_by_username
SELECT id, username, full_name, role, division_code, active, created_at, updated_at, disabled_at
FROM users WHERE lower(username) = lower($1);

-- name: list_users
SELECT id, username, full_name, role, division_code, active, created_at, updated_at, disabled_at
FROM users
WHERE division_code BETWEEN $1 AND $2
  AND ($3::text IS NULL OR role = $3)
  AND ($4::text IS NULL OR division_code BETWEEN $4 AND $5)
  AND ($6::boolean IS NULL OR active = $6)
  AND ($7::uuid IS NULL OR id > $7)
ORDER BY id
LIMIT $8;

-- name: update_user
UPDATE users SET
    full_name = $2, role = $3, division_code = $4, active = $5,
    disabled_at = CASE WHEN $5 THEN NULL ELSE coalesce(disabled_at, now()) END,
    updated_at = now()
WHERE id = $1
RETURNING id, username, full_name, role, division_code, active, created_at, updated_at, disabled_at;

-- name: set_password
UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1;

-- name: insert_device
INSERT INTO devices (id, owner_id, label, model, app_version, secret_hash)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, owner_id, label, model, app_version, status, registered_at, suspended_at, revoked_at, last_seen_at;

-- name: get_device
SELECT d.id, d.owner_id, d.label, d.model, d.app_version, d.status, d.registered_at, d.suspended_at,
       d.revoked_at, d.last_seen_at, u.division_code
FROM devices d JOIN users u ON u.id = d.owner_id
WHERE d.id = $1;

-- name: get_device_for_update
-- A status change checks the current status first; the lock keeps a concurrent change from slipping in
-- between (a revoked tablet must never come back).
SELECT d.id, d.owner_id, d.label, d.model, d.app_version, d.status, d.registered_at, d.suspended_at,
       d.revoked_at, d.last_seen_at, u.division_code
FROM devices d JOIN users u ON u.id = d.owner_id
WHERE d.id = $1
FOR UPDATE OF d;

-- name: list_devices
SELECT d.id, d.owner_id, d.label, d.model, d.app_version, d.status, d.registered_at, d.suspended_at,
       d.revoked_at, d.last_seen_at
FROM devices d JOIN users u ON u.id = d.owner_id
WHERE u.division_code BETWEEN $1 AND $2
  AND ($3::uuid IS NULL OR d.owner_id = $3)
  AND ($4::text IS NULL OR d.status = $4)
  AND ($5::uuid IS NULL OR d.id > $5)
ORDER BY d.id
LIMIT $6;

-- name: set_device_status
UPDATE devices SET
    status = $2,
    suspended_at = CASE WHEN $2 = 'suspended' THEN now() WHEN $2 = 'active' THEN NULL ELSE suspended_at END,
    revoked_at = CASE WHEN $2 = 'revoked' THEN now() ELSE revoked_at END
WHERE id = $1
RETURNING id, owner_id, label, model, app_version, status, registered_at, suspended_at, revoked_at, last_seen_at;

-- name: insert_partner
INSERT INTO partners (id, name, division_code, client_id, secret_hash)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, name, division_code, client_id, active, created_at, rotated_at, disabled_at;

-- name: get_partner
SELECT id, name, division_code, client_id, active, created_at, rotated_at, disabled_at
FROM partners WHERE id = $1;

-- name: list_partners
SELECT id, name, division_code, client_id, active, created_at, rotated_at, disabled_at
FROM partners
WHERE division_code BETWEEN $1 AND $2 AND ($3::uuid IS NULL OR id > $3)
ORDER BY id LIMIT $4;

-- name: rotate_partner
UPDATE partners SET secret_hash = $2, rotated_at = now() WHERE id = $1
RETURNING id, name, division_code, client_id, active, created_at, rotated_at, disabled_at;

-- name: disable_partner
UPDATE partners SET active = false, disabled_at = coalesce(disabled_at, now()) WHERE id = $1
RETURNING id, name, division_code, client_id, active, created_at, rotated_at, disabled_at;
