-- name: slip_household
SELECT h.household_no, h.village_code, v.name AS village_name, t.name AS township_name
FROM households h
JOIN divisions v ON v.code = h.village_code
LEFT JOIN divisions t ON t.code = v.parent_code
WHERE h.id = $1;

-- name: slip_members
-- The persons an enrolment registered, in its order.
SELECT x.person_id, p.name, p.id_number_enc, p.birth_cert_enc
FROM unnest($1::uuid[]) WITH ORDINALITY AS x(person_id, n)
JOIN persons p ON p.id = x.person_id
ORDER BY x.n;
