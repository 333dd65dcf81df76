//! Cross-site request forgery: which state-changing dashboard requests come from the
//! dashboard's own pages.
//!
//! The session cookie is `SameSite=Strict` already, so a browser leaves it off requests that
//! other sites start; these checks are the second wall, for browsers or proxies that get
//! that wrong. A browser says where a request comes from in `Sec-Fetch-Site` (every current
//! one sends it) and, on POSTs, in `Origin`. A POST is let through only when the first says
//! `same-origin` (or is absent, as from curl or an old browser) and the second, when
//! present, names the very host the request was sent to.

use actix_web::http::header::{HeaderMap, HOST, ORIGIN};

/// Why a state-changing request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Sec-Fetch-Site` says another site, or the user (`none`), started it.
    FetchSite,
    /// `Origin` names another host than the one the request was sent to (or is `null`).
    Origin,
}

impl Refusal {
    /// What the refusal page says.
    pub fn explanation(self) -> &'static str {
        match self {
            Self::FetchSite => {
                "This action was sent from another site, so it was refused. Use the buttons \
                 of the dashboard itself."
            }
            Self::Origin => {
                "This action came from a page of another origin, so it was refused. Use the \
                 buttons of the dashboard itself."
            }
        }
    }
}

/// Whether a state-changing request with these headers may go on.
///
/// # Errors
/// The [`Refusal`] when a header says another site sent it.
pub fn check(headers: &HeaderMap) -> Result<(), Refusal> {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !site.as_bytes().eq_ignore_ascii_case(b"same-origin") {
            return Err(Refusal::FetchSite);
        }
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let host = headers.get(HOST).and_then(|h| h.to_str().ok());
        let origin = origin.to_str().ok().and_then(origin_authority);
        match (origin, host) {
            (Some(origin), Some(host)) if origin.eq_ignore_ascii_case(host.trim()) => {}
            _ => return Err(Refusal::Origin),
        }
    }
    Ok(())
}

/// The `host[:port]` of a serialized origin (`https://example.com:8443`); `None` for `null`
/// or anything that is no `scheme://authority` with nothing after it.
fn origin_authority(origin: &str) -> Option<&str> {
    let (scheme, authority) = origin.trim().split_once("://")?;
    let plain = |s: &str| !s.is_empty() && !s.contains(['/', '?', '#', '@', ' ']);
    (plain(scheme) && plain(authority)).then_some(authority)
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_a_same_origin_request_or_one_that_says_nothing_is_let_through() {
        let host = ("host", "127.0.0.1:8080");
        for (pairs, expected) in [
            (vec![host], Ok(())),
            (vec![host, ("sec-fetch-site", "same-origin")], Ok(())),
            (
                vec![host, ("sec-fetch-site", "same-origin"), ("origin", "http://127.0.0.1:8080")],
                Ok(()),
            ),
            (vec![host, ("origin", "HTTP://127.0.0.1:8080")], Ok(())),
            (vec![host, ("sec-fetch-site", "cross-site")], Err(Refusal::FetchSite)),
            (vec![host, ("sec-fetch-site", "same-site")], Err(Refusal::FetchSite)),
            (vec![host, ("sec-fetch-site", "none")], Err(Refusal::FetchSite)),
            (vec![host, ("origin", "http://evil.example")], Err(Refusal::Origin)),
            (vec![host, ("origin", "http://127.0.0.1:8081")], Err(Refusal::Origin)),
            (vec![host, ("origin", "null")], Err(Refusal::Origin)),
            (vec![host, ("origin", "http://127.0.0.1:8080/path")], Err(Refusal::Origin)),
            (vec![("origin", "http://127.0.0.1:8080")], Err(Refusal::Origin)),
        ] {
            assert_eq!(check(&headers(&pairs)), expected, "{pairs:?}");
        }
    }
}
