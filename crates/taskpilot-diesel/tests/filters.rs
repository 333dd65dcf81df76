//! The listing's filters and the bulk actions' statements on a real PostgreSQL.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use chrono::{DateTime, Utc};
use common::*;
use diesel::prelude::*;
use serde_json::{json, Value};
use taskpilot_app::{BulkActionRecord, Cursor, TaskFilter, TaskRepository};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::PgTaskRepository;
use taskpilot_domain::{
    FixedBackoff, NewTask, Reporter, RetryState, Task, TaskId, TaskStatus, TokenName,
};
use uuid::Uuid;

fn task_with(payload: Value, created_at: DateTime<Utc>) -> Task {
    let spec = NewTask { payload, ..spec("job", 1) };
    Task::new(TaskId::from_uuid(Uuid::now_v7()), spec, created_at)
}

/// Starts the task and fails its only attempt with `error` at `at`: FAILED, EXHAUSTED.
fn fail(repo: &PgTaskRepository, task: &mut Task, error: &str, at: DateTime<Utc>) {
    transition(repo, task, |t| t.start(&worker("w"), token(), lease(60), at));
    transition(repo, task, |t| {
        t.fail_and_schedule_retry(&Reporter::anyone(), error, at, &FixedBackoff(secs(1)))
    });
}

fn ids(list: &[Task]) -> Vec<TaskId> {
    list.iter().map(Task::id).collect()
}

fn listed(repo: &PgTaskRepository, filter: &TaskFilter) -> Vec<TaskId> {
    ids(&repo.list(filter, None, 500).unwrap())
}

#[test]
fn statuses_retry_state_and_time_ranges_narrow_the_listing() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let mut tasks: Vec<Task> = (0..5).map(|i| task_with(json!({}), t0() + secs(i))).collect();
    for task in &tasks {
        store(&repo, task);
    }
    fail(&repo, &mut tasks[0], "boom", t0() + secs(100));
    fail(&repo, &mut tasks[1], "boom", t0() + secs(200));
    transition(&repo, &mut tasks[2], |t| t.cancel(t0() + secs(300)));
    let expect = |i: &[usize]| i.iter().map(|&i| tasks[i].id()).collect::<Vec<_>>();
    let f = TaskFilter::default;

    let failed_or_cancelled = listed(
        &repo,
        &TaskFilter { statuses: vec![TaskStatus::Failed, TaskStatus::Cancelled], ..f() },
    );
    let exhausted = listed(&repo, &TaskFilter { retry_state: Some(RetryState::Exhausted), ..f() });
    let created = listed(
        &repo,
        &TaskFilter {
            created_after: Some(t0() + secs(1)),
            created_before: Some(t0() + secs(4)),
            ..f()
        },
    );
    let completed = listed(
        &repo,
        &TaskFilter {
            completed_after: Some(t0() + secs(200)),
            completed_before: Some(t0() + secs(300)),
            ..f()
        },
    );
    let completed_since = listed(&repo, &TaskFilter { completed_after: Some(t0()), ..f() });

    assert_eq!(failed_or_cancelled, expect(&[2, 1, 0]));
    assert_eq!(exhausted, expect(&[1, 0]));
    assert_eq!(created, expect(&[3, 2, 1]), "after is inclusive, before exclusive");
    assert_eq!(completed, expect(&[1]), "after is inclusive, before exclusive");
    assert_eq!(completed_since, expect(&[2, 1, 0]), "unfinished tasks never match");
}

#[test]
fn the_error_text_matches_case_insensitively_with_percent_and_underscore_literal() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let errors =
        ["disk 100% full", "disk 1000 full", "Timeout in send_mail", "timeout in sendXmail"];
    let mut tasks: Vec<Task> =
        (0..4).map(|i| task_with(json!({}), t0() + secs(i64::from(i)))).collect();
    for (task, error) in tasks.iter_mut().zip(errors) {
        store(&repo, task);
        fail(&repo, task, error, t0() + secs(10));
    }
    let search = |text: &str| {
        listed(
            &repo,
            &TaskFilter { error_contains: Some(text.to_owned()), ..TaskFilter::default() },
        )
    };

    assert_eq!(search("100%"), vec![tasks[0].id()]);
    assert_eq!(search("0% f"), vec![tasks[0].id()]);
    assert_eq!(search("send_mail"), vec![tasks[2].id()]);
    assert_eq!(search("TIMEOUT"), vec![tasks[3].id(), tasks[2].id()]);
    assert_eq!(search("\\"), Vec::<TaskId>::new());
    assert_eq!(search("%"), vec![tasks[0].id()]);
}

#[test]
fn payload_containment_matches_objects_holding_the_keys_and_values_asked_for() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let payloads = [
        json!({"customerId": 42, "plan": "pro"}),
        json!({"customerId": 43}),
        json!({"customerId": "42"}),
        json!({"customerId": 42, "tags": ["a", "b"]}),
    ];
    let tasks: Vec<Task> = payloads
        .into_iter()
        .enumerate()
        .map(|(i, p)| task_with(p, t0() + secs(i64::try_from(i).unwrap())))
        .collect();
    for task in &tasks {
        store(&repo, task);
    }
    let search = |value: Value| {
        listed(&repo, &TaskFilter { payload_contains: Some(value), ..TaskFilter::default() })
    };

    assert_eq!(search(json!({"customerId": 42})), vec![tasks[3].id(), tasks[0].id()]);
    assert_eq!(search(json!({"tags": ["b"]})), vec![tasks[3].id()]);
    assert_eq!(search(json!({"customerId": "42"})), vec![tasks[2].id()]);
    assert_eq!(search(json!({})).len(), 4);
    assert!(search(json!({"customerId": 44})).is_empty());
}

#[test]
fn keyset_pages_with_filters_cover_every_match_once() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    // Creation instants tie in threes; every other task matches the payload.
    let mut tasks: Vec<Task> =
        (0..30).map(|i| task_with(json!({"even": i % 2 == 0}), t0() + secs(i / 3))).collect();
    for task in &tasks {
        store(&repo, task);
    }
    for task in tasks.iter_mut().step_by(3) {
        transition(&repo, task, |t| t.cancel(t0() + secs(50)));
    }
    let filter = TaskFilter {
        statuses: vec![TaskStatus::Pending, TaskStatus::Cancelled],
        payload_contains: Some(json!({"even": true})),
        created_after: Some(t0() + secs(1)),
        ..TaskFilter::default()
    };
    let mut expected: Vec<(DateTime<Utc>, TaskId)> = tasks
        .iter()
        .filter(|t| t.payload() == &json!({"even": true}) && t.created_at() >= t0() + secs(1))
        .map(|t| (t.created_at(), t.id()))
        .collect();
    expected.sort_by(|a, b| b.cmp(a));

    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = repo.list(&filter, cursor, 4).unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(Cursor::after(last));
        pages.push(page.iter().map(|t| (t.created_at(), t.id())).collect::<Vec<_>>());
    }

    assert_eq!(expected.len(), 13);
    assert!(pages.iter().all(|p| p.len() <= 4));
    assert_eq!(pages.concat(), expected);
}

#[test]
fn delete_many_deletes_only_tasks_still_at_the_judged_version_with_their_history() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let mut tasks: Vec<Task> = (0..3).map(|i| task_with(json!({}), t0() + secs(i))).collect();
    for task in &mut tasks {
        store(&repo, task);
        transition(&repo, task, |t| t.cancel(t0() + secs(10)));
    }
    let judged: Vec<(TaskId, u64)> = tasks.iter().map(|t| (t.id(), t.version())).collect();
    // Rerun meanwhile: its version moved on.
    transition(&repo, &mut tasks[1], |t| t.rerun(t0() + secs(20)));
    let unknown = (TaskId::from_uuid(Uuid::now_v7()), 1);

    let lost = repo.delete_many(&[judged[0], judged[1], judged[2], unknown]).unwrap();

    assert_eq!(lost, vec![tasks[1].id(), unknown.0]);
    assert!(repo.get(tasks[0].id()).is_err());
    assert!(repo.get(tasks[2].id()).is_err());
    assert!(repo.events(tasks[0].id()).unwrap().is_empty(), "the history goes with the task");
    assert_eq!(repo.get(tasks[1].id()).unwrap().status(), TaskStatus::Pending);
    assert_eq!(repo.events(tasks[1].id()).unwrap().len(), 3);
    assert!(repo.delete_many(&[]).unwrap().is_empty());
}

#[test]
fn a_bulk_action_is_recorded_once_as_it_was_asked() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let record = BulkActionRecord {
        id: Uuid::now_v7(),
        action: "rerun",
        selection: json!({"filter": {"status": ["FAILED"]}}),
        token: Some(TokenName::parse("ops").unwrap()),
        matched: 7,
        done: 5,
        skipped: 2,
        at: t0(),
    };

    repo.record_bulk_action(&record).unwrap();

    #[derive(QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Text)]
        action: String,
        #[diesel(sql_type = diesel::sql_types::Jsonb)]
        selection: Value,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        token_name: Option<String>,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        matched: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        done: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        skipped: i64,
        #[diesel(sql_type = diesel::sql_types::Timestamptz)]
        at: DateTime<Utc>,
    }
    let rows: Vec<Row> = diesel::sql_query("SELECT * FROM bulk_actions")
        .load(&mut db.pool().get().unwrap())
        .unwrap();
    assert_eq!(
        rows,
        vec![Row {
            id: record.id,
            action: "rerun".to_owned(),
            selection: record.selection.clone(),
            token_name: Some("ops".to_owned()),
            matched: 7,
            done: 5,
            skipped: 2,
            at: t0(),
        }]
    );
}
