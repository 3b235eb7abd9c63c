-- name: try_lock
-- One worker at a time does the housekeeping; the others skip this round.
SELECT pg_try_advisory_xact_lock(hashtext('canbao.maintenance'));
