DROP TABLE workers;
DROP TRIGGER tasks_throughput_update ON tasks;
DROP TRIGGER tasks_throughput_insert ON tasks;
DROP FUNCTION tasks_throughput_updated();
DROP FUNCTION tasks_throughput_inserted();
DROP TABLE task_throughput;
