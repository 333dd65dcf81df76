//! Dashboard sessions in `ui_sessions` on a real PostgreSQL: found by the hash of their
//! secret together with their token as stored now, deleted on sign-out, and swept once
//! ended.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use chrono::TimeDelta;
use common::*;
use taskpilot_app::TokenRepository as _;
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_domain::{ApiToken, DashboardSession, QueueScope, TokenId, TokenKind, TokenName};
use uuid::Uuid;

fn stored_token(repo: &impl taskpilot_app::TokenRepository, kind: TokenKind) -> ApiToken {
    let token = ApiToken {
        id: TokenId::from_uuid(Uuid::now_v7()),
        name: TokenName::parse("ops").unwrap(),
        kind,
        queues: QueueScope::from_list(Some(vec![queue("emails")])).unwrap(),
        created_at: t0(),
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    };
    let mut hash = [0_u8; 32];
    hash[..16].copy_from_slice(token.id.as_uuid().as_bytes());
    repo.insert_token(&token, &hash).unwrap();
    token
}

#[test]
fn a_session_is_found_by_its_hash_with_its_token_as_stored_now() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let token = stored_token(&repo, TokenKind::Operator);
    let session = DashboardSession::start(token.id, t0(), TimeDelta::hours(12)).unwrap();
    let secret = [7_u8; 32];

    repo.insert_session(&session, &secret).unwrap();
    let found = repo.session_by_secret(&secret).unwrap();
    repo.revoke_token(token.id, t0() + secs(5)).unwrap();
    let after_revoke = repo.session_by_secret(&secret).unwrap().unwrap();

    assert_eq!(found, Some((session.clone(), token.clone())));
    assert_eq!(after_revoke.0, session);
    assert_eq!(after_revoke.1.revoked_at, Some(t0() + secs(5)));
    assert_eq!(repo.session_by_secret(&[8_u8; 32]).unwrap(), None);
}

#[test]
fn signing_out_deletes_only_that_session_and_ended_sessions_are_swept() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let token = stored_token(&repo, TokenKind::Viewer);
    let short = DashboardSession::start(token.id, t0(), TimeDelta::minutes(5)).unwrap();
    let long = DashboardSession::start(token.id, t0(), TimeDelta::hours(12)).unwrap();
    let other = DashboardSession::start(token.id, t0(), TimeDelta::hours(12)).unwrap();
    repo.insert_session(&short, &[1_u8; 32]).unwrap();
    repo.insert_session(&long, &[2_u8; 32]).unwrap();
    repo.insert_session(&other, &[3_u8; 32]).unwrap();

    repo.delete_session(&[3_u8; 32]).unwrap();
    repo.delete_session(&[9_u8; 32]).unwrap();
    let swept = repo.delete_expired_sessions(t0() + TimeDelta::minutes(5)).unwrap();

    assert_eq!(swept, 1);
    assert_eq!(repo.session_by_secret(&[1_u8; 32]).unwrap(), None);
    assert_eq!(repo.session_by_secret(&[2_u8; 32]).unwrap().map(|(s, _)| s), Some(long));
    assert_eq!(repo.session_by_secret(&[3_u8; 32]).unwrap(), None);
}
