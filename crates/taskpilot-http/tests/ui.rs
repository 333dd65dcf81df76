//! The web dashboard at `/ui` over the real server and a fresh database: signing in with a
//! token and the session cookie, open local mode, cross-site refusals, the security headers
//! and the absence of inline script on every page, what a viewer may not do, revocation
//! ending a session, the 412 page of a stale version, and the escaping of payloads.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use chrono::TimeDelta;
use serde_json::{json, Value};
use taskpilot_app::{AccessService, IssuedToken, NewToken, SystemClock};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::PgTaskRepository;
use taskpilot_domain::{QueueScope, TokenKind, TokenName};
use taskpilot_http::ui::CONTENT_SECURITY_POLICY;
use taskpilot_http::{HttpConfig, ServerHandle};

/// A server and a browser-like client that follows no redirect (the tests look at them).
struct Dashboard {
    base: String,
    client: awc::Client,
    handle: ServerHandle,
}

/// One answer: status, headers and body as text.
#[derive(Debug)]
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn location(&self) -> &str {
        self.header("location").unwrap_or_else(|| panic!("no Location: {self:?}"))
    }

    /// The session cookie this answer sets, as the `Cookie` header to send back.
    fn session_cookie(&self) -> String {
        let set = self
            .headers
            .get_all(header::SET_COOKIE)
            .map(|v| v.to_str().unwrap())
            .find(|v| v.starts_with("taskpilot_session="))
            .unwrap_or_else(|| panic!("no session cookie: {self:?}"));
        set.split(';').next().unwrap().to_owned()
    }
}

impl Dashboard {
    fn on(db: &TestDatabase) -> Self {
        let http = HttpConfig {
            workers: 2,
            shutdown_timeout: Duration::from_secs(1),
            ..HttpConfig::default()
        };
        let (base, handle) = common::spawn_server(db, TimeDelta::seconds(1), 1, http);
        let client =
            awc::Client::builder().disable_redirects().timeout(Duration::from_secs(20)).finish();
        Self { base, client, handle }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        headers: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Page {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(cookie) = cookie {
            request = request.insert_header((header::COOKIE, cookie.to_owned()));
        }
        for (name, value) in headers {
            request = request.insert_header((*name, *value));
        }
        let mut response = match form {
            Some(form) => request.send_form(&form).await.unwrap(),
            None => request.send().await.unwrap(),
        };
        let body = response.body().limit(4 * 1024 * 1024).await.unwrap();
        Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Page {
        self.send(Method::GET, path, cookie, &[], None).await
    }

    async fn post(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Page {
        self.send(Method::POST, path, cookie, &[], Some(form)).await
    }

    /// Signs `secret` in; the session cookie.
    async fn sign_in(&self, secret: &str) -> String {
        let page = self.post("/ui/login", None, &[("token", secret), ("next", "/ui")]).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{page:?}");
        page.session_cookie()
    }

    /// An API call with a bearer token; its status and JSON body.
    async fn api(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .insert_header((header::AUTHORIZATION, format!("Bearer {token}")));
        let mut response = match body {
            Some(body) => request.send_json(&body).await.unwrap(),
            None => request.send().await.unwrap(),
        };
        let bytes = response.body().await.unwrap();
        let json =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (response.status(), json)
    }

    /// Creates a task through the API; its id.
    async fn create_task(&self, admin: &str, payload: Value) -> String {
        let body = json!({"queue": "emails", "name": "send-email", "payload": payload});
        let (status, task) = self.api(Method::POST, "/api/tasks", admin, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        task["id"].as_str().unwrap().to_owned()
    }

    async fn task_status(&self, admin: &str, id: &str) -> String {
        let (_, task) = self.api(Method::GET, &format!("/api/tasks/{id}"), admin, None).await;
        task["status"].as_str().unwrap().to_owned()
    }

    async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// Mints a token straight through the token use cases on `db` (as `taskpilot tokens create`
/// does), before the server is asked anything.
fn mint(db: &TestDatabase, kind: TokenKind, name: &str) -> IssuedToken {
    let access =
        AccessService::new(Arc::new(PgTaskRepository::new(db.pool())), Arc::new(SystemClock));
    access
        .create_token(NewToken {
            name: TokenName::parse(name).unwrap(),
            kind,
            queues: QueueScope::All,
            expires_at: None,
        })
        .unwrap()
}

/// What of a page would need `'unsafe-inline'`: a `<script>` without `src` or with a body,
/// and, inside any tag, an event handler, a `style` attribute, a `javascript:` address or
/// htmx's `hx-on`. Text between tags is not looked at: escaped markup there is only text.
fn inline_code(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    for rest in lower.split("<script").skip(1) {
        let tag = &rest[..rest.find('>').unwrap()];
        let body = &rest[rest.find('>').unwrap() + 1..rest.find("</script>").unwrap()];
        if !tag.contains(" src=") || !body.trim().is_empty() {
            found.push(format!("inline script: <script{tag}>"));
        }
    }
    for rest in lower.split('<').skip(1) {
        let tag = &rest[..rest.find('>').unwrap_or(rest.len())];
        let handler = tag
            .split_whitespace()
            .any(|attribute| attribute.starts_with("on") && attribute.contains('='));
        if handler
            || tag.contains(" style=")
            || tag.contains("javascript:")
            || tag.contains(" hx-on")
        {
            found.push(format!("inline code in <{tag}>"));
        }
    }
    found
}

#[actix_web::test]
async fn signing_in_with_a_viewer_operator_or_admin_token_sets_a_strict_http_only_cookie() {
    let db = TestDatabase::new();
    let tokens: Vec<IssuedToken> = [TokenKind::Viewer, TokenKind::Operator, TokenKind::Admin]
        .into_iter()
        .map(|kind| mint(&db, kind, &format!("ada-{kind}")))
        .collect();
    let ui = Dashboard::on(&db);

    for issued in &tokens {
        let page = ui
            .post(
                "/ui/login",
                None,
                &[("token", &issued.secret), ("next", "/ui/tasks?queue=emails")],
            )
            .await;

        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}: {page:?}", issued.token.kind);
        assert_eq!(page.location(), "/ui/tasks?queue=emails");
        let set_cookie = page.header("set-cookie").unwrap();
        let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
        assert!(attributes[0].starts_with("taskpilot_session=tps_"), "{set_cookie}");
        assert!(!set_cookie.contains(&issued.secret), "the token never goes into the cookie");
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
            assert!(attributes.contains(&attribute), "{attribute} missing: {set_cookie}");
        }
        assert!(!attributes.contains(&"Secure"), "plain http: {set_cookie}");
        let overview = ui.get("/ui", Some(&page.session_cookie())).await;
        assert_eq!(overview.status, StatusCode::OK);
        assert!(overview.body.contains(&format!("ada-{}", issued.token.kind)), "{}", overview.body);
    }
    // Behind a proxy that terminates https, the cookie never travels over plain http.
    let proxied = ui
        .send(
            Method::POST,
            "/ui/login",
            None,
            &[("x-forwarded-proto", "https")],
            Some(&[("token", &tokens[0].secret)]),
        )
        .await;
    assert!(proxied.header("set-cookie").unwrap().contains("; Secure"), "{proxied:?}");
    ui.stop().await;
}

#[actix_web::test]
async fn a_producer_worker_or_metrics_token_does_not_sign_in_and_says_why() {
    let db = TestDatabase::new();
    let refused: Vec<IssuedToken> = [TokenKind::Producer, TokenKind::Worker, TokenKind::Metrics]
        .into_iter()
        .map(|kind| mint(&db, kind, "robot"))
        .collect();
    let ui = Dashboard::on(&db);

    for issued in &refused {
        let page = ui.post("/ui/login", None, &[("token", &issued.secret)]).await;

        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", issued.token.kind);
        assert!(page.header("set-cookie").is_none(), "{page:?}");
        assert!(page.body.contains("cannot open the dashboard"), "{}", page.body);
        assert!(page.body.contains("viewer, operator or"), "{}", page.body);
    }
    let unknown =
        ui.post("/ui/login", None, &[("token", &format!("tp_admin_{}", "0".repeat(64)))]).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(unknown.body.contains("not known"), "{}", unknown.body);
    ui.stop().await;
}

#[actix_web::test]
async fn a_page_without_a_session_goes_to_the_sign_in_page_once_a_token_exists() {
    let db = TestDatabase::new();
    mint(&db, TokenKind::Admin, "ops");
    let ui = Dashboard::on(&db);

    let page = ui.get("/ui/tasks?status=FAILED", None).await;
    let forged = ui.get("/ui", Some("taskpilot_session=tps_not-a-session")).await;
    let fragment = ui.send(Method::GET, "/ui", None, &[("hx-request", "true")], None).await;
    let login = ui.get(page.location(), None).await;

    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/ui/login?reason=required&next=%2Fui%2Ftasks%3Fstatus%3DFAILED");
    assert_eq!(forged.status, StatusCode::SEE_OTHER);
    assert!(forged.location().starts_with("/ui/login?reason=ended"), "{forged:?}");
    // A live refresh sends the whole page to the sign-in form, not the form into the page.
    assert_eq!(fragment.header("hx-redirect"), Some("/ui/login?reason=required"));
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("name=\"token\""), "{}", login.body);
    assert!(login.body.contains("value=\"/ui/tasks?status=FAILED\""), "{}", login.body);
    // The API still asks its bearer token: the dashboard opened no door there.
    let (status, _) = ui.api(Method::GET, "/api/tasks", "tp_admin_x", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    ui.stop().await;
}

#[actix_web::test]
async fn an_open_local_server_asks_no_sign_in() {
    let db = TestDatabase::new();
    let ui = Dashboard::on(&db);

    let overview = ui.get("/ui", None).await;
    let login = ui.get("/ui/login", None).await;

    assert_eq!(overview.status, StatusCode::OK, "{overview:?}");
    assert!(overview.body.contains("open-access"), "{}", overview.body);
    assert!(!overview.body.contains("Sign out"), "there is no session to end");
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    assert_eq!(login.location(), "/ui");
    ui.stop().await;
}

#[actix_web::test]
async fn a_post_from_another_site_is_refused_and_changes_nothing() {
    let db = TestDatabase::new();
    let admin = mint(&db, TokenKind::Admin, "ops");
    let operator = mint(&db, TokenKind::Operator, "oncall");
    let ui = Dashboard::on(&db);
    let cookie = ui.sign_in(&operator.secret).await;
    let id = ui.create_task(&admin.secret, json!({"n": 1})).await;
    let cancel = format!("/ui/tasks/{id}/cancel");
    let host = ui.base.trim_start_matches("http://").to_owned();

    for headers in [
        vec![("origin", "http://evil.example")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("origin", "null")],
    ] {
        let page = ui
            .send(Method::POST, &cancel, Some(&cookie), &headers, Some(&[("version", "1")]))
            .await;

        assert_eq!(page.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert!(page.body.contains("refused"), "{}", page.body);
    }
    let login = ui
        .send(
            Method::POST,
            "/ui/login",
            None,
            &[("sec-fetch-site", "cross-site")],
            Some(&[("token", &operator.secret)]),
        )
        .await;
    assert_eq!(login.status, StatusCode::FORBIDDEN);
    assert!(login.header("set-cookie").is_none());
    assert_eq!(ui.task_status(&admin.secret, &id).await, "PENDING");
    // The same POST from the dashboard's own page goes through.
    let origin = format!("http://{host}");
    let page = ui
        .send(
            Method::POST,
            &cancel,
            Some(&cookie),
            &[("origin", &origin), ("sec-fetch-site", "same-origin")],
            Some(&[("version", "1")]),
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{page:?}");
    assert_eq!(ui.task_status(&admin.secret, &id).await, "CANCELLED");
    ui.stop().await;
}

#[actix_web::test]
async fn every_page_carries_the_security_headers_and_no_inline_script() {
    let db = TestDatabase::new();
    let admin = mint(&db, TokenKind::Admin, "ops");
    let ui = Dashboard::on(&db);
    let cookie = ui.sign_in(&admin.secret).await;
    let id = ui.create_task(&admin.secret, json!({"n": 1})).await;
    let token_id = admin.token.id.to_string();

    let mut pages = vec![("/ui/login".to_owned(), None)];
    for path in [
        "/ui".to_owned(),
        "/ui/queues".to_owned(),
        "/ui/tasks".to_owned(),
        "/ui/tasks?status=NOPE".to_owned(),
        format!("/ui/tasks/{id}"),
        format!("/ui/tasks/{id}/cancel?version=1"),
        "/ui/tokens".to_owned(),
        format!("/ui/tokens/{token_id}/revoke"),
        "/ui/dead-letters".to_owned(),
        "/ui/workers".to_owned(),
        "/ui/dead-letters/bulk?action=rerun&status=FAILED".to_owned(),
        "/ui/no-such-page".to_owned(),
        format!("/ui/tasks/{}", uuid::Uuid::now_v7()),
    ] {
        pages.push((path, Some(cookie.as_str())));
    }
    for (path, cookie) in pages {
        let page = ui.get(&path, cookie).await;

        assert!(page.status != StatusCode::INTERNAL_SERVER_ERROR, "{path}: {page:?}");
        assert_eq!(page.header("content-security-policy"), Some(CONTENT_SECURITY_POLICY), "{path}");
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(page.header("referrer-policy"), Some("same-origin"), "{path}");
        assert_eq!(page.header("cache-control"), Some("no-store"), "{path}");
        assert!(page.header("content-type").unwrap().starts_with("text/html"), "{path}");
        assert_eq!(inline_code(&page.body), Vec::<String>::new(), "{path}");
        assert!(page.body.contains("name=\"htmx-config\""), "{path}");
    }
    let overview = ui.get("/ui", Some(&cookie)).await.body;
    let assets: Vec<&str> =
        overview.split(['"', '\'']).filter(|s| s.starts_with("/ui/static/")).collect();
    assert_eq!(assets.len(), 5, "{assets:?}");
    for asset in assets {
        let file = ui.get(asset, None).await;

        assert_eq!(file.status, StatusCode::OK, "{asset}");
        assert_eq!(file.header("content-security-policy"), Some(CONTENT_SECURITY_POLICY));
        assert_eq!(file.header("cache-control"), Some("public, max-age=31536000, immutable"));
        let expected = if asset.contains(".css") { "text/css" } else { "text/javascript" };
        assert!(file.header("content-type").unwrap().starts_with(expected), "{asset}");
        assert!(!file.body.is_empty());
    }
    assert_eq!(ui.get("/ui/static/nope.js", None).await.status, StatusCode::NOT_FOUND);
    ui.stop().await;
}

#[actix_web::test]
async fn a_viewer_sees_no_action_and_a_forged_one_is_refused() {
    let db = TestDatabase::new();
    let admin = mint(&db, TokenKind::Admin, "ops");
    let viewer = mint(&db, TokenKind::Viewer, "watcher");
    let ui = Dashboard::on(&db);
    let cookie = ui.sign_in(&viewer.secret).await;
    // One failed task, so that the dead letters have a group to act on.
    ui.create_task(&admin.secret, json!({"n": 0})).await;
    let (_, claimed) = ui
        .api(Method::POST, "/api/tasks/claim", &admin.secret, Some(json!({"workerId": "w-1"})))
        .await;
    let fail = json!({"workerId": "w-1", "leaseToken": claimed["items"][0]["leaseToken"], "errorMessage": "boom"});
    let failed = format!("/api/tasks/{}/fail", claimed["items"][0]["id"].as_str().unwrap());
    assert_eq!(ui.api(Method::PUT, &failed, &admin.secret, Some(fail)).await.0, StatusCode::OK);
    let id = ui.create_task(&admin.secret, json!({"n": 1})).await;

    let task = ui.get(&format!("/ui/tasks/{id}"), Some(&cookie)).await;
    let queues = ui.get("/ui/queues", Some(&cookie)).await;
    let forged =
        ui.post(&format!("/ui/tasks/{id}/cancel"), Some(&cookie), &[("version", "1")]).await;
    let pause = ui.post("/ui/queues/emails/pause", Some(&cookie), &[("version", "0")]).await;
    let tokens = ui.get("/ui/tokens", Some(&cookie)).await;
    let bulk = ui.get("/ui/dead-letters/bulk?action=delete&queue=emails", Some(&cookie)).await;
    let dead_letters = ui.get("/ui/dead-letters", Some(&cookie)).await;

    assert_eq!(task.status, StatusCode::OK);
    assert!(!task.body.contains("/cancel"), "{}", task.body);
    assert!(!task.body.contains("/rerun"), "{}", task.body);
    assert!(queues.body.contains("data-queue=\"emails\""), "{}", queues.body);
    assert!(!queues.body.contains("/pause"), "{}", queues.body);
    assert!(!task.body.contains("href=\"/ui/tokens\""), "no tokens page for a viewer");
    assert_eq!(dead_letters.status, StatusCode::OK);
    assert!(dead_letters.body.contains("boom"), "{}", dead_letters.body);
    assert!(!dead_letters.body.contains("data-action"), "{}", dead_letters.body);
    assert!(!dead_letters.body.contains("/ui/dead-letters/bulk"), "{}", dead_letters.body);
    for (what, page) in
        [("cancel", &forged), ("pause", &pause), ("tokens", &tokens), ("bulk", &bulk)]
    {
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{what}: {page:?}");
        assert!(page.body.contains("viewer token may not"), "{what}: {}", page.body);
        assert!(page.body.contains("Overview"), "{what}: the page keeps its navigation");
    }
    assert_eq!(ui.task_status(&admin.secret, &id).await, "PENDING");
    let (_, queue) = ui.api(Method::GET, "/api/queues/emails", &admin.secret, None).await;
    assert_eq!(queue["paused"], false);
    ui.stop().await;
}

#[actix_web::test]
async fn revoking_the_token_ends_its_session_at_the_next_request() {
    let db = TestDatabase::new();
    let admin = mint(&db, TokenKind::Admin, "ops");
    let viewer = mint(&db, TokenKind::Viewer, "watcher");
    let ui = Dashboard::on(&db);
    let cookie = ui.sign_in(&viewer.secret).await;
    assert_eq!(ui.get("/ui", Some(&cookie)).await.status, StatusCode::OK);

    let path = format!("/api/tokens/{}", viewer.token.id);
    let (status, _) = ui.api(Method::DELETE, &path, &admin.secret, None).await;
    let page = ui.get("/ui/queues", Some(&cookie)).await;
    let fragment =
        ui.send(Method::GET, "/ui", Some(&cookie), &[("hx-request", "true")], None).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/ui/login?reason=revoked&next=%2Fui%2Fqueues");
    assert_eq!(fragment.header("hx-redirect"), Some("/ui/login?reason=revoked"));
    let login = ui.get(page.location(), None).await;
    assert!(login.body.contains("was revoked"), "{}", login.body);
    ui.stop().await;
}

#[actix_web::test]
async fn signing_out_ends_the_session_on_every_server() {
    let db = TestDatabase::new();
    let operator = mint(&db, TokenKind::Operator, "oncall");
    let first = Dashboard::on(&db);
    let second = Dashboard::on(&db);
    let cookie = first.sign_in(&operator.secret).await;

    let elsewhere = second.get("/ui/queues", Some(&cookie)).await;
    let out = first.post("/ui/logout", Some(&cookie), &[]).await;
    let after = first.get("/ui", Some(&cookie)).await;

    assert_eq!(elsewhere.status, StatusCode::OK, "sessions are shared through the database");
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/ui/login?reason=signed-out");
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"), "{out:?}");
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert!(after.location().starts_with("/ui/login?reason=ended"), "{after:?}");
    first.stop().await;
    second.stop().await;
}

#[actix_web::test]
async fn a_stale_version_shows_the_412_page_and_changes_nothing() {
    let db = TestDatabase::new();
    let admin = mint(&db, TokenKind::Admin, "ops");
    let operator = mint(&db, TokenKind::Operator, "oncall");
    let ui = Dashboard::on(&db);
    let cookie = ui.sign_in(&operator.secret).await;
    let id = ui.create_task(&admin.secret, json!({"n": 1})).await;
    let page = ui.get(&format!("/ui/tasks/{id}"), Some(&cookie)).await;
    let confirm_link = format!("/ui/tasks/{id}/cancel?version=1");
    assert!(page.body.contains(&confirm_link), "{}", page.body);
    let confirm = ui.get(&confirm_link, Some(&cookie)).await;
    assert!(confirm.body.contains("name=\"version\" value=\"1\""), "{}", confirm.body);
    // Something else acts on the task meanwhile: a worker claims it.
    let (status, _) = ui
        .api(Method::POST, "/api/tasks/claim", &admin.secret, Some(json!({"workerId": "w-1"})))
        .await;
    assert_eq!(status, StatusCode::OK);

    let stale =
        ui.post(&format!("/ui/tasks/{id}/cancel"), Some(&cookie), &[("version", "1")]).await;

    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED, "{stale:?}");
    assert!(stale.body.contains("changed since you loaded"), "{}", stale.body);
    assert!(
        stale.body.contains(&format!("href=\"/ui/tasks/{id}\"")),
        "a reload link: {}",
        stale.body
    );
    assert_eq!(ui.task_status(&admin.secret, &id).await, "RUNNING");
    ui.stop().await;
}

#[actix_web::test]
async fn markup_in_a_payload_or_an_error_is_shown_as_text() {
    let db = TestDatabase::new();
    let admin = mint(&db, TokenKind::Admin, "ops");
    let ui = Dashboard::on(&db);
    let cookie = ui.sign_in(&admin.secret).await;
    let payload =
        json!({"html": "<script>alert(1)</script>", "attr": "\"><img src=x onerror=alert(2)>"});
    let id = ui.create_task(&admin.secret, payload).await;
    let (_, claimed) = ui
        .api(
            Method::POST,
            "/api/tasks/claim",
            &admin.secret,
            Some(json!({"workerId": "w<b>1</b>"})),
        )
        .await;
    let lease = claimed["items"][0]["leaseToken"].as_str().unwrap().to_owned();
    let fail = json!({"workerId": "w<b>1</b>", "leaseToken": lease, "errorMessage": "<script>alert(3)</script>"});
    let (status, _) =
        ui.api(Method::PUT, &format!("/api/tasks/{id}/fail"), &admin.secret, Some(fail)).await;
    assert_eq!(status, StatusCode::OK);

    let task = ui.get(&format!("/ui/tasks/{id}"), Some(&cookie)).await.body;
    let list = ui.get("/ui/tasks", Some(&cookie)).await.body;

    for page in [&task, &list] {
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(!page.contains("<b>1</b>"), "{page}");
        assert!(page.contains("&#60;script&#62;alert(3)&#60;/script&#62;"), "{page}");
    }
    assert!(task.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{task}");
    assert_eq!(inline_code(&task), Vec::<String>::new());
    ui.stop().await;
}

#[actix_web::test]
async fn the_task_list_filters_by_payload_and_pages_by_keyset_at_a_shareable_address() {
    let db = TestDatabase::new();
    let admin = mint(&db, TokenKind::Admin, "ops");
    let ui = Dashboard::on(&db);
    let cookie = ui.sign_in(&admin.secret).await;
    let mut theirs = Vec::new();
    for n in 0..5 {
        let id = ui.create_task(&admin.secret, json!({"customerId": n % 2, "n": n})).await;
        if n % 2 == 0 {
            theirs.push(id);
        }
    }
    let ids = |page: &Page| -> Vec<String> {
        page.body
            .split("data-task=\"")
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
            .collect()
    };

    let first = ui.get("/ui/tasks?payload=%7B%22customerId%22%3A0%7D&limit=2", Some(&cookie)).await;
    let next = first
        .body
        .split("href=\"")
        .map(|rest| &rest[..rest.find('"').unwrap_or(0)])
        .find(|href| href.contains("cursor="))
        .unwrap_or_else(|| panic!("no next page: {}", first.body))
        .replace("&#38;", "&");
    let second = ui.get(&next, Some(&cookie)).await;
    let fragment = ui
        .send(Method::GET, "/ui/tasks?limit=2", Some(&cookie), &[("hx-request", "true")], None)
        .await;
    let refused = ui.get("/ui/tasks?payload=%5B1%5D&unknown=1", Some(&cookie)).await;

    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(ids(&first).len(), 2);
    assert!(next.starts_with("/ui/tasks?payload="), "{next}");
    assert_eq!(ids(&second).len(), 1);
    let mut seen = [ids(&first), ids(&second)].concat();
    seen.sort();
    theirs.sort();
    assert_eq!(seen, theirs, "each matching task once, newest first, over two pages");
    assert!(second.body.contains("later pages do not refresh"), "{}", second.body);
    assert!(
        fragment.body.trim_start().starts_with("<section id=\"tasks-live\""),
        "{}",
        fragment.body
    );
    assert!(!fragment.body.contains("<html"), "a live refresh gets the fragment only");
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("unknown"), "{}", refused.body);
    ui.stop().await;
}
