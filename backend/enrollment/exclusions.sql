-- name: review_queue
SELECT * FROM exclusion_reviews
WHERE village_code BETWEEN $1 AND $2
  AND ($3::text IS NULL OR status = $3)
  AND ($4::int IS NULL OR coverage_year = $4)
  AND ($5::uuid IS NULL OR id > $5)
ORDER BY id
LIMIT $6;

-- name: review_for_update
SELECT * FROM exclusion_reviews WHERE id = $1 FOR UPDATE;

-- name: decide_review
UPDATE exclusion_reviews SET status = $2, decided_by = $3, decided_at = now(), note = $4
WHERE id = $1
RETURNING *;
