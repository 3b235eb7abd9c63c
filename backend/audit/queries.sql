-- name: insert
INSERT INTO audit_log (actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- name: insert_unflushed
-- As `insert`, and the transaction's commit does not wait for its WAL to reach the disk
-- (synchronous_commit off for this transaction only) — when nothing was written before it in the
-- transaction (no transaction id yet), else it waits as any commit. A crash in the next moment (at
-- most three times wal_writer_delay) may lose the transaction, never part of it; with a synchronous
-- standby (README, "high availability") its commit does not wait for the standby either, so a
-- failover in that moment may lose it too. Whatever commits after it and is flushed (a staff
-- member's write, the audit chain's link to this row) flushes it too: the WAL is written in order.
-- For a row that may be lost so (audit.service.record's `flushed`).
INSERT INTO audit_log (actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary, request_id)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
FROM (SELECT CASE WHEN pg_current_xact_id_if_assigned() IS NULL
                  THEN set_config('synchronous_commit', 'off', true) END) AS unflushed;

-- name: insert_many
INSERT INTO audit_log (actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary, request_id)
SELECT $1, $2, $3, $4, $5, e.entity_id, e.division_code, e.summary, $9
FROM unnest($6::text[], $7::text[], $8::jsonb[]) WITH ORDINALITY AS e(entity_id, division_code, summary, n)
ORDER BY e.n;

-- name: insert_rows
-- Rows held back by `Deferred`, in the order they were recorded.
INSERT INTO audit_log (actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary, request_id)
SELECT e.actor_kind, e.actor_id, e.device_id, e.action, e.entity, e.entity_id, e.division_code, e.summary, e.request_id
FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::jsonb[],
            $9::text[]) WITH ORDINALITY
     AS e(actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary, request_id, n)
ORDER BY e.n;

-- name: search
SELECT id, at, actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary, request_id
FROM audit_log
WHERE (division_code BETWEEN $1 AND $2 OR (division_code IS NULL AND $3::boolean))
  AND ($4::uuid IS NULL OR actor_id = $4)
  AND ($5::text IS NULL OR entity = $5)
  AND ($6::text IS NULL OR entity_id = $6)
  AND ($7::text IS NULL OR action = $7)
  AND ($8::timestamptz IS NULL OR at >= $8)
  AND ($9::timestamptz IS NULL OR at < $9)
  AND ($10::bigint IS NULL OR id < $10)
  AND ($11::uuid IS NULL OR device_id = $11)
ORDER BY id DESC
LIMIT $12;

-- name: household_village
SELECT village_code FROM households WHERE id = $1;

-- name: household_trail
-- The rows about household $1, its enrolments and its payments (by the (entity, entity_id) index),
-- newest first, before id $2 when given.
WITH keys (entity, entity_id) AS (
    SELECT k.entity, $1::uuid::text
    FROM unnest(ARRAY['household', 'premium_quote', 'resident_coverage', 'query_code_slip']) AS k(entity)
    UNION ALL
    SELECT 'enrollment', e.id::text FROM enrollments e WHERE e.household_id = $1
    UNION ALL
    SELECT 'payment', p.id::text FROM payments p WHERE p.household_id = $1
)
SELECT a.id, a.at, a.actor_kind, a.actor_id, a.device_id, a.action, a.entity, a.entity_id, a.division_code,
       a.summary, a.request_id
FROM audit_log a
JOIN keys k ON k.entity = a.entity AND k.entity_id = a.entity_id
WHERE ($2::bigint IS NULL OR a.id < $2)
ORDER BY a.id DESC
LIMIT $3;
