//! [`UiError`]: every way a dashboard request fails, answered as an HTML page (or, with no
//! session, a redirect to the sign-in page), never as problem+json.
//!
//! A use case's refusal keeps the API's status, title and detail ([`ApiError`]'s problem),
//! so a page says exactly what the REST call would have said: 403 for a grant the token
//! lacks, 404, 409 for a transition the domain refuses, 412 for a stale version (with a link
//! to the object as it is now), 503 while the database is away.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, ResponseError};
use askama::Template as _;
use taskpilot_api::ProblemCode;

use super::csrf::Refusal;
use super::session::SignInReason;
use super::views::ErrorPage;
use super::{from_htmx, html, Viewer};
use crate::error::ApiError;

/// Why a dashboard request failed.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// What the API would answer; `reload` is the page to look at again after a 412.
    #[error("{error}")]
    Api {
        /// The error, mapped as the API maps it.
        error: ApiError,
        /// The page that shows the object as it is now.
        reload: Option<String>,
    },
    /// No session, or it ended: sign in (again).
    #[error("sign in first")]
    SignIn(SignInReason),
    /// A POST from another site.
    #[error("cross-site request refused")]
    Csrf(Refusal),
}

impl From<ApiError> for UiError {
    fn from(error: ApiError) -> Self {
        Self::Api { error, reload: None }
    }
}

impl From<taskpilot_app::AppError> for UiError {
    fn from(error: taskpilot_app::AppError) -> Self {
        ApiError::App(error).into()
    }
}

impl From<taskpilot_domain::ValidationError> for UiError {
    fn from(error: taskpilot_domain::ValidationError) -> Self {
        ApiError::from(error).into()
    }
}

impl UiError {
    /// This error, with `page` as where to look again when it is a stale version (412).
    pub fn reload(self, page: String) -> Self {
        match self {
            Self::Api { error, .. } => Self::Api { error, reload: Some(page) },
            other => other,
        }
    }

    /// The answer to `req`: as [`UiError::page`], except that a live fragment (htmx) whose
    /// session ended gets `HX-Redirect`, so that the whole page goes to the sign-in form
    /// rather than the form landing inside the fragment.
    pub fn answer(&self, req: &HttpRequest) -> HttpResponse {
        match self {
            Self::SignIn(reason) if from_htmx(req) => {
                HttpResponse::Ok().insert_header(("HX-Redirect", reason.login_url(None))).finish()
            }
            Self::SignIn(reason) => {
                let next = req.uri().path_and_query().map(|p| p.as_str().to_owned());
                super::see_other(&reason.login_url(next.as_deref()))
            }
            _ => self.page(req.extensions().get::<Viewer>()),
        }
    }

    /// The error as a page, framed for `viewer` when the request got that far.
    pub fn page(&self, viewer: Option<&Viewer>) -> HttpResponse {
        let shell = viewer.map(Viewer::shell).unwrap_or_default();
        let (status, title, detail, code, reload) = match self {
            Self::Api { error, reload } => {
                error.log();
                let body = error.problem_body();
                let code = ProblemCode::parse(&body.code);
                let detail = match code {
                    Some(ProblemCode::PreconditionFailed) => format!(
                        "It changed since you loaded the page: someone, a worker or the server \
                         acted on it meanwhile, so nothing was done ({}). Look at it again \
                         before you act.",
                        body.detail
                    ),
                    Some(ProblemCode::Forbidden) => format!(
                        "Your token may not do this: {}. Ask an admin for an operator token.",
                        body.detail
                    ),
                    _ => body.detail.clone(),
                };
                let reload =
                    reload.clone().filter(|_| code == Some(ProblemCode::PreconditionFailed));
                (body.status, body.title.clone(), detail, Some(body.code.clone()), reload)
            }
            Self::Csrf(refusal) => {
                (403, "Forbidden".to_owned(), refusal.explanation().to_owned(), None, None)
            }
            Self::SignIn(reason) => return super::see_other(&reason.login_url(None)),
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let page = ErrorPage { shell, status: status.as_u16(), title, detail, code, reload };
        let mut response = match page.render() {
            Ok(body) => html(status, body),
            Err(e) => {
                tracing::error!(error = %e, "cannot render the error page");
                HttpResponse::build(status)
                    .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
                    .body(status.canonical_reason().unwrap_or("error"))
            }
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        response
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Api { error, .. } => error.status_code(),
            Self::SignIn(_) => StatusCode::SEE_OTHER,
            Self::Csrf(_) => StatusCode::FORBIDDEN,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.page(None)
    }
}
