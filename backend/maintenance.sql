-- name: try_lock
-- One worker at a time does the housekeeping; the others skip this round.
SELECT pg_try_advisory_xact_lock(hashtext('canbao.maintenance'));

-- name: expire_idempotency_keys
-- A retry this late is judged afresh; payments stay exactly-once by their own ids.
WITH gone AS (DELETE FROM idempotency_keys WHERE created_at < $1 RETURNING 1)
SELECT count(*) FROM gone;

-- name: expire_login_failures
WITH gone AS (DELETE FROM login_failures WHERE window_start < $1 RETURNING 1)
SELECT count(*) FROM gone;

-- name: expire_resident_limits
WITH gone AS (
    DELETE FROM resident_login_limits
    WHERE window_start < $1 AND (locked_until IS NULL OR locked_until < now())
    RETURNING 1
)
SELECT count(*) FROM gone;
