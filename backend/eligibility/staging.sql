-- Named SQL of the import's staging table (a temporary table of the importing session, created by
-- `create_staging`; tests/eligibility/test_lists.py prepares these against it). A temporary table
-- is written to disk like any other: it holds the number's blind index and its sealed value, never
-- the number.

-- name: drop_staging
DROP TABLE IF EXISTS pg_temp.list_staging;

-- name: create_staging
CREATE TEMP TABLE list_staging (
    row_no         integer NOT NULL,
    id_number_hash bytea NOT NULL,
    id_number_enc  bytea NOT NULL,
    name           text NOT NULL,
    valid_from     date,
    valid_to       date,
    division_code  text
) ON COMMIT DROP;

-- name: staging_duplicates
-- Every row after the first of the same person: (row, first row).
SELECT row_no, first_row FROM (
    SELECT row_no, min(row_no) OVER (PARTITION BY id_number_hash) AS first_row,
           count(*) OVER (PARTITION BY id_number_hash) AS n
    FROM list_staging
) AS s
WHERE n > 1 AND row_no <> first_row
ORDER BY row_no;

-- name: staging_bad_divisions
SELECT s.row_no, d.code IS NULL AS unknown
FROM list_staging s
LEFT JOIN divisions d ON d.code = s.division_code
WHERE s.division_code IS NOT NULL AND (d.code IS NULL OR s.division_code NOT BETWEEN $1 AND $2)
ORDER BY s.row_no;

-- name: staging_unplaced
-- Rows of a township's upload with no division column value whose person lives in no household of
-- that township: the upload cannot be scoped to them.
SELECT s.row_no
FROM list_staging s
WHERE s.division_code IS NULL
  AND NOT EXISTS (
    SELECT 1 FROM persons p
    JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
    JOIN households h ON h.id = m.household_id
    WHERE p.id_number_hash = s.id_number_hash AND h.village_code BETWEEN $1 AND $2
  )
ORDER BY s.row_no;

-- name: delete_staging_rows
DELETE FROM list_staging WHERE row_no = ANY($1::int[]);

-- name: count_staging
SELECT count(*) FROM list_staging;

-- name: staging_diff_counts
-- The sealed values differ on every load (a fresh nonce each time): a person is the same by the hash.
SELECT count(*) FILTER (WHERE o.id_number_hash IS NULL) AS added,
       count(*) FILTER (WHERE n.id_number_hash IS NULL) AS removed,
       count(*) FILTER (WHERE n.id_number_hash IS NOT NULL AND o.id_number_hash IS NOT NULL
           AND (n.name, n.valid_from, n.valid_to, n.division_code)
               IS DISTINCT FROM (o.name, o.valid_from, o.valid_to, o.division_code)) AS changed
FROM list_staging n
FULL JOIN (SELECT * FROM list_entries WHERE version_id = $1) AS o ON o.id_number_hash = n.id_number_hash;

-- name: insert_entries
INSERT INTO list_entries (version_id, row_no, id_number_hash, id_number_enc, name, valid_from, valid_to,
    division_code)
SELECT $1, row_no, id_number_hash, id_number_enc, name, valid_from, valid_to, division_code FROM list_staging;
