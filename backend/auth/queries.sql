-- name: bump_failures
-- Reserves one attempt for a key before the password is checked, so concurrent guesses on
-- several workers cannot all slip under the limit; a success gives its attempt back.
INSERT INTO login_failures AS lf (key, window_start, failures)
VALUES ($1, now(), 1)
ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN lf.window_start < now() - make_interval(secs => $2) THEN 1 ELSE lf.failures + 1 END,
    window_start = CASE WHEN lf.window_start < now() - make_interval(secs => $2) THEN now() ELSE lf.window_start END
RETURNING failures, GREATEST(1, ceil(extract(epoch FROM lf.window_start + make_interval(secs => $2) - now())))::int AS retry_after_s;

-- name: forgive_attempt
UPDATE login_failures SET failures = GREATEST(failures - 1, 0) WHERE key = $1;

-- name: clear_failures
DELETE FROM login_failures WHERE key = $1;

-- name: user_by_username
SELECT u.id, u.password_hash, u.active, u.role, u.division_code, dv.level
FROM users u JOIN divisions dv ON dv.code = u.division_code
WHERE lower(u.username) = lower($1);

-- name: device_for_login
SELECT id, owner_id, status, secret_hash FROM devices WHERE id = $1;

-- name: insert_family
INSERT INTO refresh_families (id, user_id, device_id) VALUES ($1, $2, $3);

-- name: insert_refresh_token
INSERT INTO refresh_tokens (id, family_id, token_hash, issued_at, expires_at)
VALUES ($1, $2, $3, $4, $5);

-- name: refresh_token_for_update
SELECT t.id, t.family_id, t.issued_at, t.expires_at, t.used_at, t.replaced_by,
       f.user_id, f.device_id, f.revoked_at AS family_revoked_at, f.revoke_reason,
       u.active AS user_active, d.status AS device_status
FROM refresh_tokens t
JOIN refresh_families f ON f.id = t.family_id
JOIN users u ON u.id = f.user_id
LEFT JOIN devices d ON d.id = f.device_id
WHERE t.token_hash = $1
FOR UPDATE OF t, f;

-- name: refresh_replacement
SELECT issued_at, used_at FROM refresh_tokens WHERE id = $1;

-- name: mark_used
UPDATE refresh_tokens SET used_at = $3, replaced_by = $2 WHERE id = $1;

-- name: revoke_family
UPDATE refresh_families SET revoked_at = now(), revoke_reason = $2 WHERE id = $1 AND revoked_at IS NULL;

-- name: revoke_family_reused
-- A reused refresh token ends its session, also one already ended by its tablet's suspension (which
-- would still let the tablet hand in work): the reason is what the middleware and refresh read.
UPDATE refresh_families SET revoked_at = coalesce(revoked_at, now()), revoke_reason = 'refresh_token_reused'
WHERE id = $1 AND (revoked_at IS NULL OR revoke_reason = 'device_suspended');

-- name: revoke_user_families
-- Also the sessions of the user's suspended tablets (a disabled user or a changed password ends
-- even the handing-in of work).
UPDATE refresh_families SET revoked_at = coalesce(revoked_at, now()), revoke_reason = $2
WHERE user_id = $1 AND (revoked_at IS NULL OR revoke_reason = 'device_suspended');

-- name: revoke_device_families
UPDATE refresh_families SET revoked_at = coalesce(revoked_at, now()), revoke_reason = $2
WHERE device_id = $1 AND (revoked_at IS NULL OR revoke_reason = 'device_suspended');

-- name: actor_for_token
-- Checked on every request, so disabling a user, suspending a device or logging out takes effect
-- at once, not when the access token expires; role and scope are read fresh too. Every access
-- token names its session (refresh family), which must exist and belong to the same user and device.
SELECT u.role, u.division_code, dv.level, u.active,
       (f.revoked_at IS NULL AND f.user_id = u.id AND f.device_id IS NOT DISTINCT FROM $3::uuid) AS session_live,
       -- A session ended only by its tablet's suspension may still hand in work (sync push → quarantine).
       (f.revoke_reason = 'device_suspended' AND f.user_id = u.id AND f.device_id = $3::uuid) AS session_suspended,
       d.status AS device_status, d.owner_id AS device_owner
FROM users u
JOIN divisions dv ON dv.code = u.division_code
JOIN refresh_families f ON f.id = $2
LEFT JOIN devices d ON d.id = $3
WHERE u.id = $1;

-- name: resident_for_token
-- A resident's session ends at logout, at its expiry, when the person leaves the household, or when
-- the household is dissolved: checked on every request, like a staff member's.
SELECT s.household_id,
       (s.revoked_at IS NULL AND s.expires_at > now() AND h.status = 'active'
        AND EXISTS (SELECT 1 FROM memberships m
                    WHERE m.person_id = s.person_id AND m.household_id = s.household_id AND m.left_at IS NULL)
       ) AS live
FROM resident_sessions s
JOIN households h ON h.id = s.household_id
WHERE s.id = $2 AND s.person_id = $1;

-- name: partner_for_token
SELECT p.active, p.secret_hash, p.division_code, dv.level
FROM partners p JOIN divisions dv ON dv.code = p.division_code
WHERE p.id = $1;

-- name: expire_login_failures
WITH gone AS (DELETE FROM login_failures WHERE window_start < $1 RETURNING 1)
SELECT count(*) FROM gone;
