-- name: expire_idempotency_keys
-- A retry this late is judged afresh; payments stay exactly-once by their own ids.
WITH gone AS (DELETE FROM idempotency_keys WHERE created_at < $1 RETURNING 1)
SELECT count(*) FROM gone;
