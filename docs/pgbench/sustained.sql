INSERT INTO tasks (id, queue, name, payload, priority, status, retry_state, attempt_count, max_attempts, created_at, updated_at, version)
SELECT (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::int8), 12, '0') || '7' || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid,
  'default', 'bench-sustained', '{}'::jsonb, 0, 'PENDING', 'NONE', 0, 3, now(), now(), 1 FROM generate_series(1, 100);
WITH picked AS (
    SELECT id, priority, coalesce(next_run_at, created_at) AS runnable_since
    FROM tasks
    WHERE status = 'PENDING' AND (next_run_at IS NULL OR next_run_at <= now())
    ORDER BY priority DESC, coalesce(next_run_at, created_at), id
    LIMIT 100
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE tasks AS t
    SET status = 'RUNNING', worker_id = 'bench-worker', processing_started_at = now(),
        attempt = t.attempt + 1, lease_token = gen_random_uuid(),
        lease_expires_at = now() + interval '300 seconds', next_run_at = NULL,
        updated_at = greatest(now(), t.created_at), version = t.version + 1
    FROM picked
    WHERE t.id = picked.id
    RETURNING t.*
), logged AS (
    INSERT INTO task_events (task_id, attempt, from_status, to_status, worker_id, actor, at)
    SELECT id, attempt, 'PENDING', 'RUNNING', worker_id, 'WORKER', updated_at FROM claimed
)
SELECT coalesce(array_agg(claimed.id), '{}') AS ids, coalesce(array_agg(claimed.version), '{}') AS vers,
       coalesce(array_agg(claimed.lease_token), '{}') AS toks
FROM claimed JOIN picked ON picked.id = claimed.id \gset
WITH input AS MATERIALIZED (
    SELECT * FROM unnest(':ids'::uuid[], ':vers'::int8[], ':toks'::uuid[]) AS i(id, expected_version, token)
), locked AS MATERIALIZED (
    SELECT i.* FROM input AS i JOIN tasks AS t ON t.id = i.id ORDER BY i.id FOR NO KEY UPDATE OF t
), written AS (
    UPDATE tasks AS t
    SET status = 'SUCCEEDED', worker_id = NULL, processing_started_at = NULL, lease_token = NULL,
        lease_expires_at = NULL, ended_attempt = t.attempt, ended_attempt_token = i.token,
        ended_attempt_end = 'SUCCEEDED', result = '{}'::jsonb, completed_at = now(),
        updated_at = now(), version = t.version + 1
    FROM locked AS i
    WHERE t.id = i.id AND t.version = i.expected_version
    RETURNING t.id, t.attempt, t.updated_at
), logged AS (
    INSERT INTO task_events (task_id, attempt, from_status, to_status, worker_id, actor, at)
    SELECT id, attempt, 'RUNNING', 'SUCCEEDED', 'bench-worker', 'WORKER', updated_at FROM written
)
SELECT count(*) FROM written;
