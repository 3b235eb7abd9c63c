-- Plain SQL of bench/baseline_sync_offline_month_app.py: one statement per change a mutation makes,
-- into schema `bare` (the benchmark's copy of the tables as the month left them); and the bare pull.

-- name: household
INSERT INTO bare.households (id, village_code, household_no, address, phone_hash, phone_enc, head_person_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT DO NOTHING;

-- name: person
INSERT INTO bare.persons (id, id_number_hash, id_number_enc, birth_cert_hash, birth_cert_enc, name, sex, birth_date,
                          phone_hash, phone_enc)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT DO NOTHING;

-- name: join
INSERT INTO bare.memberships (id, person_id, household_id, relation) VALUES (gen_random_uuid(), $1, $2, $3);

-- name: leave
UPDATE bare.memberships SET left_at = now(), left_reason = $2 WHERE person_id = $1 AND left_at IS NULL;

-- name: household_update
UPDATE bare.households
SET household_no = coalesce($2, household_no), address = coalesce($3, address),
    phone_hash = coalesce($4, phone_hash), phone_enc = coalesce($5, phone_enc), row_version = row_version + 1
WHERE id = $1;

-- name: person_update
UPDATE bare.persons
SET name = coalesce($2, name), phone_hash = coalesce($3, phone_hash), phone_enc = coalesce($4, phone_enc)
WHERE id = $1;

-- name: relation
-- A new head: the former one takes $4 first (in the same statement: a run of them is one executemany);
-- in household $2 only (the person may have left it meanwhile: ours holds that edit, bare writes it).
WITH demoted AS (
    UPDATE bare.memberships SET relation = $4
    WHERE household_id = $2 AND left_at IS NULL AND relation = 'head' AND $3 = 'head' AND person_id <> $1
    RETURNING 1
)
UPDATE bare.memberships SET relation = $3
WHERE person_id = $1 AND household_id = $2 AND left_at IS NULL AND (SELECT count(*) FROM demoted) >= 0;

-- name: move
-- Leaves, takes the enrolment along, joins (in this order: the join waits for the counts).
WITH gone AS (
    UPDATE bare.memberships SET left_at = now(), left_reason = 'moved' WHERE person_id = $1 AND left_at IS NULL
    RETURNING 1
), follows AS (
    UPDATE bare.enrollments SET household_id = $2 WHERE person_id = $1 AND status <> 'cancelled' RETURNING 1
)
INSERT INTO bare.memberships (id, person_id, household_id, relation)
SELECT gen_random_uuid(), $1, $2, $3 WHERE (SELECT count(*) FROM gone) + (SELECT count(*) FROM follows) >= 0;

-- name: dissolve
UPDATE bare.households SET status = 'dissolved' WHERE id = $1;

-- name: dissolve_members
UPDATE bare.memberships SET left_at = now(), left_reason = 'dissolved' WHERE household_id = $1 AND left_at IS NULL;

-- name: enrol
INSERT INTO bare.enrollments (id, person_id, household_id, village_code, coverage_year, status, registered_on)
SELECT gen_random_uuid(), $1, id, village_code, $3, 'registered', current_date FROM bare.households WHERE id = $2
ON CONFLICT DO NOTHING;

-- name: cancel
UPDATE bare.enrollments SET status = 'cancelled', cancel_reason = $3, cancelled_at = now()
WHERE person_id = $1 AND coverage_year = $2 AND status <> 'cancelled';

-- name: payment
INSERT INTO bare.payments (id, household_id, village_code, coverage_year, person_ids, amount_fen, method, kind,
                           receipt_no, receipt_block_id, collector_id, device_id, collected_at, business_date,
                           remittance_date)
SELECT $1, id, village_code, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, current_date, current_date
FROM bare.households WHERE id = $2
ON CONFLICT DO NOTHING;

-- name: paid
UPDATE bare.enrollments SET status = 'paid', funding = 'paid'
WHERE person_id = ANY($1) AND coverage_year = $2 AND status = 'registered';

-- name: void
DELETE FROM bare.payments WHERE id = $1;

-- name: pull
-- A page of what changed in township $1 after change $2, as the rows are now (JSON).
SELECT c.id, coalesce(to_jsonb(h), to_jsonb(p), to_jsonb(j), to_jsonb(e), to_jsonb(y))::text AS row
FROM sync_changes c
LEFT JOIN households h ON c.entity = 'household' AND h.id = c.entity_id
LEFT JOIN persons p ON c.entity = 'person' AND p.id = c.entity_id
LEFT JOIN memberships j ON c.entity = 'membership' AND j.id = c.entity_id
LEFT JOIN enrollments e ON c.entity = 'enrollment' AND e.id = c.entity_id
LEFT JOIN payments y ON c.entity = 'payment' AND y.id = c.entity_id
WHERE c.township_code = $1 AND c.id > $2
ORDER BY c.id
LIMIT $3;
