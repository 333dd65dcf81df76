//! `taskpilot tokens …` through a server's API (POST and GET /api/tokens,
//! DELETE /api/tokens/{id}), for when a server is named; without one, the same command runs
//! straight on the database (the server's wiring), which is how the first token is minted.

use taskpilot_client::api::{CreateTokenRequest, TokenKind, TokenListResponse, TokenResponse};

use super::table::{self, Table};
use super::{spelled, wire, Context, Failure, Printed};
use crate::config::TokensCommand;

pub(super) async fn run(command: &TokensCommand, context: &Context) -> Result<Printed, Failure> {
    let client = &context.client;
    match command {
        TokensCommand::Create { kind, name, queues, expires_in } => {
            let kind: TokenKind = wire(&kind.trim().to_ascii_lowercase())
                .map_err(|e| Failure::Usage(format!("--kind: {e}")))?;
            let expires_at = expires_in
                .map(|d| {
                    chrono::TimeDelta::from_std(d)
                        .ok()
                        .and_then(|d| chrono::Utc::now().checked_add_signed(d))
                        .ok_or_else(|| Failure::Usage("--expires-in is too long".to_owned()))
                })
                .transpose()?;
            let request = CreateTokenRequest {
                name: name.clone(),
                kind,
                queues: (!queues.is_empty()).then(|| queues.clone()),
                expires_at,
            };
            let created = client.create_token(&request).await?;
            // The same two lines as the database's `tokens create`, the secret last.
            context.print(&created, || {
                format!(
                    "created {} token {:?} ({}); its secret, shown only now:\n{}\n",
                    spelled(&created.token.kind),
                    created.token.name,
                    created.token.id,
                    created.secret
                )
            })
        }
        TokensCommand::List => {
            let list = TokenListResponse { items: client.list_tokens().await? };
            context.print(&list, || token_table(&list.items))
        }
        TokensCommand::Revoke { id } => {
            let token = client.revoke_token(id).await?;
            context.print(&token, || {
                format!("revoked {} token {:?} ({})\n", spelled(&token.kind), token.name, token.id)
            })
        }
    }
}

fn token_table(tokens: &[TokenResponse]) -> String {
    if tokens.is_empty() {
        return "no tokens\n".to_owned();
    }
    let mut table =
        Table::new(&["ID", "KIND", "NAME", "QUEUES", "CREATED", "EXPIRES", "LAST USED", "REVOKED"]);
    for token in tokens {
        table.row(vec![
            token.id.to_string(),
            spelled(&token.kind),
            token.name.clone(),
            token.queues.as_ref().map_or_else(|| "*".to_owned(), |q| q.join(",")),
            table::at(Some(token.created_at)),
            table::at(token.expires_at),
            table::at(token.last_used_at),
            table::at(token.revoked_at),
        ]);
    }
    table.render()
}
