-- Named SQL of the simulator's invariants (backend/tools/simulate/checker.py, invariants.py): the
-- server's tables as the checks read them, straight from the tables and never through the service's
-- own queries, so that a bug in those cannot hide itself.

-- name: ledger
SELECT seq, answer FROM sync_mutations WHERE device_id = $1 ORDER BY seq;

-- name: last_seq
SELECT last_seq FROM sync_devices WHERE device_id = $1;

-- name: field_changes
-- The values of number fields are sealed (base64): checker.field_changes opens them.
SELECT household_id, person_id, field, old_value, new_value, version, device_id
FROM record_changes
WHERE version IS NOT NULL
ORDER BY id;

-- name: table_digest
-- Row count and a digest of every row of one table; {table} is one of checker.FINGERPRINTED.
SELECT count(*) AS n, coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '') AS d
FROM {table} t;

-- name: payments_made
SELECT id, household_id, amount_fen, receipt_no, person_ids FROM payments WHERE id = ANY($1);

-- name: payments_in_quarantine
-- Reports of the payments $1 kept in quarantine, not counting one refused for reusing a payment id.
SELECT id, payment_id, status, reason
FROM sync_quarantine
WHERE kind = 'payment.record' AND payment_id = ANY($1) AND reason <> 'payment_id_reused';

-- name: conflicts_with_values
SELECT device_id, seq, kind, fields, server_values, tablet_values FROM sync_conflicts;

-- name: conflicts
SELECT id, device_id, seq, kind, outcome FROM sync_conflicts;

-- name: households_dissolved_then_active
SELECT household_id
FROM record_changes
WHERE person_id IS NULL AND field = 'status' AND old_value = 'dissolved' AND new_value <> 'dissolved';

-- name: dissolved_households_with_members
SELECT DISTINCT h.id
FROM households h
JOIN memberships ms ON ms.household_id = h.id AND ms.left_at IS NULL
WHERE h.status = 'dissolved';

-- name: deceased_who_rejoined
SELECT DISTINCT a.person_id
FROM memberships a
JOIN memberships b ON b.person_id = a.person_id AND b.joined_at > a.left_at
WHERE a.left_reason = 'deceased';

-- name: records_of_households
-- Payments, enrolments and the households themselves of the households $1.
SELECT household_id, 'payment' AS what FROM payments WHERE household_id = ANY($1)
UNION ALL
SELECT household_id, 'enrolment' FROM enrollments WHERE household_id = ANY($1)
UNION ALL
SELECT id, 'household' FROM households WHERE id = ANY($1);

-- name: conflicts_applied_for_household
SELECT count(*) FROM sync_conflicts WHERE household_id = $1 AND resolution = 'applied';

-- name: scope_household
-- A tablet's scope, queried afresh for comparison with its copy (`scope_<entity>`, one per row type
-- of a pull): $1 is the township (its first nine digits), and for receipt blocks $2 the collector
-- and $3 the device. Entities that do not depend on the township still take $1. Sealed numbers
-- (`…_enc`) and conflict values are opened by checker.scope_images.
SELECT id, village_code, household_no, address, phone_enc, head_person_id, status, row_version
FROM households
WHERE left(village_code, 9) = $1;

-- name: scope_person
SELECT p.id, ms.household_id, p.id_number_enc, p.birth_cert_enc, p.name, p.sex, p.birth_date, p.phone_enc, p.row_version
FROM persons p
JOIN memberships ms ON ms.person_id = p.id AND ms.left_at IS NULL
JOIN households h ON h.id = ms.household_id
WHERE left(h.village_code, 9) = $1;

-- name: scope_membership
SELECT ms.id, ms.person_id, ms.household_id, ms.relation, ms.joined_at, ms.left_at, ms.left_reason
FROM memberships ms
JOIN households h ON h.id = ms.household_id
WHERE ms.left_at IS NULL AND left(h.village_code, 9) = $1;

-- name: scope_enrollment
SELECT id, person_id, household_id, village_code, coverage_year, status, premium_fen, subsidy_fen,
       coverage_start, coverage_end, cancel_reason, row_version, new_student
FROM enrollments
WHERE left(village_code, 9) = $1;

-- name: scope_payment
SELECT id, household_id, village_code, coverage_year, person_ids, amount_fen, method, kind,
       receipt_no, collector_id, device_id, collected_at, business_date
FROM payments
WHERE left(village_code, 9) = $1;

-- name: scope_payment_event
SELECT e.id, e.payment_id, e.kind, e.request_id, e.amount_fen, e.reason, e.at
FROM payment_events e
JOIN payments p ON p.id = e.payment_id
WHERE left(p.village_code, 9) = $1;

-- name: scope_policy_version
SELECT id, coverage_year, version, effective_from, premium_fen, window_start, window_end, rules
FROM policy_versions
WHERE $1::text IS NOT NULL;

-- name: scope_receipt_block
SELECT b.id, b.prefix, b.first_no, b.last_no, b.digits, b.collector_id, b.device_id,
       coalesce((SELECT array_agg(ARRAY[r.first_no, r.last_no] ORDER BY r.first_no)
                 FROM receipt_retirements r WHERE r.block_id = b.id), '{}') AS retired
FROM receipt_blocks b
WHERE b.collector_id = $2 AND (b.device_id IS NULL OR b.device_id = $3) AND $1::text IS NOT NULL;

-- name: scope_conflict
SELECT id, household_id, person_id, kind, outcome, fields, base_values, server_values, tablet_values,
       other_household_id, device_id, seq, at, status, resolution, resolution_note, resolved_at
FROM sync_conflicts
WHERE left(township_code, 9) = $1;

-- name: enrolments_outside_household
-- Live enrolments of year $1 of persons who are a member of another household than the one the
-- enrolment names (an enrolment follows its person on a move).
SELECT e.person_id, e.household_id, m.household_id AS current_household_id
FROM enrollments e
JOIN memberships m ON m.person_id = e.person_id AND m.left_at IS NULL
WHERE e.coverage_year = $1 AND e.status <> 'cancelled' AND m.household_id <> e.household_id;

-- name: live_enrolments_of_year
SELECT count(*) FROM enrollments WHERE coverage_year = $1 AND status <> 'cancelled';
