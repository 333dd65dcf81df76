//! API tokens in `api_tokens` and dashboard sessions in `ui_sessions`, each found by the
//! SHA-256 of its secret.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use taskpilot_app::{RepoError, SecretHash, TokenRepository};
use taskpilot_domain::{
    ApiToken, DashboardSession, QueueName, QueueScope, TokenId, TokenKind, TokenName,
};
use uuid::Uuid;

use super::{classify, PgTaskRepository};
use crate::schema::{api_tokens, ui_sessions};

/// One row of `api_tokens` without the hash, as read.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_tokens, check_for_backend(diesel::pg::Pg))]
struct TokenRow {
    id: Uuid,
    name: String,
    kind: String,
    queues: Option<Vec<String>>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<TokenRow> for ApiToken {
    type Error = anyhow::Error;

    fn try_from(row: TokenRow) -> anyhow::Result<Self> {
        let TokenRow { id, name, kind, queues, created_at, expires_at, last_used_at, revoked_at } =
            row;
        let queues = queues
            .map(|list| {
                list.into_iter().map(|q| QueueName::parse(&q)).collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(Self {
            id: TokenId::from_uuid(id),
            name: TokenName::parse(&name)?,
            kind: TokenKind::parse(&kind)?,
            queues: QueueScope::from_list(queues)?,
            created_at,
            expires_at,
            last_used_at,
            revoked_at,
        })
    }
}

/// One row of `ui_sessions` without the hash, as read.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ui_sessions, check_for_backend(diesel::pg::Pg))]
struct SessionRow {
    token_id: Uuid,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl From<SessionRow> for DashboardSession {
    fn from(row: SessionRow) -> Self {
        let SessionRow { token_id, created_at, expires_at } = row;
        Self { token_id: TokenId::from_uuid(token_id), created_at, expires_at }
    }
}

fn token(row: TokenRow) -> Result<ApiToken, RepoError> {
    let id = row.id;
    ApiToken::try_from(row)
        .map_err(|e| RepoError::unexpected(e.context(format!("token {id}: stored row is invalid"))))
}

impl TokenRepository for PgTaskRepository {
    fn insert_token(&self, token: &ApiToken, secret: &SecretHash) -> Result<(), RepoError> {
        let queues: Option<Vec<String>> =
            token.queues.to_list().map(|l| l.iter().map(|q| q.as_str().to_owned()).collect());
        let mut conn = self.conn()?;
        diesel::insert_into(api_tokens::table)
            .values((
                api_tokens::id.eq(token.id.as_uuid()),
                api_tokens::name.eq(token.name.as_str()),
                api_tokens::kind.eq(token.kind.as_str()),
                api_tokens::secret_sha256.eq(secret.as_slice()),
                api_tokens::queues.eq(queues),
                api_tokens::created_at.eq(token.created_at),
                api_tokens::expires_at.eq(token.expires_at),
                api_tokens::last_used_at.eq(token.last_used_at),
                api_tokens::revoked_at.eq(token.revoked_at),
            ))
            .execute(&mut conn)
            .map_err(|e| classify(e, "cannot store the token"))?;
        Ok(())
    }

    fn token_by_secret(&self, secret: &SecretHash) -> Result<Option<ApiToken>, RepoError> {
        let mut conn = self.conn()?;
        api_tokens::table
            .filter(api_tokens::secret_sha256.eq(secret.as_slice()))
            .select(TokenRow::as_select())
            .first(&mut conn)
            .optional()
            .map_err(|e| classify(e, "cannot look the token up"))?
            .map(token)
            .transpose()
    }

    fn tokens(&self) -> Result<Vec<ApiToken>, RepoError> {
        let mut conn = self.conn()?;
        api_tokens::table
            .order((api_tokens::created_at.desc(), api_tokens::id.desc()))
            .select(TokenRow::as_select())
            .load(&mut conn)
            .map_err(|e| classify(e, "cannot list tokens"))?
            .into_iter()
            .map(token)
            .collect()
    }

    fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<Option<ApiToken>, RepoError> {
        let mut conn = self.conn()?;
        diesel::update(api_tokens::table.find(id.as_uuid()))
            .set(api_tokens::revoked_at.eq(diesel::dsl::sql::<
                diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
            >("COALESCE(revoked_at, ")
            .bind::<diesel::sql_types::Timestamptz, _>(at)
            .sql(")")))
            .returning(TokenRow::as_returning())
            .get_result(&mut conn)
            .optional()
            .map_err(|e| classify(e, "cannot revoke the token"))?
            .map(token)
            .transpose()
    }

    fn touch_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<(), RepoError> {
        let mut conn = self.conn()?;
        diesel::update(api_tokens::table.find(id.as_uuid()))
            .set(api_tokens::last_used_at.eq(at))
            .execute(&mut conn)
            .map_err(|e| classify(e, "cannot record the token's use"))?;
        Ok(())
    }

    fn any_token(&self) -> Result<bool, RepoError> {
        let mut conn = self.conn()?;
        diesel::select(diesel::dsl::exists(api_tokens::table.select(api_tokens::id)))
            .get_result(&mut conn)
            .map_err(|e| classify(e, "cannot look for tokens"))
    }

    fn insert_session(
        &self,
        session: &DashboardSession,
        secret: &SecretHash,
    ) -> Result<(), RepoError> {
        let mut conn = self.conn()?;
        diesel::insert_into(ui_sessions::table)
            .values((
                ui_sessions::secret_sha256.eq(secret.as_slice()),
                ui_sessions::token_id.eq(session.token_id.as_uuid()),
                ui_sessions::created_at.eq(session.created_at),
                ui_sessions::expires_at.eq(session.expires_at),
            ))
            .execute(&mut conn)
            .map_err(|e| classify(e, "cannot store the dashboard session"))?;
        Ok(())
    }

    fn session_by_secret(
        &self,
        secret: &SecretHash,
    ) -> Result<Option<(DashboardSession, ApiToken)>, RepoError> {
        let mut conn = self.conn()?;
        let found: Option<(SessionRow, TokenRow)> = ui_sessions::table
            .inner_join(api_tokens::table)
            .filter(ui_sessions::secret_sha256.eq(secret.as_slice()))
            .select((SessionRow::as_select(), TokenRow::as_select()))
            .first(&mut conn)
            .optional()
            .map_err(|e| classify(e, "cannot look the dashboard session up"))?;
        found.map(|(session, row)| Ok((session.into(), token(row)?))).transpose()
    }

    fn delete_session(&self, secret: &SecretHash) -> Result<(), RepoError> {
        let mut conn = self.conn()?;
        diesel::delete(ui_sessions::table.find(secret.as_slice()))
            .execute(&mut conn)
            .map_err(|e| classify(e, "cannot delete the dashboard session"))?;
        Ok(())
    }

    fn delete_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64, RepoError> {
        let mut conn = self.conn()?;
        let deleted = diesel::delete(ui_sessions::table.filter(ui_sessions::expires_at.le(now)))
            .execute(&mut conn)
            .map_err(|e| classify(e, "cannot delete ended dashboard sessions"))?;
        Ok(deleted as u64)
    }
}
