//! The web app: server-rendered pages at `/` for approvers, admins and engineers.
//!
//! # Layout
//! - this file: the router, the signed-in [`Viewer`] (session cookie → `App::authenticate`),
//!   CSRF tokens, the [`Posted`] extractor every state-changing form goes through, error pages
//!   (including the HTML 404 the router's fallback shows for unknown non-API paths), security
//!   headers and the embedded static assets.
//! - [`auth`]: `/login`, `/logout`. [`reviews`]: access requests (list, detail, decisions, live
//!   updates over server-sent events). [`rules`], [`connections`]: admin forms. [`terminal`]: the
//!   web terminal. [`sessions`]: the audit trail and CSV exports. [`analytics`]: charts.
//!   [`deliveries`]: the notification delivery log and webhook endpoints (admins).
//! - [`view`]: small formatting helpers shared by the pages (times, ages, truncation, tables).
//! - [`form`]: `application/x-www-form-urlencoded` bodies with repeated keys.
//!
//! # Sessions and CSRF
//! Logging in calls `App::login`, which issues a 12-hour API token; the token is the session and
//! lives only in the `warden_session` cookie (HttpOnly, SameSite=Strict, Secure when the public
//! URL is https). Every page authenticates it with `App::authenticate` (fail closed). Every form
//! that changes state carries `_csrf = HMAC-SHA256(key, session token)`, checked in constant time
//! by [`Posted`] before the handler runs; the key comes from `WARDEN_SECRET_KEY` (shared by
//! replicas) or, without it, from a random per-process value. The login form itself is bound to a
//! short-lived pre-session cookie the same way.
//!
//! # What it must never do
//! Render user-controlled text unescaped (every template is askama with HTML auto-escaping, no
//! `|safe` on user data; commands and outputs are attacker-controlled), decide authorization itself
//! (it asks the `App` use cases and only hides buttons as a courtesy), or change state on a GET.

mod analytics;
mod auth;
mod connections;
mod deliveries;
mod form;
mod reviews;
mod rules;
mod sessions;
mod terminal;
mod view;

use std::sync::OnceLock;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use warden_core::User;

use crate::app::{App, AppError};
use crate::http::AppState;

pub use form::Form;

/// The session cookie (holds the login token).
pub const SESSION_COOKIE: &str = "warden_session";
/// The pre-session cookie binding the login form's CSRF token.
pub const LOGIN_COOKIE: &str = "warden_login";
/// A non-secret `SameSite=Lax` hint that a session exists: a link from another site (Slack's web
/// app, Teams) arrives without the Strict session cookie, and the login page uses this hint to
/// retry once as a same-site navigation, which does carry it.
pub const HINT_COOKIE: &str = "warden_hint";
/// The hidden form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "_csrf";

const APP_CSS: &str = include_str!("../../static/app.css");
const APP_JS: &str = include_str!("../../static/app.js");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/reviews") }))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        .merge(auth::routes())
        .merge(reviews::routes())
        .merge(rules::routes())
        .merge(connections::routes())
        .merge(terminal::routes())
        .merge(sessions::routes())
        .merge(analytics::routes())
        .merge(deliveries::routes())
        .layer(axum::middleware::map_response(security_headers))
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Strict headers on every page: no inline script or style may run (defence in depth behind
/// escaping), no framing, no caching of pages that show commands and outputs.
async fn security_headers(mut resp: Response) -> Response {
    with_security_headers(&mut resp);
    resp
}

fn with_security_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        if !h.contains_key(k) {
            h.insert(k, HeaderValue::from_static(v));
        }
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "same-origin");
    set(h, "cache-control", "no-store");
}

// ---------------------------------------------------------------------------------------------
// Cookies and CSRF
// ---------------------------------------------------------------------------------------------

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Whether cookies must carry `Secure` (the gateway is reached over https).
fn secure(app: &App) -> bool {
    app.config.public_url.starts_with("https://")
}

/// A `Set-Cookie` value with Warden's flags. `max_age` 0 deletes the cookie.
pub fn set_cookie(app: &App, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if secure(app) { "; Secure" } else { "" };
    let s = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The signed-in hint cookie (readable by the page script; carries nothing secret).
pub fn hint_cookie(app: &App, on: bool) -> HeaderValue {
    let secure = if secure(app) { "; Secure" } else { "" };
    let (value, age) = if on { ("1", 12 * 3600) } else { ("", 0) };
    let s = format!("{HINT_COOKIE}={value}; Path=/; SameSite=Lax; Max-Age={age}{secure}");
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The CSRF key: derived from `WARDEN_SECRET_KEY` when configured (so every replica agrees),
/// else a random value for this process.
fn csrf_key(app: &App) -> Vec<u8> {
    static PROCESS_KEY: OnceLock<[u8; 32]> = OnceLock::new();
    match &app.config.secret_key {
        Some(k) => mac(k.expose().as_bytes(), b"warden web csrf key v1"),
        None => PROCESS_KEY
            .get_or_init(|| {
                let mut b = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut b);
                b
            })
            .to_vec(),
    }
}

fn mac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(msg);
            m.finalize().into_bytes().to_vec()
        }
        // HMAC accepts keys of any length; unreachable, and an empty token never verifies.
        Err(_) => Vec::new(),
    }
}

/// `HMAC(key, purpose ‖ 0 ‖ secret)` hex-encoded: the token embedded in forms.
pub fn csrf_token(app: &App, purpose: &str, secret: &str) -> String {
    let mut msg = Vec::with_capacity(purpose.len() + 1 + secret.len());
    msg.extend_from_slice(purpose.as_bytes());
    msg.push(0);
    msg.extend_from_slice(secret.as_bytes());
    hex::encode(mac(&csrf_key(app), &msg))
}

/// Constant-time check of a submitted CSRF token.
pub fn csrf_ok(app: &App, purpose: &str, secret: &str, submitted: Option<&str>) -> bool {
    let expected = csrf_token(app, purpose, secret);
    match submitted {
        Some(s) if !expected.is_empty() => crate::auth::ct_eq(expected.as_bytes(), s.as_bytes()),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// The signed-in user
// ---------------------------------------------------------------------------------------------

/// The signed-in user of a page request, with the session's CSRF token for the forms it renders.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user: User,
    /// The session (login) token; never rendered.
    token: String,
    pub csrf: String,
}

impl Viewer {
    /// The gate of every admin-only page and form: the 403 page for anyone else.
    // The error is the page itself, as in every handler's `WebResult`; it is built once per
    // refused request, never on a hot path.
    #[allow(clippy::result_large_err)]
    pub(crate) fn admin_only(&self, active: &'static str, what: &str) -> Result<(), Response> {
        if self.user.admin {
            Ok(())
        } else {
            Err(forbidden(self, active, what))
        }
    }

    /// The gate of pages that read everything (analytics, exports): admins and auditors.
    #[allow(clippy::result_large_err)]
    pub(crate) fn reader_only(&self, active: &'static str, what: &str) -> Result<(), Response> {
        if self.user.reads_all() {
            Ok(())
        } else {
            Err(forbidden(self, active, what))
        }
    }

    /// The session token (for logout only; never rendered).
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// The navigation bar for a page with `active` highlighted.
    pub fn nav(&self, active: &'static str) -> Option<Nav> {
        Some(Nav {
            email: self.user.email.clone(),
            admin: self.user.admin,
            auditor: self.user.auditor,
            csrf: self.csrf.clone(),
            active,
        })
    }
}

/// What the layout needs: who is signed in and which section is active.
#[derive(Debug, Clone)]
pub struct Nav {
    pub email: String,
    pub admin: bool,
    /// A read-only account: sees what admins see, runs and decides nothing.
    pub auditor: bool,
    pub csrf: String,
    pub active: &'static str,
}

/// Only local paths are followed after login (no open redirect): one leading `/`, visible ASCII
/// only (browsers drop tabs and newlines, turning `/\t/evil` into `//evil`), no backslashes.
pub fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && next.chars().all(|c| c.is_ascii_graphic())
        && !next.contains('\\')
        && next.len() < 2048;
    if ok && !next.starts_with("/login") && !next.starts_with("/logout") {
        next.to_string()
    } else {
        "/reviews".to_string()
    }
}

fn login_redirect(parts: &Parts) -> Response {
    let next = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/reviews");
    let target = format!(
        "/login?next={}",
        url::form_urlencoded::byte_serialize(safe_next(next).as_bytes()).collect::<String>()
    );
    Redirect::to(&target).into_response()
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE).map(str::to_string) else {
            return Err(login_redirect(parts));
        };
        match app.authenticate(&token).await {
            Ok(user) => Ok(Viewer {
                csrf: csrf_token(app, "session", &token),
                user,
                token,
            }),
            Err(AppError::Unauthorized(_)) => {
                let mut r = login_redirect(parts);
                let h = r.headers_mut();
                h.append(header::SET_COOKIE, set_cookie(app, SESSION_COOKIE, "", 0));
                h.append(header::SET_COOKIE, hint_cookie(app, false));
                Err(r)
            }
            // Store trouble while authenticating: deny (fail closed) with an error page.
            Err(e) => Err(WebError::from(e).into_response()),
        }
    }
}

/// A state-changing form submission: a signed-in user, the parsed body, and a verified CSRF
/// token. Handlers that change anything take this, so none can forget the check.
pub struct Posted {
    pub viewer: Viewer,
    pub form: Form,
}

impl FromRequest<AppState> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, app).await?;
        let req = Request::from_parts(parts, body);
        let form = Form::from_request(req, app).await?;
        if !csrf_ok(app, "session", &viewer.token, form.get(CSRF_FIELD)) {
            tracing::warn!(user = %viewer.user.email, "refused a form without a valid CSRF token");
            return Err(WebError::Csrf.into_response());
        }
        Ok(Posted { viewer, form })
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering and errors
// ---------------------------------------------------------------------------------------------

/// Renders a template as an HTML response (500 with an opaque page if rendering fails).
pub fn render<T: Template>(t: &T) -> Response {
    render_status(StatusCode::OK, t)
}

pub fn render_status<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><p>Internal error; see the gateway log.</p>"),
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Option<Nav>,
    status: u16,
    title: String,
    message: String,
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum WebError {
    App(AppError),
    /// A form arrived without a valid CSRF token.
    Csrf,
}

impl From<AppError> for WebError {
    fn from(e: AppError) -> Self {
        Self::App(e)
    }
}

impl WebError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            WebError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form is missing a valid security token (it may have expired or come from \
                 another site). Nothing was changed. Go back, reload the page and try again."
                    .into(),
            ),
            WebError::App(e) => {
                let status = crate::http::status_of(e);
                let (title, message) = match e {
                    AppError::Forbidden(m) => ("Not allowed", format!("You may not do this: {m}")),
                    AppError::NotFound(m) => ("Not found", m.clone()),
                    AppError::Unauthorized(m) => ("Sign in required", m.clone()),
                    AppError::RateLimited(m) => ("Too many attempts", m.clone()),
                    AppError::Conflict { message, .. } => ("Conflict", message.clone()),
                    AppError::BadRequest { message, .. } => ("Invalid request", message.clone()),
                    AppError::Internal(err) => {
                        tracing::error!(error = ?err, "internal error on a page");
                        ("Error", "Internal error; see the gateway log.".into())
                    }
                };
                (status, title, message)
            }
        }
    }

    /// The error page, with the navigation bar when the user is known.
    pub fn page(&self, nav: Option<Nav>) -> Response {
        let (status, title, message) = self.parts();
        render_status(
            status,
            &ErrorPage {
                nav,
                status: status.as_u16(),
                title: title.into(),
                message,
            },
        )
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        self.page(None)
    }
}

/// A page result: errors render as the error page (with the viewer's navigation if known).
pub type WebResult = Result<Response, Response>;

/// Maps an `App` error to the error page shown to `viewer`.
pub fn fail<'a>(viewer: &'a Viewer, active: &'static str) -> impl Fn(AppError) -> Response + 'a {
    move |e| WebError::App(e).page(viewer.nav(active))
}

/// A 403 page for `viewer` (admin pages seen by non-admins).
pub fn forbidden(viewer: &Viewer, active: &'static str, what: &str) -> Response {
    WebError::App(AppError::Forbidden(what.into())).page(viewer.nav(active))
}

/// The HTML 404 page for a path no route matches (the router's fallback sends non-API paths
/// here), with the page security headers. Without the user's navigation: the fallback does not
/// authenticate.
pub fn not_found_page(path: &str) -> Response {
    let shown = view::truncate(path, 200);
    let mut resp =
        WebError::App(AppError::NotFound(format!("There is no page at {shown}."))).page(None);
    with_security_headers(&mut resp);
    resp
}

/// 303 See Other (after a POST, or to the login page). Never panics: a target that is not a
/// valid header value goes to the list instead.
pub fn see_other(to: &str) -> Response {
    let location =
        HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/reviews"));
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_local_path_only() {
        assert_eq!(safe_next("/reviews/1?x=2"), "/reviews/1?x=2");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil",
            "https://evil.example",
            "evil",
            "/é",
            "/login",
            "/logout",
        ] {
            assert_eq!(safe_next(bad), "/reviews", "{bad:?}");
        }
    }

    #[test]
    fn cookies_parse_and_carry_flags() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; warden_session=wdn_x"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("wdn_x"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        let r = see_other("/x\u{7f}");
        assert_eq!(r.headers()[header::LOCATION], "/reviews");
    }
}
