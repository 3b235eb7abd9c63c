-- Named SQL of the simulator's world and runner (backend/tools/simulate/world.py, runner.py): what
-- it looks up to set itself up, picks for the back office, and counts for its summary. What the
-- invariants read is in invariants.sql.

-- name: users
SELECT username, id, division_code FROM users;

-- name: villages_of_township
SELECT code FROM divisions WHERE level = 'village' AND parent_code = $1 ORDER BY code;

-- name: policy_of_year
SELECT premium_fen, window_end FROM policy_versions WHERE coverage_year = $1 ORDER BY version DESC LIMIT 1;

-- name: device_holdings
-- What the server holds of a device: compared at its revocation and at the end (payments a reviewer
-- applied from its quarantine are the reviewer's doing, not the device's).
SELECT (SELECT last_seq FROM sync_devices WHERE device_id = $1) AS last_seq,
       (SELECT count(*) FROM sync_mutations WHERE device_id = $1) AS ledger,
       (SELECT count(*) FROM sync_quarantine WHERE device_id = $1) AS quarantined,
       (SELECT count(*) FROM payments p WHERE p.device_id = $1 AND NOT EXISTS (
            SELECT 1 FROM sync_quarantine q WHERE q.payment_id = p.id AND q.status = 'applied'))
           AS payments,
       (SELECT count(*) FROM sync_conflicts WHERE device_id = $1) AS conflicts;

-- name: households_for_office
-- Active households of township $1, the simulation's own (household_no starting with its tag $2)
-- first, oldest first: the ones the tablets work on most.
SELECT id FROM households
WHERE status = 'active' AND left(village_code, 9) = left($1, 9)
ORDER BY (household_no LIKE $2 || '%') DESC, household_no
LIMIT 200;

-- name: households_outside_villages
SELECT count(*) FROM households WHERE NOT (village_code = ANY($1::text[]));

-- name: conflicts_by_kind
SELECT kind, count(*) AS n FROM sync_conflicts WHERE device_id = ANY($1) GROUP BY kind;

-- name: quarantine_by_reason
SELECT reason, count(*) AS n FROM sync_quarantine WHERE device_id = ANY($1) GROUP BY reason;

-- name: payments_recorded
SELECT count(*) AS n, coalesce(sum(amount_fen), 0) AS fen FROM payments WHERE id = ANY($1);

-- name: payment_ids_recorded
SELECT id FROM payments WHERE id = ANY($1);

-- name: payment_ids_held
-- Payments of $1 kept in quarantine (open or dismissed: a reviewer's apply records it), not counting
-- a second report under a payment id already used for another payment.
SELECT payment_id FROM sync_quarantine
WHERE payment_id = ANY($1) AND kind = 'payment.record' AND status <> 'applied' AND reason <> 'payment_id_reused';
