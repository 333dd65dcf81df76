//! Signing in to the dashboard, and who each of its requests acts for.
//!
//! `POST /ui/login` takes a pasted API token, which [`AccessService::start_session`](taskpilot_app::AccessService::start_session) checks as
//! a bearer request would (and refuses for producers, workers and metrics scrapers); the
//! browser then holds only the session's secret, in the `taskpilot_session` cookie
//! (`HttpOnly`, `SameSite=Strict`, `Path=/ui`, `Secure` over https). Every later request
//! turns the cookie back into the token's caller ([`resolve`]), checking the token again, so
//! revoking it or its expiry ends the session at the next request. Sessions live in the
//! database, so every server of a deployment honours every session.
//!
//! While the server asks no token at all ([`Gate::open_caller`]), nobody signs in: every
//! request acts as open access.
//!
//! The one cookie is read and written by hand: its value is a token-shaped secret that
//! needs no escaping, which a cookie library would add nothing to.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpMessage as _, HttpRequest, HttpResponse};
use askama::Template as _;
use serde::Deserialize;
use taskpilot_app::{AppError, AuthError, LoginError};
use taskpilot_domain::{Caller, Operation, Unusable};

use super::error::UiError;
use super::views::{LoginPage, Shell, Who};
use super::{html, see_other, UiSettings};
use crate::auth::Gate;
use crate::error::ApiError;

/// The session cookie's name.
pub const COOKIE: &str = "taskpilot_session";

/// Who a dashboard request acts for, as [`resolve`] found it.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The caller every use case is run for.
    pub caller: Caller,
    /// Whether it came from a session (rather than open access).
    pub signed_in: bool,
}

impl Viewer {
    /// The page frame for this caller.
    pub fn shell(&self) -> Shell {
        Shell {
            current: "",
            who: Some(Who {
                name: self.caller.name().as_str().to_owned(),
                kind: self.caller.kind().as_str(),
                signed_in: self.signed_in,
            }),
            tokens: self.caller.may(Operation::ManageTokens).is_ok(),
            notice: None,
        }
    }

    /// [`Viewer::shell`] on the navigation entry `current`.
    pub fn shell_on(&self, current: &'static str) -> Shell {
        Shell { current, ..self.shell() }
    }
}

impl FromRequest for Viewer {
    type Error = UiError;
    type Future = Ready<Result<Self, UiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Viewer>()
                .cloned()
                .ok_or(UiError::SignIn(SignInReason::Required)),
        )
    }
}

/// Why the sign-in page is shown. Only these fixed reasons travel in its address: the page
/// never echoes text from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInReason {
    /// No session yet.
    Required,
    /// The session ran its time or was signed out elsewhere.
    Ended,
    /// Its token was revoked.
    Revoked,
    /// Its token expired.
    Expired,
    /// The person signed out.
    SignedOut,
}

impl SignInReason {
    const ALL: [Self; 5] =
        [Self::Required, Self::Ended, Self::Revoked, Self::Expired, Self::SignedOut];

    fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Ended => "ended",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::SignedOut => "signed-out",
        }
    }

    fn message(self) -> Option<&'static str> {
        match self {
            Self::Required => None,
            Self::Ended => Some("Your session has ended. Sign in again."),
            Self::Revoked => Some("The token of your session was revoked. Sign in with another."),
            Self::Expired => Some("The token of your session has expired. Sign in with another."),
            Self::SignedOut => Some("You are signed out."),
        }
    }

    /// The sign-in page's address for this reason, coming back to `next` once signed in.
    pub fn login_url(self, next: Option<&str>) -> String {
        let mut url = format!("/ui/login?reason={}", self.as_str());
        if let Some(next) = next.and_then(local_path) {
            url.push_str("&next=");
            url.push_str(&percent_encode(next));
        }
        url
    }
}

/// `next` when it is a path of the dashboard itself (so the sign-in page never sends anyone
/// to another site); the sign-in and sign-out pages are not worth coming back to.
fn local_path(next: &str) -> Option<&str> {
    let local = super::is_dashboard(next.split(['?', '#']).next().unwrap_or(""))
        && !next.contains(['\\', '\r', '\n'])
        && !next.starts_with("/ui/login")
        && !next.starts_with("/ui/logout");
    local.then_some(next)
}

/// `text` percent-encoded for a query value.
fn percent_encode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// The session secret of the request's cookie, if it has one.
fn session_secret(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

/// Who a dashboard request acts for: open access while the server asks no token, else its
/// session's token, checked as a bearer token is (answered from memory for
/// [`taskpilot_app::AccessService::CACHE_FOR`], like bearer requests).
///
/// # Errors
/// [`UiError::SignIn`] without a live session or with a token that no longer works; 503
/// while storage cannot be asked.
pub async fn resolve(req: &HttpRequest) -> Result<Viewer, UiError> {
    let gate = gate(req)?;
    if let Some(open) = gate.open_caller().await? {
        return Ok(Viewer { caller: open, signed_in: false });
    }
    let Some(secret) = session_secret(req) else {
        return Err(UiError::SignIn(SignInReason::Required));
    };
    let access = gate.access().clone();
    let answer = match access.session_caller_cached(&secret) {
        Some(answer) => answer,
        None => web::block(move || access.session_caller(&secret)).await.map_err(blocking)?,
    };
    match answer {
        Ok(caller) => Ok(Viewer { caller, signed_in: true }),
        Err(AuthError::Unusable(Unusable::Revoked)) => Err(UiError::SignIn(SignInReason::Revoked)),
        Err(AuthError::Unusable(Unusable::Expired)) => Err(UiError::SignIn(SignInReason::Expired)),
        Err(AuthError::Unavailable(e)) => Err(ApiError::App(AppError::Unavailable(e)).into()),
        Err(AuthError::Unexpected(e)) => Err(ApiError::Internal(e).into()),
        Err(_) => Err(UiError::SignIn(SignInReason::Ended)),
    }
}

fn gate(req: &HttpRequest) -> Result<web::Data<Gate>, UiError> {
    req.app_data::<web::Data<Gate>>().cloned().ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("the authentication gate is not set up")).into()
    })
}

fn blocking(e: actix_web::error::BlockingError) -> UiError {
    ApiError::Internal(anyhow::anyhow!("blocking task failed: {e}")).into()
}

/// The sign-in page's query.
#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    reason: Option<String>,
    next: Option<String>,
}

/// `GET /ui/login`: the sign-in form; straight to the dashboard while the server asks no
/// token.
pub async fn login_page(req: HttpRequest) -> Result<HttpResponse, UiError> {
    if gate(&req)?.open_caller().await?.is_some() {
        return Ok(see_other("/ui"));
    }
    // A query that does not fit is no reason to refuse the form.
    let query: LoginQuery = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let reason = query
        .reason
        .and_then(|r| SignInReason::ALL.into_iter().find(|reason| reason.as_str() == r));
    let next = query.next.as_deref().and_then(local_path).unwrap_or("/ui").to_owned();
    login_form(StatusCode::OK, reason.and_then(SignInReason::message).map(str::to_owned), next)
}

fn login_form(
    status: StatusCode,
    message: Option<String>,
    next: String,
) -> Result<HttpResponse, UiError> {
    let page = LoginPage { shell: Shell::default(), message, next };
    let body = page.render().map_err(|e| ApiError::Internal(e.into()))?;
    Ok(html(status, body))
}

/// The sign-in form, as posted.
#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /ui/login`: signs the token in and sets the session cookie, then goes where the
/// person was headed; the form again, saying why, when the token does not open the
/// dashboard.
pub async fn login(
    req: HttpRequest,
    settings: web::Data<UiSettings>,
    body: web::Bytes,
) -> Result<HttpResponse, UiError> {
    let gate = gate(&req)?;
    if gate.open_caller().await?.is_some() {
        return Ok(see_other("/ui"));
    }
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        let message = "Paste a token to sign in.".to_owned();
        return login_form(StatusCode::BAD_REQUEST, Some(message), "/ui".to_owned());
    };
    let next = local_path(&form.next).unwrap_or("/ui").to_owned();
    let ttl = chrono::TimeDelta::from_std(settings.session_ttl).unwrap_or(chrono::TimeDelta::MAX);
    let access = gate.access().clone();
    let secret = form.token.trim().to_owned();
    let started = web::block(move || access.start_session(&secret, ttl)).await.map_err(blocking)?;
    let (status, message) = match started {
        Ok(started) => {
            tracing::info!(
                token.id = ?started.caller.token_id(),
                token.kind = %started.caller.kind(),
                "{} signed in to the dashboard",
                started.caller.name()
            );
            let cookie = format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/ui; Max-Age={}{}",
                started.secret,
                settings.session_ttl.as_secs(),
                if https(&req) { "; Secure" } else { "" }
            );
            let mut response = see_other(&next);
            let value = HeaderValue::from_str(&cookie)
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("session cookie: {e}")))?;
            response.headers_mut().append(header::SET_COOKIE, value);
            return Ok(response);
        }
        Err(LoginError::Refused(_)) => (
            StatusCode::FORBIDDEN,
            "This token's kind cannot open the dashboard: sign in with a viewer, operator or \
             admin token."
                .to_owned(),
        ),
        Err(LoginError::Token(AuthError::Unavailable(e))) => {
            return Err(ApiError::App(AppError::Unavailable(e)).into())
        }
        Err(LoginError::Token(AuthError::Unexpected(e))) => {
            return Err(ApiError::Internal(e).into())
        }
        Err(LoginError::Token(e)) => {
            (StatusCode::UNAUTHORIZED, format!("That token does not sign in: {e}."))
        }
        Err(e) => return Err(ApiError::Internal(e.into()).into()),
    };
    login_form(status, Some(message), next)
}

/// Whether the browser reached this server over https (itself, or through a proxy that
/// says so), so that the cookie must never travel over plain http.
fn https(req: &HttpRequest) -> bool {
    req.connection_info().scheme().eq_ignore_ascii_case("https")
}

/// `POST /ui/logout`: ends the session and forgets the cookie.
pub async fn logout(req: HttpRequest) -> Result<HttpResponse, UiError> {
    if let Some(secret) = session_secret(&req) {
        let access = gate(&req)?.access().clone();
        web::block(move || access.end_session(&secret)).await.map_err(blocking)??;
    }
    let mut response = see_other(&SignInReason::SignedOut.login_url(None));
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dashboard_paths_are_gone_back_to_after_signing_in() {
        for (next, expected) in [
            ("/ui", Some("/ui")),
            ("/ui/tasks?queue=emails&status=FAILED", Some("/ui/tasks?queue=emails&status=FAILED")),
            ("https://evil.example/ui", None),
            ("//evil.example/ui", None),
            ("/uix", None),
            ("/api/tasks", None),
            ("/ui/login?next=/ui", None),
            ("/ui\\@evil.example", None),
        ] {
            assert_eq!(local_path(next), expected, "{next}");
        }
        assert_eq!(
            SignInReason::Revoked.login_url(Some("/ui/tasks?queue=a b")),
            "/ui/login?reason=revoked&next=%2Fui%2Ftasks%3Fqueue%3Da+b"
        );
    }
}
