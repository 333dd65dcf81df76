TRUNCATE task_events, tasks;
INSERT INTO tasks (id, queue, name, payload, priority, status, retry_state, attempt_count, max_attempts, created_at, updated_at, version)
SELECT (lpad(to_hex((extract(epoch FROM ts) * 1000)::int8), 12, '0') || '7' || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid,
  'default', 'bench-backlog', '{}'::jsonb, 0, 'PENDING', 'NONE', 0, 3, ts, ts, 1
FROM (SELECT g, now() - interval '20 minutes' + g * interval '10 microseconds' AS ts FROM generate_series(1, :n) AS g) s;
VACUUM ANALYZE tasks;
VACUUM ANALYZE task_events;
CHECKPOINT;
