-- Named SQL of backend/reports.py: the names reports write beside codes.

-- name: division_names
SELECT code, name FROM divisions WHERE code = ANY($1::text[]);

-- name: user_names
SELECT id::text AS id, coalesce(nullif(full_name, ''), username) AS name FROM users WHERE id = ANY($1::uuid[]);
