-- name: device_for_sync
SELECT d.id, d.status, d.owner_id, u.division_code
FROM devices d JOIN users u ON u.id = d.owner_id
WHERE d.id = $1;

-- name: lock_sync_device
-- NOWAIT: a second push of the same tablet while one is running gets a 409 instead of waiting
-- to apply the same mutations again.
-- For this transaction only: the push's statements run on generic plans (`plan_cache_mode`: they are
-- the same few thousand times over, keyed by ids, and planning each anew cost more than running it),
-- and the field changes it makes are stamped with the device (`record_changes.device_id`).
SELECT last_seq, set_config('plan_cache_mode', 'force_generic_plan', true) AS plans,
       set_config('canbao.device_id', $1::uuid::text, true) AS device
FROM sync_devices WHERE device_id = $1 FOR UPDATE NOWAIT;

-- name: finish_push
UPDATE sync_devices
SET last_seq = $2, last_push_at = now(), last_app_version = nullif($3, ''), last_clock_skew_s = $4
WHERE device_id = $1;

-- name: ledger_entry
-- body_hash: a keyed digest (backend/sync/sealed.py), compared, never read back.
SELECT body_hash, answer FROM sync_mutations WHERE device_id = $1 AND seq = $2;

-- name: ledger_entries
-- `ledger_entry` of many seqs in one round trip (a replayed chunk).
SELECT seq, body_hash, answer FROM sync_mutations WHERE device_id = $1 AND seq = ANY($2::bigint[]);

-- name: insert_ledger_many
-- A push's ledger rows in one statement, in its transaction (answers as JSON text).
INSERT INTO sync_mutations (device_id, seq, mutation_id, kind, user_id, body_hash, status, answer, device_time)
SELECT $1, x.seq, x.mutation_id, x.kind, $2, x.body_hash, x.status, x.answer::jsonb, x.device_time
FROM unnest($3::bigint[], $4::uuid[], $5::text[], $6::bytea[], $7::text[], $8::text[], $9::timestamptz[])
     AS x (seq, mutation_id, kind, body_hash, status, answer, device_time);

-- name: insert_quarantine
-- The body as the tablet sent it, sealed whole (backend/sync/sealed.py).
INSERT INTO sync_quarantine (id, device_id, seq, user_id, township_code, kind, payment_id, content_hash,
                             reason, detail, body_enc)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);

-- name: registered_by_tablet
-- Of the live enrolments in year $3 of persons $2 of household $1, those tablet $4 registered: in
-- this push (the transaction's own time) or an earlier one (its ledger row of `enrollment.create`
-- written in the same transaction), with the tablet's clock then (NULL: not known).
SELECT e.person_id, e.registered_on, e.registered_at = now() AS this_push, s.device_time
FROM enrollments e
LEFT JOIN LATERAL (
    SELECT min(s.device_time) AS device_time, count(*) AS n FROM sync_mutations s
    WHERE s.device_id = $4 AND s.kind = 'enrollment.create' AND s.at = e.registered_at
      AND s.status IN ('applied', 'applied_with_conflict')
) AS s ON true
WHERE e.household_id = $1 AND e.coverage_year = $3 AND e.person_id = ANY($2::uuid[]) AND e.status <> 'cancelled'
  AND (e.registered_at = now() OR s.n > 0);

-- name: quarantined_payment
-- The first quarantined report of a payment id that is still open or was dismissed.
SELECT id, content_hash, reason, township_code FROM sync_quarantine
WHERE payment_id = $1 AND kind = 'payment.record' AND reason <> 'payment_id_reused'
ORDER BY at, id LIMIT 1;

-- name: quarantined_payments
-- `quarantined_payment` of many payment ids in one round trip.
SELECT DISTINCT ON (payment_id) payment_id, id, content_hash, reason, township_code FROM sync_quarantine
WHERE payment_id = ANY($1::uuid[]) AND kind = 'payment.record' AND reason <> 'payment_id_reused'
ORDER BY payment_id, at, id;

-- name: household_state
SELECT id, village_code, status, row_version FROM households WHERE id = $1;

-- name: live_enrollment_of
SELECT id FROM enrollments WHERE person_id = $1 AND coverage_year = $2 AND status <> 'cancelled';

-- name: current_xmin
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint;

-- name: horizon
SELECT floor_xid::text::bigint FROM sync_horizon;

-- name: prune_changes
WITH gone AS (DELETE FROM sync_changes WHERE at < $1 RETURNING xid::text::bigint AS x)
UPDATE sync_horizon SET floor_xid = greatest(floor_xid, ((SELECT max(x) FROM gone) + 1)::text::xid8)
WHERE (SELECT count(*) FROM gone) > 0
RETURNING floor_xid::text::bigint;

-- name: changes_page
SELECT id, entity, entity_id FROM sync_changes
WHERE xid >= $1::text::xid8 AND xid < $2::text::xid8 AND id > $3
  AND (township_code BETWEEN $4 AND $5 OR township_code IS NULL)
ORDER BY id
LIMIT $6;

-- name: touch_pull
-- Information only (the follow-up sheet): a push of the same tablet holding the row is not waited for.
UPDATE sync_devices SET last_pull_at = now()
WHERE device_id = (SELECT device_id FROM sync_devices WHERE device_id = $1 FOR UPDATE SKIP LOCKED)
RETURNING last_seq;

-- name: device_last_seq
SELECT last_seq FROM sync_devices WHERE device_id = $1;

-- Row images: by id (change pulls); household by household (snapshot pages); by scope and keyset,
-- kind by kind (`*_in_scope`: what a snapshot must hold — the tests' and the benchmark's reference) ---

-- name: households_from
-- Snapshot pages: the scope's households from $3 on (a page may have ended inside $3), in id order.
SELECT id, village_code, household_no, address, phone_enc, head_person_id, status, row_version
FROM households WHERE village_code BETWEEN $1 AND $2 AND id >= $3 ORDER BY id LIMIT $4;

-- name: persons_of_households
SELECT p.id, m.household_id, p.id_number_enc, p.birth_cert_enc, p.name, p.sex, p.birth_date, p.phone_enc, p.row_version
FROM memberships m JOIN persons p ON p.id = m.person_id
WHERE m.household_id = ANY($1::uuid[]) AND m.left_at IS NULL
ORDER BY m.household_id, p.id;

-- name: memberships_of_households
SELECT id, person_id, household_id, relation, joined_at, left_at, left_reason
FROM memberships
WHERE household_id = ANY($1::uuid[]) AND left_at IS NULL
ORDER BY household_id, id;

-- name: enrollments_of_households
SELECT id, person_id, household_id, village_code, coverage_year, status, premium_fen, subsidy_fen,
       coverage_start, coverage_end, cancel_reason, row_version, new_student
FROM enrollments
WHERE household_id = ANY($1::uuid[]) AND village_code BETWEEN $2 AND $3
ORDER BY household_id, id;

-- name: payments_of_households
SELECT id, household_id, village_code, coverage_year, person_ids, amount_fen, method, kind, receipt_no,
       collector_id, device_id, collected_at, business_date
FROM payments
WHERE household_id = ANY($1::uuid[]) AND village_code BETWEEN $2 AND $3
ORDER BY household_id, id;

-- name: payment_events_of_households
SELECT e.id, e.payment_id, p.household_id, e.kind, e.request_id, e.amount_fen, e.reason, e.at
FROM payments p JOIN payment_events e ON e.payment_id = p.id
WHERE p.household_id = ANY($1::uuid[]) AND p.village_code BETWEEN $2 AND $3
ORDER BY p.household_id, e.id;

-- name: households_by_id
SELECT id, village_code, household_no, address, phone_enc, head_person_id, status, row_version
FROM households WHERE id = ANY($1::uuid[]);

-- name: households_in_scope
SELECT id, village_code, household_no, address, phone_enc, head_person_id, status, row_version
FROM households WHERE village_code BETWEEN $1 AND $2 AND id > $3 ORDER BY id LIMIT $4;

-- name: persons_by_id
SELECT p.id, m.household_id, h.village_code, p.id_number_enc, p.birth_cert_enc, p.name, p.sex, p.birth_date, p.phone_enc,
       p.row_version
FROM persons p
LEFT JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
LEFT JOIN households h ON h.id = m.household_id
WHERE p.id = ANY($1::uuid[]);

-- name: persons_in_scope
SELECT p.id, m.household_id, h.village_code, p.id_number_enc, p.birth_cert_enc, p.name, p.sex, p.birth_date, p.phone_enc,
       p.row_version
FROM persons p
JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
JOIN households h ON h.id = m.household_id
WHERE h.village_code BETWEEN $1 AND $2 AND p.id > $3 ORDER BY p.id LIMIT $4;

-- name: memberships_by_id
SELECT m.id, m.person_id, m.household_id, h.village_code, m.relation, m.joined_at, m.left_at, m.left_reason
FROM memberships m JOIN households h ON h.id = m.household_id
WHERE m.id = ANY($1::uuid[]);

-- name: memberships_in_scope
SELECT m.id, m.person_id, m.household_id, h.village_code, m.relation, m.joined_at, m.left_at, m.left_reason
FROM memberships m JOIN households h ON h.id = m.household_id
WHERE m.left_at IS NULL AND h.village_code BETWEEN $1 AND $2 AND m.id > $3 ORDER BY m.id LIMIT $4;

-- name: enrollments_by_id
SELECT id, person_id, household_id, village_code, coverage_year, status, premium_fen, subsidy_fen,
       coverage_start, coverage_end, cancel_reason, row_version, new_student
FROM enrollments WHERE id = ANY($1::uuid[]);

-- name: enrollments_in_scope
SELECT id, person_id, household_id, village_code, coverage_year, status, premium_fen, subsidy_fen,
       coverage_start, coverage_end, cancel_reason, row_version, new_student
FROM enrollments WHERE village_code BETWEEN $1 AND $2 AND id > $3 ORDER BY id LIMIT $4;

-- name: payments_by_id
SELECT id, household_id, village_code, coverage_year, person_ids, amount_fen, method, kind, receipt_no,
       collector_id, device_id, collected_at, business_date
FROM payments WHERE id = ANY($1::uuid[]);

-- name: payments_in_scope
SELECT id, household_id, village_code, coverage_year, person_ids, amount_fen, method, kind, receipt_no,
       collector_id, device_id, collected_at, business_date
FROM payments WHERE village_code BETWEEN $1 AND $2 AND id > $3 ORDER BY id LIMIT $4;

-- name: payment_events_by_id
SELECT e.id, e.payment_id, p.village_code, e.kind, e.request_id, e.amount_fen, e.reason, e.at
FROM payment_events e JOIN payments p ON p.id = e.payment_id
WHERE e.id = ANY($1::uuid[]);

-- name: payment_events_in_scope
SELECT e.id, e.payment_id, p.village_code, e.kind, e.request_id, e.amount_fen, e.reason, e.at
FROM payment_events e JOIN payments p ON p.id = e.payment_id
WHERE p.village_code BETWEEN $1 AND $2 AND e.id > $3 ORDER BY e.id LIMIT $4;

-- name: receipt_blocks_by_id
SELECT b.id, b.prefix, b.first_no, b.last_no, b.digits, b.collector_id, b.device_id, b.township_code,
       coalesce((SELECT array_agg(ARRAY[r.first_no, r.last_no] ORDER BY r.first_no)
                 FROM receipt_retirements r WHERE r.block_id = b.id), '{}') AS retired
FROM receipt_blocks b WHERE b.id = ANY($1::uuid[]);

-- name: receipt_blocks_of_device
-- A tablet gets the blocks of its user that are not bound to another tablet.
SELECT b.id, b.prefix, b.first_no, b.last_no, b.digits, b.collector_id, b.device_id, b.township_code,
       coalesce((SELECT array_agg(ARRAY[r.first_no, r.last_no] ORDER BY r.first_no)
                 FROM receipt_retirements r WHERE r.block_id = b.id), '{}') AS retired
FROM receipt_blocks b
WHERE b.collector_id = $1 AND (b.device_id IS NULL OR b.device_id = $2) AND b.id > $3 ORDER BY b.id LIMIT $4;

-- name: policies_by_id
SELECT id, coverage_year, version, effective_from, premium_fen, window_start, window_end, rules
FROM policy_versions WHERE id = ANY($1::uuid[]);

-- name: policies_all
SELECT id, coverage_year, version, effective_from, premium_fen, window_start, window_end, rules
FROM policy_versions WHERE id > $1 ORDER BY id LIMIT $2;

-- name: subsidies_of
-- The subsidy rows of persons ($1) or of the current members of households ($2): their grants and
-- their exemption evidence; a person with neither has no row. Ordered by household, then person.
-- Grants: rows of subsidy lists in the window their version is in force (subsidy_list_windows) cut
-- to the row's own dates, and accepted claims of subsidy categories; grants that ended before $3,
-- and claims for years before its year, are left out.
-- Evidence (what backend.eligibility's `exemption_evidence` reads for a payment, for any day a tablet
-- may price): rows of the lists that travel (list_travels_to_tablets) with their own dates and their
-- version's window (evidence_list_windows), versions out of force before $3 left out, and of the
-- employee-insurance list only rows that ended (an open one shows no leaver); accepted claims of any
-- purpose for years from $3's on, with the dates of their proof. Never an identity number.
WITH people AS (
    SELECT p.id, p.id_number_hash, m.household_id, h.village_code
    FROM memberships m
    JOIN persons p ON p.id = m.person_id
    JOIN households h ON h.id = m.household_id
    WHERE m.left_at IS NULL AND (m.person_id = ANY($1::uuid[]) OR m.household_id = ANY($2::uuid[]))
      AND p.id_number_hash IS NOT NULL
), grants AS (
    SELECT x.id AS person_id, g.*
    FROM people x
    JOIN list_entries e ON e.id_number_hash = x.id_number_hash
    JOIN subsidy_list_windows v ON v.version_id = e.version_id
    CROSS JOIN LATERAL (SELECT v.list_type AS category, 'list' AS source,
                               greatest(e.valid_from, v.effective_from) AS valid_from,
                               least(e.valid_to, v.superseded_on - 1) AS valid_to, NULL::integer AS coverage_year,
                               v.version_id AS list_id, v.version AS list_version, e.row_no, NULL::uuid AS claim_id) g
    WHERE g.valid_from <= coalesce(g.valid_to, 'infinity') AND coalesce(g.valid_to, 'infinity') >= $3::date
    UNION ALL
    SELECT x.id, c.category, 'claim', NULL, NULL, c.coverage_year, NULL, NULL, NULL, c.id
    FROM people x
    JOIN eligibility_claims c ON c.id_number_hash = x.id_number_hash AND c.status = 'accepted' AND c.purpose = 'subsidy'
    WHERE c.coverage_year >= extract(year FROM $3::date)
), evidence AS (
    SELECT x.id AS person_id, ev.*
    FROM people x
    JOIN list_entries e ON e.id_number_hash = x.id_number_hash
    JOIN evidence_list_windows v ON v.version_id = e.version_id
    CROSS JOIN LATERAL (SELECT 'list' AS source, v.list_type, e.valid_from, e.valid_to, v.version_id AS list_id,
                               v.version, e.row_no AS row, NULL::uuid AS claim_id, v.effective_from AS in_force_from,
                               v.superseded_on - 1 AS in_force_to, NULL::integer AS coverage_year) ev
    WHERE coalesce(v.superseded_on, 'infinity') > $3::date
      AND (v.list_type <> 'employee_insurance' OR e.valid_to IS NOT NULL)
    UNION ALL
    SELECT x.id, 'claim', c.category, c.valid_from, c.valid_to, NULL, NULL, NULL, c.id, NULL, NULL, c.coverage_year
    FROM people x
    JOIN eligibility_claims c ON c.id_number_hash = x.id_number_hash AND c.status = 'accepted'
    WHERE c.coverage_year >= extract(year FROM $3::date)
), person_grants AS (
    SELECT g.person_id,
           jsonb_agg(to_jsonb(g) - 'person_id' ORDER BY g.category, g.source, g.valid_from, g.coverage_year, g.list_id,
                     g.row_no, g.claim_id) AS grants
    FROM grants g GROUP BY g.person_id
), person_evidence AS (
    SELECT ev.person_id,
           jsonb_agg(to_jsonb(ev) - 'person_id' ORDER BY ev.list_type, ev.source, ev.in_force_from, ev.coverage_year,
                     ev.list_id, ev.row, ev.claim_id) AS evidence
    FROM evidence ev GROUP BY ev.person_id
)
SELECT x.id, x.id AS person_id, x.household_id, x.village_code,
       coalesce(g.grants, '[]'::jsonb) AS grants, coalesce(ev.evidence, '[]'::jsonb) AS evidence
FROM people x
LEFT JOIN person_grants g ON g.person_id = x.id
LEFT JOIN person_evidence ev ON ev.person_id = x.id
WHERE g.person_id IS NOT NULL OR ev.person_id IS NOT NULL
ORDER BY x.household_id, x.id;

-- name: subsidies_in_scope
-- The same rows for the persons of a scope, keyset on the person's id (the scope's rows kind by
-- kind, as the snapshot must hold them). Driven from the grants and the evidence: a minority of
-- people hold one. Lists and persons meet on the blind index of the ID number, which never goes
-- into the rows.
WITH grants AS (
    SELECT e.id_number_hash, g.*
    FROM subsidy_list_windows v
    JOIN list_entries e ON e.version_id = v.version_id
    CROSS JOIN LATERAL (SELECT v.list_type AS category, 'list' AS source,
                               greatest(e.valid_from, v.effective_from) AS valid_from,
                               least(e.valid_to, v.superseded_on - 1) AS valid_to, NULL::integer AS coverage_year,
                               v.version_id AS list_id, v.version AS list_version, e.row_no, NULL::uuid AS claim_id) g
    WHERE coalesce(v.superseded_on, 'infinity') > $5::date
      AND g.valid_from <= coalesce(g.valid_to, 'infinity') AND coalesce(g.valid_to, 'infinity') >= $5::date
    UNION ALL
    SELECT c.id_number_hash, c.category, 'claim', NULL, NULL, c.coverage_year, NULL, NULL, NULL, c.id
    FROM eligibility_claims c
    WHERE c.status = 'accepted' AND c.purpose = 'subsidy' AND c.id_number_hash IS NOT NULL AND c.coverage_year >= extract(year FROM $5::date)
), evidence AS (
    SELECT e.id_number_hash, ev.*
    FROM evidence_list_windows v
    JOIN list_entries e ON e.version_id = v.version_id
    CROSS JOIN LATERAL (SELECT 'list' AS source, v.list_type, e.valid_from, e.valid_to, v.version_id AS list_id,
                               v.version, e.row_no AS row, NULL::uuid AS claim_id, v.effective_from AS in_force_from,
                               v.superseded_on - 1 AS in_force_to, NULL::integer AS coverage_year) ev
    WHERE coalesce(v.superseded_on, 'infinity') > $5::date
      AND (v.list_type <> 'employee_insurance' OR e.valid_to IS NOT NULL)
    UNION ALL
    SELECT c.id_number_hash, 'claim', c.category, c.valid_from, c.valid_to, NULL, NULL, NULL, c.id, NULL, NULL,
           c.coverage_year
    FROM eligibility_claims c
    WHERE c.status = 'accepted' AND c.id_number_hash IS NOT NULL AND c.coverage_year >= extract(year FROM $5::date)
), held AS (
    SELECT coalesce(g.id_number_hash, ev.id_number_hash) AS id_number_hash, g.grants, ev.evidence
    FROM (SELECT g.id_number_hash,
                 jsonb_agg(to_jsonb(g) - 'id_number_hash' ORDER BY g.category, g.source, g.valid_from, g.coverage_year,
                           g.list_id, g.row_no, g.claim_id) AS grants
          FROM grants g GROUP BY g.id_number_hash) AS g
    FULL JOIN (SELECT ev.id_number_hash,
                      jsonb_agg(to_jsonb(ev) - 'id_number_hash' ORDER BY ev.list_type, ev.source, ev.in_force_from,
                                ev.coverage_year, ev.list_id, ev.row, ev.claim_id) AS evidence
               FROM evidence ev GROUP BY ev.id_number_hash) AS ev ON ev.id_number_hash = g.id_number_hash
)
SELECT p.id, p.id AS person_id, m.household_id, h.village_code,
       coalesce(x.grants, '[]'::jsonb) AS grants, coalesce(x.evidence, '[]'::jsonb) AS evidence
FROM held x
JOIN persons p ON p.id_number_hash = x.id_number_hash
JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
JOIN households h ON h.id = m.household_id
WHERE h.village_code BETWEEN $1 AND $2 AND p.id > $3
ORDER BY p.id
LIMIT $4;

-- name: conflicts_by_id
SELECT id, township_code, household_id, person_id, kind, outcome, fields, base_values, server_values, tablet_values,
       other_household_id, device_id, seq, at, status, resolution, resolution_note, resolved_at
FROM sync_conflicts WHERE id = ANY($1::uuid[]);

-- name: conflicts_in_scope
-- Every conflict of the township, open or resolved: a resolution travels back like any change, so a
-- fresh snapshot holds what a tablet that pulled all along holds.
SELECT id, township_code, household_id, person_id, kind, outcome, fields, base_values, server_values, tablet_values,
       other_household_id, device_id, seq, at, status, resolution, resolution_note, resolved_at
FROM sync_conflicts WHERE township_code BETWEEN $1 AND $2 AND id > $3 ORDER BY id LIMIT $4;

-- Quarantine and follow-up -----------------------------------------------------------------------

-- name: quarantine_queue
SELECT id, device_id, seq, user_id, township_code, kind, payment_id, reason, detail, body_enc, status,
       settled_by, settled_at, settlement_note, at
FROM sync_quarantine
WHERE township_code BETWEEN $1 AND $2 AND ($3::text IS NULL OR status = $3) AND ($4::uuid IS NULL OR id > $4)
ORDER BY id LIMIT $5;

-- name: quarantine_for_update
SELECT q.*, u.role AS user_role, u.division_code AS user_division, dv.level AS user_level
FROM sync_quarantine q JOIN users u ON u.id = q.user_id JOIN divisions dv ON dv.code = u.division_code
WHERE q.id = $1 FOR UPDATE OF q;

-- name: settle_quarantine
UPDATE sync_quarantine SET status = $2, settled_by = $3, settled_at = now(), settlement_note = $4
WHERE id = $1
RETURNING id, device_id, seq, user_id, township_code, kind, payment_id, reason, detail, body_enc, status,
          settled_by, settled_at, settlement_note, at;

-- name: device_follow_up
SELECT d.id, d.status, d.owner_id, u.division_code, s.last_seq, s.last_push_at, s.last_pull_at,
       s.last_app_version, s.last_clock_skew_s,
       (SELECT count(*) FROM sync_quarantine q WHERE q.device_id = d.id AND q.status = 'open') AS open_quarantine
FROM devices d JOIN users u ON u.id = d.owner_id JOIN sync_devices s ON s.device_id = d.id
WHERE d.id = $1;

-- name: device_blocks
SELECT b.id, b.prefix, b.first_no, b.last_no, b.digits,
       (SELECT count(*) FROM payments p WHERE p.receipt_block_id = b.id) AS used,
       coalesce((SELECT array_agg(ARRAY[r.first_no, r.last_no] ORDER BY r.first_no)
                 FROM receipt_retirements r WHERE r.block_id = b.id), '{}') AS retired
FROM receipt_blocks b WHERE b.device_id = $1 ORDER BY b.prefix, b.first_no;

-- name: take_tablet_query_code
-- Replaces the code enrol() derived a moment ago, in the same transaction (never shown to anyone).
UPDATE household_query_codes SET code_hash = $3, device_id = $4
WHERE household_id = $1 AND coverage_year = $2 AND device_id IS NULL;

-- name: query_code_row
SELECT code_hash, device_id FROM household_query_codes WHERE household_id = $1 AND coverage_year = $2;
