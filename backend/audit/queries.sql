-- name: insert
INSERT INTO audit_log (actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

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
