DROP TABLE bulk_actions;
DROP INDEX tasks_payload_idx;
