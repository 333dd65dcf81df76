//! Authentication: the middleware that turns a request's `Authorization: Bearer` header into
//! the [`Caller`] its handler acts for, and the extractor handlers take it with.
//!
//! Part of the HTTP adapter: it reads the header and answers 401; what a caller may do is
//! decided by the use cases ([`taskpilot_app::Acting`]) from the domain's table.

use std::future::{ready, Ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage as _, HttpRequest};
use taskpilot_app::AccessService;
use taskpilot_domain::Caller;

use crate::config::AuthMode;
use crate::error::{ApiError, MISSING_TOKEN};

/// What the middleware needs: the token use cases and the mode.
#[derive(Clone)]
pub struct Gate {
    access: AccessService,
    /// Open while no token exists ([`AuthMode::Auto`] on a loopback address).
    open_until_first_token: bool,
    mode: AuthMode,
}

impl Gate {
    /// A gate over these token use cases. `loopback` says whether the server listens on a
    /// loopback address only, where [`AuthMode::Auto`] runs open until a token exists.
    pub fn new(access: AccessService, mode: AuthMode, loopback: bool) -> Self {
        Self { access, open_until_first_token: mode == AuthMode::Auto && loopback, mode }
    }

    /// The token use cases.
    pub fn access(&self) -> &AccessService {
        &self.access
    }

    /// Open access, when the server asks no credential at all right now: authentication is
    /// off, or [`AuthMode::Auto`] on a loopback address while no token exists. `None` when a
    /// request must say who it is.
    ///
    /// # Errors
    /// Storage errors while looking for tokens.
    pub async fn open_caller(&self) -> Result<Option<Caller>, ApiError> {
        if self.mode == AuthMode::Off || (self.open_until_first_token && !self.any_token().await?) {
            return Ok(Some(Caller::open()));
        }
        Ok(None)
    }

    /// Who a request with these headers acts for.
    async fn caller(&self, req: &ServiceRequest) -> Result<Caller, ApiError> {
        if self.mode == AuthMode::Off {
            return Ok(Caller::open());
        }
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            if let Some(open) = self.open_caller().await? {
                return Ok(open);
            }
            return Err(ApiError::Unauthenticated(MISSING_TOKEN));
        };
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret.trim().to_owned())
            .ok_or(ApiError::Unauthenticated("the Authorization header must be: Bearer <token>"))?;
        if let Some(answer) = self.access.authenticate_cached(&secret) {
            return Ok(answer?);
        }
        let access = self.access.clone();
        web::block(move || access.authenticate(&secret))
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("blocking task failed: {e}")))?
            .map_err(ApiError::from)
    }

    async fn any_token(&self) -> Result<bool, ApiError> {
        if let Some(known) = self.access.any_token_cached() {
            return Ok(known);
        }
        let access = self.access.clone();
        web::block(move || access.any_token())
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("blocking task failed: {e}")))?
            .map_err(ApiError::from)
    }
}

/// Paths anybody may read: the probes and the API's own description (the document and its
/// page). Every other path needs a token.
pub fn is_public(path: &str) -> bool {
    use crate::openapi::{DOCUMENT_PATH, PAGE_PATH};
    matches!(path, "/healthz" | "/readyz")
        || path == DOCUMENT_PATH
        || path == PAGE_PATH
        || path.strip_prefix(PAGE_PATH).is_some_and(|rest| rest.starts_with('/'))
}

/// Middleware: authenticates every request to a non-public path of the API and stores its
/// [`Caller`] for the handler; answers 401 UNAUTHENTICATED otherwise. The dashboard's paths
/// ([`crate::ui::is_dashboard`]) are left to the dashboard, which signs people in with the
/// same tokens and keeps a session instead of a bearer header.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !is_public(req.path()) && !crate::ui::is_dashboard(req.path()) {
        let Some(gate) = req.app_data::<web::Data<Gate>>().cloned() else {
            let e = ApiError::Internal(anyhow::anyhow!("the authentication gate is not set up"));
            return Ok(req.error_response(e));
        };
        match gate.caller(&req).await {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
            }
            Err(e) => return Ok(req.error_response(e)),
        }
    }
    next.call(req).await.map(ServiceResponse::map_into_boxed_body)
}

/// The caller a handler acts for, as the middleware authenticated it.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.extensions().get::<Caller>().cloned().map(Authenticated).ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("a handler behind authentication ran without it"))
        }))
    }
}
