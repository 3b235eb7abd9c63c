-- name: lock_owner
-- Serialises the limit check of one person's (and one township's) new jobs.
SELECT pg_advisory_xact_lock(hashtextextended('canbao.jobs:' || $1::text, 0))

-- name: active_counts
SELECT count(*) FILTER (WHERE created_by = $1) AS by_user,
       count(*) FILTER (WHERE division_code BETWEEN $2 AND $3) AS by_township
FROM jobs
WHERE state IN ('queued', 'running') AND (created_by = $1 OR division_code BETWEEN $2 AND $3)

-- name: insert_job
INSERT INTO jobs (id, kind, params, actor, created_by, division_code, file_name, file_bytes, max_attempts,
                  progress_total, progress_unit)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8, CASE WHEN $8::bigint IS NULL THEN NULL ELSE 'bytes' END)
RETURNING *

-- name: notify
SELECT pg_notify('canbao_jobs', $1::text)

-- name: get_job
SELECT * FROM jobs WHERE id = $1

-- name: list_jobs
-- As service's `_may_see`: in the caller's scope ($2 … $3), and their own when they are township
-- staff ($8).
SELECT * FROM jobs
WHERE division_code BETWEEN $2 AND $3 AND (created_by = $1 OR NOT $8::boolean)
  AND ($4::text IS NULL OR state = $4)
  AND ($5::text IS NULL OR kind = $5)
  AND ($6::uuid IS NULL OR id < $6)
ORDER BY id DESC
LIMIT $7

-- name: cancel_queued
UPDATE jobs SET state = 'cancelled', cancel_requested = true, finished_at = now(),
                error = '{"code": "cancelled", "title": "Job was cancelled"}'
WHERE id = $1 AND state = 'queued'
RETURNING *

-- name: cancel_running
UPDATE jobs SET cancel_requested = true WHERE id = $1 AND state = 'running' RETURNING *

-- name: fail_exhausted
-- Jobs whose worker died (its lease ran out) once too often: failed, their upload dropped.
WITH failed AS (
    UPDATE jobs SET state = 'failed', finished_at = now(), locked_by = NULL, locked_until = NULL,
                    error = jsonb_build_object('code', 'worker_lost',
                                               'title', 'The job stopped with its worker too many times')
    WHERE state = 'running' AND locked_until < now() AND attempts >= max_attempts
    RETURNING id
)
DELETE FROM job_files WHERE job_id IN (SELECT id FROM failed)

-- name: claim
UPDATE jobs
SET state = 'running', attempts = attempts + 1, locked_by = $1,
    locked_until = now() + make_interval(secs => $2), started_at = coalesce(started_at, now()),
    progress_done = 0
WHERE id = (
    SELECT id FROM jobs
    WHERE (state = 'queued' OR (state = 'running' AND locked_until < now() AND attempts < max_attempts))
      AND kind = ANY($3::text[])
      AND ($4::uuid IS NULL OR id = $4)
      AND NOT cancel_requested
    ORDER BY created_at
    FOR UPDATE SKIP LOCKED
    LIMIT 1
)
RETURNING *

-- name: heartbeat
-- Renews the lease and records progress; answers whether someone asked to cancel.
UPDATE jobs
SET locked_until = now() + make_interval(secs => $3),
    progress_done = $4, progress_total = coalesce($5, progress_total)
WHERE id = $1 AND locked_by = $2 AND state = 'running'
RETURNING cancel_requested

-- name: finish
UPDATE jobs
SET state = $3, result = $4, error = $5, finished_at = clock_timestamp(),  -- not the transaction's start locked_by = NULL, locked_until = NULL,
    progress_done = coalesce(progress_total, progress_done)
WHERE id = $1 AND locked_by = $2 AND state = 'running'
RETURNING id

-- name: end_unfinished
-- Cancelled or failed without a result: the work's transaction was rolled back.
UPDATE jobs
SET state = $3, error = $4, finished_at = now(), locked_by = NULL, locked_until = NULL
WHERE id = $1 AND locked_by = $2 AND state = 'running'
RETURNING id

-- name: release
-- A transient failure: back to the queue for another attempt (or failed once attempts are spent).
UPDATE jobs
SET state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
    finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
    error = CASE WHEN attempts >= max_attempts THEN $3::jsonb END,
    locked_by = NULL, locked_until = NULL
WHERE id = $1 AND locked_by = $2 AND state = 'running'
RETURNING state

-- name: drop_file
DELETE FROM job_files WHERE job_id = $1

-- name: file_chunk
SELECT data FROM job_files WHERE job_id = $1 AND seq = $2

-- name: expire
-- Finished jobs past the retention go, with anything left of their upload.
DELETE FROM jobs WHERE finished_at < $1

-- name: drop_expired_slots
DELETE FROM upload_slots WHERE expires_at < now()

-- name: slot_counts
SELECT count(*) FILTER (WHERE user_id = $1) AS by_user,
       count(*) FILTER (WHERE division_code BETWEEN $2 AND $3) AS by_township
FROM upload_slots
WHERE user_id = $1 OR division_code BETWEEN $2 AND $3

-- name: take_slot
INSERT INTO upload_slots (id, user_id, division_code, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))

-- name: free_slot
DELETE FROM upload_slots WHERE id = $1

-- name: set_output
UPDATE jobs SET output_name = $2, output_media_type = $3, output_bytes = $4 WHERE id = $1

-- name: output_chunk
SELECT data FROM job_outputs WHERE job_id = $1 AND seq = $2

-- name: backend_process
-- This connection's server process, and whether it is on this machine (a Unix socket).
SELECT pg_backend_pid() AS pid, inet_server_addr() IS NULL AS local
