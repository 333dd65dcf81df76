INSERT INTO tasks (id, queue, name, payload, priority, status, retry_state, attempt_count, max_attempts, created_at, updated_at, version)
SELECT gen_random_uuid(), 'default', 'bench-insert', jsonb_build_object('customerId', (random()*100000)::int, 'to', 'ada@example.com', 'plan', 'pro'), 0, 'PENDING', 'NONE', 0, 3, now(), now(), 1 FROM generate_series(1, 1000);
