-- Named SQL of backend/enrollment/moves.py.

-- name: insert_move
INSERT INTO person_moves (id, person_id, from_household_id, to_household_id, relation, status, note, requested_by,
                          decided_by, decided_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $9::uuid IS NULL THEN NULL ELSE now() END)
RETURNING *;

-- name: insert_membership
INSERT INTO memberships (id, person_id, household_id, relation) VALUES ($1, $2, $3, $4);

-- name: bump_household
UPDATE households SET row_version = row_version + 1, updated_at = now() WHERE id = $1
RETURNING row_version;

-- name: move_for_update
SELECT mv.*, hf.village_code AS from_village, ht.village_code AS to_village
FROM person_moves mv
JOIN households hf ON hf.id = mv.from_household_id
JOIN households ht ON ht.id = mv.to_household_id
WHERE mv.id = $1
FOR UPDATE OF mv;

-- name: decide_move
UPDATE person_moves SET status = $2, decided_by = $3, decided_at = now(), decision_reason = $4 WHERE id = $1
RETURNING *;

-- name: moves_in_scope
SELECT mv.*, hf.village_code AS from_village, ht.village_code AS to_village
FROM person_moves mv
JOIN households hf ON hf.id = mv.from_household_id
JOIN households ht ON ht.id = mv.to_household_id
WHERE (ht.village_code BETWEEN $1 AND $2 OR hf.village_code BETWEEN $1 AND $2)
  AND ($3::text IS NULL OR mv.status = $3)
  AND ($4::uuid IS NULL OR mv.id > $4)
ORDER BY mv.id
LIMIT $5;
