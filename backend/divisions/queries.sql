-- name: get
SELECT code, parent_code, level, name FROM divisions WHERE code = $1;

-- name: children
SELECT code, parent_code, level, name FROM divisions WHERE parent_code = $1 ORDER BY code;

-- name: list_in_scope
-- $1..$2: the caller's scope; $3 a level, $4 a parent code, each NULL for any.
SELECT code, parent_code, level, name
FROM divisions
WHERE code BETWEEN $1 AND $2
  AND ($3::text IS NULL OR level = $3)
  AND ($4::text IS NULL OR parent_code = $4)
ORDER BY code;

-- name: existing_codes
SELECT code, level FROM divisions WHERE code = ANY($1::text[]);

-- name: upsert_many
INSERT INTO divisions (code, parent_code, level, name)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
ON CONFLICT (code) DO UPDATE SET
    name = EXCLUDED.name, parent_code = EXCLUDED.parent_code, level = EXCLUDED.level, updated_at = now()
WHERE (divisions.name, divisions.parent_code, divisions.level)
      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.parent_code, EXCLUDED.level)
RETURNING code, (xmax = 0) AS inserted;
