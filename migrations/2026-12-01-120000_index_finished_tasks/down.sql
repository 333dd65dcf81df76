-- Retention without its index: still correct, but each batch scans for finished tasks.
DROP INDEX tasks_finished_idx;
