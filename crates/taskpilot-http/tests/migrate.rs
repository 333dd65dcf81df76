//! `taskpilot migrate`, the built binary, against a fresh empty database: what it prints.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::process::Command;

use taskpilot_diesel::testing::TestDatabase;

/// The migration folders' names, oldest first: what a first `migrate` applies.
fn migration_names() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.path().join("up.sql").is_file())
        .map(|entry| entry.file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Runs `taskpilot migrate` on `url` and returns its stdout, after checking that it succeeded.
fn migrate(url: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_taskpilot"))
        .arg("migrate")
        .env("DATABASE_URL", url)
        // Logs go to stdout as well; at `warn` there are none, so stdout is what it printed.
        .env("TASKPILOT_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "taskpilot migrate failed: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn migrate_prints_each_migration_it_applied_then_that_the_schema_is_up_to_date() {
    let db = TestDatabase::empty();
    let names = migration_names();

    let first = migrate(db.url());
    let second = migrate(db.url());

    let applied: String = names.iter().map(|name| format!("applied {name}\n")).collect();
    assert_eq!(first, applied);
    assert_eq!(second, format!("schema is up to date ({} migrations)\n", names.len()));
}
