-- Named SQL of backend/audit/chain.py: sealing committed audit rows into audit_chain, and reading
-- the chain back to verify it.

-- name: try_lock
-- One sealer at a time; another one skips the round.
SELECT pg_try_advisory_xact_lock(hashtext('canbao.audit_chain'));

-- name: head
-- The chain's last link: its place, hash, and where the sealer stopped ((xact, audit_id) order).
SELECT seq, hash, xact::text::bigint AS xact, audit_id FROM audit_chain ORDER BY seq DESC LIMIT 1;

-- name: unsealed
-- Audit rows after ($1, $2) in (xact, id) order whose transactions have ended: below the oldest
-- transaction still running, taken from the snapshot this statement reads with, so every such row
-- is visible to it. A transaction still running holds back its rows and every later one.
SELECT a.id, a.xact::text::bigint AS xact, a.at, a.actor_kind, a.actor_id, a.device_id, a.action, a.entity,
       a.entity_id, a.division_code, a.summary::text AS summary, a.request_id
FROM audit_log a
WHERE (a.xact, a.id) > ($1::bigint::text::xid8, $2::bigint)
  AND a.xact < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY a.xact, a.id
LIMIT $3;

-- name: append
INSERT INTO audit_chain (seq, audit_id, xact, hash)
SELECT s.seq, s.audit_id, s.xact::text::xid8, s.hash
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[]) AS s(seq, audit_id, xact, hash);

-- name: chain
-- Every link with the row it seals (NULL columns when the row is gone), in chain order.
SELECT c.seq, c.audit_id, c.xact::text::bigint AS chain_xact, c.hash,
       a.id, a.xact::text::bigint AS xact, a.at, a.actor_kind, a.actor_id, a.device_id, a.action, a.entity,
       a.entity_id, a.division_code, a.summary::text AS summary, a.request_id
FROM audit_chain c
LEFT JOIN audit_log a ON a.id = c.audit_id
ORDER BY c.seq;

-- name: first_unchained
-- The first audit row the sealer has passed ((xact, id) at or before its last link) that is not in
-- the chain: removed from it, or written afterwards with a back-dated transaction id.
SELECT a.id FROM audit_log a
WHERE (a.xact, a.id) <= ($1::bigint::text::xid8, $2::bigint)
  AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.audit_id = a.id)
ORDER BY a.id
LIMIT 1;

-- name: awaiting
-- Rows the sealer has not reached yet (their transactions may still be running).
SELECT count(*) FROM audit_log WHERE (xact, id) > ($1::bigint::text::xid8, $2::bigint);

-- name: seals
-- Per local day from $1 to $2 (time zone $3), newest first: the first and last link sealed that day
-- and the chain's head hash at its end. Days when nothing was sealed are left out.
SELECT d.day::date AS day, f.seq AS first_seq, l.seq AS last_seq, l.hash
FROM generate_series($2::date::timestamp, $1::date::timestamp, interval '-1 day') AS d(day)
CROSS JOIN LATERAL (
    SELECT seq FROM audit_chain
    WHERE sealed_at >= d.day AT TIME ZONE $3 AND sealed_at < (d.day + interval '1 day') AT TIME ZONE $3
    ORDER BY sealed_at, seq
    LIMIT 1
) f
CROSS JOIN LATERAL (
    SELECT seq, hash FROM audit_chain
    WHERE sealed_at >= d.day AT TIME ZONE $3 AND sealed_at < (d.day + interval '1 day') AT TIME ZONE $3
    ORDER BY sealed_at DESC, seq DESC
    LIMIT 1
) l
ORDER BY d.day DESC;
