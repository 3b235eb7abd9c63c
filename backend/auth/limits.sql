-- name: bump_attempt
-- Reserves one attempt for a key (keyed hash of an ID number or a client address) before anything
-- is checked, so that concurrent guesses on several workers cannot all slip under the limit. A key
-- that is locked out is not counted further; `locked_for_s` says how long the lockout lasts.
INSERT INTO resident_login_limits AS l (key, window_start, failures)
VALUES ($1, now(), 1)
ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN l.locked_until > now() THEN l.failures
                    WHEN l.window_start < now() - make_interval(secs => $2) THEN 1
                    ELSE l.failures + 1 END,
    window_start = CASE WHEN l.locked_until > now() THEN l.window_start
                        WHEN l.window_start < now() - make_interval(secs => $2) THEN now()
                        ELSE l.window_start END
RETURNING l.failures,
          CASE WHEN l.locked_until > now()
               THEN GREATEST(1, ceil(extract(epoch FROM l.locked_until - now())))::int END AS locked_for_s;

-- name: lock_out
-- The attempt that crossed the limit locks the key: $2 seconds, doubled for each earlier lockout,
-- at most a day. Idempotent while locked, so racing attempts lock it once (no row for the losers).
UPDATE resident_login_limits
SET locked_until = now() + make_interval(secs => LEAST($2 * power(2, LEAST(lockouts, 16)), 86400)),
    lockouts = lockouts + 1, failures = 0, window_start = now()
WHERE key = $1 AND (locked_until IS NULL OR locked_until <= now())
RETURNING GREATEST(1, ceil(extract(epoch FROM locked_until - now())))::int AS locked_for_s;

-- name: locked_for
SELECT GREATEST(1, ceil(extract(epoch FROM locked_until - now())))::int
FROM resident_login_limits WHERE key = $1 AND locked_until > now();

-- name: clear
DELETE FROM resident_login_limits WHERE key = $1;

-- name: forgive
UPDATE resident_login_limits SET failures = GREATEST(failures - 1, 0) WHERE key = $1;

-- name: expire
WITH gone AS (
    DELETE FROM resident_login_limits
    WHERE window_start < $1 AND (locked_until IS NULL OR locked_until < now())
    RETURNING 1
)
SELECT count(*) FROM gone;
