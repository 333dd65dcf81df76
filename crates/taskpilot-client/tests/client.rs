//! Every client call against the real server, and the typed errors of its refusals.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::time::Duration;

use chrono::TimeDelta;
use common::TestServer;
use serde_json::json;
use taskpilot_client::api::limits::MAX_BATCH;
use taskpilot_client::api::{RetryState, TaskResponse};
use taskpilot_client::{
    ClaimTasksRequest, ClientError, CompletionItem, CreateTaskRequest, FailTaskRequest,
    HeartbeatRequest, ListTasksQuery, ProblemCode, ReleaseTaskRequest, StartTaskRequest,
    SucceedTaskRequest, TaskStatus,
};

fn claim(worker: &str, limit: i64) -> ClaimTasksRequest {
    ClaimTasksRequest {
        worker_id: worker.to_owned(),
        limit: Some(limit),
        queues: None,
        lease_seconds: Some(60),
        wait_ms: None,
    }
}

fn succeed(worker: &str, token: &str, result: serde_json::Value) -> SucceedTaskRequest {
    SucceedTaskRequest {
        worker_id: Some(worker.to_owned()),
        lease_token: Some(token.to_owned()),
        result: Some(result),
    }
}

fn fail(worker: &str, token: &str, error: &str, retryable: bool) -> FailTaskRequest {
    FailTaskRequest {
        error_message: error.to_owned(),
        worker_id: Some(worker.to_owned()),
        lease_token: Some(token.to_owned()),
        retryable: Some(retryable),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_works_against_the_real_server() {
    let server = TestServer::start(TimeDelta::milliseconds(100));
    let client = server.client();

    client.ready().await.unwrap();
    let created = client
        .create(&CreateTaskRequest::new("send-email").queue("mail").payload(json!({"to": "ada"})))
        .await
        .unwrap();
    let batch = client
        .create_batch((0..3).map(|i| CreateTaskRequest::new(format!("batch-{i}"))).collect())
        .await
        .unwrap();
    let fetched = client.get(created.id).await.unwrap();
    let mail = client
        .list(&ListTasksQuery { queue: Some("mail".to_owned()), ..ListTasksQuery::default() })
        .await
        .unwrap();
    let first_page = client
        .list(&ListTasksQuery { limit: Some("2".to_owned()), ..ListTasksQuery::default() })
        .await
        .unwrap();
    let second_page = client
        .list(&ListTasksQuery {
            limit: Some("2".to_owned()),
            cursor: first_page.next_cursor.clone(),
            ..ListTasksQuery::default()
        })
        .await
        .unwrap();

    assert_eq!(created.status, TaskStatus::Pending);
    assert_eq!(created.queue, "mail");
    assert_eq!(created.created, Some(true), "a create answer says it created");
    assert_eq!(fetched, TaskResponse { created: None, ..created.clone() });
    assert_eq!(
        batch.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["batch-0", "batch-1", "batch-2"]
    );
    assert_eq!(mail.items.iter().map(|t| t.id).collect::<Vec<_>>(), [created.id]);
    assert_eq!(first_page.items.len() + second_page.items.len(), 4);
    assert!(second_page.next_cursor.is_none());

    // Claim two, keep one alive, finish one with a replay, fail the other for good.
    let claimed = client.claim(&claim("w1", 2)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let (a, b) = (&claimed[0], &claimed[1]);
    let (token_a, token_b) = (a.lease_token.clone().unwrap(), b.lease_token.clone().unwrap());
    let beat = client
        .heartbeat(
            a.id,
            &HeartbeatRequest {
                worker_id: "w1".to_owned(),
                lease_token: token_a.clone(),
                lease_seconds: Some(120),
            },
        )
        .await
        .unwrap();
    let done = client.succeed(a.id, &succeed("w1", &token_a, json!({"ok": 1}))).await.unwrap();
    let replayed = client.succeed(a.id, &succeed("w1", &token_a, json!({"ok": 1}))).await.unwrap();
    let failed = client.fail(b.id, &fail("w1", &token_b, "bad input", false)).await.unwrap();

    assert!(beat.lease_expires_at > a.lease_expires_at);
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(done.result, Some(json!({"ok": 1})));
    assert_eq!(replayed.status, TaskStatus::Succeeded);
    assert_eq!((failed.status, failed.retry_state), (TaskStatus::Failed, RetryState::NonRetryable));

    // Batch-complete the other two, the last item with a token that is not its task's.
    let two = client.claim(&claim("w3", 2)).await.unwrap();
    let results = client
        .complete_batch(vec![
            CompletionItem::succeeded(two[0].id, two[0].lease_token.clone().unwrap(), None)
                .worker("w3"),
            CompletionItem::failed(two[1].id, two[1].lease_token.clone().unwrap(), "nope", false)
                .worker("w3"),
            CompletionItem::succeeded(two[1].id, two[0].lease_token.clone().unwrap(), None)
                .worker("w3"),
        ])
        .await
        .unwrap();

    assert_eq!(two.len(), 2);
    assert_eq!(results.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 200, 409]);
    assert_eq!(results[0].task.as_ref().unwrap().status, TaskStatus::Succeeded);
    assert_eq!(results[1].task.as_ref().unwrap().status, TaskStatus::Failed);
    assert!(results[2].error.is_some());

    // Start one by id, fail it retryably, cancel it, rerun it.
    let d = client.create(&CreateTaskRequest::new("by-id")).await.unwrap();
    let started = client
        .start(d.id, &StartTaskRequest { worker_id: "w2".to_owned(), lease_seconds: Some(30) })
        .await
        .unwrap();
    let retried = client
        .fail(d.id, &fail("w2", started.lease_token.as_deref().unwrap(), "smtp timeout", true))
        .await
        .unwrap();
    let cancelled = client.cancel(d.id).await.unwrap();
    let rerun = client.rerun(d.id).await.unwrap();
    let events = client.events(a.id).await.unwrap();
    let stats = client.rejection_stats().await.unwrap();

    assert_eq!(started.status, TaskStatus::Running);
    assert_eq!(
        (retried.status, retried.retry_state),
        (TaskStatus::Pending, RetryState::RetryScheduled)
    );
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(rerun.status, TaskStatus::Pending);
    assert_eq!(
        events.iter().map(|e| e.to).collect::<Vec<_>>(),
        [TaskStatus::Pending, TaskStatus::Running, TaskStatus::Succeeded]
    );
    assert_eq!(stats.items.iter().map(|c| c.count).sum::<u64>(), 1, "{stats:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_arrive_as_typed_errors() {
    let server = TestServer::start(TimeDelta::milliseconds(100));
    let client = server.client();
    let task = client.create(&CreateTaskRequest::new("t")).await.unwrap();
    let claimed = client.claim(&claim("w1", 1)).await.unwrap().remove(0);
    let token = claimed.lease_token.clone().unwrap();
    client.succeed(task.id, &succeed("w1", &token, json!(1))).await.unwrap();

    let missing = client.get(uuid::Uuid::nil()).await.unwrap_err();
    let invalid = client.create(&CreateTaskRequest::new("")).await.unwrap_err();
    let too_many = client
        .create_batch((0..=MAX_BATCH).map(|_| CreateTaskRequest::new("t")).collect())
        .await
        .unwrap_err();
    let bad_in_batch = client
        .create_batch(vec![CreateTaskRequest::new("ok"), CreateTaskRequest::new("")])
        .await
        .unwrap_err();
    let conflict = client.cancel(task.id).await.unwrap_err();
    let other_outcome = client.fail(task.id, &fail("w1", &token, "late", true)).await.unwrap_err();

    assert!(missing.is_not_found(), "{missing}");
    assert!(matches!(
        &missing,
        ClientError::Api { status: 404, code: ProblemCode::TaskNotFound, problem, .. }
            if problem.kind == "urn:taskpilot:problem:task-not-found"
    ));
    assert!(invalid.is_invalid(), "{invalid}");
    assert_eq!(
        (invalid.status(), invalid.code()),
        (Some(400), Some(ProblemCode::ValidationFailed))
    );
    assert_eq!(too_many.status(), Some(400), "{too_many}");
    assert_eq!(bad_in_batch.code(), Some(ProblemCode::ValidationFailed), "{bad_in_batch}");
    assert_eq!(bad_in_batch.extension("index"), Some(&json!(1)), "{bad_in_batch:?}");
    assert!(conflict.is_conflict());
    assert_eq!(conflict.code(), Some(ProblemCode::InvalidTransition));
    assert_eq!(other_outcome.code(), Some(ProblemCode::OutcomeConflict));
    assert!(!other_outcome.is_attempt_over());

    // A cancelled task's holder hears it at its heartbeat; after a rerun, a newer attempt
    // supersedes it.
    let task = client.create(&CreateTaskRequest::new("t2")).await.unwrap();
    let first = client.claim(&claim("w1", 1)).await.unwrap().remove(0);
    let beat = HeartbeatRequest {
        worker_id: "w1".to_owned(),
        lease_token: first.lease_token.clone().unwrap(),
        lease_seconds: None,
    };
    client.cancel(task.id).await.unwrap();
    let cancelled = client.heartbeat(task.id, &beat).await.unwrap_err();
    client.rerun(task.id).await.unwrap();
    let second = client.claim(&claim("w1", 1)).await.unwrap().remove(0);
    let superseded = client.heartbeat(task.id, &beat).await.unwrap_err();

    assert_eq!(second.attempt, 2);
    assert_eq!(superseded.code(), Some(ProblemCode::AttemptSuperseded), "{superseded}");
    assert!(superseded.is_lease_lost() && superseded.is_attempt_over());
    assert!(cancelled.is_cancelled(), "{cancelled}");
    assert!(cancelled.is_attempt_over());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_task_is_claimable_at_once_and_its_token_then_speaks_for_nothing_more() {
    let server = TestServer::start(TimeDelta::milliseconds(100));
    let client = server.client();
    let single = client.create(&CreateTaskRequest::new("single").max_attempts(1)).await.unwrap();
    let batched = client.create(&CreateTaskRequest::new("batched")).await.unwrap();
    let claimed = client.claim(&claim("w1", 2)).await.unwrap();
    let token_of =
        |id| claimed.iter().find(|t| t.id == id).and_then(|t| t.lease_token.clone()).unwrap();
    let release =
        ReleaseTaskRequest { worker_id: Some("w1".to_owned()), lease_token: token_of(single.id) };

    let released = client.release(single.id, &release).await.unwrap();
    let replayed = client.release(single.id, &release).await.unwrap();
    let results = client
        .complete_batch(vec![
            CompletionItem::released(batched.id, token_of(batched.id)).worker("w1")
        ])
        .await
        .unwrap();
    let again = client.claim(&claim("w2", 2)).await.unwrap();
    let late = client
        .succeed(single.id, &succeed("w1", &token_of(single.id), json!(1)))
        .await
        .unwrap_err();

    assert_eq!((released.status, released.attempt_count), (TaskStatus::Pending, 0));
    assert_eq!(replayed, released, "a replay answers the stored task");
    assert_eq!(results[0].status, 200);
    assert_eq!(results[0].task.as_ref().unwrap().status, TaskStatus::Pending);
    assert_eq!(again.len(), 2, "both claimable again at once");
    assert!(again.iter().all(|t| t.attempt == 2 && t.attempt_count == 0), "{again:?}");
    assert_eq!(late.code(), Some(ProblemCode::OutcomeConflict), "{late}");
    assert_eq!(late.extension("recordedOutcome"), Some(&json!("RELEASED")));
    assert!(!late.is_attempt_over());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_polling_claim_returns_the_task_created_while_it_waits() {
    let server = TestServer::start(TimeDelta::milliseconds(100));
    let client = server.client();
    let request = ClaimTasksRequest { wait_ms: Some(20_000), ..claim("w1", 5) };

    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.claim(&request).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let task = client.create(&CreateTaskRequest::new("late")).await.unwrap();
    let claimed = waiting.await.unwrap().unwrap();

    assert_eq!(claimed.iter().map(|t| t.id).collect::<Vec<_>>(), [task.id]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sends_its_token_and_without_one_is_refused_for_good() {
    let server = TestServer::start(TimeDelta::seconds(1));
    let secret = server.create_token(taskpilot_domain::TokenKind::Admin);
    let anonymous = server.client();
    let holder = taskpilot_client::Client::builder(&server.base).token(&secret).build().unwrap();

    // Within the server's cache time of "no token exists", then for good.
    let refused = loop {
        match anonymous.create(&CreateTaskRequest::new("x")).await {
            Err(e) => break e,
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(refused.code(), Some(ProblemCode::Unauthenticated), "{refused}");
    assert!(refused.is_invalid(), "repeating it cannot help");
    let created = holder.create(&CreateTaskRequest::new("x")).await.unwrap();
    assert_eq!(holder.get(created.id).await.unwrap().id, created.id);
    assert!(!format!("{holder:?}").contains(&secret), "Debug never shows the secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_acts_only_on_the_version_they_saw() {
    let server = TestServer::start(TimeDelta::milliseconds(100));
    let client = server.client();
    let task = client.create(&CreateTaskRequest::new("t")).await.unwrap();

    let seen = client.get_versioned(task.id).await.unwrap();
    let seen_version = seen.version.unwrap();
    let cancelled = client.cancel_if_version(task.id, seen_version).await.unwrap();
    let stale = client.rerun_if_version(task.id, seen_version).await.unwrap_err();
    let now = client.get_versioned(task.id).await.unwrap();
    let rerun = client.rerun_if_version(task.id, now.version.unwrap()).await.unwrap();
    let stale_cancel = client.cancel_if_version(task.id, seen_version).await.unwrap_err();

    assert_eq!(seen.value.id, task.id);
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(stale.code(), Some(ProblemCode::PreconditionFailed), "{stale}");
    assert_eq!(stale.extension("currentVersion"), Some(&json!(now.version.unwrap())));
    assert_eq!(now.value.status, TaskStatus::Cancelled, "a refused rerun changed nothing");
    assert!(now.version.unwrap() > seen_version);
    assert_eq!(rerun.status, TaskStatus::Pending);
    assert_eq!(stale_cancel.code(), Some(ProblemCode::PreconditionFailed));
    assert_eq!(client.get(task.id).await.unwrap().status, TaskStatus::Pending);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_pause_and_resume_and_a_task_explains_why_it_waits() {
    use taskpilot_client::api::BulkActionKind;
    use taskpilot_client::api::{BulkActionRequest, BulkFilter, BulkOutcome};

    let server = TestServer::start(TimeDelta::milliseconds(100));
    let client = server.client();
    let mail = client.create(&CreateTaskRequest::new("send").queue("mail")).await.unwrap();
    let failing = client
        .create_batch(
            (0..2).map(|_| CreateTaskRequest::new("flaky").queue("jobs").max_attempts(1)).collect(),
        )
        .await
        .unwrap();
    for claimed in client
        .claim(&ClaimTasksRequest { queues: Some(vec!["jobs".into()]), ..claim("w1", 2) })
        .await
        .unwrap()
    {
        let token = claimed.lease_token.unwrap();
        client.fail(claimed.id, &fail("w1", &token, "boom", true)).await.unwrap();
    }

    let paused = client.pause_queue("mail").await.unwrap();
    let claimed_while_paused = client
        .claim(&ClaimTasksRequest { queues: Some(vec!["mail".into()]), ..claim("w2", 1) })
        .await
        .unwrap();
    let explained = client.explain(mail.id).await.unwrap();
    let shown = client.queue("mail").await.unwrap();
    let listed = client.list_queues().await.unwrap();
    let resumed = client.resume_queue("mail").await.unwrap();
    let missing = client.queue("nothing-here").await.unwrap_err();
    let stats = client.stats().await.unwrap();
    let failed_filter = BulkFilter {
        queue: Some("jobs".into()),
        status: Some(vec![TaskStatus::Failed]),
        ..BulkFilter::default()
    };
    let rerun = |dry_run| BulkActionRequest {
        action: BulkActionKind::Rerun,
        filter: Some(failed_filter.clone()),
        ids: None,
        versions: None,
        all: None,
        dry_run: Some(dry_run),
        limit: None,
    };
    let counted = client.bulk(&rerun(true)).await.unwrap();
    let done = client.bulk(&rerun(false)).await.unwrap();

    assert!(paused.paused && paused.version == 1, "{paused:?}");
    assert!(claimed_while_paused.is_empty(), "a paused queue gives no task");
    assert!(!explained.runnable);
    assert_eq!(explained.reasons[0].code, "QUEUE_PAUSED", "{explained:?}");
    assert_eq!((shown.name.as_str(), shown.paused, shown.version), ("mail", true, 1));
    assert_eq!(shown.counts.runnable, 1, "{shown:?}");
    assert_eq!(listed.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(), ["jobs", "mail"]);
    assert!(!resumed.paused && resumed.version == 2, "{resumed:?}");
    assert_eq!(missing.code(), Some(ProblemCode::QueueNotFound), "{missing}");
    assert_eq!((stats.totals.runnable, stats.totals.failed), (1, 2), "{stats:?}");
    assert_eq!((counted.matched, counted.done, counted.dry_run), (2, 0, true));
    assert!(counted.results.is_empty());
    assert_eq!((done.matched, done.done, done.skipped), (2, 2, 0));
    assert!(done.results.iter().all(|r| r.outcome == BulkOutcome::Done));
    for task in &failing {
        assert_eq!(client.get(task.id).await.unwrap().status, TaskStatus::Pending);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_created_listed_and_revoked_over_the_api() {
    use taskpilot_client::api::{CreateTokenRequest, TokenKind};

    let server = TestServer::start(TimeDelta::seconds(1));
    let admin_secret = server.create_token(taskpilot_domain::TokenKind::Admin);
    let admin =
        taskpilot_client::Client::builder(&server.base).token(&admin_secret).build().unwrap();
    let request = CreateTokenRequest {
        name: "dashboards".into(),
        kind: TokenKind::Viewer,
        queues: Some(vec!["mail".into()]),
        expires_at: None,
    };

    let created = admin.create_token(&request).await.unwrap();
    let viewer =
        taskpilot_client::Client::builder(&server.base).token(&created.secret).build().unwrap();
    let seen = viewer.list(&ListTasksQuery::default()).await.unwrap();
    let listed = admin.list_tokens().await.unwrap();
    let refused = viewer.list_tokens().await.unwrap_err();
    let revoked = admin.revoke_token(created.token.id).await.unwrap();
    let unknown = admin.revoke_token(uuid::Uuid::nil()).await.unwrap_err();

    assert!(created.secret.starts_with("tp_viewer_"), "{created:?}");
    assert_eq!(created.token.queues, Some(vec!["mail".to_owned()]));
    assert!(seen.items.is_empty());
    assert_eq!(listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["dashboards", "test"]);
    assert_eq!(refused.code(), Some(ProblemCode::Forbidden), "{refused}");
    assert_eq!(revoked.id, created.token.id);
    assert!(revoked.revoked_at.is_some());
    assert_eq!(unknown.code(), Some(ProblemCode::TokenNotFound), "{unknown}");
    // Every server refuses a revoked token within its cache time.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let gone = loop {
        match viewer.list(&ListTasksQuery::default()).await {
            Err(e) => break e,
            Ok(_) => {
                assert!(tokio::time::Instant::now() < deadline, "the revoked token still works");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(gone.code(), Some(ProblemCode::Unauthenticated), "{gone}");
    server.stop().await;
}
