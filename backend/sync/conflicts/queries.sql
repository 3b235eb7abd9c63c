-- name: household_locked
SELECT id, village_code, household_no, address, phone_enc, head_person_id, status, row_version
FROM households WHERE id = $1 FOR UPDATE;

-- name: changes_since
-- What the household's fields and members went through after a tablet's base version, oldest first,
-- by others than device $3 (its own pushes made the rest: no conflict with itself).
SELECT person_id, field, old_value, new_value, version
FROM record_changes
WHERE household_id = $1 AND version > $2 AND ($3::uuid IS NULL OR device_id IS DISTINCT FROM $3)
ORDER BY id;

-- name: changes_since_many
-- `changes_since` of many households in one go, each after its own base version ($1, $2 in step).
SELECT c.household_id, c.person_id, c.field, c.old_value, c.version
FROM unnest($1::uuid[], $2::bigint[]) AS b (household_id, base)
JOIN record_changes c ON c.household_id = b.household_id AND c.version > b.base
WHERE $3::uuid IS NULL OR c.device_id IS DISTINCT FROM $3
ORDER BY c.id;

-- name: person_now
-- A person's values, and their membership in the given household (current or the latest one);
-- their current membership (`membership_id`, `current_relation`: in whichever household).
SELECT p.id, p.name, p.id_number_enc, p.birth_cert_enc, p.birth_date::text AS birth_date, p.sex, p.phone_enc,
       here.relation, here.left_reason, now_in.household_id AS current_household_id,
       now_in_h.village_code AS current_village_code,
       now_in.id AS membership_id, now_in.relation AS current_relation
FROM persons p
LEFT JOIN LATERAL (
    SELECT relation, left_reason FROM memberships
    WHERE person_id = p.id AND household_id = $2 ORDER BY joined_at DESC LIMIT 1
) here ON true
LEFT JOIN memberships now_in ON now_in.person_id = p.id AND now_in.left_at IS NULL
LEFT JOIN households now_in_h ON now_in_h.id = now_in.household_id
WHERE p.id = $1;

-- name: person_for_edit
-- As person_now, the person's row locked (FOR UPDATE, as members' `person_for_update`), with what
-- `members.update_member` needs besides (`born`: the birth date as a date): a member edit of a push
-- reads the person once.
SELECT p.id, p.name, p.id_number_enc, p.birth_cert_enc, p.birth_date::text AS birth_date, p.sex, p.phone_enc,
       p.birth_date AS born, p.id_converted_from_15, p.id_number_hash, p.row_version,
       here.relation, here.left_reason, now_in.household_id AS current_household_id,
       now_in_h.village_code AS current_village_code,
       now_in.id AS membership_id, now_in.relation AS current_relation
FROM persons p
LEFT JOIN LATERAL (
    SELECT relation, left_reason FROM memberships
    WHERE person_id = p.id AND household_id = $2 ORDER BY joined_at DESC LIMIT 1
) here ON true
LEFT JOIN memberships now_in ON now_in.person_id = p.id AND now_in.left_at IS NULL
LEFT JOIN households now_in_h ON now_in_h.id = now_in.household_id
WHERE p.id = $1
FOR UPDATE OF p;

-- name: held_household
SELECT id FROM sync_conflicts
WHERE household_id = $1 AND kind = 'duplicate_household' AND status = 'open'
LIMIT 1;

-- name: insert_conflict
-- The values' numbers come sealed in place, the held mutation sealed whole (backend/sync/sealed.py).
INSERT INTO sync_conflicts (id, township_code, household_id, person_id, kind, outcome, fields, base_version,
    server_version, base_values, server_values, tablet_values, mutation_enc, other_household_id, device_id, seq,
    raised_by)
VALUES ($1, left($2, 9) || '000', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17);

-- name: conflicts
SELECT id, township_code, household_id, person_id, kind, outcome, fields, base_version, server_version,
       base_values, server_values, tablet_values, other_household_id, device_id, seq, raised_by, at, status,
       resolution, resolution_note, resolved_by, resolved_at
FROM sync_conflicts
WHERE township_code BETWEEN $1 AND $2
  AND ($3::text IS NULL OR township_code = $3)
  AND ($4::text IS NULL OR kind = $4)
  AND ($5::boolean IS NULL OR (status = 'open') = $5)
  AND ($6::uuid IS NULL OR id > $6)
ORDER BY id LIMIT $7;

-- name: conflict_for_update
SELECT * FROM sync_conflicts WHERE id = $1 FOR UPDATE;

-- name: resolve_conflict
UPDATE sync_conflicts
SET status = 'resolved', resolution = $2, resolution_note = $3, resolved_by = $4, resolved_at = now(),
    row_version = row_version + 1
WHERE id = $1
RETURNING id, township_code, household_id, person_id, kind, outcome, fields, base_version, server_version,
          base_values, server_values, tablet_values, other_household_id, device_id, seq, raised_by, at, status,
          resolution, resolution_note, resolved_by, resolved_at;

-- name: lock_households
-- Every household a push names, locked up front in one order: two tablets' pushes touching the
-- same households in opposite orders wait for each other instead of deadlocking. Each as
-- `household_locked` reads it: the push's handlers start from these rows (push.py).
SELECT id, village_code, household_no, address, phone_enc, head_person_id, status, row_version
FROM households WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE;
