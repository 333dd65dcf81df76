-- A table of :n tasks for EXPLAIN of the list filters: created over 30 days, 60% SUCCEEDED,
-- 20% FAILED (EXHAUSTED, with an error), 10% CANCELLED, 10% PENDING; payloads name one of
-- 5,000 customers, so `{"customerId": 42}` matches about 40 tasks.
TRUNCATE task_events, tasks;
INSERT INTO tasks (id, queue, name, payload, priority, status, retry_state, attempt, attempt_count,
                   max_attempts, last_error, completed_at, created_at, updated_at, version)
SELECT gen_random_uuid(), 'q' || (g % 10), 'job-' || (g % 20),
  jsonb_build_object('customerId', g % 5000, 'plan', CASE WHEN g % 3 = 0 THEN 'pro' ELSE 'free' END),
  0, st,
  CASE st WHEN 'FAILED' THEN 'EXHAUSTED' ELSE 'NONE' END,
  CASE st WHEN 'PENDING' THEN 0 WHEN 'CANCELLED' THEN 0 ELSE 1 END,
  CASE st WHEN 'FAILED' THEN 1 ELSE 0 END, 1,
  CASE st WHEN 'FAILED' THEN CASE WHEN g % 7 = 0 THEN 'disk 100% full' ELSE 'smtp timeout after 30s' END END,
  CASE WHEN st = 'PENDING' THEN NULL ELSE ts + interval '1 second' END,
  ts, ts + interval '1 second', 2
FROM (
  SELECT g, now() - interval '30 days' + g * (interval '30 days' / :n) AS ts,
    CASE WHEN g % 10 < 6 THEN 'SUCCEEDED' WHEN g % 10 < 8 THEN 'FAILED'
         WHEN g % 10 = 8 THEN 'CANCELLED' ELSE 'PENDING' END AS st
  FROM generate_series(1, :n) AS g
) s;
VACUUM ANALYZE tasks;
