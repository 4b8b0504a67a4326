//! The web app over plain HTTP (reqwest against a real gateway, SQLite and PostgreSQL): login,
//! logout and cookie flags, CSRF refusals that change nothing, the 403 page for non-admins,
//! escaping of attacker-controlled commands, rule-form validation next to the field, the web
//! terminal, live events, analytics and formula-safe CSV exports.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use warden_gateway::on_both_stores;
use warden_gateway::testing::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestGateway};

const XSS_SCRIPT: &str = "<script>alert(1)</script>";
const XSS_ATTR: &str = "\"><img src=x onerror=alert(1)>";

/// A browser-like client: no redirects followed, cookies kept by hand (so tests see them).
struct Web {
    http: reqwest::Client,
    base: String,
    session: Option<String>,
}

fn cookie_value(set_cookie: &str, name: &str) -> Option<String> {
    let first = set_cookie.split(';').next()?;
    let (k, v) = first.split_once('=')?;
    (k.trim() == name).then(|| v.trim().to_string())
}

/// The `_csrf` hidden field of a page.
fn csrf_of(html: &str) -> String {
    let marker = "name=\"_csrf\" value=\"";
    let start = html.find(marker).expect("page has a CSRF field") + marker.len();
    let end = html[start..].find('"').expect("closing quote");
    html[start..start + end].to_string()
}

impl Web {
    fn new(gw: &TestGateway) -> Web {
        Web {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: gw.base.clone(),
            session: None,
        }
    }

    fn cookie_header(&self) -> String {
        self.session
            .as_ref()
            .map(|s| format!("warden_session={s}"))
            .unwrap_or_default()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap()
    }

    async fn page(&self, path: &str) -> (StatusCode, String) {
        let r = self.get(path).await;
        let s = r.status();
        (s, r.text().await.unwrap())
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Posts `form` with the CSRF token of `page` added.
    async fn submit(&self, page: &str, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let (_, html) = self.page(page).await;
        let token = csrf_of(&html);
        let mut f: Vec<(&str, &str)> = form.to_vec();
        f.push(("_csrf", &token));
        self.post(path, &f).await
    }

    /// The login form round trip; returns the final response (303 on success).
    async fn login(&mut self, email: &str, password: &str) -> reqwest::Response {
        let r = self
            .http
            .get(format!("{}/login?next=%2Freviews", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let pre = r
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .find_map(|v| cookie_value(v.to_str().unwrap(), "warden_login"))
            .expect("login page sets the pre-session cookie");
        let html = r.text().await.unwrap();
        let token = csrf_of(&html);
        let resp = self
            .http
            .post(format!("{}/login", self.base))
            .header(COOKIE, format!("warden_login={pre}"))
            .form(&[
                ("email", email),
                ("password", password),
                ("next", "/reviews"),
                ("_csrf", &token),
            ])
            .send()
            .await
            .unwrap();
        if let Some(s) = resp
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .find_map(|v| cookie_value(v.to_str().unwrap(), "warden_session"))
            .filter(|s| !s.is_empty())
        {
            self.session = Some(s);
        }
        resp
    }

    async fn logged_in(gw: &TestGateway, email: &str, password: &str) -> Web {
        let mut w = Web::new(gw);
        let r = w.login(email, password).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "login as {email}");
        w
    }
}

/// A user with a password (the web login needs one) and an API token.
async fn user(gw: &TestGateway, email: &str, groups: &[&str], password: &str) -> String {
    let (s, b) = gw
        .admin(
            "POST",
            "/api/users",
            Some(json!({"email": email, "groups": groups, "password": password})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = gw
        .admin("POST", "/api/tokens", Some(json!({"user": email})))
        .await;
    assert_eq!(s, 201, "{b}");
    b["token"].as_str().unwrap().to_string()
}

async fn review_status(gw: &TestGateway, id: &str) -> String {
    let (s, r) = gw.admin("GET", &format!("/api/reviews/{id}"), None).await;
    assert_eq!(s, 200, "{r}");
    r["status"].as_str().unwrap().to_string()
}

on_both_stores!(
    login_logout_and_cookie_flags,
    csrf_is_required_and_refusals_change_nothing,
    commands_render_escaped,
);

async fn login_logout_and_cookie_flags(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let mut w = Web::new(&gw);

    // Unauthenticated pages redirect to the login form, remembering where to go.
    let r = w.get("/reviews?status=all").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[LOCATION].to_str().unwrap(),
        "/login?next=%2Freviews%3Fstatus%3Dall"
    );
    assert_eq!(w.get("/").await.status(), StatusCode::SEE_OTHER);

    // Wrong password: the form again, with a plain message, and no session cookie.
    let r = w.login(ADMIN_EMAIL, "wrong-password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("Wrong email or password"));
    assert!(w.session.is_none());

    // Right password: 303 to `next`, an HttpOnly SameSite=Strict cookie (no Secure over http).
    let r = w.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/reviews");
    let set = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("warden_session="))
        .unwrap();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains("Path=/"), "{set}");
    assert!(
        !set.contains("Secure"),
        "plain http must not set Secure: {set}"
    );
    let token = w.session.clone().unwrap();
    assert!(token.starts_with("wdn_"));

    let (s, html) = w.page("/reviews").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains(ADMIN_EMAIL) && html.contains("Access Requests"));
    // Never the token in the page.
    assert!(!html.contains(&token));
    // Login while signed in goes straight on.
    assert_eq!(w.get("/login").await.status(), StatusCode::SEE_OTHER);

    // Open redirects are refused.
    let mut w2 = Web::new(&gw);
    w2.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let r = w2.get("/login?next=//evil.example/x").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/reviews");
    let (_, html) = Web::new(&gw)
        .page("/login?next=https://evil.example/x")
        .await;
    assert!(!html.contains("evil.example"), "{html}");

    // Logout without a CSRF token is refused and the session survives.
    let r = w.post("/logout", &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(w.get("/reviews").await.status(), StatusCode::OK);

    // Logout with the token: cookie cleared, the token revoked server-side.
    let r = w.submit("/reviews", "/logout", &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/login");
    let cleared = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("warden_session="))
        .unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(w.get("/reviews").await.status(), StatusCode::SEE_OTHER);
    let (s, _) = gw.call("GET", "/api/me", Some(&token), None).await;
    assert_eq!(s, 401, "the web session's token is revoked at logout");

    // A login form posted without its pre-session cookie is refused.
    let r = reqwest::Client::new()
        .post(format!("{}/login", gw.base))
        .form(&[
            ("email", ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
            ("_csrf", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.headers()
            .get_all(SET_COOKIE)
            .iter()
            .all(|v| { !v.to_str().unwrap().starts_with("warden_session=w") })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cookies_are_secure_behind_https() {
    let gw = TestGateway::spawn_with(Backend::Sqlite, |c| {
        c.public_url = "https://warden.example".into();
    })
    .await;
    let mut w = Web::new(&gw);
    let r = w.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set: Vec<String> = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        set.iter()
            .any(|c| c.starts_with("warden_session=wdn_") && c.contains("; Secure")),
        "{set:?}"
    );
}

async fn csrf_is_required_and_refusals_change_nothing(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let dev = user(&gw, "dev@example.com", &["dev"], "dev-password-1").await;
    user(&gw, "dba@example.com", &["dba"], "dba-password-1").await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let id = gw
        .held(&dev, "shell", "echo approved-through-the-web")
        .await;
    let dba = Web::logged_in(&gw, "dba@example.com", "dba-password-1").await;
    let path = format!("/reviews/{id}/approve");

    // No token, a wrong token, and another session's token: 403, review still PENDING.
    let r = dba.post(&path, &[("reason", "ok")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("Nothing was changed"));
    let r = dba
        .post(&path, &[("_csrf", "00ff"), ("reason", "ok")])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let admin = Web::logged_in(&gw, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (_, html) = admin.page("/reviews").await;
    let other = csrf_of(&html);
    let r = dba.post(&path, &[("_csrf", &other)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "tokens are per session");
    let r = dba
        .post(&format!("/reviews/{id}/reject"), &[("reason", "no")])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(review_status(&gw, &id).await, "PENDING");

    // A rule form without a token creates nothing.
    let r = admin
        .post(
            "/rules",
            &[
                ("name", "sneaky"),
                ("type", "command"),
                ("connections", "shell"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (s, _) = gw.admin("GET", "/api/rules/sneaky", None).await;
    assert_eq!(s, 404);

    // Reject needs a reason: the page says so, nothing changes.
    let detail = format!("/reviews/{id}");
    // The approver sees what kind of target the request is for.
    let page = dba.get(&detail).await.text().await.unwrap();
    assert!(
        page.contains(r#"<span class="muted" id="connection-type">(command)</span>"#),
        "{page}"
    );
    let r = dba
        .submit(
            &detail,
            &format!("/reviews/{id}/reject"),
            &[("reason", " ")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("a reason is required"));
    assert_eq!(review_status(&gw, &id).await, "PENDING");

    // With the session's token the approval goes through and the command runs.
    let r = dba
        .submit(&detail, &path, &[("reason", "looks fine")])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[LOCATION].to_str().unwrap(),
        format!("/reviews/{id}?done=approved")
    );
    let (s, v) = gw
        .call(
            "GET",
            &format!("/api/reviews/{id}/wait?timeout=20"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "EXECUTED", "{v}");
    let (_, html) = dba.page(&detail).await;
    assert!(
        html.contains("approved-through-the-web"),
        "result output shown"
    );
    assert!(html.contains("Your approval was recorded") || html.contains("EXECUTED"));
}

async fn commands_render_escaped(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let dev = user(&gw, "dev@example.com", &["dev"], "dev-password-1").await;
    user(&gw, "dba@example.com", &["dba"], "dba-password-1").await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let cmd = format!("echo '{XSS_SCRIPT}' && echo '{XSS_ATTR}'");
    let id = gw.held(&dev, "shell", &cmd).await;
    let dba = Web::logged_in(&gw, "dba@example.com", "dba-password-1").await;

    for path in [
        "/reviews".to_string(),
        format!("/reviews/{id}"),
        format!("/reviews/{id}/row"),
        format!("/reviews/{id}/live"),
    ] {
        let r = dba.get(&path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        let html = r.text().await.unwrap();
        assert!(
            !html.contains(XSS_SCRIPT),
            "{path} renders the script tag raw"
        );
        assert!(
            !html.contains("<img src=x"),
            "{path} renders the img tag raw"
        );
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{path} shows the payload as text"
        );
        assert!(
            html.contains("&#60;img src=x onerror=alert(1)&#62;"),
            "{path}"
        );
    }
    // And after execution, in the output and the sessions pages.
    let r = dba
        .submit(
            &format!("/reviews/{id}"),
            &format!("/reviews/{id}/approve"),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    gw.call(
        "GET",
        &format!("/api/reviews/{id}/wait?timeout=20"),
        Some(&dev),
        None,
    )
    .await;
    let admin = Web::logged_in(&gw, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (_, html) = admin.page(&format!("/reviews/{id}")).await;
    assert!(html.contains("EXECUTED"));
    assert!(!html.contains(XSS_SCRIPT) && !html.contains("<img src=x"));
    let (_, html) = admin.page("/sessions").await;
    assert!(!html.contains(XSS_SCRIPT) && !html.contains("<img src=x"));
    assert!(html.contains("dev@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_admins_get_the_403_page() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    user(&gw, "dev@example.com", &["dev"], "dev-password-1").await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let dev = Web::logged_in(&gw, "dev@example.com", "dev-password-1").await;
    for path in [
        "/rules/new",
        "/rules/shell/edit",
        "/connections/new",
        "/connections/shell/edit",
        "/analytics",
        "/analytics.csv",
        "/sessions.csv",
        "/reviews.csv",
    ] {
        let (s, html) = dev.page(path).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        assert!(html.contains("Not allowed"), "{path}: {html}");
        assert!(
            html.contains("dev@example.com"),
            "the 403 page keeps the navigation"
        );
    }
    // Posting the admin forms with a valid token is refused too, and changes nothing.
    let r = dev
        .submit(
            "/rules",
            "/rules",
            &[
                ("name", "mine"),
                ("type", "command"),
                ("connections", "shell"),
                ("approval_groups", "dev"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (s, _) = gw.admin("GET", "/api/rules/mine", None).await;
    assert_eq!(s, 404);
    let r = dev.submit("/rules", "/rules/shell/delete", &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (s, _) = gw.admin("GET", "/api/rules/shell", None).await;
    assert_eq!(s, 200);
    // Everyone may read rules and their own pages.
    for (path, page) in [
        ("/rules", "rules"),
        ("/connections", "connections"),
        ("/sessions", "sessions"),
        ("/terminal", "terminal"),
        ("/reviews", "reviews"),
    ] {
        let (s, html) = dev.page(path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        // The page script keys on this attribute; a template slip here breaks live updates.
        assert!(
            html.contains(&format!("<body data-page=\"{page}\">")),
            "{path}"
        );
        assert_eq!(html.matches("<body").count(), 1, "{path}");
    }
    // Admin-only links are not shown to them, nor setup warnings.
    let (_, html) = dev.page("/rules").await;
    assert!(!html.contains("/rules/new"));
    assert!(!html.contains("has no members"), "{html}");
    // Admins see what is set up wrong: the reviewer group dba has no members yet.
    let admin = Web::logged_in(&gw, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    for path in ["/rules", "/connections"] {
        let (_, html) = admin.page(path).await;
        assert!(
            html.contains("Warning: approval group dba of rule shell has no members"),
            "{path}: {html}"
        );
    }
    user(&gw, "dana@example.com", &["dba"], "dana-password-1").await;
    let (_, html) = admin.page("/rules").await;
    assert!(!html.contains("has no members"), "{html}");
    let (_, html) = dev.page("/reviews").await;
    assert!(!html.contains("/analytics") && !html.contains("reviews.csv"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auditors_read_every_page_and_decide_nothing() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let dev = user(&gw, "dev@example.com", &["dev"], "dev-password-1").await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let id = gw.held(&dev, "shell", "echo for-the-auditor").await;
    // An auditor in the approver group and the connection's groups.
    let (s, b) = gw
        .admin(
            "POST",
            "/api/users",
            Some(json!({"email": "audit@example.com", "groups": ["dba", "dev"], "auditor": true, "password": "audit-password-1"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let audit = Web::logged_in(&gw, "audit@example.com", "audit-password-1").await;
    for path in [
        "/reviews",
        &format!("/reviews/{id}"),
        "/sessions",
        "/rules",
        "/connections",
        "/analytics",
        "/analytics.csv",
        "/sessions.csv",
        "/reviews.csv",
    ] {
        let (s, body) = audit.page(path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
    }
    let (_, html) = audit.page(&format!("/reviews/{id}")).await;
    assert!(html.contains("for-the-auditor"));
    assert!(
        !html.contains("id=\"approve\"") && !html.contains("id=\"reject\""),
        "no decision buttons for an auditor: {html}"
    );
    let (_, html) = audit.page("/reviews").await;
    assert!(html.contains("auditor</span>"), "the role is shown");
    assert!(html.contains("/analytics") && html.contains("reviews.csv"));
    assert!(!html.contains("href=\"/terminal\""), "no terminal link");
    assert!(!html.contains("href=\"/deliveries\""));
    for path in [
        "/rules/new",
        "/connections/new",
        "/connections/shell/edit",
        "/deliveries",
    ] {
        let (s, _) = audit.page(path).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
    }
    // Posting a decision with a valid CSRF token is refused and changes nothing.
    let r = audit
        .submit(
            &format!("/reviews/{id}"),
            &format!("/reviews/{id}/approve"),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = audit
        .submit(
            &format!("/reviews/{id}"),
            &format!("/reviews/{id}/reject"),
            &[("reason", "no")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(review_status(&gw, &id).await, "PENDING");
    // The terminal runs nothing for it.
    let r = audit
        .submit(
            "/reviews",
            "/terminal",
            &[("connection", "shell"), ("command", "echo should-not-run")],
        )
        .await;
    let html = r.text().await.unwrap();
    assert!(html.contains("read-only"), "{html}");
    let (_, sessions) = gw.admin("GET", "/api/sessions", None).await;
    assert!(!sessions.to_string().contains("audit@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rule_form_shows_errors_next_to_fields_and_the_rule_takes_effect() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let dev = user(&gw, "dev@example.com", &["dev"], "dev-password-1").await;
    gw.command_connection("shell", &["sh"], &[]).await;
    let admin = Web::logged_in(&gw, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (s, html) = admin.page("/rules/new").await;
    assert_eq!(s, StatusCode::OK);
    for field in [
        "name=\"name\"",
        "name=\"description\"",
        "value=\"jit\"",
        "value=\"command\"",
        "name=\"connections\" value=\"shell\"",
        "name=\"required_groups\"",
        "name=\"approval_groups\"",
        "name=\"require_all_groups\"",
        "name=\"approval_amount\"",
        "name=\"force_approval_groups\"",
        "name=\"exempt_groups\"",
        "name=\"timeout\"",
        "name=\"max_duration\"",
    ] {
        assert!(html.contains(field), "rule form lacks {field}");
    }

    // No approval group: the error sits at that field; values are kept.
    let r = admin
        .submit(
            "/rules/new",
            "/rules",
            &[
                ("name", "prod-writes"),
                ("description", "writes need a DBA"),
                ("type", "command"),
                ("connections", "shell"),
                ("approval_amount", "1"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("id=\"err-approval_groups\">at least one approval group is required"),
        "{html}"
    );
    assert!(html.contains("value=\"prod-writes\"") && html.contains("writes need a DBA"));

    // Unparseable values are reported at their own fields.
    let r = admin
        .submit(
            "/rules/new",
            "/rules",
            &[
                ("name", "prod-writes"),
                ("type", "command"),
                ("connections", "shell"),
                ("approval_groups", "dba"),
                ("approval_amount", "two"),
                ("timeout", "soon"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"err-approval_amount\""));
    assert!(html.contains("id=\"err-timeout\""));

    // Valid: saved, listed, and enforced.
    let r = admin
        .submit(
            "/rules/new",
            "/rules",
            &[
                ("name", "prod-writes"),
                ("type", "command"),
                ("connections", "shell"),
                ("approval_groups", "dba, security"),
                ("require_all_groups", "on"),
                ("approval_amount", "2"),
                ("force_approval_groups", "sre"),
                ("exempt_groups", "bots"),
                ("timeout", "30m"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (s, rule) = gw.admin("GET", "/api/rules/prod-writes", None).await;
    assert_eq!(s, 200);
    assert_eq!(rule["approval_groups"], json!(["dba", "security"]));
    assert_eq!(rule["require_all_groups"], true);
    assert_eq!(rule["approval_amount"], 2);
    assert_eq!(rule["force_approval_groups"], json!(["sre"]));
    assert_eq!(rule["exempt_groups"], json!(["bots"]));
    assert_eq!(rule["timeout_sec"], 1800);
    let (_, html) = admin.page("/rules?done=created").await;
    assert!(html.contains("prod-writes") && html.contains("Rule created"));
    let id = gw.held(&dev, "shell", "echo now-held").await;
    assert_eq!(review_status(&gw, &id).await, "PENDING");

    // A second command rule on the same connection: error at "connections".
    let r = admin
        .submit(
            "/rules/new",
            "/rules",
            &[
                ("name", "another"),
                ("type", "command"),
                ("connections", "shell"),
                ("approval_groups", "dba"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("id=\"err-connections\""));

    // Edit keeps the other fields and updates.
    let (s, html) = admin.page("/rules/prod-writes/edit").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("value=\"dba, security\""));
    let r = admin
        .submit(
            "/rules/prod-writes/edit",
            "/rules/prod-writes/edit",
            &[
                ("name", "prod-writes"),
                ("type", "command"),
                ("connections", "shell"),
                ("approval_groups", "dba"),
                ("approval_amount", "1"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, rule) = gw.admin("GET", "/api/rules/prod-writes", None).await;
    assert_eq!(rule["approval_groups"], json!(["dba"]));
    assert_eq!(rule["require_all_groups"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_form_keeps_secrets_write_only() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let admin = Web::logged_in(&gw, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let targets = tempfile::tempdir().unwrap();
    let db = targets.path().join("target.db");
    let url = format!("sqlite://{}", db.display());
    let r = admin
        .submit(
            "/connections/new",
            "/connections",
            &[
                ("name", "lite"),
                ("type", "sqlite"),
                ("url", &url),
                ("env", "API_KEY=very-secret-value"),
                ("access_groups", "dev"),
                ("reviewers", "dba"),
                ("slack_channel", "#approvals"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, html) = admin.page("/connections").await;
    assert!(html.contains("lite") && html.contains("#approvals") && html.contains("API_KEY"));
    assert!(!html.contains("very-secret-value"));
    let (s, html) = admin.page("/connections/lite/edit").await;
    assert_eq!(s, StatusCode::OK);
    assert!(!html.contains("very-secret-value"));
    assert!(
        html.contains("name=\"url\" value=\"\""),
        "URL is write-only"
    );
    assert!(
        html.contains("value=\"dba\""),
        "reviewers prefilled from the rule"
    );

    // Edit with an empty URL and env: the stored ones are kept; the connection still works.
    let r = admin
        .submit(
            "/connections/lite/edit",
            "/connections/lite/edit",
            &[
                ("type", "sqlite"),
                ("url", ""),
                ("env", ""),
                ("access_groups", ""),
                ("slack_channel", "#ops"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, c) = gw.admin("GET", "/api/connections/lite", None).await;
    assert_eq!(c["slack_channel"], "#ops");
    assert_eq!(c["env_keys"], json!(["API_KEY"]));
    assert!(c["url_redacted"].as_str().unwrap().contains("target.db"));

    // Errors go next to the field, and the secret typed is not echoed back.
    let r = admin
        .submit(
            "/connections/new",
            "/connections",
            &[
                ("name", "bad"),
                ("type", "postgres"),
                ("url", "mysql://u:typed-secret@h/db"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    assert!(html.contains("class=\"field-error\">scheme"), "{html}");
    assert!(!html.contains("typed-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminal_runs_holds_and_shows_results() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    user(&gw, "dev@example.com", &["dev"], "dev-password-1").await;
    gw.command_connection("free", &["sh"], &[]).await;
    gw.command_connection("guarded", &["sh"], &["dba"]).await;
    let targets = tempfile::tempdir().unwrap();
    let db = targets.path().join("t.db");
    std::fs::File::create(&db).unwrap();
    let (s, b) = gw
        .admin(
            "POST",
            "/api/connections",
            Some(json!({"name": "lite", "type": "sqlite", "url": format!("sqlite://{}", db.display())})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let dev = Web::logged_in(&gw, "dev@example.com", "dev-password-1").await;
    let (s, html) = dev.page("/terminal?connection=guarded").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("<option value=\"guarded\" selected>"));

    // Free: runs now, raw output.
    let r = dev
        .submit(
            "/terminal",
            "/terminal",
            &[("connection", "free"), ("command", "echo hello-from-web")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("hello-from-web") && html.contains("exit code 0"));

    // SQL: a table.
    let r = dev
        .submit(
            "/terminal",
            "/terminal",
            &[
                ("connection", "lite"),
                ("command", "SELECT 1 AS one, 'b' AS two, NULL AS three"),
            ],
        )
        .await;
    let html = r.text().await.unwrap();
    assert!(
        html.contains("<th>one</th><th>two</th><th>three</th>"),
        "{html}"
    );
    assert!(html.contains("<td class=\"null\">NULL</td>"));

    // Guarded: held, with the review link; the fragment follows it to the result.
    let r = dev
        .submit(
            "/terminal",
            "/terminal",
            &[
                ("connection", "guarded"),
                ("command", "echo after-approval"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let html = r.text().await.unwrap();
    assert!(html.contains("Waiting for approval…"));
    let marker = "href=\"/reviews/";
    let start = html.find(marker).unwrap() + marker.len();
    let id = html[start..start + 36].to_string();
    let (_, r) = gw.admin("GET", &format!("/api/reviews/{id}"), None).await;
    assert_eq!(r["status"], "PENDING");
    let dba = user(&gw, "dba@example.com", &["dba"], "dba-password-1").await;
    let (s, _) = gw.decide(&dba, &id, "approve", None).await;
    assert_eq!(s, 200);
    let mut html = String::new();
    for _ in 0..100 {
        html = dev.page(&format!("/terminal/reviews/{id}")).await.1;
        if html.contains("data-waiting=\"0\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(html.contains("after-approval"), "{html}");

    // Errors plainly: unknown connection.
    let r = dev
        .submit(
            "/terminal",
            "/terminal",
            &[("connection", "nope"), ("command", "x")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.unwrap().contains("no connection"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_stream_visible_review_changes() {
    use futures::StreamExt;
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let dev = user(&gw, "dev@example.com", &["dev"], "dev-password-1").await;
    user(&gw, "dba@example.com", &["dba"], "dba-password-1").await;
    user(&gw, "eve@example.com", &["sales"], "eve-password-1").await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let dba = Web::logged_in(&gw, "dba@example.com", "dba-password-1").await;
    let eve = Web::logged_in(&gw, "eve@example.com", "eve-password-1").await;
    let r = dba.get("/events").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut dba_stream = r.bytes_stream();
    let mut eve_stream = eve.get("/events").await.bytes_stream();
    let id = gw.held(&dev, "shell", "echo live").await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&id) && tokio::time::Instant::now() < deadline {
        if let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(Duration::from_secs(1), dba_stream.next()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(seen.contains("event: review"), "{seen}");
    assert!(seen.contains(&format!("\"id\":\"{id}\"")) && seen.contains("PENDING"));
    // Someone who may not see the review gets no event about it.
    let mut other = String::new();
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout(Duration::from_millis(700), eve_stream.next()).await
    {
        other.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!other.contains(&id), "{other}");
    // Unauthenticated: redirected to login.
    let anon = Web::new(&gw);
    assert_eq!(anon.get("/events").await.status(), StatusCode::SEE_OTHER);
    // Open event streams do not hold up a graceful shutdown.
    tokio::time::timeout(Duration::from_secs(10), gw.stop())
        .await
        .expect("the gateway stops promptly with event streams open");
    drop((dba_stream, eve_stream));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_filters_paginate_and_exports_are_formula_safe() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let dev = user(&gw, "dev@example.com", &["dev"], "dev-password-1").await;
    let dba_token = user(&gw, "dba@example.com", &["dba"], "dba-password-1").await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    gw.command_connection("other", &["sh"], &["dba"]).await;
    let mut ids = Vec::new();
    for i in 0..27 {
        ids.push(gw.held(&dev, "shell", &format!("echo {i}")).await);
    }
    let formula = gw.held(&dev, "other", "=cmd|' /C calc'!A0").await;
    let (s, _) = gw
        .call(
            "PUT",
            &format!("/api/reviews/{}/reject", ids[0]),
            Some(&dba_token),
            Some(json!({"reason": "@nope"})),
        )
        .await;
    assert_eq!(s, 200);

    let admin = Web::logged_in(&gw, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    // Pending by default, 25 per page, newest first.
    let (_, html) = admin.page("/reviews").await;
    assert!(
        html.contains("Total: <span id=\"total-count\">27</span>"),
        "27 pending: 26 shell + 1 other"
    );
    assert_eq!(html.matches("<tr data-id=").count(), 25);
    assert!(html.contains("Page 1 of 2") && html.contains("Older →"));
    assert!(html.contains("0 of 1: dba …"), "approval progress shown");
    let (_, html) = admin.page("/reviews?status=pending&page=2").await;
    assert_eq!(html.matches("<tr data-id=").count(), 2);
    let (_, html) = admin.page("/reviews?status=pending&connection=other").await;
    assert_eq!(html.matches("<tr data-id=").count(), 1);
    assert!(html.contains(&formula));
    let (_, html) = admin.page("/reviews?status=rejected").await;
    assert_eq!(html.matches("<tr data-id=").count(), 1);
    let (_, html) = admin
        .page("/reviews?status=all&requester=nobody%40example.com")
        .await;
    assert!(html.contains("No access requests match"));
    let (s, _) = admin.page("/reviews?status=bogus").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // CSV: every review, cells neutralised.
    let r = admin.get("/reviews.csv").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("warden-reviews.csv")
    );
    let csv = r.text().await.unwrap();
    assert_eq!(csv.lines().count(), 1 + 28);
    assert!(
        csv.contains("\"'=cmd|' /C calc'!A0\""),
        "formula neutralised"
    );
    assert!(csv.contains("\"'@nope\""));
    assert!(!csv.contains(",\"=cmd"));

    // Sessions CSV after one execution.
    let (s, _) = gw
        .call(
            "PUT",
            &format!("/api/reviews/{}/approve", ids[1]),
            Some(&dba_token),
            None,
        )
        .await;
    assert_eq!(s, 200);
    gw.call(
        "GET",
        &format!("/api/reviews/{}/wait?timeout=20", ids[1]),
        Some(&dev),
        None,
    )
    .await;
    let csv = admin.get("/sessions.csv").await.text().await.unwrap();
    assert!(csv.starts_with("\"id\",\"kind\",\"user\""));
    assert!(csv.contains("\"dev@example.com\"") && csv.contains("\"echo 1\""));

    let (s, html) = admin.page("/sessions").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("echo 1"));
    let sid_marker = "href=\"/sessions/";
    let start = html.find(sid_marker).unwrap() + sid_marker.len();
    let sid = &html[start..start + 36];
    let (s, html) = admin.page(&format!("/sessions/{sid}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("echo 1") && html.contains(&format!("/reviews/{}", ids[1])));

    // Analytics: numbers and charts.
    let (s, html) = admin.page("/analytics?period=7d").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("id=\"kpi-total\">28<"), "{html}");
    assert!(
        html.contains("id=\"kpi-rate\">50%<"),
        "1 approved of 2 settled"
    );
    assert!(html.contains("<svg class=\"chart\""));
    assert!(html.contains("ECHO ?: 27"), "commands normalised");
    assert!(html.contains("id=\"kpi-p90\""));
    assert!(html.contains("dba@example.com: 1"), "top approvers");
    let (s, _) = admin.page("/analytics?period=all&connection=other").await;
    assert_eq!(s, StatusCode::OK);
    // The same numbers as CSV, linked from the page.
    assert!(
        html.contains("href=\"/analytics.csv?period=7d&#38;connection=\""),
        "{html}"
    );
    let resp = admin.get("/analytics.csv?period=7d").await;
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = resp.text().await.unwrap();
    assert!(
        csv.starts_with("\"section\",\"name\",\"metric\",\"value\""),
        "{csv}"
    );
    assert!(
        csv.contains("\"reviews\",\"all connections\",\"total\",\"28\""),
        "{csv}"
    );
    assert!(
        csv.contains("\"top_commands\",\"ECHO ?\",\"count\",\"27\""),
        "{csv}"
    );
    assert!(
        csv.contains("\"top_approvers\",\"dba@example.com\",\"count\",\"1\""),
        "{csv}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decision_buttons_follow_what_the_user_may_do() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let dev = user(&gw, "dev@example.com", &["dev"], "dev-password-1").await;
    user(&gw, "dba@example.com", &["dba"], "dba-password-1").await;
    user(&gw, "sre@example.com", &["sre"], "sre-password-1").await;
    gw.command_connection("shell", &["sh"], &[]).await;
    let (s, b) = gw
        .admin(
            "POST",
            "/api/rules",
            Some(
                json!({"name": "guard", "type": "command", "connections": ["shell"],
                "approval_groups": ["dba"], "force_approval_groups": ["sre"]}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let id = gw.held(&dev, "shell", "echo forced").await;
    let detail = format!("/reviews/{id}");

    let dba = Web::logged_in(&gw, "dba@example.com", "dba-password-1").await;
    let (_, html) = dba.page(&detail).await;
    assert!(html.contains("id=\"approve\"") && html.contains("id=\"reject\""));
    assert!(!html.contains("id=\"force-approve\"") && !html.contains("id=\"withdraw\""));

    let me = Web::logged_in(&gw, "dev@example.com", "dev-password-1").await;
    let (_, html) = me.page(&detail).await;
    assert!(!html.contains("id=\"approve\"") && html.contains("id=\"withdraw\""));
    assert!(html.contains("dev@example.com") && html.contains("Timeline"));

    let sre = Web::logged_in(&gw, "sre@example.com", "sre-password-1").await;
    let (_, html) = sre.page(&detail).await;
    assert!(html.contains("id=\"force-approve\"") && !html.contains("id=\"approve\""));
    // Force approval needs a reason.
    let r = sre
        .submit(&detail, &format!("/reviews/{id}/force"), &[])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(review_status(&gw, &id).await, "PENDING");
    let r = sre
        .submit(
            &detail,
            &format!("/reviews/{id}/force"),
            &[("reason", "incident 42")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, v): (u16, Value) = gw
        .call(
            "GET",
            &format!("/api/reviews/{id}/wait?timeout=20"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(v["status"], "EXECUTED");
    let (_, html) = sre.page(&detail).await;
    assert!(html.contains("badge forced"));
    assert!(html.contains("force-approved") && html.contains("incident 42"));
    assert!(
        !html.contains("id=\"force-approve\""),
        "no buttons once decided"
    );

    // An outsider cannot see it at all.
    user(&gw, "eve@example.com", &["sales"], "eve-password-1").await;
    let eve = Web::logged_in(&gw, "eve@example.com", "eve-password-1").await;
    assert_eq!(eve.page(&detail).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        eve.page(&format!("/reviews/{id}/row")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jit_window_requested_approved_used_and_revoked_on_the_web() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    user(&gw, "dev@example.com", &["dev"], "dev-password-1").await;
    user(&gw, "dba@example.com", &["dba"], "dba-password-1").await;
    gw.command_connection("box", &["sh"], &[]).await;
    let (s, b) = gw
        .admin(
            "POST",
            "/api/rules",
            Some(
                json!({"name": "box-jit", "type": "jit", "connections": ["box"],
                "approval_groups": ["dba"], "max_duration_sec": 7200}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let dev = Web::logged_in(&gw, "dev@example.com", "dev-password-1").await;
    let dba = Web::logged_in(&gw, "dba@example.com", "dba-password-1").await;

    // Without a window the terminal says plainly what to do.
    let r = dev
        .submit(
            "/terminal",
            "/terminal",
            &[("connection", "box"), ("command", "echo in-window")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("just-in-time window"));

    // Bad durations are refused at the form; too long ones by the rule.
    let r = dev
        .submit(
            "/terminal",
            "/terminal/access",
            &[("connection", "box"), ("duration", "soon")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("id=\"access-error\""));
    let r = dev
        .submit(
            "/terminal",
            "/terminal/access",
            &[("connection", "box"), ("duration", "3h")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // A valid request: to its review page, PENDING, Just-in-Time.
    let r = dev
        .submit(
            "/terminal",
            "/terminal/access",
            &[
                ("connection", "box"),
                ("duration", "1h"),
                ("reason", "debugging INC-7"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[LOCATION].to_str().unwrap().to_string();
    let id = to.trim_start_matches("/reviews/").to_string();
    let (_, html) = dev.page(&to).await;
    assert!(html.contains("Just-in-Time") && html.contains("debugging INC-7"));
    assert!(html.contains("Requested duration: <strong>1h</strong>"));

    // The approver approves; the window opens; commands run in the terminal.
    let r = dba
        .submit(&to, &format!("/reviews/{id}/approve"), &[])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(review_status(&gw, &id).await, "APPROVED");
    let (_, html) = dev.page("/terminal").await;
    assert!(html.contains("id=\"windows\"") && html.contains("<strong>box</strong>"));
    let r = dev
        .submit(
            "/terminal",
            "/terminal",
            &[("connection", "box"), ("command", "echo in-window")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("in-window"));

    // Revoke is offered to the approver (not the requester) and ends the window.
    let (_, html) = dev.page(&to).await;
    assert!(!html.contains("id=\"revoke\""));
    let (_, html) = dba.page(&to).await;
    assert!(html.contains("id=\"revoke\""));
    let r = dba
        .submit(&to, &format!("/reviews/{id}/revoke"), &[("reason", "done")])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(review_status(&gw, &id).await, "REVOKED");
    let r = dev
        .submit(
            "/terminal",
            "/terminal",
            &[("connection", "box"), ("command", "echo after-revoke")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_page_shows_webhooks_and_the_log_escaped_to_admins_only() {
    let gw = TestGateway::spawn_with(Backend::Sqlite, |c| {
        c.notify_poll_ms = 0;
        c.notify_backoff_ms = 20;
    })
    .await;
    let dev = user(&gw, "dev@example.com", &["dev"], "dev-password-1").await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    // A webhook on a closed port whose URL carries markup (reserve a port, then let it go).
    let port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/{XSS_SCRIPT}?q={XSS_ATTR}");
    let (s, b) = gw
        .admin("POST", "/api/webhooks", Some(json!({"url": url})))
        .await;
    assert_eq!(s, 201, "{b}");
    let review = gw.held(&dev, "shell", "echo notify-me").await;

    // Deliver until the webhook delivery has failed at least once.
    let n = gw.running.app.notifier();
    for _ in 0..100 {
        n.try_run_once().await.unwrap();
        let (_, log) = gw.admin("GET", "/api/deliveries?kind=webhook", None).await;
        if log
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["attempts"].as_i64().unwrap_or(0) >= 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let admin = Web::logged_in(&gw, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (_, html) = admin.page("/reviews").await;
    assert!(html.contains("href=\"/deliveries\""), "admins see the link");
    let (s, html) = admin.page("/deliveries").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("<body data-page=\"deliveries\">"));
    assert!(html.contains("review.created"), "{html}");
    assert!(html.contains(&format!("/reviews/{review}")), "review link");
    assert!(html.contains("connection failed"), "last error shown");
    assert!(html.contains("127.0.0.1"), "webhook URL listed");
    assert!(
        !html.contains(XSS_SCRIPT) && !html.contains("<img src=x"),
        "the URL renders escaped"
    );
    assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
    // Filters: the failing webhook delivery is there under its kind, not under another.
    let (s, html) = admin.page("/deliveries?kind=webhook&status=all").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("review.created"));
    let (s, html) = admin.page("/deliveries?kind=teams").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("No deliveries match these filters."));
    let (s, html) = admin.page("/deliveries?status=bogus").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(html.contains("status: use pending"), "{html}");

    // Non-admins: the 403 page, and no link.
    let devw = Web::logged_in(&gw, "dev@example.com", "dev-password-1").await;
    let (s, html) = devw.page("/deliveries").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(html.contains("Not allowed") && html.contains("dev@example.com"));
    assert!(!html.contains("127.0.0.1"));
    let (_, html) = devw.page("/reviews").await;
    assert!(!html.contains("/deliveries"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_paths_get_the_html_page_and_api_paths_json() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let w = Web::new(&gw);
    let r = w.get(&format!("/nope/{XSS_SCRIPT}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(r.headers().contains_key("content-security-policy"));
    let html = r.text().await.unwrap();
    assert!(html.contains("<body data-page=\"error\">"), "{html}");
    assert!(html.contains("Not found"));
    assert!(!html.contains("<script>alert"), "the path renders escaped");
    let (s, html) = w.page("/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(html.contains("There is no page at /nope."), "{html}");

    for path in ["/api/nope", "/api", "/metrics/nope"] {
        let r = w.get(path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("application/json"), "{path}: {ct}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "not_found", "{path}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
}
