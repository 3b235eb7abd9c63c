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
-- at most a day. Idempotent while locked, so racing attempts lock it once.
UPDATE resident_login_limits
SET locked_until = now() + make_interval(secs => LEAST($2 * power(2, LEAST(lockouts, 16)), 86400)),
    lockouts = lockouts + 1, failures = 0, window_start = now()
WHERE key = $1 AND (locked_until IS NULL OR locked_until <= now());

-- name: locked_for
SELECT GREATEST(1, ceil(extract(epoch FROM locked_until - now())))::int
FROM resident_login_limits WHERE key = $1 AND locked_until > now();

-- name: clear_attempts
DELETE FROM resident_login_limits WHERE key = $1;

-- name: forgive_attempt
UPDATE resident_login_limits SET failures = GREATEST(failures - 1, 0) WHERE key = $1;

-- name: login_candidate
-- The person with this ID number in a current, active household, with the household's query codes
-- of its two latest coverage years (device_id set: a tablet made the code, see backend/sync/query_codes.py).
-- No row for an unknown person: the caller then checks dummy values.
SELECT p.id AS person_id, p.name, h.id AS household_id, h.village_code, q.coverage_year, q.code_hash, q.device_id
FROM persons p
JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
JOIN households h ON h.id = m.household_id AND h.status = 'active'
LEFT JOIN LATERAL (
    SELECT c.coverage_year, c.code_hash, c.device_id FROM household_query_codes c
    WHERE c.household_id = h.id
    ORDER BY c.coverage_year DESC
    LIMIT 2
) q ON true
WHERE p.id_number_hash = $1
ORDER BY q.coverage_year DESC NULLS LAST;

-- name: insert_session
INSERT INTO resident_sessions (id, person_id, household_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5);

-- name: end_session
UPDATE resident_sessions SET revoked_at = now() WHERE id = $1 AND person_id = $2 AND revoked_at IS NULL;

-- name: household
SELECT id, village_code, household_no, status FROM households WHERE id = $1;

-- name: members_coverage
-- Current members, each with the enrolment for the year: the live one, else the latest cancelled.
SELECT p.id AS person_id, p.name, p.id_number_enc, p.birth_cert_enc, m.relation,
       e.id AS enrollment_id, e.status, e.premium_fen, e.subsidy_fen, e.coverage_start, e.coverage_end,
       e.coverage_reason, e.coverage_note, e.coverage_facts, e.cancel_reason
FROM memberships m
JOIN persons p ON p.id = m.person_id
LEFT JOIN LATERAL (
    SELECT * FROM enrollments en
    WHERE en.person_id = p.id AND en.coverage_year = $2
    ORDER BY en.status = 'cancelled', en.registered_at DESC
    LIMIT 1
) e ON true
WHERE m.household_id = $1 AND m.left_at IS NULL
ORDER BY m.relation <> 'head', m.joined_at, m.id;

-- name: last_receipts
-- Per person, the receipt of the latest payment (not voided) of the household's year that covered them.
SELECT DISTINCT ON (a.person_id) a.person_id, p.receipt_no, p.collected_at
FROM payment_allocations a
JOIN payment_ledger p ON p.id = a.payment_id
WHERE p.household_id = $1 AND p.coverage_year = $2 AND NOT p.voided
ORDER BY a.person_id, p.collected_at DESC, p.id DESC;

-- name: expire_resident_limits
WITH gone AS (
    DELETE FROM resident_login_limits
    WHERE window_start < $1 AND (locked_until IS NULL OR locked_until < now())
    RETURNING 1
)
SELECT count(*) FROM gone;
